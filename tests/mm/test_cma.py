"""The CMA area and the system RAM that borrows from it, on their own (the core's
migration is tested with a booted board in tests/platform/test_cma_lending.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm import SZ_1M, SZ_4K
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, StateError
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.chunk import Chunk
from vcmm.mm.cma import BorrowingSystemRam, CmaArea
from vcmm.ranges import AddressRange

AREA = AddressRange(0x1000_0000, 16 * SZ_1M)


def test_loans_come_from_the_top_and_go_back() -> None:
    area = CmaArea("cma", AREA)
    first, second = area.lend(SZ_1M), area.lend(3 * SZ_4K)
    assert first == Chunk(AREA.end - SZ_1M, SZ_1M)
    assert second == Chunk(AREA.end - SZ_1M - 3 * SZ_4K, 3 * SZ_4K)
    assert area.lent_bytes == SZ_1M + 3 * SZ_4K
    # a loan is not an allocation of the area: the area's own free refuses it
    with pytest.raises(StateError):
        area.free([first])
    area.repay(first)
    area.repay(second)
    assert area.free_bytes == AREA.size and area.loans == ()
    with pytest.raises(StateError, match="was not lent"):
        area.repay(first)


def test_bad_arguments_are_refused_and_change_nothing() -> None:
    area = CmaArea("cma", AREA)
    loan = area.lend(SZ_4K)
    before = area.snapshot()
    with pytest.raises(InvalidArgumentError, match="size"):
        area.lend(0)
    with pytest.raises(InvalidArgumentError, match="not a power of two"):
        area.reclaim_window(SZ_4K, 3 * SZ_4K, lambda c: True)
    with pytest.raises(InvalidArgumentError, match="loans of CMA area 'cma' inside it"):
        area.take_window(AddressRange(AREA.start, SZ_4K), [loan])  # loan is at the top
    with pytest.raises(InvalidArgumentError, match="lenders"):
        BorrowingSystemRam(BuddyAllocator(AddressRange(0, SZ_1M)), [object()])  # type: ignore[list-item]
    assert area.snapshot() == before


def test_the_system_borrows_only_movable_requests_when_its_own_ram_is_gone() -> None:
    area = CmaArea("cma", AREA)
    ram = BorrowingSystemRam(BuddyAllocator(AddressRange(0, 4 * SZ_1M)), [area], name="ram")
    own = ram.allocate(4 * SZ_1M)
    assert all(c.range in AddressRange(0, 4 * SZ_1M) for c in own)
    with pytest.raises(OutOfMemoryError):
        ram.allocate(SZ_4K, contiguous=True)
    with pytest.raises(OutOfMemoryError):
        ram.allocate(SZ_4K, block_sizes=(SZ_4K,))
    (loan,) = ram.allocate(SZ_1M)
    assert area.is_loan(loan) and ram.borrowed == (loan,)
    ram.free([loan])
    assert area.lent_bytes == 0


def _reference_window(
    free: list[bool], size: int, align: int, movable: set[int], lent: set[int]
) -> int | None:
    """The lowest aligned page index where ``size`` pages are free or movable loans,
    page by page."""
    for start in range(0, len(free) - size + 1, align):
        if all(free[p] or (p in lent and p in movable) for p in range(start, start + size)):
            return start
    return None


@settings(max_examples=40, deadline=None)
@given(
    loans=st.lists(st.integers(1, 64), min_size=1, max_size=8),
    size=st.integers(1, 256),
    align_log=st.integers(0, 4),
    pinned=st.sets(st.integers(0, 7)),
)
def test_reclaim_window_matches_a_page_by_page_search(
    loans: list[int], size: int, align_log: int, pinned: set[int]
) -> None:
    area = CmaArea("cma", AddressRange(0, 256 * SZ_4K))
    lent: list[Chunk] = []
    for pages in loans:
        try:
            lent.append(area.lend(pages * SZ_4K))
        except OutOfMemoryError:
            break
    movable_chunks = {c for i, c in enumerate(lent) if i not in pinned}
    found = area.reclaim_window(size * SZ_4K, SZ_4K << align_log, lambda c: c in movable_chunks)
    free = [True] * 256
    lent_pages: set[int] = set()
    movable_pages: set[int] = set()
    for c in lent:
        pages = range(c.pa // SZ_4K, c.end // SZ_4K)
        lent_pages.update(pages)
        if c in movable_chunks:
            movable_pages.update(pages)
        for p in pages:
            free[p] = False
    expected = _reference_window(free, size, 1 << align_log, movable_pages, lent_pages)
    if expected is None:
        assert found is None
        return
    assert found is not None
    window, inside = found
    assert window == AddressRange(expected * SZ_4K, size * SZ_4K)
    assert set(inside) == {c for c in movable_chunks if c.range.overlaps(window)}
