"""The sharing planners' fast cases against their general walks, on random graphs.

``plan_back`` answers fresh memory (no edge touches the pieces) and pieces that each
lie inside one segment with one rule for all (kernel pages under the linear map)
without the general walk; ``plan_unback`` passes over segments only the leaving edge
covers, or it and the linear map.  ``general=True`` asks each for the walk over every
segment: on random graphs (a linear-map window, reservations in
three address spaces with random memory types, security states and shareable bits,
not necessarily agreeing, so the rewrites and conflicts the rule finds are varied)
both must give equal edges (field for field), equal rewrites in the same order and
the same error.  The one-piece layout of ``backing.pieces``, the newest-first search
of ``ownership.release`` are checked against their plain forms the same way.
"""

from __future__ import annotations

from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_4K
from vcmm.attrs import MemType, PageAttrs
from vcmm.core import backing, direct, ownership, sharing
from vcmm.core.flags import PhysAttr
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.objects import EXTERNAL, PhysMem
from vcmm.core.ownership import Pin
from vcmm.errors import VcmmError
from vcmm.ranges import AddressRange

PAGES = 24
SPACES = ("cpu", "dev1", "dev2")
MEMTYPES = (MemType.NORMAL_WB_WA, MemType.NORMAL_NC)

#: ``(first page, pages)`` over a small space, so ranges often touch or overlap.
SPAN = st.tuples(st.integers(0, PAGES - 1), st.integers(1, 4))
ATTRS = st.builds(
    lambda m, ns, sh: PageAttrs(memtype=m, ns=ns, shareable=sh),
    st.sampled_from(MEMTYPES),
    st.booleans() | st.just(True),
    st.booleans(),
)
RESERVATION = st.tuples(
    st.sampled_from(SPACES), ATTRS, st.lists(SPAN, min_size=1, max_size=4, unique_by=lambda s: s)
)
GRAPH = st.tuples(
    st.none() | SPAN,  # the linear map's window, if any
    st.lists(RESERVATION, max_size=5),
    st.booleans() | st.just(True),  # check_attributes
)
#: New pieces: single pages most often (the streaming case), runs sometimes.
PIECES = st.lists(
    st.tuples(st.integers(0, PAGES - 1), st.integers(1, 4) | st.just(1)),
    min_size=1,
    max_size=6,
)


def _range(span: tuple[int, int]) -> AddressRange:
    return AddressRange(span[0] * SZ_4K, span[1] * SZ_4K)


def _graph(spec: tuple[object, ...]) -> MappingGraph:
    window, reservations, check = spec
    linear = []
    if window is not None:
        attrs = PageAttrs(shareable=True, ns=True)
        phys = _range(window)  # type: ignore[arg-type]
        linear.append(Mapping("cpu", "linear map", phys, 0xC000_0000 + phys.start, attrs))
    graph = MappingGraph(linear, check_attributes=bool(check))
    for res_id, (space, attrs, spans) in enumerate(reservations, start=1):  # type: ignore[attr-defined]
        edges = [
            Mapping(
                space,
                f"res{res_id}",
                _range(s),
                0x1000_0000 + k * 0x10_0000,
                attrs,
                res_id,
                _range(s),
            )
            for k, s in enumerate(spans)
        ]
        graph.add(res_id, edges)
    return graph


def _pieces(spans: list[tuple[int, int]]) -> list[tuple[int, AddressRange, AddressRange]]:
    out = []
    va = 0x4000_0000
    for span in spans:
        phys = _range(span)
        out.append((va, phys, phys))
        va += phys.size
    return out


def _outcome(plan: object, *args: object, **kwargs: object) -> object:
    """What a planner gives: its result, or the error's type and message."""
    try:
        return plan(*args, **kwargs)  # type: ignore[operator]
    except VcmmError as exc:
        return (type(exc), str(exc))


def _fields(m: Mapping) -> tuple[object, ...]:
    return (m.space, m.owner, m.phys, m.va, m.attrs, m.res_id, m.chunk)


def _normal(outcome: object) -> object:
    """Edges as field tuples (Mapping equality is by value; this also shows which
    field differs when the test fails)."""
    if isinstance(outcome, tuple) and len(outcome) == 2 and isinstance(outcome[0], list):
        new, rewrites = outcome
        return (
            [_fields(m) for m in new],
            [(_fields(old), [_fields(p) for p in parts]) for old, parts in rewrites],
        )
    if isinstance(outcome, list):
        return [(_fields(old), [_fields(p) for p in parts]) for old, parts in outcome]
    return outcome


@settings(max_examples=400, deadline=None)
@given(
    spec=GRAPH,
    spans=PIECES,
    space=st.sampled_from(SPACES),
    memtype=st.sampled_from(MEMTYPES),
    ns=st.booleans() | st.just(True),
)
def test_plan_back_gives_what_the_general_walk_gives(
    spec: tuple[object, ...],
    spans: list[tuple[int, int]],
    space: str,
    memtype: MemType,
    ns: bool,
) -> None:
    graph = _graph(spec)
    attrs = (
        PageAttrs(memtype=memtype, ns=ns, shareable=False),
        PageAttrs(memtype=memtype, ns=ns, shareable=True),
    )
    kwargs = {"space": space, "res_id": 99, "owner": "new", "attrs": attrs}
    pieces = _pieces(spans)
    fast = _outcome(sharing.plan_back, graph, "vcm_back", pieces, **kwargs)
    general = _outcome(sharing.plan_back, graph, "vcm_back", pieces, general=True, **kwargs)
    assert _normal(fast) == _normal(general)


@settings(max_examples=400, deadline=None)
@given(spec=GRAPH, pick=st.integers(0, 10))
def test_plan_unback_gives_what_the_general_walk_gives(spec: tuple[object, ...], pick: int) -> None:
    graph = _graph(spec)
    reservations = spec[1]
    assert isinstance(reservations, list)
    if not reservations:
        return
    res_id = pick % len(reservations) + 1
    edges = graph.of_reservation(res_id)
    fast = sharing.plan_unback(graph, res_id, edges)
    general = sharing.plan_unback(graph, res_id, edges, general=True)
    assert _normal(fast) == _normal(general)


def _kernel_pages_graph() -> tuple[MappingGraph, list[tuple[int, AddressRange, AddressRange]]]:
    """A linear map over all pages, one reservation of the CPU's over some of them, and
    single pages to map for a device (the streaming case)."""
    graph = _graph((((0, PAGES)), [("cpu", PageAttrs(shareable=True, ns=True), [(2, 3)])], True))
    return graph, _pieces([(0, 1), (3, 1), (9, 1), (10, 1)])


def test_kernel_pages_take_the_uniform_case_and_the_graph_is_not_searched_twice() -> None:
    """Honesty of the test above: the streaming case really skips the general walk and
    the untouched search (so the equivalence test compares two different codes)."""
    graph, pieces = _kernel_pages_graph()
    attrs = (PageAttrs(ns=True), PageAttrs(ns=True, shareable=True))
    with (
        mock.patch.object(sharing, "_walk_back", side_effect=AssertionError),
        mock.patch.object(MappingGraph, "untouched", side_effect=AssertionError),
    ):
        new, rewrites = sharing.plan_back(
            graph, "vcm_back", pieces, space="dev1", res_id=99, owner="new", attrs=attrs
        )
    assert rewrites == []
    assert [(m.phys, m.attrs.shareable) for m in new] == [(p, True) for _, p, _ in pieces]
    assert all(m.phys is p for m, (_, p, _) in zip(new, pieces, strict=True))


def test_a_piece_across_segments_goes_the_general_way() -> None:
    graph, _ = _kernel_pages_graph()
    attrs = (PageAttrs(ns=True), PageAttrs(ns=True, shareable=True))
    across = _pieces([(1, 3)])  # pages 1-3: the linear map alone, then with the CPU's
    with mock.patch.object(sharing, "_walk_back", wraps=sharing._walk_back) as general:
        sharing.plan_back(
            graph, "vcm_back", across, space="dev1", res_id=99, owner="new", attrs=attrs
        )
    assert general.call_count == 1


def test_unback_of_kernel_pages_asks_no_rule() -> None:
    graph, _ = _kernel_pages_graph()
    pieces = _pieces([(0, 1), (9, 1), (10, 1)])  # pages only the linear map covers
    attrs = PageAttrs(ns=True, shareable=True)
    graph.add(99, [Mapping("dev1", "new", p, va, attrs, 99, c) for va, p, c in pieces])
    edges = graph.of_reservation(99)
    with (
        mock.patch.object(sharing, "_rule", side_effect=AssertionError),
        mock.patch.object(MappingGraph, "alone", side_effect=AssertionError),
    ):
        assert sharing.plan_unback(graph, 99, edges) == []


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 1 << 20),
    size=st.integers(1, 64),
    length=st.integers(0, 80),
    base=st.integers(0, 1 << 30),
)
def test_one_piece_is_laid_as_the_general_layout_lays_it(
    start: int, size: int, length: int, base: int
) -> None:
    piece = AddressRange(start * SZ_4K, size * SZ_4K)
    chunk = AddressRange(piece.start, piece.size + SZ_4K)
    physmem = PhysMem(1, EXTERNAL, piece.size, PhysAttr.NONE, (piece,), chunk_keys=(chunk,))
    fast = backing.pieces(length * SZ_4K, physmem, base)
    assert fast == backing.laid_out(length * SZ_4K, physmem, base)
    assert fast[0][1] is piece or piece.size > length * SZ_4K


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(1, 150),
    order=st.lists(st.integers(0, 1 << 16), max_size=150),
)
def test_release_keeps_the_pins_that_list_remove_keeps(count: int, order: list[int]) -> None:
    """Pins released in random order (some among the newest, some far older than the
    searched tail) leave the same list, in the same order, as ``list.remove``."""
    physmem = PhysMem(1, EXTERNAL, SZ_4K, PhysAttr.NONE, (AddressRange(0, SZ_4K),))
    pins = [ownership.pin(physmem, f"h{k}") for k in range(count)]
    reference: list[Pin] = list(pins)
    for n in order:
        if not reference:
            break
        victim = reference[n % len(reference)]
        ownership.release(victim)
        reference.remove(victim)
        assert victim.released
        assert physmem.pins == reference
        assert all(a is b for a, b in zip(physmem.pins, reference, strict=True))


def test_streaming_pairs_leave_the_pins_of_the_long_lived_wraps(system: vcmm.System) -> None:
    """Through the seed calls: wraps of kernel pages made and freed newest-first and
    out of order leave the allocation's pins those of the wraps still alive."""
    ram = system.vcm_phys_alloc("ebi", 128 * SZ_4K)
    pages = [
        AddressRange(c.start + k, SZ_4K) for c in ram.chunk_ranges for k in range(0, c.size, SZ_4K)
    ]
    wraps = [system.vcm_phys_wrap_owned([p], owner="t") for p in pages[:100]]
    for k in (99, 0, 50, 98, 1, 70):
        system.vcm_phys_free(wraps[k])
    alive = [w for k, w in enumerate(wraps) if k not in (99, 0, 50, 98, 1, 70)]
    assert [p.wrap for p in ram.pins] == alive


EDGE = st.tuples(st.integers(0, 63), st.sampled_from((1, 1, 1, 2, 16)), st.integers(0, 2))


@settings(max_examples=200, deadline=None)
@given(specs=st.lists(EDGE, max_size=12))
def test_the_direct_backers_page_lists_and_groups_are_the_plain_ones(
    specs: list[tuple[int, int, int]],
) -> None:
    """``direct._page_vas`` (single pages without a range each) and ``direct._by_attrs``
    (the attributes hashed once per run of one object) against their plain forms."""
    shared = [PageAttrs(), PageAttrs(shareable=True), PageAttrs()]  # two equal objects
    edges = [
        Mapping("dev1", "o", _range((page, pages)), page * SZ_4K, shared[a], 1, None)
        for page, pages, a in specs
    ]
    plain = [e.va + k for e in edges for k in range(0, e.phys.size, SZ_4K)]
    assert direct._page_vas(edges, SZ_4K) == plain
    groups: dict[PageAttrs, list[Mapping]] = {}
    for e in edges:
        groups.setdefault(e.attrs, []).append(e)
    found = direct._by_attrs(edges)
    assert found == list(groups.items())
    assert all(a is b for (a, _), b in zip(found, groups, strict=True))
