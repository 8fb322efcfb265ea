"""The lazy physical index against the plain one, and the lazy graph against the eager.

:class:`LazyIndex` queues adds and answers queries from the settled segments plus the
queue.  The oracle is :class:`PhysIndex` (what the graph used before, and still uses
with ``MappingGraph(lazy=False)``), driven with the same random calls: every query
after every call must answer exactly as it does, key order inside the tuples
included, and once settled the two must hold the very same segments.  Small queue
limits and bucket sizes make the random runs settle, overflow and use wide adds.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType, PageAttrs
from vcmm.core.graph import KERNEL_SPACE, Mapping, MappingGraph
from vcmm.core.lazyindex import LazyIndex
from vcmm.core.physindex import PhysIndex
from vcmm.ranges import AddressRange

SPACE = 64
SPAN = st.tuples(st.integers(0, SPACE - 8), st.integers(1, 12))
QUERY = st.tuples(st.integers(0, SPACE), st.integers(0, 12))
LAZY = st.fixed_dictionaries(
    {"limit": st.sampled_from([2, 5, 40]), "shift": st.integers(0, 4), "wide": st.integers(0, 6)}
)
INDEX_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), SPAN),
        st.tuples(st.just("add_spans"), st.lists(SPAN, max_size=7)),
        st.tuples(st.just("discard"), st.integers(0, 99)),
        st.tuples(st.just("discard_spans"), st.lists(st.integers(0, 99), max_size=5)),
        st.tuples(st.just("rename"), st.integers(0, 99)),
        st.tuples(st.just("segments"), st.none()),
        st.tuples(st.just("ask"), st.lists(QUERY, min_size=1, max_size=4)),
        st.tuples(st.just("sole"), st.lists(st.integers(0, 99), max_size=4)),
    ),
    max_size=30,
)


def _answers(
    index: Any, asked: list[tuple[int, int]], live: dict[Hashable, tuple[int, int]]
) -> Any:
    """Every query of ``index`` over the ``(start, length)`` ranges ``asked``."""
    spans = [(s, s + n) for s, n in asked]
    starts, ends = [s for s, _ in spans], [e for _, e in spans]
    items = [(s, e, k) for k, (s, e) in live.items()]
    return (
        [index.cover(s, e) for s, e in spans],
        [index.keys_over(s, e) for s, e in spans],
        index.keys_over_ranges(starts, ends),
        index.clear_of_spans(starts, ends),
        index.clear_of_spans(np.array(starts), np.array(ends)),
        index.clear_of(spans),
        [index.sole([item]) for item in items],
        index.sole(items),
        index.sole_spans(
            [s for s, _, _ in items], tuple(e for _, e, _ in items), [k for *_, k in items]
        ),
    )


@settings(max_examples=300, deadline=None)
@given(ops=INDEX_OPS, lazy=LAZY)
def test_the_lazy_index_answers_every_query_as_the_plain_one(
    ops: list[tuple[str, Any]], lazy: dict[str, int]
) -> None:
    plain, index = PhysIndex(), LazyIndex(**lazy)
    live: dict[Hashable, tuple[int, int]] = {}
    made = 0

    def new_key() -> Hashable:
        nonlocal made
        made += 1
        return ("k", made)

    def pick(n: int) -> Hashable | None:
        keys = list(live)
        return keys[n % len(keys)] if keys else None

    both = (plain, index)
    for op, arg in ops:
        if op in ("add", "add_spans"):
            spans = [arg] if op == "add" else arg
            items = [(s, s + n, new_key()) for s, n in spans]
            for target in both:
                if op == "add":
                    target.add(*items[0])
                else:
                    target.add_spans(
                        *(list(col) for col in zip(*items, strict=True)) if items else ([], [], [])
                    )
            live.update((k, (s, e)) for s, e, k in items)
        elif op in ("discard", "discard_spans", "rename"):
            picks = [arg] if op != "discard_spans" else arg
            keys = list(dict.fromkeys(k for k in map(pick, picks) if k is not None))
            items = [(*live.pop(k), k) for k in keys]
            for target in both:
                if op == "discard":
                    for item in items:
                        target.discard(*item)
                elif op == "discard_spans":
                    target.discard_many(items)
                else:
                    for s, e, k in items:
                        target.rename(s, e, k, ("renamed", k))
            if op == "rename":
                live.update((("renamed", k), (s, e)) for s, e, k in items)
        elif op == "segments":
            assert index.segments() == plain.segments()
            assert len(index) == len(plain)
            assert index.pending == 0
        elif op == "ask":
            assert _answers(index, arg, live) == _answers(plain, arg, live)
        else:  # sole of a few live edges, and of one with a range it does not have
            keys = [k for k in map(pick, arg) if k is not None]
            items = [(*live[k], k) for k in keys]
            assert index.sole(items) == plain.sole(items)
            if items:
                s, e, k = items[0]
                assert index.sole([(s, e + 1, k)]) == plain.sole([(s, e + 1, k)])
    everything = [(0, SPACE + 12)] + [(s, 3) for s in range(0, SPACE, 3)]
    assert _answers(index, everything, live) == _answers(plain, everything, live)
    for step in (1, 2, 5):  # many separate ranges: one bisect per queued add
        starts = list(range(0, SPACE + 12, step))
        ends = [s + 1 for s in starts]
        assert index.clear_of_spans(starts, ends) == plain.clear_of_spans(starts, ends)
    index.settle()
    settled = index.settled
    assert (settled._starts, settled._end, settled._keys) == (
        plain._starts,
        plain._end,
        plain._keys,
    )


def test_a_queued_page_over_the_linear_map_is_cancelled_without_touching_the_segments() -> None:
    """What a streaming pair does: a page inside the linear map's segment is added and
    discarded; the segments never change, yet every query saw the page meanwhile."""
    index = LazyIndex()
    index.add(0, 1 << 20, "linear")
    index.settle()
    before = index.settled.segments()
    index.add(8192, 12288, "page")
    assert index.settled.segments() == before and index.pending == 1
    assert index.cover(4096, 16384) == [
        (4096, 8192, ("linear",)),
        (8192, 12288, ("linear", "page")),
        (12288, 16384, ("linear",)),
    ]
    assert index.keys_over_ranges([8192, 9000], [12288, 9001]) == {"linear", "page"}
    assert index.keys_over_ranges([12288], [16384]) == {"linear"}
    assert not index.sole([(8192, 12288, "page")])
    index.discard(8192, 12288, "page")
    assert index.settled.segments() == before and index.pending == 0


# -- the graph ---------------------------------------------------------------------------

PAGE = 0x1000
#: Two memory types (the conflict rule refuses nothing here: the check is off, so the
#: answers about disagreeing aliases are compared too).
ATTRS = [PageAttrs(), PageAttrs(memtype=MemType.NORMAL_NC), PageAttrs(shareable=True)]
PIECE = st.tuples(st.integers(0, 31), st.integers(1, 4), st.integers(0, 2))
GRAPH_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.lists(PIECE, min_size=1, max_size=5)),
        st.tuples(st.just("remove"), st.integers(0, 99)),
        st.tuples(st.just("replace"), st.integers(0, 99)),
        st.tuples(st.just("split"), st.integers(0, 99)),
        st.tuples(st.just("join"), st.integers(0, 99)),
        st.tuples(
            st.just("ask"), st.lists(st.tuples(st.integers(0, 40), st.integers(1, 9)), max_size=4)
        ),
    ),
    max_size=25,
)


def _linear() -> list[Mapping]:
    """A linear-map window over pages 16-23 of the small space."""
    return [
        Mapping(KERNEL_SPACE, "linear", AddressRange(16 * PAGE, 8 * PAGE), 0xC000_0000, PageAttrs())
    ]


def _graph_answers(graph: MappingGraph, asked: list[tuple[int, int]]) -> Any:
    """Every read of ``graph`` over the ``(page, pages)`` ranges ``asked``."""
    ranges = [AddressRange(p * PAGE, n * PAGE) for p, n in asked]
    per_range = [
        (
            graph.cover(r),
            [(s, e, tuple(k)) for s, e, k in graph.cover_keys(r)],
            graph.overlapping(r),
            graph.overlapping(r, linear=False),
            graph.of_chunk(r),
            graph.aliases(r),
            graph.spaces(r),
            graph.segments(r),
            graph.memtypes(r),
            graph.untouched([r]),
        )
        for r in ranges
    ]
    edges = graph.all()
    reservations = sorted({m.res_id for m in edges if m.res_id is not None})
    return (
        per_range,
        graph.untouched(ranges),
        graph.memtypes_over(ranges),
        [graph.alone(graph.of_reservation(r)) for r in reservations],
        [graph.alone([m]) for m in edges],
        [graph.conflict(m.with_attrs(a)) for m in edges for a in ATTRS],
        [graph.at_va(r, m.va + d) for r in reservations for m in edges for d in (0, PAGE)],
        edges,
        graph.chunks(),
        graph.snapshot(),
        graph.is_empty(),
    )


@settings(max_examples=200, deadline=None)
@given(ops=GRAPH_OPS)
def test_the_lazy_graph_answers_every_read_as_the_eager_one(ops: list[tuple[str, Any]]) -> None:
    eager = MappingGraph(_linear(), check_attributes=False, lazy=False)
    lazy = MappingGraph(_linear(), check_attributes=False)
    assert isinstance(lazy._index, LazyIndex) and isinstance(eager._index, PhysIndex)
    made = 0

    def pick(graph: MappingGraph, n: int) -> int | None:
        ids = sorted({m.res_id for m in graph.all() if m.res_id is not None})
        return ids[n % len(ids)] if ids else None

    for op, arg in ops:
        if op == "add":
            made += 1
            edges = []
            for i, (page, pages, attrs) in enumerate(arg):
                chunk = AddressRange(page // 8 * 8 * PAGE, 8 * PAGE)
                phys = AddressRange(page * PAGE, pages * PAGE)
                va = made * 64 * PAGE + i * 8 * PAGE  # each reservation its own addresses
                edges.append(
                    Mapping(f"space{made % 3}", f"r{made}", phys, va, ATTRS[attrs], made, chunk)
                )
            for graph in (eager, lazy):
                graph.add(made, edges)
        elif op == "ask":
            assert _graph_answers(lazy, arg) == _graph_answers(eager, arg)
            continue
        else:
            res_id = pick(eager, arg)
            if res_id is None:
                continue
            made += 1
            for graph in (eager, lazy):
                _change(graph, op, res_id, arg, made)
        assert lazy.all() == eager.all()
    asked = [(0, 40)] + [(p, 2) for p in range(0, 36, 2)]
    assert _graph_answers(lazy, asked) == _graph_answers(eager, asked)


def _change(graph: MappingGraph, op: str, res_id: int, arg: int, new_id: int) -> None:
    """One of the graph's updates other than ``add`` on reservation ``res_id``
    (``new_id`` for the reservation a split makes)."""
    edges = graph.of_reservation(res_id)
    if op == "remove":
        graph.remove(res_id)
    elif op == "replace":  # a split where the sharing rule starts to differ, or a swap
        old = edges[arg % len(edges)]
        if old.phys.size > PAGE:
            cut = old.phys.start + PAGE
            flipped = old.attrs.with_(shareable=not old.attrs.shareable)
            graph.replace(
                old, [old.part(old.phys.start, cut), old.part(cut, old.phys.end, flipped)]
            )
        else:
            graph.replace(old, old.with_attrs(old.attrs.with_(shareable=True)))
    elif op == "split":
        graph.split_reservation(res_id, edges[0].va + PAGE, new_id, "split")
    else:
        others = [m.res_id for m in graph.all() if m.res_id is not None and m.res_id != res_id]
        if others:
            graph.join_reservations(res_id, others[arg % len(others)], "joined")


def test_an_empty_range_is_judged_by_the_cuts_the_queued_adds_make() -> None:
    """An empty range is clear unless a segment runs through it: a queued add over it
    may or may not run through, depending on where the settled segments end."""
    for queued, settled_end in (((0, 10), 4), ((2, 10), 4), ((4, 10), 6)):
        plain, index = PhysIndex(), LazyIndex()
        for target in (plain, index):
            target.add(0, settled_end, "settled")
        index.settle()
        for target in (plain, index):
            target.add(*queued, "queued")
        for at in range(12):
            assert index.clear_of_spans([at], [at]) == plain.clear_of_spans([at], [at]), at
