"""BlockRuns: a set of free blocks stored as canonical runs, checked against a set."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import InvalidArgumentError, StateError
from vcmm.mm.blockruns import BlockRuns

BLOCK = 0x1000


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(0, 63), max_size=40),
    st.lists(st.one_of(st.just(-1), st.integers(0, 63)), max_size=40),
)
def test_matches_a_set_and_stays_canonical(initial: set[int], ops: list[int]) -> None:
    runs = BlockRuns.from_blocks(BLOCK, (i * BLOCK for i in initial))
    model = set(initial)
    for op in ops:
        if op < 0:
            if not model:
                continue
            assert runs.pop_lowest() == min(model) * BLOCK
            model.remove(min(model))
        elif op in model:
            with pytest.raises(StateError, match=hex(op * BLOCK)):
                runs.add(op * BLOCK)
        else:
            runs.add(op * BLOCK)
            model.add(op)
        assert list(runs.blocks()) == [i * BLOCK for i in sorted(model)]
        assert len(runs) == len(model) and bool(runs) == bool(model)
        pairs = runs.runs()
        # Canonical: runs are disjoint, ordered and never touch (they would be one).
        assert all(a[1] < b[0] for a, b in itertools.pairwise(pairs))
        assert pairs == BlockRuns.from_blocks(BLOCK, (i * BLOCK for i in model)).runs()


def test_add_run_refuses_unaligned_or_out_of_order_runs() -> None:
    runs = BlockRuns(BLOCK)
    runs.add_run(4 * BLOCK, 8 * BLOCK)
    runs.add_run(8 * BLOCK, 9 * BLOCK)  # touching: merged
    assert runs.runs() == ((4 * BLOCK, 9 * BLOCK),)
    with pytest.raises(InvalidArgumentError, match="does not lie above"):
        runs.add_run(0, BLOCK)
    with pytest.raises(InvalidArgumentError, match="whole blocks"):
        runs.add_run(10 * BLOCK + 1, 11 * BLOCK)
    with pytest.raises(InvalidArgumentError, match="positive"):
        BlockRuns(0)
    assert runs.runs() == ((4 * BLOCK, 9 * BLOCK),) and len(runs) == 5
