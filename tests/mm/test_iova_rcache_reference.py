"""The range cache against the tree path it short-cuts.

The tree path (a domain with ``rcache=False``) is the reference.  Two properties:

- the seed policy with its cache is *exactly* a cache written plainly on top of that
  reference: bins keyed by the granule count, searched from the top for a frame that
  fits the limit and the alignment, a full bin frees for real, a tree failure
  flushes every bin and retries (and is reverted if that fails too).  Every address,
  failure, returned range, tree node, cached node, bin and counter must agree, and
  ``undo_alloc`` must give back the state from before the allocation;
- for both policies, a domain with the cache and one without, driven by the same
  calls, hand out valid, non-overlapping ranges and keep the same books (live
  ranges as requested, bytes in use, allocations and frees counted), and after a
  flush the cached domain's tree holds exactly its live and reserved ranges.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import OutOfAddressSpaceError
from vcmm.mm.iova import IovaCounters, IovaDomain
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_policy import new_iova_domain
from vcmm.ranges import AddressRange

G = 0x1000
FRAMES = 96


def _align(npages: int) -> int:
    return 1 << (npages - 1).bit_length()


class CachedReference:
    """The seed's range cache written plainly over a domain without one."""

    def __init__(self, frames: int, max_order: int, capacity: int) -> None:
        self.tree = IovaDomain(G, AddressRange(0, frames * G), rcache=False)
        self.bins: dict[int, list[int]] = {}
        self.live: dict[int, int] = {}
        self.max = 1 << max_order
        self.capacity = capacity
        self.counts = dict.fromkeys(IovaCounters.__dataclass_fields__, 0)

    def _from_bin(self, npages: int, limit: int, aligned: bool) -> int | None:
        entries = self.bins.get(npages, [])
        for j in reversed(range(len(entries))):
            pfn = entries[j]
            if pfn + npages <= (limit + 1) // G and (not aligned or pfn % _align(npages) == 0):
                del entries[j]
                return pfn * G
        return None

    def alloc(self, size: int, limit: int, aligned: bool) -> int:
        npages = -(-size // G)
        cacheable = npages <= self.max
        addr = self._from_bin(npages, limit, aligned) if cacheable else None
        if addr is None:
            try:
                addr = self.tree.alloc(size, limit, size_aligned=aligned)
            except OutOfAddressSpaceError:
                if not any(self.bins.values()):
                    raise
                addr = self._flush_and_retry(size, limit, aligned)
            if cacheable:
                self.counts["rcache_misses"] += 1
        elif cacheable:
            self.counts["rcache_hits"] += 1
        self.counts["allocs"] += 1
        self.live[addr // G] = npages
        return addr

    def _flush_and_retry(self, size: int, limit: int, aligned: bool) -> int:
        saved = copy.deepcopy((self.tree, self.bins))
        for npages in sorted(self.bins):
            for pfn in self.bins[npages]:
                self.tree.free(pfn * G)
        self.bins = {}
        try:
            addr = self.tree.alloc(size, limit, size_aligned=aligned)
        except OutOfAddressSpaceError:
            self.tree, self.bins = saved
            raise
        self.counts["rcache_flushes"] += 1
        return addr

    def free(self, addr: int) -> AddressRange:
        pfn = addr // G
        npages = self.live.pop(pfn)
        self.counts["frees"] += 1
        entries = self.bins.setdefault(npages, [])
        if npages <= self.max and len(entries) < self.capacity:
            entries.append(pfn)
        else:
            if npages <= self.max:
                self.counts["rcache_overflows"] += 1
            self.tree.free(addr)
        return AddressRange(addr, npages * G)

    def flush(self) -> int:
        count = 0
        for npages in sorted(self.bins):
            for pfn in self.bins[npages]:
                self.tree.free(pfn * G)
                count += 1
        self.bins = {}
        self.counts["rcache_flushes"] += count > 0
        return count

    def check(self, impl: IovaDomain) -> None:
        snap, ref = impl.snapshot(), self.tree.snapshot()
        assert snap.nodes == ref.nodes
        assert (snap.cached32_node, snap.cached_node) == (ref.cached32_node, ref.cached_node)
        assert snap.live == tuple(sorted(self.live.items()))
        assert snap.rcache == tuple((n, tuple(e)) for n, e in sorted(self.bins.items()) if e)
        assert snap.counters == IovaCounters(**self.counts)


# Few sizes, so bins fill and get reused; odd sizes placed unaligned and then asked
# for aligned; frees by allocation order (-1: the newest) so a bin's top is reused.
sizes = st.sampled_from([1, 2, 3, 3, 5, 6, 9])
ref_ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), sizes, st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("alloc"), sizes, st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("free"), st.integers(-1, 63), st.just(False), st.just(0)),
        st.tuples(st.just("free"), st.just(-1), st.just(False), st.just(0)),
        st.tuples(st.just("undo"), sizes, st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("burst"), st.integers(2, 6), st.booleans(), st.integers(0, 3)),
        st.tuples(st.just("flush"), st.just(0), st.just(False), st.just(0)),
    ),
    max_size=70,
)
LIMITS = [FRAMES * G - 1, 60 * G - 1, 40 * G + 0x800, 24 * G - 1]


def _alloc_both(
    impl: IovaDomain, ref: CachedReference, size: int, limit: int, aligned: bool
) -> int | None:
    """The same allocation on both: the address, or ``None`` when both failed (the
    failing one changing nothing)."""
    before = impl.snapshot()
    try:
        want = ref.alloc(size, limit, aligned)
    except OutOfAddressSpaceError:
        with pytest.raises(OutOfAddressSpaceError):
            impl.alloc(size, limit, size_aligned=aligned)
        assert impl.snapshot() == before
        return None
    assert impl.alloc(size, limit, size_aligned=aligned) == want
    return want


def _burst_and_undo(
    impl: IovaDomain, ref: CachedReference, count: int, limit: int, aligned: bool
) -> None:
    """``count`` ranges of 3 granules mapped and unmapped (filling their bin), then
    ``count`` allocations of 3 granules (hits while the bin lasts, then the tree) taken
    back newest first: each undo restores the state from before its allocation."""
    addrs = [_alloc_both(impl, ref, 3 * G, limit, aligned) for _ in range(count)]
    for addr in addrs:
        if addr is not None:
            assert impl.free(addr) == ref.free(addr)
    history = []
    probe = copy.deepcopy(ref)
    for _ in range(count):
        before = impl.snapshot()
        addr = _alloc_both(impl, probe, 3 * G, limit, aligned)
        if addr is None:
            break
        history.append((before, addr))
    for before, addr in reversed(history):
        impl.undo_alloc(addr)
        assert impl.snapshot() == before


@settings(max_examples=200, deadline=None)
@given(ref_ops, st.integers(0, 3), st.integers(1, 4))
def test_the_seed_cache_is_a_plain_cache_over_the_tree_path(
    sequence: list[tuple[str, int, bool, int]], max_order: int, capacity: int
) -> None:
    impl = IovaDomain(
        G, AddressRange(0, FRAMES * G), rcache_max_order=max_order, rcache_capacity=capacity
    )
    ref = CachedReference(FRAMES, max_order, capacity)
    for op, a, aligned, b in sequence:
        limit = LIMITS[b]
        if op == "free" and ref.live:
            pfn = list(ref.live)[a % len(ref.live)]
            assert impl.free(pfn * G) == ref.free(pfn * G)
        elif op == "flush":
            assert impl.flush_rcache() == ref.flush()
        elif op == "burst":
            _burst_and_undo(impl, ref, a, limit, aligned)
        elif op in ("alloc", "undo"):
            before, saved = impl.snapshot(), copy.deepcopy(ref)
            addr = _alloc_both(impl, ref, a * G, limit, aligned)
            if op == "undo" and addr is not None:
                impl.undo_alloc(addr)
                assert impl.snapshot() == before
                ref = saved
        ref.check(impl)


def test_numpy_and_offset_addresses_free_like_plain_ones() -> None:
    """The cached path's type test lets only plain ints through; a numpy integer or a
    handle with a sub-granule offset takes the general checks to the same result."""
    iovad = IovaDomain(G, AddressRange(0, FRAMES * G))
    first = iovad.alloc(2 * G, FRAMES * G - 1)
    assert iovad.free(np.uint64(first + 0x123)) == AddressRange(first, 2 * G)
    again = iovad.alloc(np.int64(2 * G), np.uint32(FRAMES * G - 1))
    assert again == first and iovad.counters.rcache_hits == 1


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_a_cached_frame_reused_for_another_size_frees_with_the_new_size(policy: str) -> None:
    """Linux bins by order, so a frame freed as 3 granules comes back for a request of
    4; the seed bins by size, so it comes back after a flush.  Either way the second
    free answers with what the second caller asked for."""
    iovad = new_iova_domain(policy, G, AddressRange(0, FRAMES * G))
    first = iovad.alloc(3 * G, FRAMES * G - 1)
    assert iovad.free(first) == AddressRange(first, 3 * G)
    if policy == "seed":
        iovad.flush_rcache()
    again = iovad.alloc(4 * G, FRAMES * G - 1)
    assert again == first
    assert iovad.free(again) == AddressRange(first, 4 * G)
    assert iovad.alloc(4 * G, FRAMES * G - 1) == first  # and it is cached again
    assert iovad.free(first) == AddressRange(first, 4 * G)


@pytest.mark.parametrize("policy", ["seed", "linux"])
@pytest.mark.parametrize("npages", [1, 2, 3])
def test_the_top_cached_frame_is_not_handed_out_above_the_limit(policy: str, npages: int) -> None:
    """The frame just freed ends one granule above the new limit: the cache must not
    give it back, the tree finds one below (granule-aligned limits: both policies
    treat them alike)."""
    iovad = new_iova_domain(policy, G, AddressRange(0, FRAMES * G))
    top = iovad.alloc(npages * G, FRAMES * G - 1)
    iovad.free(top)
    limit = top + npages * G - 1 - G  # the last granule of ``top`` is above it
    addr = iovad.alloc(npages * G, limit)
    assert addr != top and addr + npages * G - 1 <= limit
    assert iovad.counters.rcache_misses == 2


# -- cache on and off keep the same books ----------------------------------------------

both_ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 40), st.integers(0, 2)),
        st.tuples(st.just("alloc"), st.integers(1, 4), st.integers(0, 2)),
        st.tuples(st.just("free"), st.integers(0, 63), st.just(0)),
    ),
    max_size=80,
)


def _extents(iovad: IovaDomain | LinuxIovaDomain, addrs: list[int]) -> list[int]:
    found = [iovad.find(addr) for addr in addrs]
    return [-1 if r is None else r.size for r in found]


BIG = 4096  # frames: room for every sequence, so neither setting ever fails
BIG_LIMITS = [BIG * G - 1, 3000 * G - 1, 2048 * G - 1]  # granule-aligned: both policies agree


@settings(max_examples=100, deadline=None)
@given(both_ops, st.sampled_from(["seed", "linux"]))
def test_cache_on_and_off_hand_out_valid_ranges_and_keep_the_same_books(
    sequence: list[tuple[str, int, int]], policy: str
) -> None:
    domains = {
        rcache: new_iova_domain(policy, G, AddressRange(0, BIG * G), rcache=rcache)
        for rcache in (True, False)
    }
    live: dict[bool, list[int]] = {True: [], False: []}
    for op, a, b in sequence:
        for rcache, iovad in domains.items():
            if op == "alloc":
                addr = iovad.alloc(a * G, BIG_LIMITS[b])
                assert addr % (_align(a) * G) == 0
                assert addr >= G and addr + a * G - 1 <= BIG_LIMITS[b]
                live[rcache].append(addr)
            elif live[rcache]:
                iovad.free(live[rcache].pop(a % len(live[rcache])))
            nodes = iovad.snapshot().nodes
            assert all(hi < lo for (_, hi), (lo, _) in itertools.pairwise(nodes))  # disjoint
        on, off = domains[True], domains[False]
        # the i-th live request of each is the same request: the same extent
        assert _extents(on, live[True]) == _extents(off, live[False])
        assert len(on) == len(off) and on.allocated_bytes == off.allocated_bytes
        assert (on.counters.allocs, on.counters.frees) == (off.counters.allocs, off.counters.frees)
    on = domains[True]
    on.flush_rcache()
    assert {lo for lo, _ in on.snapshot().nodes} == {addr // G for addr in live[True]}
    assert on.cached_count == 0
