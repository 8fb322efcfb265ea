"""The sharing rule applied to a change: new edges' bits, and which old edges change.

When a reservation is backed, every byte it maps gains an address space; when it is
unbacked, every byte it mapped loses one.  Only those bytes can change what the rule
wants, so the planners walk the graph's segments over them (never the whole graph):

- :func:`plan_back` gives the new edges, cut where the rule differs along a piece
  (part of a buffer may already be shared with another space, part not), checks the
  memory type against every alias of each segment, and lists the existing edges
  whose shareable bit must change over some segments;
- :func:`plan_unback` lists the existing edges whose bit must change once the
  leaving reservation's edges are gone.

A changed edge is replaced by *pieces* covering exactly its bytes, each with one bit
(:func:`split_edge`), so every edge keeps a single shareable bit, whoever made it: a
device's IOMMU mapping, a kernel mapping or a process's user mapping.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

from vcmm.attrs import PageAttrs
from vcmm.core.graph import Key, Mapping, MappingGraph, conflict_error, private_edges
from vcmm.ranges import AddressRange

#: An existing edge and the pieces replacing it (one bit each).
Rewrite = tuple[Mapping, tuple[Mapping, ...]]
#: ``(phys start, phys end, wanted shareable bit)`` over part of an edge.
Change = tuple[int, int, bool]


def _rule(graph: MappingGraph, keys: Iterable[Key], space: str | None, leaving: int | None) -> bool:
    """What the sharing rule wants for a segment covered by ``keys`` (minus the
    reservation ``leaving``), plus ``space`` if one is about to map it."""
    spaces: set[str] = set()
    if space is not None:
        spaces.add(space)
    for key in keys:
        res_id = key[0]
        if res_id is None:
            return True
        if res_id == leaving:
            continue
        spaces.add(graph.edge(key).space)
    return len(spaces) >= 2


def plan_back(
    graph: MappingGraph,
    call: str,
    pieces: Sequence[tuple[int, AddressRange, AddressRange]],
    *,
    space: str,
    res_id: int,
    owner: str,
    attrs: tuple[PageAttrs, PageAttrs],
) -> tuple[list[Mapping], list[Rewrite]]:
    """New edges for ``pieces`` (``(va, phys, chunk)`` laid by the backing) and the
    rewrites of existing aliases; raises (changing nothing) on a memory-type conflict.
    ``attrs`` are the new mappings' attributes without and with the shareable bit."""
    check = graph.check_attributes
    private_attrs, shared_attrs = attrs
    if graph.untouched([phys for _, phys, _ in pieces]):  # fresh memory: one private edge each
        return private_edges(space, owner, private_attrs, res_id, pieces), []
    memtype, ns = private_attrs.memtype, private_attrs.ns
    new: list[Mapping] = []
    changes: dict[Key, list[Change]] = {}
    for va, phys, chunk in pieces:
        run_start = phys.start
        run_bit: bool | None = None
        for s, e, keys in graph.cover_keys(phys):
            bit = _rule(graph, keys, space, None)
            for key in keys:
                old = graph.edge(key)
                if check and (old.attrs.memtype is not memtype or old.attrs.ns != ns):
                    piece = Mapping(space, owner, phys, va, private_attrs, res_id, chunk)
                    raise conflict_error(call, piece, old)
                if key[0] is not None and old.attrs.shareable is not bit:
                    changes.setdefault(key, []).append((s, e, bit))
            if run_bit is None:
                run_bit = bit
            elif bit is not run_bit:
                new.append(
                    Mapping(
                        space,
                        owner,
                        AddressRange(run_start, s - run_start),
                        va + (run_start - phys.start),
                        shared_attrs if run_bit else private_attrs,
                        res_id,
                        chunk,
                    )
                )
                run_start, run_bit = s, bit
        last = phys if run_start == phys.start else AddressRange(run_start, phys.end - run_start)
        new.append(
            Mapping(
                space,
                owner,
                last,
                va + (run_start - phys.start),
                shared_attrs if run_bit else private_attrs,
                res_id,
                chunk,
            )
        )
    return new, _rewrites(graph, changes)


def plan_unback(graph: MappingGraph, res_id: int, edges: Sequence[Mapping]) -> list[Rewrite]:
    """Rewrites of the other aliases of ``edges`` once reservation ``res_id`` (whose
    edges they are) no longer maps them."""
    if graph.alone(edges):  # memory nothing else maps: no alias to rewrite
        return []
    changes: dict[Key, list[Change]] = {}
    for edge in edges:
        for s, e, keys in graph.cover_keys(edge.phys):
            bit = _rule(graph, keys, None, res_id)
            for key in keys:
                if key[0] is None or key[0] == res_id:
                    continue
                if graph.edge(key).attrs.shareable is not bit:
                    changes.setdefault(key, []).append((s, e, bit))
    return _rewrites(graph, changes)


def _rewrites(graph: MappingGraph, changes: dict[Key, list[Change]]) -> list[Rewrite]:
    return [
        (old, split_edge(old, found)) for key, found in changes.items() for old in [graph.edge(key)]
    ]


def split_edge(old: Mapping, changes: Iterable[Change]) -> tuple[Mapping, ...]:
    """``old`` cut into pieces where its shareable bit must become ``bit`` over each
    ``(start, end, bit)`` of ``changes`` (which may repeat or overlap: several new
    pieces can touch one segment); neighbouring pieces with one bit are joined."""
    keep = old.attrs.shareable
    found = set(changes)
    if len(found) == 1:
        ((s, e, bit),) = found
        if s <= old.phys.start and e >= old.phys.end:  # the common case: all of it
            return (old.with_attrs(_flipped(old.attrs, bit)),)
    parts: list[Change] = []
    pos = old.phys.start
    for s, e, bit in sorted(found):
        if e <= pos:
            continue
        s = max(s, pos)
        if s > pos:
            parts.append((pos, s, keep))
        parts.append((s, e, bit))
        pos = e
    if pos < old.phys.end:
        parts.append((pos, old.phys.end, keep))
    joined: list[Change] = []
    for s, e, bit in parts:
        if joined and joined[-1][2] is bit and joined[-1][1] == s:
            joined[-1] = (joined[-1][0], e, bit)
        else:
            joined.append((s, e, bit))
    return tuple(old.part(s, e, _flipped(old.attrs, bit)) for s, e, bit in joined)


@functools.lru_cache(maxsize=256)
def _flipped(attrs: PageAttrs, shareable: bool) -> PageAttrs:
    """``attrs`` with the shareable bit set to ``shareable`` (a rewrite of 16384 chunks
    asks for the same few values over and over)."""
    return attrs if attrs.shareable is shareable else attrs.with_(shareable=shareable)
