"""The physical-range index's bulk calls against its one-by-one calls.

``add_many`` and ``discard_many`` take shortcuts when the ranges touch nothing else
(a backing or unbacking of memory no other edge maps); whichever way they go, the
segments must be exactly those the one-by-one ``add`` and ``discard`` leave.  The
oracle for ``sole`` is a plain per-byte count of the keys covering each range.
"""

from __future__ import annotations

from collections.abc import Hashable

from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.core.physindex import PhysIndex

#: ``(start, length)`` in units of 1 over a small space, so ranges often touch or overlap.
RANGES = st.lists(st.tuples(st.integers(0, 40), st.integers(1, 6)), max_size=12)


def _items(ranges: list[tuple[int, int]], tag: str) -> list[tuple[int, int, Hashable]]:
    return [(s, s + n, (tag, i)) for i, (s, n) in enumerate(ranges)]


def _one_by_one(
    base: list[tuple[int, int, Hashable]], new: list[tuple[int, int, Hashable]]
) -> PhysIndex:
    index = PhysIndex()
    for item in base + new:
        index.add(*item)
    return index


@settings(max_examples=150, deadline=None)
@given(base=RANGES, new=RANGES)
def test_bulk_add_and_discard_leave_the_segments_of_one_by_one_calls(
    base: list[tuple[int, int]], new: list[tuple[int, int]]
) -> None:
    old_items, new_items = _items(base, "old"), _items(new, "new")
    bulk = PhysIndex()
    for item in old_items:
        bulk.add(*item)
    bulk.add_many(new_items)
    reference = _one_by_one(old_items, new_items)
    assert bulk.segments() == reference.segments()

    bulk.discard_many(new_items)
    for item in new_items:
        reference.discard(*item)
    assert bulk.segments() == reference.segments() == _one_by_one(old_items, []).segments()


@settings(max_examples=150, deadline=None)
@given(base=RANGES, new=RANGES)
def test_sole_says_whether_each_range_is_covered_by_its_key_alone(
    base: list[tuple[int, int]], new: list[tuple[int, int]]
) -> None:
    items = _items(base, "old") + _items(new, "new")
    index = _one_by_one(items, [])
    # per byte: which keys cover it (the oracle knows nothing of segments)
    cover: dict[int, set[Hashable]] = {}
    for s, e, key in items:
        for byte in range(s, e):
            cover.setdefault(byte, set()).add(key)
    for s, e, key in items:
        alone = all(cover[b] == {key} for b in range(s, e))
        # each key covers one range, so a key alone over it makes one whole segment
        assert index.sole([(s, e, key)]) is alone, (s, e, key)


def test_discard_many_of_keys_alone_drops_exactly_their_segments() -> None:
    index = PhysIndex()
    index.add(0, 4, "a")
    index.add(4, 8, "b")  # touches a: still two segments (different keys)
    index.add(10, 12, "c")
    assert index.sole([(4, 8, "b"), (10, 12, "c")])
    index.discard_many([(4, 8, "b"), (10, 12, "c")])
    assert index.segments() == [(0, 4, frozenset({"a"}))]


@settings(max_examples=150, deadline=None)
@given(base=RANGES, queries=st.lists(st.tuples(st.integers(0, 48), st.integers(0, 8))))
def test_keys_over_ranges_is_the_union_of_keys_over_each(
    base: list[tuple[int, int]], queries: list[tuple[int, int]]
) -> None:
    """The oracle is a per-byte scan of the items (empty queries find nothing)."""
    items = _items(base, "old")
    index = _one_by_one(items, [])
    spans = [(s, s + n) for s, n in queries]
    want = {
        key for s, e in spans for lo, hi, key in items for byte in range(s, e) if lo <= byte < hi
    }
    assert index.keys_over_ranges([s for s, _ in spans], [e for _, e in spans]) == want
    union: set[Hashable] = set()
    for s, e in spans:
        union |= index.keys_over(s, e)
    assert union == want
