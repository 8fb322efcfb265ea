"""The ``"linux"`` IOVA policy: the mainline behaviours issue 15 lists, one by one.

Each expected address is worked out by hand in a comment from the kernel's code
(drivers/iommu/iova.c, dma-iommu.c); the seed policy's answer is shown beside it where
the two differ, so each test also shows what the policy switch changes.
"""

from __future__ import annotations

import pytest

from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError, StateError, VcmmError
from vcmm.mm.iova import IovaDomain
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_policy import IOVA_POLICIES, check_policy, new_iova_domain
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4G, SZ_4K

G = SZ_4K
MASK32 = 0xFFFF_FFFF


def test_one_page_then_three_pages_the_issues_example() -> None:
    # Linux: 1 page -> frame (0x100000 - 1) = 0xfffff.  3 pages round up to 4; the walk
    # starts at cached32 (frame 0xfffff): (0xfffff - 4) & ~3 = 0xffff8.
    # Seed: 3 pages stay 3, aligned to 4: (0xfffff - 3) & ~3 = 0xffffc.
    linux, seed = LinuxIovaDomain(G), IovaDomain(G)
    assert linux.alloc(G, MASK32) == seed.alloc(G, MASK32) == 0xFFFF_F000
    assert linux.alloc(3 * G, MASK32) == 0xFFFF_8000
    assert seed.alloc(3 * G, MASK32) == 0xFFFF_C000
    # The node holds 4 granules; the caller's extent stays 3.
    assert (0xFFFF8, 0xFFFFB) in linux.snapshot().nodes
    assert linux.find(0xFFFF_8000) == AddressRange(0xFFFF_8000, 3 * G)
    assert linux.find(0xFFFF_B000) is None  # the rounding padding maps nothing
    assert linux.allocated_bytes == 4 * G


@pytest.mark.parametrize(
    ("npages", "node"),
    [(1, 1), (3, 4), (5, 8), (17, 32), (31, 32), (32, 32), (33, 33), (40, 40)],
)
def test_sizes_below_32_granules_round_up_to_a_power_of_two(npages: int, node: int) -> None:
    iovad = LinuxIovaDomain(G)
    addr = iovad.alloc(npages * G, MASK32)
    lo = addr >> 12
    assert iovad.snapshot().nodes == ((lo, lo + node - 1),)
    # Size-aligned to the next power of two of the node either way (33 -> 64).
    assert lo % (1 << (node - 1).bit_length()) == 0
    assert iovad.free(addr) == AddressRange(addr, npages * G)


def test_the_cache_is_binned_by_order_not_by_exact_size() -> None:
    linux, seed = LinuxIovaDomain(G), IovaDomain(G)
    for iovad in (linux, seed):
        iovad.alloc(G, MASK32)
        three = iovad.alloc(3 * G, MASK32)
        iovad.free(three)
    # Linux: the 3-granule range sits in the order-2 bin and serves a 4-granule request.
    assert linux.alloc(4 * G, MASK32) == 0xFFFF_8000
    assert linux.counters.rcache_hits == 1
    # Seed: bins are exact sizes, so the 4-granule request misses and goes to the tree.
    assert seed.alloc(4 * G, MASK32) != 0xFFFF_C000
    assert seed.counters.rcache_hits == 0


def test_only_the_loaded_magazine_is_searched() -> None:
    # Frames 63 and 62 first, then `low` under a 10-frame limit: min(10, cached32 62)
    # -> frame 9.  Magazines of 2: freeing low, 63 fills the loaded one; freeing 62
    # swaps in the empty previous one -> loaded [62], prev [9, 63].
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G), magazine_size=2)
    high1, high2 = iovad.alloc(G), iovad.alloc(G)
    low = iovad.alloc(G, 10 * G - 1)
    assert (high1, high2, low) == (63 * G, 62 * G, 9 * G)
    for addr in (low, high1, high2):
        iovad.free(addr)
    state = iovad.rcache_state()[0]
    assert (state.loaded, state.prev) == ((62,), (9, 63))
    # Under the 10-frame limit the loaded magazine has nothing: a miss, and the tree
    # walk from cached32 (frame 9, still in the tree) gives frame 8.
    assert iovad.alloc(G, 10 * G - 1) == 8 * G
    assert iovad.counters.rcache_hits == 0
    # The seed searches its whole bin and returns `low`.
    seed = IovaDomain(G, AddressRange(0, 64 * G))
    seed_high = [seed.alloc(G), seed.alloc(G)]
    seed_low = seed.alloc(G, 10 * G - 1)
    for addr in (seed_low, *seed_high):
        seed.free(addr)
    assert seed.alloc(G, 10 * G - 1) == seed_low


def test_the_top_entry_moves_into_the_hole_a_hit_leaves() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G))
    b, c = iovad.alloc(G), iovad.alloc(G)  # frames 63, 62
    a = iovad.alloc(G, 8 * G - 1)  # frame 7
    for addr in (a, b, c):
        iovad.free(addr)
    assert iovad.rcache_state()[0].loaded == (7, 63, 62)
    # Limit frame 7: scanning down from the top, 62 and 63 are too high, 7 fits; the
    # top entry (62) takes its slot.
    assert iovad.alloc(G, 8 * G - 1) == a
    assert iovad.rcache_state()[0].loaded == (62, 63)
    assert iovad.alloc(G) == 63 * G  # then the top entry is popped first


def test_a_failed_allocation_leaves_the_cache_flushed() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(0, 16 * G))
    addrs = [iovad.alloc(G) for _ in range(15)]
    for addr in addrs[::2]:  # cached holes are never two granules wide
        iovad.free(addr)
    live_before = iovad.allocated()
    with pytest.raises(OutOfAddressSpaceError, match="linux policy"):
        iovad.alloc(2 * G)
    assert iovad.cached_count == 0  # flushed, and stays so
    assert iovad.allocated() == live_before  # the live ranges are untouched
    assert len(iovad.snapshot().nodes) == len(live_before)
    assert iovad.counters.rcache_flushes == 1
    assert iovad.max32_alloc_size == 2
    # The seed policy reverts its flush instead.
    seed = IovaDomain(G, AddressRange(0, 16 * G))
    seed_addrs = [seed.alloc(G) for _ in range(15)]
    for addr in seed_addrs[::2]:
        seed.free(addr)
    before = seed.snapshot()
    with pytest.raises(OutOfAddressSpaceError, match="seed policy"):
        seed.alloc(2 * G)
    assert seed.snapshot() == before and seed.cached_count == 8


def test_max32_alloc_size_fails_larger_requests_below_4g_until_a_free() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G), rcache=False)
    small = [iovad.alloc(G, 16 * G - 1) for _ in range(15)]  # frames 1..15 full
    with pytest.raises(OutOfAddressSpaceError):
        iovad.alloc(G, 16 * G - 1)
    assert iovad.max32_alloc_size == 1
    # 48 frames are free under the full limit, but the hint fails the request at once.
    with pytest.raises(OutOfAddressSpaceError):
        iovad.alloc(G, 64 * G - 1)
    seed = IovaDomain(G, AddressRange(0, 64 * G), rcache=False)
    for _ in range(15):
        seed.alloc(G, 16 * G - 1)
    with pytest.raises(OutOfAddressSpaceError):
        seed.alloc(G, 16 * G - 1)
    assert seed.alloc(G, 64 * G - 1) == 63 * G  # the seed's hint is per limit
    # Removing any node below 4 GiB resets the hint.
    iovad.free(small[0])
    assert iovad.max32_alloc_size == SZ_4G >> 12
    assert iovad.alloc(G, 64 * G - 1) == 63 * G


def test_max32_alloc_size_does_not_apply_above_4g() -> None:
    # 64 free frames each side of 4 GiB (the space below reserved at set-up).
    iovad = LinuxIovaDomain(G, AddressRange(0, SZ_4G + 64 * G), rcache=False)
    iovad.reserve(AddressRange(G, SZ_4G - 65 * G))
    iovad.alloc(33 * G, MASK32)  # 33 granules aligned to 64: the whole space below
    with pytest.raises(OutOfAddressSpaceError):
        iovad.alloc(33 * G, MASK32)
    assert iovad.max32_alloc_size == 33
    assert iovad.alloc(33 * G, SZ_4G + 64 * G - 1) == SZ_4G  # above 4 GiB: no hint


def test_a_limit_that_is_not_granule_aligned_rounds_like_the_kernels_pfns() -> None:
    # Linux: limit_pfn = 0x5800 >> 12 = 5, usable frames end at 5: [0x5000, 0x5fff],
    # whose last byte lies above the limit.  Seed: (0x5800 + 1) >> 12 = 5 frames (0-4).
    assert LinuxIovaDomain(G).alloc(G, 0x5800) == 0x5000
    assert IovaDomain(G).alloc(G, 0x5800) == 0x4000


def test_a_limit_past_the_aperture_is_clamped_to_its_end() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(SZ_4K * 16, SZ_4K * 16))
    assert iovad.alloc(G, (1 << 64) - 1) == 31 * G
    assert iovad.alloc(G) == 30 * G


def test_a_request_larger_than_the_space_below_the_limit_can_take_a_cached_range() -> None:
    # iova_rcache_get compares against limit_pfn + 1 - size in unsigned long: with a
    # limit of frame 1 and 4 granules, that wraps, so any cached order-2 range fits.
    iovad = LinuxIovaDomain(G)
    iovad.free(iovad.alloc(4 * G, MASK32))
    assert iovad.alloc(4 * G, 0x1FFF) == 0xFFFF_C000
    with pytest.raises(OutOfAddressSpaceError, match=r"16K range \(12K rounded up\)"):
        iovad.alloc(3 * G, 0x1FFF)  # nothing cached: the tree says no


def test_depot_fills_past_two_magazines_and_trims_to_one() -> None:
    # Frees of frames 63..54 into magazines of 2: loaded [55, 54], prev [63, 62],
    # depot (bottom first) [61, 60], [59, 58], [57, 56].
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G), magazine_size=2)
    addrs = [iovad.alloc(G) for _ in range(10)]
    assert addrs == [f * G for f in range(63, 53, -1)]
    for addr in addrs:
        iovad.free(addr)
    state = iovad.rcache_state()[0]
    assert state.loaded == (55, 54) and state.prev == (63, 62)
    assert state.depot == ((61, 60), (59, 58), (57, 56))
    # Loaded top first, then the previous magazine, then the depot's top magazine.
    assert [iovad.alloc(G) >> 12 for _ in range(6)] == [54, 55, 62, 63, 56, 57]
    assert iovad.trim_depots() == 2  # two depot magazines left: the top one goes
    assert iovad.rcache_state()[0].depot == ((61, 60),)


# -- exact undo and the state of failures -----------------------------------------------


def _busy() -> LinuxIovaDomain:
    iovad = LinuxIovaDomain(G, AddressRange(0, 128 * G), magazine_size=2)
    keep = [iovad.alloc(n * G) for n in (1, 2, 1, 4, 1, 1, 1)]
    for addr in keep[1:3] + keep[4:]:
        iovad.free(addr)
    return iovad


@pytest.mark.parametrize("npages", [1, 2, 3, 8, 33])
def test_undo_restores_the_domain_exactly(npages: int) -> None:
    iovad = _busy()
    before = iovad.snapshot()
    addr = iovad.alloc(npages * G)
    assert iovad.snapshot() != before
    assert iovad.undo_alloc(addr) == AddressRange(addr, npages * G)
    assert iovad.snapshot() == before


def test_undo_of_an_allocation_that_flushed_restores_the_magazines() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(0, 16 * G), magazine_size=3)
    for addr in [iovad.alloc(G) for _ in range(15)]:
        iovad.free(addr)
    before = iovad.snapshot()
    addr = iovad.alloc(2 * G)  # the tree is full of cached singles: flush, retry
    assert iovad.cached_count == 0 and iovad.counters.rcache_flushes == 1
    iovad.undo_alloc(addr)
    assert iovad.snapshot() == before and iovad.cached_count == 15


def _ten_freed_singles() -> LinuxIovaDomain:
    """Magazines of 2 after freeing frames 63..54: loaded [55, 54], prev [63, 62],
    depot [61, 60], [59, 58], [57, 56] (as in the depot test above)."""
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G), magazine_size=2)
    for addr in [iovad.alloc(G) for _ in range(10)]:
        iovad.free(addr)
    return iovad


@pytest.mark.parametrize(
    ("taken", "rotation"),
    [(0, "none"), (2, "swap to the previous magazine"), (4, "pop from the depot")],
)
def test_undo_of_a_magazine_hit_unrotates_the_magazines(taken: int, rotation: str) -> None:
    iovad = _ten_freed_singles()
    for _ in range(taken):  # empty the loaded magazine (2), then the previous one (4)
        iovad.alloc(G)
    before = iovad.snapshot()
    addr = iovad.alloc(G)
    assert iovad.counters.rcache_hits == taken + 1, rotation
    iovad.undo_alloc(addr)
    assert iovad.snapshot() == before


def test_undo_of_a_hit_below_the_top_puts_the_entry_back_in_its_slot() -> None:
    iovad = LinuxIovaDomain(G, AddressRange(0, 64 * G))
    b, c = iovad.alloc(G), iovad.alloc(G)
    a = iovad.alloc(G, 8 * G - 1)
    for addr in (a, b, c):
        iovad.free(addr)
    before = iovad.snapshot()
    assert iovad.alloc(G, 8 * G - 1) == a  # slot 0, the top entry moved into it
    iovad.undo_alloc(a)
    assert iovad.snapshot() == before
    assert iovad.rcache_state()[0].loaded == (7, 63, 62)


def test_undo_is_refused_after_anything_else() -> None:
    iovad = _busy()
    first, second = iovad.alloc(G), iovad.alloc(G)
    before = iovad.snapshot()
    with pytest.raises(StateError, match="most recent"):
        iovad.undo_alloc(first)
    assert iovad.snapshot() == before
    iovad.free(second)
    with pytest.raises(StateError, match=f"{second:#x}"):
        iovad.undo_alloc(second)


# -- misuse, the same answers as the seed policy -------------------------------------


@pytest.mark.parametrize("policy", IOVA_POLICIES)
@pytest.mark.parametrize(
    "args",
    [(0, MASK32), (-G, MASK32), (G, -1), (G, 0xFFF), (True, MASK32), (G, "max"), (4096.0, MASK32)],
)
def test_alloc_misuse_raises_and_leaves_state(policy: str, args: tuple[object, ...]) -> None:
    iovad = new_iova_domain(policy, G)
    iovad.free(iovad.alloc(G, MASK32))
    iovad.alloc(16 * G, MASK32)
    before = iovad.snapshot()
    with pytest.raises(InvalidArgumentError):
        iovad.alloc(*args)  # type: ignore[arg-type]
    assert iovad.snapshot() == before


@pytest.mark.parametrize("policy", IOVA_POLICIES)
def test_free_misuse_is_refused_with_the_reason(policy: str) -> None:
    iovad = new_iova_domain(policy, G, AddressRange(0, 64 * G))
    iovad.reserve(AddressRange(40 * G, G))
    addr = iovad.alloc(3 * G)
    before = iovad.snapshot()
    for bad, reason in [
        (addr + G, "inside the live range"),
        (40 * G, "reserved range"),
        (5 * G, "never allocated"),
    ]:
        with pytest.raises(StateError, match=reason):
            iovad.free(bad)
    with pytest.raises(InvalidArgumentError, match="negative"):
        iovad.free(-1)
    assert iovad.snapshot() == before


def test_unaligned_placement_is_refused_by_the_linux_policy() -> None:
    iovad = LinuxIovaDomain(G)
    before = iovad.snapshot()
    with pytest.raises(InvalidArgumentError, match="always size-aligns"):
        iovad.alloc(G, MASK32, size_aligned=False)
    assert iovad.snapshot() == before


def test_reserve_evicts_cached_ranges_from_the_magazines() -> None:
    iovad = LinuxIovaDomain(G)
    addr = iovad.alloc(G, MASK32)
    iovad.free(addr)
    iovad.reserve(AddressRange(addr, G))
    assert iovad.cached_count == 0
    assert iovad.alloc(G, MASK32) == addr - G


@pytest.mark.parametrize(
    "kwargs",
    [{"granule": 3000}, {"granule": G, "aperture": AddressRange(0, G)}, {"magazine_size": 0}],
)
def test_construction_is_validated(kwargs: dict[str, object]) -> None:
    args = {"granule": G} | kwargs
    with pytest.raises(VcmmError):
        LinuxIovaDomain(**args)  # type: ignore[arg-type]


def test_policy_names_are_checked() -> None:
    assert [new_iova_domain(p, G).policy for p in IOVA_POLICIES] == ["seed", "linux"]
    for bad in ("Linux", "", None, 1):
        with pytest.raises(InvalidArgumentError, match="seed or linux"):
            check_policy(bad)
