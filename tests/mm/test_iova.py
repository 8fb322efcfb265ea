"""IovaDomain against Linux iova.c / dma-iommu semantics (seed 002) and a reference model."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import (
    InvalidArgumentError,
    OutOfAddressSpaceError,
    StateError,
    VcmmError,
)
from vcmm.mm.iova import IovaDomain
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4G, SZ_4K, SZ_16K, SZ_64K

MASK32 = 0xFFFF_FFFF


def test_first_allocation_lands_just_under_the_dma_mask() -> None:
    iovad = IovaDomain(SZ_4K)
    assert iovad.alloc(SZ_4K, MASK32) == 0xFFFF_F000


def test_size_alignment_rounds_to_a_power_of_two_of_granules() -> None:
    iovad = IovaDomain(SZ_4K)
    iovad.alloc(SZ_4K, MASK32)
    addr = iovad.alloc(3 * SZ_4K, MASK32)  # 12K: aligned to 16K, ends at or below the mask
    assert addr % SZ_16K == 0
    assert addr + 3 * SZ_4K - 1 <= MASK32
    assert addr == 0xFFFF_C000  # (0xFFFFF - 3) & ~3 page frames, written out
    assert iovad.find(addr) == AddressRange(0xFFFF_C000, 3 * SZ_4K)  # the size stays 12K


def test_size_aligned_false_only_rounds_to_the_granule() -> None:
    aligned, packed = IovaDomain(SZ_4K), IovaDomain(SZ_4K)
    for iovad in (aligned, packed):
        iovad.alloc(SZ_4K, MASK32)
    # 20K = 5 granules: aligned to 8 granules (32K) or packed right under the first one
    assert aligned.alloc(5 * SZ_4K, MASK32) == 0xFFFF_8000
    assert packed.alloc(5 * SZ_4K, MASK32, size_aligned=False) == 0xFFFF_A000


def test_sizes_round_up_to_the_granule() -> None:
    iovad = IovaDomain(SZ_64K)
    addr = iovad.alloc(100, MASK32)
    assert iovad.find(addr) == AddressRange(0xFFFF_0000, SZ_64K)


def test_limit_is_inclusive_and_the_whole_range_stays_below_it() -> None:
    iovad = IovaDomain(SZ_4K)
    assert iovad.alloc(SZ_4K, 0xFF_FFFF) == 0xFF_F000  # 24-bit device
    # A limit that is not a mask: the last byte must still be <= limit.
    assert iovad.alloc(SZ_4K, 0x5800) == 0x4000


def test_a_wide_aperture_serves_32_and_64_bit_limits_separately() -> None:
    iovad = IovaDomain(SZ_4K, AddressRange(0, 1 << 40))
    high = iovad.alloc(SZ_4K, (1 << 40) - 1)
    low = iovad.alloc(SZ_4K, MASK32)
    assert high == (1 << 40) - SZ_4K
    assert low == SZ_4G - SZ_4K
    assert iovad.alloc(SZ_4K) == (1 << 40) - 2 * SZ_4K  # default limit: the aperture end


def test_iova_zero_is_never_handed_out_even_when_nearly_full() -> None:
    for rcache in (True, False):
        iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K), rcache=rcache)
        got = [iovad.alloc(SZ_4K, MASK32) for _ in range(15)]
        assert sorted(got) == [i * SZ_4K for i in range(1, 16)]
        with pytest.raises(OutOfAddressSpaceError):
            iovad.alloc(SZ_4K, MASK32)
        assert iovad.aperture == AddressRange(SZ_4K, 15 * SZ_4K)


def test_the_aperture_bounds_every_allocation() -> None:
    aperture = AddressRange(SZ_1M, SZ_1M)
    iovad = IovaDomain(SZ_4K, aperture)
    assert iovad.alloc(SZ_4K, MASK32) == SZ_2M - SZ_4K  # the mask is clipped to the aperture
    got = [iovad.alloc(SZ_64K, MASK32) for _ in range(15)]
    assert all(AddressRange(a, SZ_64K) in aperture for a in got)
    before = iovad.snapshot()
    with pytest.raises(OutOfAddressSpaceError, match="64K"):
        iovad.alloc(SZ_64K, MASK32)
    assert iovad.snapshot() == before
    with pytest.raises(InvalidArgumentError, match="below the aperture"):
        iovad.alloc(SZ_4K, SZ_1M - 1)
    assert iovad.snapshot() == before


def test_search_continues_below_the_cached_node_then_retries_above_it() -> None:
    # Kernel behaviour: allocations continue below the last one (cached32_node); the
    # alignment padding above it is only used once the space below is exhausted.
    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K), rcache=False)
    assert iovad.alloc(SZ_4K) == 15 * SZ_4K
    assert iovad.alloc(4 * SZ_4K) == 8 * SZ_4K  # aligned to 4: frames 12-14 stay free
    assert iovad.alloc(SZ_4K) == 7 * SZ_4K  # below the cached node, not frame 14
    assert iovad.alloc(6 * SZ_4K, size_aligned=False) == SZ_4K  # frames 1-6
    assert iovad.alloc(SZ_4K) == 14 * SZ_4K  # below is full: retry above the cached node


def test_find_by_any_interior_address() -> None:
    iovad = IovaDomain(SZ_4K)
    addr = iovad.alloc(SZ_64K, MASK32)
    assert iovad.find(addr + 0x1234) == AddressRange(addr, SZ_64K)
    assert iovad.find(addr + SZ_64K - 1) == AddressRange(addr, SZ_64K)
    assert iovad.find(addr - 1) is None
    assert iovad.find(0) is None


def test_free_takes_the_size_from_the_allocator_and_accepts_a_sub_granule_offset() -> None:
    iovad = IovaDomain(SZ_4K, rcache=False)
    addr = iovad.alloc(3 * SZ_4K, MASK32)
    assert iovad.free(addr + 0x80) == AddressRange(addr, 3 * SZ_4K)
    assert iovad.find(addr) is None
    assert iovad.snapshot().nodes == ()


def test_double_free_raises_state_error_naming_the_address() -> None:
    for rcache in (True, False):
        iovad = IovaDomain(SZ_4K, rcache=rcache)
        addr = iovad.alloc(SZ_4K, MASK32)
        iovad.free(addr)
        before = iovad.snapshot()
        with pytest.raises(StateError, match=f"{addr:#x}.*double free"):
            iovad.free(addr)
        assert iovad.snapshot() == before


def test_free_of_an_interior_or_unknown_address_is_refused() -> None:
    iovad = IovaDomain(SZ_4K)
    addr = iovad.alloc(SZ_64K, MASK32)
    before = iovad.snapshot()
    with pytest.raises(StateError, match="inside the live range"):
        iovad.free(addr + SZ_16K)
    with pytest.raises(StateError, match="never allocated"):
        iovad.free(0x1000_0000)
    assert iovad.snapshot() == before


def test_rcache_returns_the_just_freed_range_and_off_does_not() -> None:
    def scenario(rcache: bool) -> tuple[int, int]:
        iovad = IovaDomain(SZ_4K, rcache=rcache)
        top = iovad.alloc(SZ_4K, MASK32)
        iovad.alloc(SZ_4K, MASK32)
        last = iovad.alloc(SZ_4K, MASK32)
        iovad.alloc(SZ_4K, MASK32)
        iovad.free(top)
        iovad.free(last)
        return last, iovad.alloc(SZ_4K, MASK32)

    last, again = scenario(rcache=True)
    assert again == last  # the most recently freed range comes straight back
    last, fresh = scenario(rcache=False)
    assert fresh == 0xFFFF_F000 != last  # the tree search starts from the top again


def test_rcache_keeps_freed_ranges_out_of_reach_of_find_and_free() -> None:
    iovad = IovaDomain(SZ_4K)
    addr = iovad.alloc(SZ_16K, MASK32)
    iovad.free(addr)
    assert iovad.find(addr) is None
    assert iovad.cached_count == 1
    assert iovad.snapshot().nodes == ((addr >> 12, (addr >> 12) + 3),)  # still in the tree
    with pytest.raises(StateError):
        iovad.free(addr)
    assert iovad.counters.frees == 1


def test_rcache_counts_hits_and_misses_only_for_cacheable_sizes() -> None:
    iovad = IovaDomain(SZ_4K)  # up to 2**5 granules = 128K cached
    assert iovad.rcache_max_size == 32 * SZ_4K
    small = iovad.alloc(SZ_4K, MASK32)
    big = iovad.alloc(64 * SZ_4K, MASK32)
    iovad.free(small)
    iovad.free(big)  # not cacheable: really freed
    assert iovad.cached_count == 1
    assert iovad.alloc(SZ_4K, MASK32) == small
    counters = iovad.counters
    assert (counters.allocs, counters.frees) == (3, 2)
    assert (counters.rcache_hits, counters.rcache_misses) == (1, 1)


def test_rcache_entry_is_used_only_within_the_limit() -> None:
    iovad = IovaDomain(SZ_4K)
    high = iovad.alloc(SZ_4K, MASK32)
    iovad.free(high)
    low = iovad.alloc(SZ_4K, 0xFF_FFFF)
    assert low <= 0xFF_F000 and low != high
    assert iovad.counters.rcache_misses == 2
    assert iovad.alloc(SZ_4K, MASK32) == high


def test_rcache_bin_overflow_really_frees() -> None:
    iovad = IovaDomain(SZ_4K, rcache_capacity=2)
    addrs = [iovad.alloc(SZ_4K, MASK32) for _ in range(3)]
    for addr in addrs:
        iovad.free(addr)
    assert iovad.cached_count == 2
    assert iovad.counters.rcache_overflows == 1
    assert len(iovad.snapshot().nodes) == 2  # the third left the tree


def test_rcache_off_never_caches() -> None:
    iovad = IovaDomain(SZ_4K, rcache=False)
    rng = np.random.default_rng(7)
    live: list[int] = []
    for _ in range(300):
        if live and rng.random() < 0.5:
            iovad.free(live.pop(int(rng.integers(len(live)))))
        else:
            live.append(iovad.alloc(int(rng.integers(1, 9)) * SZ_4K, MASK32))
        snap = iovad.snapshot()
        assert snap.rcache == ()
        assert len(snap.nodes) == len(live)
    assert iovad.counters.rcache_hits == iovad.counters.rcache_misses == 0


def test_cached_ranges_are_flushed_when_the_tree_is_full() -> None:
    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K))
    addrs = [iovad.alloc(SZ_4K) for _ in range(15)]
    for addr in addrs:
        iovad.free(addr)
    assert iovad.cached_count == 15
    addr = iovad.alloc(2 * SZ_4K)  # no 2-granule bin entry, tree full of cached ranges
    assert addr == 14 * SZ_4K
    assert iovad.cached_count == 0
    assert iovad.counters.rcache_flushes == 1


def test_a_failed_flush_and_retry_is_undone() -> None:
    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K))
    addrs = [iovad.alloc(SZ_4K) for _ in range(15)]
    for addr in addrs[::2]:  # cached holes are never two granules wide
        iovad.free(addr)
    before = iovad.snapshot()
    with pytest.raises(OutOfAddressSpaceError):
        iovad.alloc(2 * SZ_4K)
    assert iovad.snapshot() == before
    assert iovad.alloc(SZ_4K) == addrs[-1]  # the cache still serves


def test_flush_rcache_returns_everything_to_the_tree() -> None:
    iovad = IovaDomain(SZ_4K)
    for _ in range(3):
        iovad.free(iovad.alloc(SZ_4K, MASK32))
    assert iovad.flush_rcache() == 1  # the same range was reused each time
    assert iovad.snapshot().nodes == ()


def test_reserved_ranges_are_never_allocated_or_freed() -> None:
    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K))
    assert iovad.reserve(AddressRange(12 * SZ_4K + 10, 2 * SZ_4K)) == AddressRange(
        12 * SZ_4K, 3 * SZ_4K
    )
    got = sorted(iovad.alloc(SZ_4K) for _ in range(12))
    assert got == [i * SZ_4K for i in (*range(1, 12), 15)]
    before = iovad.snapshot()
    with pytest.raises(StateError, match="reserved"):
        iovad.free(12 * SZ_4K)
    with pytest.raises(StateError, match="overlaps the allocated"):
        iovad.reserve(AddressRange(15 * SZ_4K, SZ_4K))
    assert iovad.snapshot() == before


def test_reserve_evicts_cached_ranges_in_the_way() -> None:
    iovad = IovaDomain(SZ_4K)
    addr = iovad.alloc(SZ_4K, MASK32)
    iovad.free(addr)
    iovad.reserve(AddressRange(addr, SZ_4K))
    assert iovad.cached_count == 0
    assert iovad.alloc(SZ_4K, MASK32) == addr - SZ_4K


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0, MASK32), {}),
        ((-SZ_4K, MASK32), {}),
        ((SZ_4K, -1), {}),
        ((SZ_4K, 0xFFF), {}),  # no granule above IOVA 0 fits
        ((True, MASK32), {}),
        ((SZ_4K, "max"), {}),
        ((4096.0, MASK32), {}),
    ],
)
def test_alloc_misuse_raises_and_leaves_state(args: tuple[object, ...], kwargs: dict) -> None:
    iovad = IovaDomain(SZ_4K)
    iovad.free(iovad.alloc(SZ_4K, MASK32))
    iovad.alloc(SZ_64K, MASK32)
    before = iovad.snapshot()
    with pytest.raises(InvalidArgumentError):
        iovad.alloc(*args, **kwargs)
    assert iovad.snapshot() == before


@pytest.mark.parametrize(
    "kwargs",
    [
        {"granule": 3000},
        {"granule": SZ_4K, "aperture": AddressRange(0x800, SZ_1M)},
        {"granule": SZ_4K, "aperture": AddressRange(0, SZ_4K)},  # only IOVA 0
        {"granule": SZ_4K, "rcache_max_order": -1},
        {"granule": SZ_4K, "rcache_capacity": 0},
    ],
)
def test_construction_is_validated(kwargs: dict) -> None:
    with pytest.raises(VcmmError):
        IovaDomain(**kwargs)


# -- reference model -------------------------------------------------------------------

FRAMES = 64


def _fits_somewhere(used: np.ndarray, size: int, aligned: bool, limit_frames: int) -> bool:
    step = 1 << (size - 1).bit_length() if aligned else 1
    return any(not used[s : s + size].any() for s in range(step, limit_frames - size + 1, step))


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 9), st.booleans(), st.integers(8, FRAMES)),
        st.tuples(st.just("free"), st.integers(0, 60), st.just(False), st.just(0)),
    ),
    max_size=80,
)


@settings(max_examples=80, deadline=None)
@given(ops, st.booleans())
def test_matches_a_frame_bitmap_reference(
    sequence: list[tuple[str, int, bool, int]], rcache: bool
) -> None:
    """Placement is Linux's, but facts hold for any correct allocator: ranges are free,
    aligned, below the limit, never at frame 0; and a failure means no slot exists at all
    (the cached-node search plus its retry covers the whole space, after an rcache flush)."""
    iovad = IovaDomain(SZ_4K, AddressRange(0, FRAMES * SZ_4K), rcache=rcache, rcache_capacity=4)
    used = np.zeros(FRAMES, dtype=bool)
    used[0] = True
    live: dict[int, int] = {}
    for op, size, aligned, limit_frames in sequence:
        if op == "alloc":
            limit = limit_frames * SZ_4K - 1
            try:
                addr = iovad.alloc(size * SZ_4K, limit, size_aligned=aligned)
            except OutOfAddressSpaceError:
                # cached ranges count as free: a failing search flushes them and retries
                assert not _fits_somewhere(used, size, aligned, limit_frames)
                continue
            frame = addr // SZ_4K
            assert addr % SZ_4K == 0 and frame >= 1
            assert frame + size <= limit_frames
            assert not used[frame : frame + size].any()
            if aligned:
                assert frame % (1 << (size - 1).bit_length()) == 0
            used[frame : frame + size] = True
            live[frame] = size
        elif live:
            frame = sorted(live)[size % len(live)]
            assert iovad.free(frame * SZ_4K) == AddressRange(frame * SZ_4K, live[frame] * SZ_4K)
            used[frame : frame + live.pop(frame)] = False
            with pytest.raises(StateError):
                iovad.free(frame * SZ_4K)
        for frame, n in live.items():
            assert iovad.find(frame * SZ_4K + n * SZ_4K - 1) == AddressRange(
                frame * SZ_4K, n * SZ_4K
            )
        assert iovad.allocated_bytes == sum(live.values()) * SZ_4K
        assert len(iovad) == len(live)


def test_sixty_four_kilobyte_granule_domain() -> None:
    iovad = IovaDomain(SZ_64K, AddressRange(0, SZ_4G))
    assert iovad.alloc(SZ_4K, MASK32) == SZ_4G - SZ_64K
    assert iovad.alloc(3 * SZ_64K, MASK32) == SZ_4G - 4 * SZ_64K  # aligned to 4 granules


# -- exact undo of an allocation ------------------------------------------------------------


def _busy_domain() -> IovaDomain:
    """Live ranges, a moved cached node and a populated range cache."""
    iovad = IovaDomain(SZ_4K)
    keep = [iovad.alloc(n * SZ_4K, MASK32) for n in (1, 2, 1, 4, 1)]
    iovad.free(keep[1])
    iovad.free(keep[2])
    return iovad


def test_undo_of_a_tree_allocation_restores_the_domain_exactly() -> None:
    iovad = _busy_domain()
    before = iovad.snapshot()
    addr = iovad.alloc(8 * SZ_4K, MASK32)  # no 8-granule bin: a new tree node
    assert iovad.snapshot() != before
    assert iovad.undo_alloc(addr) == AddressRange(addr, 8 * SZ_4K)
    assert iovad.snapshot() == before


def test_undo_of_a_cache_hit_puts_the_range_back_in_its_bin() -> None:
    iovad = _busy_domain()
    before = iovad.snapshot()
    addr = iovad.alloc(2 * SZ_4K, MASK32)  # served from the rcache
    assert iovad.counters.rcache_hits == before.counters.rcache_hits + 1
    iovad.undo_alloc(addr)
    assert iovad.snapshot() == before
    # A plain free instead parks it in the cache (and counts a free): not the same.
    again = iovad.alloc(2 * SZ_4K, MASK32)
    iovad.free(again)
    assert iovad.snapshot() != before


def test_undo_of_an_allocation_that_flushed_the_cache_restores_the_cache() -> None:
    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K))
    for addr in [iovad.alloc(SZ_4K) for _ in range(15)]:
        iovad.free(addr)
    before = iovad.snapshot()
    addr = iovad.alloc(2 * SZ_4K)  # flushes all 15 cached ranges
    assert iovad.cached_count == 0
    iovad.undo_alloc(addr)
    assert iovad.snapshot() == before and iovad.cached_count == 15


def test_undo_is_refused_for_anything_but_the_latest_allocation() -> None:
    iovad = _busy_domain()
    first = iovad.alloc(SZ_4K, MASK32)
    second = iovad.alloc(SZ_4K, MASK32)
    before = iovad.snapshot()
    with pytest.raises(StateError, match="most recent"):
        iovad.undo_alloc(first)
    assert iovad.snapshot() == before
    iovad.free(second)  # anything else happening ends the chance
    with pytest.raises(StateError, match=f"{second:#x}"):
        iovad.undo_alloc(second)
