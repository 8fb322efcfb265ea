"""BuddyAllocator: kernel page-allocator semantics, largest-first with fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import (
    InvalidArgumentError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
    VcmmError,
)
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.chunk import Chunk
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16M, SZ_64K

RAM = 0x8000_0000


@pytest.fixture
def ram() -> BuddyAllocator:
    return BuddyAllocator(AddressRange(RAM, SZ_16M), page=SZ_4K, max_order=10)


def test_fresh_allocator_holds_max_order_blocks(ram: BuddyAllocator) -> None:
    assert ram.free_blocks_by_order() == {**{o: 0 for o in range(10)}, 10: 4}
    assert ram.free_blocks() == [Chunk(RAM + i * SZ_4M, SZ_4M) for i in range(4)]
    assert ram.free_bytes == ram.total_bytes == SZ_16M


def test_unaligned_range_is_split_into_blocks_aligned_to_their_size() -> None:
    # [RAM + 12K, RAM + 1M + 8K): written out by hand, each block aligned to its size.
    buddy = BuddyAllocator(AddressRange(RAM + 3 * SZ_4K, SZ_1M - SZ_4K), max_order=10)
    assert buddy.free_blocks() == [
        Chunk(RAM + 0x3000, 0x1000),
        Chunk(RAM + 0x4000, 0x4000),
        Chunk(RAM + 0x8000, 0x8000),
        Chunk(RAM + 0x10000, 0x10000),
        Chunk(RAM + 0x20000, 0x20000),
        Chunk(RAM + 0x40000, 0x40000),
        Chunk(RAM + 0x80000, 0x80000),
        Chunk(RAM + 0x100000, 0x2000),
    ]


def test_order_zero_allocation_splits_the_lowest_block(ram: BuddyAllocator) -> None:
    assert ram.alloc_pages(0) == RAM
    # Splitting one 4M block leaves one free buddy at every order below it.
    assert ram.free_blocks_by_order() == {**{o: 1 for o in range(10)}, 10: 3}
    assert ram.alloc_pages(0) == RAM + SZ_4K  # the order-0 buddy is used next
    assert ram.alloc_pages(4) == RAM + SZ_64K


def test_blocks_are_aligned_to_their_size(ram: BuddyAllocator) -> None:
    ram.alloc_pages(0)
    for order in (3, 8, 1, 10, 5):
        assert ram.alloc_pages(order) % (SZ_4K << order) == 0


def test_freeing_everything_merges_back_to_max_order_blocks(ram: BuddyAllocator) -> None:
    initial = ram.snapshot()
    addrs = [ram.alloc_pages(o) for o in (0, 3, 0, 7, 2, 0, 10)]
    for addr in reversed(addrs[::2]):
        ram.free_pages(addr)
    for addr in addrs[1::2]:
        ram.free_pages(addr)
    assert ram.snapshot() == initial


def test_alloc_pages_exact_gives_back_the_tail(ram: BuddyAllocator) -> None:
    initial = ram.snapshot()
    pa = ram.alloc_pages_exact(SZ_2M + SZ_4K)
    assert pa % SZ_4M == 0  # taken from an order-10 block
    assert ram.free_bytes == SZ_16M - SZ_2M - SZ_4K
    assert ram.allocated() == [Chunk(pa, SZ_2M + SZ_4K)]
    # the page right after the buffer is free again
    assert ram.alloc_pages(0) == pa + SZ_2M + SZ_4K
    ram.free_pages(pa + SZ_2M + SZ_4K)
    assert ram.free_pages(pa) == SZ_2M + SZ_4K
    assert ram.snapshot() == initial


def test_largest_first_on_a_fresh_allocator(ram: BuddyAllocator) -> None:
    chunks = ram.alloc_pages_largest_first(SZ_1M + SZ_64K + SZ_4K)
    assert [c.size for c in chunks] == [SZ_1M, SZ_64K, SZ_4K]
    assert all(c.pa % c.size == 0 for c in chunks)


def test_largest_first_honours_max_and_min_order(ram: BuddyAllocator) -> None:
    assert [c.size for c in ram.alloc_pages_largest_first(SZ_4M, max_order=8)] == [SZ_1M] * 4
    # min_order 2: 4K rounds up to one 16K block
    assert [c.size for c in ram.alloc_pages_largest_first(SZ_4K, 10, 2)] == [4 * SZ_4K]
    explicit = ram.alloc_pages_largest_first(SZ_2M + 3 * SZ_4K, orders=(8, 4, 0))
    assert [c.size for c in explicit] == [SZ_1M, SZ_1M, SZ_4K, SZ_4K, SZ_4K]


def test_fragment_alternate_leaves_no_block_above_order_zero(ram: BuddyAllocator) -> None:
    held = ram.fragment("alternate")
    pages = SZ_16M // SZ_4K
    assert len(held) == pages // 2
    assert ram.free_blocks_by_order() == {0: pages // 2, **{o: 0 for o in range(1, 11)}}
    assert all((pa // SZ_4K) % 2 == 0 for pa in held)
    assert all((c.pa // SZ_4K) % 2 == 1 for c in ram.free_blocks())


def test_largest_first_falls_back_to_single_pages_when_fragmented(ram: BuddyAllocator) -> None:
    ram.fragment("alternate")
    chunks = ram.alloc_pages_largest_first(SZ_64K)
    assert [c.size for c in chunks] == [SZ_4K] * 16
    assert len({c.pa for c in chunks}) == 16


def test_largest_first_mixes_orders_on_a_partly_fragmented_allocator() -> None:
    buddy = BuddyAllocator(AddressRange(RAM, SZ_1M), max_order=4)
    held = buddy.fragment("alternate")
    for pa in held[:8]:  # the first 64K becomes whole again
        buddy.free_pages(pa)
    assert buddy.free_blocks_by_order()[4] == 1
    chunks = buddy.alloc_pages_largest_first(SZ_64K + 2 * SZ_4K)
    assert chunks[0] == Chunk(RAM, SZ_64K)
    assert [c.size for c in chunks[1:]] == [SZ_4K, SZ_4K]  # no order-1 block exists


def test_largest_first_failure_gives_everything_back(ram: BuddyAllocator) -> None:
    ram.fragment("alternate")
    before = ram.snapshot()
    with pytest.raises(OutOfMemoryError, match=r"short after 2048x4K"):
        ram.alloc_pages_largest_first(SZ_16M // 2 + SZ_4K)
    assert ram.snapshot() == before


def test_fragment_random_is_reproducible_and_restorable() -> None:
    a = BuddyAllocator(AddressRange(RAM, SZ_4M), max_order=6)
    b = BuddyAllocator(AddressRange(RAM, SZ_4M), max_order=6)
    initial = a.snapshot()
    held = a.fragment("random", seed=3, keep_fraction=0.3)
    assert held == b.fragment("random", seed=3, keep_fraction=0.3)
    assert a.snapshot() == b.snapshot()
    assert 0.2 < len(held) / 1024 < 0.4
    for pa in held:
        a.free_pages(pa)
    assert a.snapshot() == initial


def test_misuse_raises_typed_errors_and_leaves_state(ram: BuddyAllocator) -> None:
    pa = ram.alloc_pages(2)
    ram.free_pages(ram.alloc_pages(0))
    before = ram.snapshot()
    cases = [
        (UnsupportedSizeError, lambda: ram.alloc_pages(11)),
        (UnsupportedSizeError, lambda: ram.alloc_pages(-1)),
        (InvalidArgumentError, lambda: ram.alloc_pages(1.0)),  # type: ignore[arg-type]
        (StateError, lambda: ram.free_pages(pa + SZ_4K)),
        (StateError, lambda: ram.free_pages(RAM + SZ_4M)),
        (InvalidArgumentError, lambda: ram.alloc_pages_largest_first(0)),
        (InvalidArgumentError, lambda: ram.alloc_pages_largest_first(SZ_4K, 2, 5)),
        (UnsupportedSizeError, lambda: ram.alloc_pages_largest_first(SZ_4K, orders=(11,))),
        (InvalidArgumentError, lambda: ram.alloc_pages_largest_first(SZ_4K, orders=())),
        (UnsupportedSizeError, lambda: ram.alloc_pages_exact(SZ_4M + SZ_4K)),
        (InvalidArgumentError, lambda: ram.alloc_pages_exact(-5)),
        (InvalidArgumentError, lambda: ram.fragment("checkerboard")),
        (InvalidArgumentError, lambda: ram.fragment("random", keep_fraction=1.5)),
    ]
    for error, call in cases:
        with pytest.raises(error):
            call()
        assert ram.snapshot() == before
    ram.free_pages(pa)
    with pytest.raises(StateError, match="already freed"):
        ram.free_pages(pa)


def test_exhaustion_is_reported_with_the_free_lists(ram: BuddyAllocator) -> None:
    for _ in range(4):
        ram.alloc_pages(10)
    before = ram.snapshot()
    with pytest.raises(OutOfMemoryError, match="order 0"):
        ram.alloc_pages(0)
    assert ram.snapshot() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"range": AddressRange(RAM, 0)},
        {"range": AddressRange(RAM + 1, SZ_1M)},
        {"range": AddressRange(RAM, SZ_1M), "page": 3000},
        {"range": AddressRange(RAM, SZ_1M), "max_order": -1},
        {"range": AddressRange(RAM, SZ_1M), "max_order": 31},
    ],
)
def test_construction_is_validated(kwargs: dict) -> None:
    with pytest.raises(VcmmError):
        BuddyAllocator(**kwargs)


# -- reference model -------------------------------------------------------------------

PAGES = 96  # not a power of two, and the start is not max-order aligned
START_PAGE = 8
MAX_ORDER = 4


def _aligned_free_block_exists(used: np.ndarray, order: int) -> bool:
    span = 1 << order
    first = -(-START_PAGE // span) * span
    for page in range(first, START_PAGE + PAGES - span + 1, span):
        if not used[page - START_PAGE : page - START_PAGE + span].any():
            return True
    return False


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(0, MAX_ORDER)),
        st.tuples(st.just("free"), st.integers(0, 50)),
        st.tuples(st.just("many"), st.integers(1, 40)),
    ),
    max_size=50,
)


@settings(max_examples=80, deadline=None)
@given(ops)
def test_matches_a_page_set_reference(sequence: list[tuple[str, int]]) -> None:
    """No overlaps, natural alignment, success exactly when an aligned free block exists,
    and freeing everything restores the initial free lists."""
    buddy = BuddyAllocator(
        AddressRange(START_PAGE * SZ_4K, PAGES * SZ_4K), page=SZ_4K, max_order=MAX_ORDER
    )
    initial = buddy.snapshot()
    used = np.zeros(PAGES, dtype=bool)
    live: dict[int, int] = {}  # pa -> pages

    def take(pa: int, pages: int) -> None:
        first = pa // SZ_4K - START_PAGE
        assert first >= 0 and first + pages <= PAGES
        assert not used[first : first + pages].any()
        used[first : first + pages] = True
        live[pa] = pages

    for op, arg in sequence:
        if op == "alloc":
            possible = _aligned_free_block_exists(used, arg)
            try:
                pa = buddy.alloc_pages(arg)
            except OutOfMemoryError:
                assert not possible
                continue
            assert possible
            assert pa % (SZ_4K << arg) == 0
            take(pa, 1 << arg)
        elif op == "many":
            before = buddy.snapshot()
            try:
                chunks = buddy.alloc_pages_largest_first(arg * SZ_4K)
            except OutOfMemoryError:
                assert int((~used).sum()) < arg  # order 0 is always a fallback
                assert buddy.snapshot() == before
                continue
            assert sum(c.size for c in chunks) == arg * SZ_4K
            sizes = [c.size for c in chunks]
            assert sizes == sorted(sizes, reverse=True)
            for chunk in chunks:
                assert chunk.pa % chunk.size == 0
                take(chunk.pa, chunk.size // SZ_4K)
        elif live:
            pa = sorted(live)[arg % len(live)]
            pages = live.pop(pa)
            assert buddy.free_pages(pa) == pages * SZ_4K
            used[pa // SZ_4K - START_PAGE : pa // SZ_4K - START_PAGE + pages] = False
        assert buddy.free_bytes == int((~used).sum()) * SZ_4K
        free_pages = sorted(
            p for c in buddy.free_blocks() for p in range(c.pa // SZ_4K, c.end // SZ_4K)
        )
        assert free_pages == [START_PAGE + i for i in np.flatnonzero(~used)]
    for pa in list(live):
        buddy.free_pages(pa)
    assert buddy.snapshot() == initial


def test_fragment_of_a_large_allocator_is_vectorised() -> None:
    big = BuddyAllocator(AddressRange(RAM, 1 << 30), max_order=10)
    held = big.fragment("alternate")
    assert len(held) == (1 << 30) // SZ_4K // 2
    assert big.free_blocks_by_order()[0] == len(held)
    assert big.largest_free_order() == 0


def test_a_1tib_range_keeps_its_top_order_as_runs_not_one_entry_per_block() -> None:
    """The boot state of a huge target is one run, whatever the RAM size; the head and
    tail that are not whole top blocks still split into maximal aligned blocks."""
    tib = 1 << 40
    start, end = tib + 3 * SZ_4K, 2 * tib - 2 * SZ_4K
    buddy = BuddyAllocator(AddressRange.from_bounds(start, end), max_order=10)
    body = (tib + SZ_4M, 2 * tib - SZ_4M)
    initial = buddy.snapshot()
    assert initial.top == (body,)
    # Head: pages 3..1023 below the first 4M boundary = orders 0, 2, 3, ..., 9 (page 3,
    # then 4-7, 8-15, ...); tail: 1022 pages above the last = orders 9, 8, ..., 1.
    assert buddy.free_blocks_by_order() == {
        0: 1,
        1: 1,
        **{o: 2 for o in range(2, 10)},
        10: (body[1] - body[0]) // SZ_4M,
    }
    assert buddy.free_bytes == end - start
    first = buddy.alloc_pages(10)
    page = buddy.alloc_pages(0)
    second = buddy.alloc_pages(10)
    assert (first, page, second) == (body[0], start, body[0] + SZ_4M)
    assert buddy.snapshot().top == ((body[0] + 2 * SZ_4M, body[1]),)
    buddy.free_pages(first)
    assert buddy.snapshot().top == ((body[0], body[0] + SZ_4M), (body[0] + 2 * SZ_4M, body[1]))
    buddy.free_pages(second)  # joins the two runs again
    buddy.free_pages(page)
    assert buddy.snapshot() == initial
    chunks = buddy.alloc_pages_largest_first(SZ_16M * 4)
    assert chunks == [Chunk(body[0] + i * SZ_4M, SZ_4M) for i in range(16)]
