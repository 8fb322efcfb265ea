"""``AddressRange`` and the range-coalescing functions beside it (``vcmm.ranges``)."""

from __future__ import annotations

import dataclasses
import pickle
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange, coalesce, join_adjacent, join_runs

runs_strategy = st.lists(
    st.tuples(st.integers(0, 64), st.integers(1, 16)).map(lambda t: (t[0] * 16, t[1] * 16)),
    max_size=12,
)


def test_join_runs_keeps_order_and_joins_only_continuations() -> None:
    runs = [(0x3000, 0x1000), (0x4000, 0x2000), (0x1000, 0x1000), (0x2000, 0x1000), (0x2000, 8)]
    # 0x1000 is not after 0x4000+0x2000 (no sort); 0x2000+8 overlaps, not continues
    assert join_runs(runs) == [(0x3000, 0x3000), (0x1000, 0x2000), (0x2000, 8)]
    assert join_runs([]) == []


def test_join_adjacent_is_join_runs_on_address_ranges() -> None:
    pieces = [AddressRange(0, 0x1000), AddressRange(0x1000, 0x1000), AddressRange(0x8000, 4)]
    assert join_adjacent(pieces) == [AddressRange(0, 0x2000), AddressRange(0x8000, 4)]


@given(runs_strategy)
def test_join_runs_matches_a_split_at_gaps(runs: list[tuple[int, int]]) -> None:
    """Reference: cut the sequence wherever a run does not start at the previous end,
    then each group spans from its first start over the sum of its sizes."""
    groups: list[list[tuple[int, int]]] = []
    for i, run in enumerate(runs):
        if i == 0 or sum(runs[i - 1]) != run[0]:
            groups.append([])
        groups[-1].append(run)
    expected = [(g[0][0], sum(n for _, n in g)) for g in groups]
    assert join_runs(runs) == expected

    # the bytes covered, in order, are the same
    def spread(rs: list[tuple[int, int]]) -> list[int]:
        return [a for s, n in rs for a in range(s, s + n)]

    assert spread(join_runs(runs)) == spread(runs)


@given(runs_strategy)
def test_coalesce_is_the_sorted_union(runs: list[tuple[int, int]]) -> None:
    covered = {a for s, n in runs for a in range(s, s + n)}
    merged = coalesce(runs)
    assert {a for s, n in merged for a in range(s, s + n)} == covered
    assert all(a[0] + a[1] < b[0] for a, b in pairwise(merged))


@pytest.mark.parametrize(
    ("start", "size", "rule"),
    [
        (1.0, 4096, "integer"),
        (0, "4096", "integer"),
        (np.int64(0), 4096, "integer"),
        (None, 0, "integer"),
        (-1, 4096, ">= 0"),
        (0, -4096, ">= 0"),
    ],
)
def test_address_range_refuses_what_is_not_a_byte_range(
    start: object, size: object, rule: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=rule):
        AddressRange(start, size)  # type: ignore[arg-type]


def test_address_range_is_a_frozen_ordered_value() -> None:
    r = AddressRange(0x1000, 0x2000)
    assert (r.start, r.size, r.end) == (0x1000, 0x2000, 0x3000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.start = 0  # type: ignore[misc]
    assert r == AddressRange(start=0x1000, size=0x2000) and hash(r) == hash(
        AddressRange(0x1000, 0x2000)
    )
    assert sorted([AddressRange(2, 1), AddressRange(1, 5), AddressRange(1, 2)]) == [
        AddressRange(1, 2),
        AddressRange(1, 5),
        AddressRange(2, 1),
    ]
    assert dataclasses.replace(r, size=0x10) == AddressRange(0x1000, 0x10)
    assert pickle.loads(pickle.dumps(r)) == r
    assert repr(r) == "AddressRange(start=4096, size=8192)"
    with pytest.raises(InvalidArgumentError, match=">= 0"):
        dataclasses.replace(r, start=-1)
