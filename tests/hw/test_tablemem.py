"""TableMemory: aligned, zeroed blocks carved from a physical window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import InvalidArgumentError, OutOfMemoryError, StateError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1K, SZ_1M, SZ_4K, SZ_8K, SZ_16K, SZ_64K

RAM = 0x8000_0000


def make(window_start: int = RAM, window_size: int = SZ_64K) -> tuple[PhysicalMemory, TableMemory]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    return mem, TableMemory(mem, AddressRange(window_start, window_size))


def state(mem: PhysicalMemory, tm: TableMemory) -> tuple[object, str]:
    return tm.snapshot(), mem.digest()


def test_alloc_is_aligned_zeroed_and_inside_the_window() -> None:
    mem, tm = make(RAM + SZ_4K, SZ_64K)  # window start only 4K aligned
    mem.fill(RAM, SZ_1M, 0xAA)  # junk everywhere, so zeroing is observable
    for size in (SZ_1K, SZ_4K, SZ_8K, SZ_16K):
        pa = tm.alloc(size)
        assert pa % size == 0, f"{size} block at {pa:#x} not naturally aligned"
        assert AddressRange(pa, size) in tm.window
        assert mem.read(pa, size) == bytes(size)
    # 1K slab page at +4K, 4K at +8K, 8K at the first 8K-aligned free run (+16K), so
    # the 16K block cannot use +16K and takes the next 16K-aligned address, +32K.
    assert tm.blocks() == [
        (RAM + SZ_4K, SZ_1K),
        (RAM + SZ_8K, SZ_4K),
        (RAM + SZ_16K, SZ_8K),
        (RAM + 2 * SZ_16K, SZ_16K),
    ]


def test_four_1k_tables_share_one_page_then_a_second_page_is_taken() -> None:
    _, tm = make()
    pas = [tm.alloc(SZ_1K) for _ in range(4)]
    assert pas == [RAM, RAM + SZ_1K, RAM + 2 * SZ_1K, RAM + 3 * SZ_1K]
    assert tm.committed_bytes == SZ_4K
    assert tm.used_bytes == 4 * SZ_1K
    fifth = tm.alloc(SZ_1K)
    assert fifth == RAM + SZ_4K
    assert tm.committed_bytes == 2 * SZ_4K


def test_freed_slot_is_reused_lowest_first_and_empty_page_returns() -> None:
    _, tm = make()
    pas = [tm.alloc(SZ_1K) for _ in range(5)]
    tm.free(pas[1], SZ_1K)
    assert tm.alloc(SZ_1K) == pas[1]
    tm.free(pas[4], SZ_1K)  # the only block of the second page
    assert tm.committed_bytes == SZ_4K
    assert tm.alloc(SZ_4K) == RAM + SZ_4K  # page went back to the bitmap


def test_free_zeroes_the_block() -> None:
    mem, tm = make()
    pa = tm.alloc(SZ_4K)
    mem.fill(pa, SZ_4K, 0x5A)
    tm.free(pa, SZ_4K)
    assert mem.read(pa, SZ_4K) == bytes(SZ_4K)


@pytest.mark.parametrize("size", [64, SZ_1K, SZ_4K, SZ_16K])
def test_alloc_then_free_restores_state_exactly(size: int) -> None:
    mem, tm = make()
    keep = tm.alloc(SZ_1K)  # some prior state
    before = state(mem, tm)
    pa = tm.alloc(size)
    assert state(mem, tm) != before or size == SZ_1K  # allocation changed the allocator
    tm.free(pa, size)
    assert state(mem, tm) == before
    tm.free(keep, SZ_1K)
    assert tm.used_bytes == 0 and tm.committed_bytes == 0


def test_used_bytes_counts_live_blocks() -> None:
    _, tm = make()
    a = tm.alloc(SZ_1K)
    b = tm.alloc(SZ_16K)
    tm.alloc(SZ_4K)
    assert tm.used_bytes == SZ_1K + SZ_16K + SZ_4K
    tm.free(b, SZ_16K)
    tm.free(a, SZ_1K)
    assert tm.used_bytes == SZ_4K


def test_out_of_memory_names_size_and_window_and_changes_nothing() -> None:
    mem, tm = make(RAM, SZ_16K)
    for _ in range(4):
        tm.alloc(SZ_4K)
    before = state(mem, tm)
    with pytest.raises(OutOfMemoryError) as info:
        tm.alloc(SZ_4K)
    assert "4K" in str(info.value) and f"{RAM:#x}" in str(info.value)
    with pytest.raises(OutOfMemoryError):
        tm.alloc(SZ_1K)  # needs a fresh page for its slab
    assert state(mem, tm) == before


def test_block_larger_than_the_window_is_out_of_memory() -> None:
    mem, tm = make(RAM, SZ_64K)
    before = state(mem, tm)
    with pytest.raises(OutOfMemoryError, match="1M"):
        tm.alloc(SZ_1M)
    assert state(mem, tm) == before


def test_out_of_memory_when_only_misaligned_room_is_left() -> None:
    mem, tm = make(RAM, 2 * SZ_16K)
    tm.alloc(SZ_4K)  # page 0 of the first 16K slot
    tm.alloc(SZ_16K)  # the second 16K slot
    before = state(mem, tm)
    assert tm.free_bytes == 3 * SZ_4K  # room, but no 16K-aligned 16K run
    with pytest.raises(OutOfMemoryError):
        tm.alloc(SZ_16K)
    assert state(mem, tm) == before
    assert tm.alloc(SZ_8K) == RAM + SZ_8K  # pages 2-3 are an aligned 8K run


@pytest.mark.parametrize(
    ("offset", "size", "why"),
    [
        (0, SZ_1K, "allocated with size"),  # right start, wrong size
        (0x10, SZ_4K, "no live table block"),  # inside a block
        (SZ_4K, SZ_4K, "no live table block"),  # never allocated
    ],
)
def test_bad_free_is_a_state_error_without_change(offset: int, size: int, why: str) -> None:
    mem, tm = make()
    pa = tm.alloc(SZ_4K)
    before = state(mem, tm)
    with pytest.raises(StateError, match=why):
        tm.free(pa + offset, size)
    assert state(mem, tm) == before


def test_double_free_is_a_state_error() -> None:
    mem, tm = make()
    pa = tm.alloc(SZ_1K)
    tm.free(pa, SZ_1K)
    before = state(mem, tm)
    with pytest.raises(StateError, match="double free"):
        tm.free(pa, SZ_1K)
    assert state(mem, tm) == before


@pytest.mark.parametrize(
    ("size", "align"),
    [(3000, None), (32, None), (0, None), (SZ_1K, 3), (True, None), (SZ_1K, 0)],
)
def test_bad_alloc_arguments(size: int, align: int | None) -> None:
    mem, tm = make()
    before = state(mem, tm)
    with pytest.raises(InvalidArgumentError):
        tm.alloc(size, align)
    assert state(mem, tm) == before


def test_alignment_larger_than_size() -> None:
    _, tm = make()
    tm.alloc(SZ_1K)
    pa = tm.alloc(SZ_1K, SZ_16K)
    assert pa % SZ_16K == 0 and pa != RAM


@pytest.mark.parametrize(
    "window",
    [
        AddressRange(RAM + 0x800, SZ_4K),  # misaligned
        AddressRange(RAM, 0),  # empty
        AddressRange(RAM + SZ_1M - SZ_4K, 2 * SZ_4K),  # runs off the RAM bank
        AddressRange(0x1000, SZ_4K),  # a hole
    ],
)
def test_bad_window(window: AddressRange) -> None:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    with pytest.raises(InvalidArgumentError):
        TableMemory(mem, window)


def test_window_must_be_an_address_range() -> None:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    with pytest.raises(InvalidArgumentError):
        TableMemory(mem, (RAM, SZ_4K))  # type: ignore[arg-type]


_SIZES = st.sampled_from([64, SZ_1K, SZ_1K, SZ_4K, SZ_4K, SZ_8K, SZ_16K])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), _SIZES, st.integers(0, 1000)), max_size=40))
def test_random_alloc_free_keeps_blocks_disjoint_and_restores_empty(
    ops: list[tuple[bool, int, int]],
) -> None:
    mem, tm = make(RAM + SZ_4K, SZ_64K)
    empty = state(mem, tm)
    live: dict[int, int] = {}
    for is_alloc, size, pick in ops:
        if is_alloc or not live:
            try:
                pa = tm.alloc(size)
            except OutOfMemoryError:
                continue
            assert pa % size == 0
            assert AddressRange(pa, size) in tm.window
            for other, osize in live.items():
                assert not AddressRange(pa, size).overlaps(AddressRange(other, osize))
            live[pa] = size
        else:
            pa = sorted(live)[pick % len(live)]
            tm.free(pa, live.pop(pa))
        assert tm.blocks() == sorted(live.items())
    for pa, size in list(live.items()):
        tm.free(pa, size)
    assert state(mem, tm) == empty


def _first_fit(used: set[int], count: int, align_pages: int, first_aligned: int, total: int) -> int:
    """The reference placement: the lowest aligned run of ``count`` free pages."""
    for start in range(first_aligned, total - count + 1, align_pages):
        if not any(p in used for p in range(start, start + count)):
            return start
    return -1


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.sampled_from([SZ_4K, SZ_4K, SZ_4K, SZ_8K, SZ_16K]),
            st.integers(0, 999),
        ),
        max_size=120,
    )
)
def test_whole_page_blocks_go_to_the_lowest_free_aligned_run(
    ops: list[tuple[bool, int, int]],
) -> None:
    # A 1 MiB window starting one page past a 16K boundary, so alignment shifts the runs,
    # and long enough that the search for the next free page crosses its first slices.
    start = RAM + SZ_4K
    _, tm = make(start, SZ_1M - SZ_4K)
    total = (SZ_1M - SZ_4K) // SZ_4K
    used: set[int] = set()
    live: dict[int, int] = {}
    for is_alloc, size, pick in ops:
        if is_alloc or not live:
            count = size // SZ_4K
            first_aligned = ((-start) % size) // SZ_4K
            want = _first_fit(used, count, count, first_aligned, total)
            if want < 0:
                with pytest.raises(OutOfMemoryError):
                    tm.alloc(size)
                continue
            pa = tm.alloc(size)
            assert pa == start + want * SZ_4K
            used.update(range(want, want + count))
            live[pa] = size
        else:
            pa = sorted(live)[pick % len(live)]
            size = live.pop(pa)
            tm.free(pa, size)
            index = (pa - start) // SZ_4K
            used.difference_update(range(index, index + size // SZ_4K))
    assert tm.committed_bytes == len(used) * SZ_4K


def test_a_full_window_refuses_a_page_and_a_freed_page_far_up_is_found() -> None:
    _, tm = make(RAM, SZ_1M)
    pages = [tm.alloc(SZ_4K) for _ in range(SZ_1M // SZ_4K)]
    assert pages == [RAM + i * SZ_4K for i in range(len(pages))]
    before = tm.snapshot()
    with pytest.raises(OutOfMemoryError):
        tm.alloc(SZ_4K)
    assert tm.snapshot() == before
    tm.free(pages[-3], SZ_4K)  # past the first slices of the next-free search
    assert tm.alloc(SZ_4K) == pages[-3]
