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
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

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


class _Newcomer(NamedTuple):
    """Who maps the pieces: the new edges' space, owner and reservation, and their
    attributes without and with the shareable bit."""

    space: str
    owner: str
    res_id: int
    private: PageAttrs
    shared: PageAttrs

    def edge(self, phys: AddressRange, va: int, bit: bool | None, chunk: AddressRange) -> Mapping:
        return Mapping(
            self.space,
            self.owner,
            phys,
            va,
            self.shared if bit else self.private,
            self.res_id,
            chunk,
        )


def plan_back(
    graph: MappingGraph,
    call: str,
    pieces: Sequence[tuple[int, AddressRange, AddressRange]],
    *,
    space: str,
    res_id: int,
    owner: str,
    attrs: tuple[PageAttrs, PageAttrs],
    general: bool = False,
) -> tuple[list[Mapping], list[Rewrite]]:
    """New edges for ``pieces`` (``(va, phys, chunk)`` laid by the backing) and the
    rewrites of existing aliases; raises (changing nothing) on a memory-type conflict.
    ``attrs`` are the new mappings' attributes without and with the shareable bit.

    Two common cases skip the general walk over every segment of every piece (which
    ``general=True`` asks for: the reference they are tested against): fresh memory
    (no edge touches the pieces: one private edge each, no rewrite), and pieces that
    each lie inside one segment of the graph with one rule for all (a streaming map
    of kernel pages, which the linear map covers: one edge per piece, each key set
    checked once)."""
    new = _Newcomer(space, owner, res_id, *attrs)
    if general:
        return _walk_back(graph, call, pieces, new)
    if not _in_linear_map(graph, pieces) and graph.untouched([phys for _, phys, _ in pieces]):
        return private_edges(space, owner, new.private, res_id, pieces), []
    found = _plan_uniform(graph, call, pieces, new)
    return found if found is not None else _walk_back(graph, call, pieces, new)


def _in_linear_map(
    graph: MappingGraph,
    items: Sequence[tuple[int, AddressRange, AddressRange]] | Sequence[Mapping],
) -> bool:
    """Whether the first of ``items`` (pieces or edges) overlaps a linear-map window
    (kernel RAM): then they are neither untouched nor alone, and asking the index
    would only cost its search."""
    if not items:
        return False
    first = items[0]
    phys = first.phys if isinstance(first, Mapping) else first[1]
    return graph.linear_alias(phys) is not None


def _verdict(
    graph: MappingGraph,
    call: str,
    keys: Iterable[Key],
    new: _Newcomer,
    piece: tuple[int, AddressRange, AddressRange],
) -> tuple[bool, list[Key]]:
    """What the rule wants for a segment of ``piece`` covered by ``keys`` once
    ``new`` maps it, and the keys whose bit must change; raises the conflict of the
    first key (in order) whose memory type or security state disagrees."""
    bit = _rule(graph, keys, new.space, None)
    check = graph.check_attributes
    memtype, ns = new.private.memtype, new.private.ns
    flip = []
    for key in keys:
        old = graph.edge(key)
        if check and (old.attrs.memtype is not memtype or old.attrs.ns != ns):
            va, phys, chunk = piece
            raise conflict_error(call, new.edge(phys, va, False, chunk), old)
        if key[0] is not None and old.attrs.shareable is not bit:
            flip.append(key)
    return bit, flip


def _plan_uniform(
    graph: MappingGraph,
    call: str,
    pieces: Sequence[tuple[int, AddressRange, AddressRange]],
    new: _Newcomer,
) -> tuple[list[Mapping], list[Rewrite]] | None:
    """The general walk's result when every piece lies inside one segment and the
    rule wants one bit for all of them, else None (then nothing was decided: the
    general walk starts again).

    Why it is the same: a piece inside one segment is one new edge over the piece
    itself, and the general walk checks that segment's keys in the same order, so
    the first conflict raised is the same.  A key set met again (the linear map's
    window between other edges) was checked and ruled on already: its verdict is
    reused, as the graph does not change while planning."""
    cover = graph.cover_keys
    seen: dict[Iterable[Key], tuple[bool, list[Key]]] = {}
    changes: dict[Key, list[Change]] = {}
    first: bool | None = None
    for piece in pieces:
        segments = cover(piece[1])
        if len(segments) != 1:
            return None
        ((s, e, keys),) = segments
        verdict = seen.get(keys)
        if verdict is None:
            verdict = seen[keys] = _verdict(graph, call, keys, new, piece)
        bit, flip = verdict
        if first is None:
            first = bit
        elif bit is not first:
            return None
        for key in flip:
            changes.setdefault(key, []).append((s, e, bit))
    attrs = new.shared if first else new.private
    return private_edges(new.space, new.owner, attrs, new.res_id, pieces), _rewrites(graph, changes)


def _walk_back(
    graph: MappingGraph,
    call: str,
    pieces: Sequence[tuple[int, AddressRange, AddressRange]],
    new: _Newcomer,
) -> tuple[list[Mapping], list[Rewrite]]:
    """:func:`plan_back` by the general walk over every segment of every piece: new
    edges cut where the rule differs along a piece."""
    edges: list[Mapping] = []
    changes: dict[Key, list[Change]] = {}
    for piece in pieces:
        va, phys, chunk = piece
        run_start = phys.start
        run_bit: bool | None = None
        for s, e, keys in graph.cover_keys(phys):
            bit, flip = _verdict(graph, call, keys, new, piece)
            for key in flip:
                changes.setdefault(key, []).append((s, e, bit))
            if run_bit is None:
                run_bit = bit
            elif bit is not run_bit:
                part = AddressRange(run_start, s - run_start)
                edges.append(new.edge(part, va + (run_start - phys.start), run_bit, chunk))
                run_start, run_bit = s, bit
        last = phys if run_start == phys.start else AddressRange(run_start, phys.end - run_start)
        edges.append(new.edge(last, va + (run_start - phys.start), run_bit, chunk))
    return edges, _rewrites(graph, changes)


def plan_unback(
    graph: MappingGraph, res_id: int, edges: Sequence[Mapping], *, general: bool = False
) -> list[Rewrite]:
    """Rewrites of the other aliases of ``edges`` once reservation ``res_id`` (whose
    edges they are, all in ``graph``) no longer maps them.

    Segments that only the leaving edge covers, or it and the linear map (a streaming
    map of a kernel page), leave no alias to rewrite and are passed over without the
    rule, unless ``general=True`` asks for the rule on every segment (the reference
    this is tested against)."""
    if not general and not _in_linear_map(graph, edges) and graph.alone(edges):
        return []  # memory nothing else maps: no alias to rewrite
    cover: Callable[[AddressRange], list[tuple[int, int, tuple[Key, ...]]]]
    cover = graph.cover_keys  # type: ignore[assignment]
    changes: dict[Key, list[Change]] = {}
    for edge in edges:
        for s, e, keys in cover(edge.phys):
            n = len(keys)  # the leaving edge's own key is one of them
            if not general and (n == 1 or (n == 2 and (keys[0][0] is None or keys[1][0] is None))):
                continue
            bit = _rule(graph, keys, None, res_id)
            for key in keys:
                if key[0] is None or key[0] == res_id:
                    continue
                if graph.edge(key).attrs.shareable is not bit:
                    changes.setdefault(key, []).append((s, e, bit))
    return _rewrites(graph, changes)


def _rewrites(graph: MappingGraph, changes: dict[Key, list[Change]]) -> list[Rewrite]:
    if not changes:  # the common case: no alias changes its bit
        return []
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
