"""The physical index a backing enters its pieces into, against a per-byte model.

The index keeps segments (maximal intervals with one non-empty set of keys) with the
keys of each as a tuple, and enters a fresh backing's pieces in bulk.  The oracle
knows nothing of segments: it records, for every byte of a small space, which keys
cover it, and derives the canonical segments from that.  Random sequences of single
and bulk adds, discards and renames must leave the index with exactly those
segments, and its queries must answer as the model does.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vcmm.core.physindex import PhysIndex

SPACE = 48
#: ``(start, length)`` over a small space, so ranges often touch or overlap.
SPAN = st.tuples(st.integers(0, SPACE - 8), st.integers(1, 8))
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), SPAN),
        st.tuples(st.just("add_many"), st.lists(SPAN, max_size=6)),
        st.tuples(st.just("discard"), st.integers(0, 50)),
        st.tuples(st.just("discard_many"), st.lists(st.integers(0, 50), max_size=4)),
        st.tuples(st.just("rename"), st.integers(0, 50)),
    ),
    max_size=25,
)


def _model_segments(cover: list[set[Hashable]]) -> list[tuple[int, int, frozenset[Hashable]]]:
    """Maximal runs of bytes with one non-empty key set."""
    out: list[tuple[int, int, frozenset[Hashable]]] = []
    for byte, keys in enumerate(cover):
        here = frozenset(keys)
        if out and out[-1][1] == byte and out[-1][2] == here:
            out[-1] = (out[-1][0], byte + 1, here)
        elif here:
            out.append((byte, byte + 1, here))
    return out


@settings(max_examples=200, deadline=None)
@given(ops=OPS)
def test_the_index_has_the_segments_of_the_per_byte_model(ops: list[tuple[str, object]]) -> None:
    index = PhysIndex()
    cover: list[set[Hashable]] = [set() for _ in range(SPACE)]
    live: dict[Hashable, tuple[int, int]] = {}  # key -> its range
    made = 0

    def new_key() -> Hashable:
        nonlocal made
        made += 1
        return ("k", made)

    def pick(n: object) -> Hashable | None:
        keys = sorted(live, key=str)
        return keys[int(n) % len(keys)] if keys else None  # type: ignore[call-overload]

    for op, arg in ops:
        if op in ("add", "add_many"):
            spans = [arg] if op == "add" else arg
            items = [(s, s + n, new_key()) for s, n in spans]  # type: ignore[union-attr]
            if op == "add":
                index.add(*items[0])
            else:
                index.add_many(items)
            for s, e, key in items:
                live[key] = (s, e)
                for byte in range(s, e):
                    cover[byte].add(key)
        elif op in ("discard", "discard_many"):
            picks = [arg] if op == "discard" else arg
            keys = list(dict.fromkeys(k for k in map(pick, picks) if k is not None))  # type: ignore[arg-type]
            items = [(*live.pop(key), key) for key in keys]
            if op == "discard":
                for item in items:
                    index.discard(*item)
            else:
                index.discard_many(items)
            for s, e, key in items:
                for byte in range(s, e):
                    cover[byte].discard(key)
        else:
            old = pick(arg)
            if old is None:
                continue
            new = new_key()
            s, e = live.pop(old)
            live[new] = (s, e)
            index.rename(s, e, old, new)
            for byte in range(s, e):
                cover[byte].discard(old)
                cover[byte].add(new)
        assert index.segments() == _model_segments(cover)
    for s in range(0, SPACE, 5):
        e = min(s + 7, SPACE)
        assert index.keys_over(s, e) == set().union(*cover[s:e])
        pieces = index.cover(s, e)
        assert [p[0] for p in pieces] == sorted(p[0] for p in pieces)
        for start, end, keys in pieces:
            assert all(cover[b] == set(keys) for b in range(start, end))
            assert len(set(keys)) == len(keys)  # each key once
    verdicts = []
    for key, (s, e) in live.items():
        alone = all(cover[b] == {key} for b in range(s, e))
        assert index.sole([(s, e, key)]) is alone
        verdicts.append(alone)
    items = [(s, e, key) for key, (s, e) in live.items()]
    assert index.sole(items) is all(verdicts)  # many at once: all of them alone
    starts, ends, keys = ([item[i] for item in items] for i in range(3))
    assert index.sole_spans(starts, tuple(ends), keys) is all(verdicts)  # type: ignore[arg-type]


def test_a_bulk_add_of_separate_pages_makes_one_segment_each() -> None:
    """Scattered pages (neighbours swapped) touching nothing: one segment per page,
    each with its own key alone, in address order."""
    index = PhysIndex()
    index.add(0, 4096, "linear")
    pages = [(4096 * (2 + (i ^ 1)), 4096 * (3 + (i ^ 1)), ("res", i)) for i in range(64)]
    index.add_many(pages)
    alone = sorted((s, e, frozenset({k})) for s, e, k in pages)
    assert index.segments() == [(0, 4096, frozenset({"linear"})), *alone]
    assert index.sole(pages)
    assert not index.clear_of([(8192, 8192 + 1)])
    assert index.clear_of([(4096, 8192), (2**40, 2**40 + 4096)])


def test_private_edges_equal_the_mappings_the_constructor_makes() -> None:
    """The bulk edge builder stores every field: its edges equal (and hash as) those of
    ``Mapping(...)``, and stay frozen."""
    import dataclasses

    import pytest

    from vcmm.attrs import PageAttrs
    from vcmm.core.graph import Mapping, private_edges
    from vcmm.ranges import AddressRange

    attrs = PageAttrs()
    pieces = [
        (0x1000 * i, AddressRange(0x9000 - 0x1000 * i, 0x1000), AddressRange(0, 1 << 16))
        for i in range(5)
    ]
    built = private_edges("dev", "res", attrs, 7, pieces)
    expected = [Mapping("dev", "res", phys, va, attrs, 7, chunk) for va, phys, chunk in pieces]
    assert built == expected
    assert [hash(m) for m in built] == [hash(m) for m in expected]
    assert [dataclasses.astuple(m) for m in built] == [dataclasses.astuple(m) for m in expected]
    with pytest.raises(dataclasses.FrozenInstanceError):
        built[0].va = 1  # type: ignore[misc]


_SPAN = st.tuples(st.integers(0, 64), st.integers(1, 16)).map(
    lambda t: (t[0] * 256, t[0] * 256 + t[1] * 64)
)


@settings(max_examples=150, deadline=None)
@given(
    indexed=st.lists(_SPAN, max_size=12),
    asked=st.lists(_SPAN, min_size=1, max_size=8),
)
@example(indexed=[(256, 512)], asked=[(0, 256)])  # touching, before a segment
@example(indexed=[(0, 256)], asked=[(256, 512)])  # touching, after one
@example(indexed=[], asked=[(0, 256), (256, 512)])  # touching each other
@example(indexed=[(256, 512)], asked=[(0, 320)])  # overlapping a segment's head
def test_a_few_ranges_are_judged_clear_as_the_bulk_search_judges_them(
    indexed: list[tuple[int, int]], asked: list[tuple[int, int]]
) -> None:
    # Lists of up to eight ranges take the bisect path, arrays the numpy one; both must
    # agree with a per-byte answer (no byte claimed twice, none already indexed).
    index = PhysIndex()
    for n, (start, end) in enumerate(indexed):
        if index.clear_of([(start, end)]):
            index.add(start, end, n)
    taken = {b for seg_start, seg_end, _ in index.segments() for b in range(seg_start, seg_end)}
    claimed = [b for start, end in asked for b in range(start, end)]
    expected = len(claimed) == len(set(claimed)) and not taken.intersection(claimed)
    starts, ends = [s for s, _ in asked], [e for _, e in asked]
    assert index.clear_of_spans(starts, ends) is expected
    assert index.clear_of_spans(np.array(starts), np.array(ends)) is expected
