"""The seed's IOVA placement policy (``"seed"``): Linux's iova.c as seed 002 used it.

Seed 002 builds the DMA API on an IOMMU from this allocator: the granule is the
smallest IOMMU page size, page frame 0 is never handed out (so IOVA 0 stays an invalid
handle), allocations are searched top-down from the device's DMA mask and are
size-aligned to a power of two.  The review of that patch asked for the aperture to
bound every allocation and for a double unmap not to crash; both are enforced here.
Mainline 6.x places differently; that policy is :mod:`vcmm.mm.iova_linux`, and
``docs/DMA.md`` lists the differences.

How it works (the tree and its walk are :mod:`vcmm.mm.iova_tree`, shared with the
mainline policy):

- A request of *n* granules is a node of exactly *n* granules, aligned to *n* rounded
  up to a power of two; the limit is inclusive and the whole range ends at or below
  it (``(limit + 1) >> shift`` page frames are usable).
- A failed search remembers the smallest size that failed for that limit until the
  next real free, so repeated failures are cheap.  This hint is the only thing a
  failing call may change; it is a pure search shortcut and not part of
  :meth:`IovaDomain.snapshot`.
- The range cache (rcache) keeps recently freed ranges of up to ``2**rcache_max_order``
  granules *still occupied in the tree* and hands them straight back to an allocation of
  the same size under a suitable limit.  Bins are keyed by the exact granule count, so
  :meth:`IovaDomain.find` and the unmap size stay exact (the seed's unmap path unmaps
  what the allocator says it mapped).  A full bin makes a free really free.  When the
  tree has no room, the cache is flushed and the search retried, as ``alloc_iova_fast``
  does; if that also fails the flush is undone so the failing call changes nothing.
- :meth:`IovaDomain.undo_alloc` takes recent allocations back *exactly*, newest first: a
  range that came from the rcache goes back to its place in its bin, a tree node is
  removed and the cached nodes restored, a flush is reverted, the counters step back.
  A DMA mapping that fails after its IOVA was allocated (table memory running out)
  uses it, so the domain ends as it began; an ordinary ``free`` would park the range
  in the cache instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from vcmm import inject
from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError
from vcmm.mm.iova_base import IovaSpace
from vcmm.mm.iova_tree import SMALL_MAX, SMALL_ORDERS, TreeSave, align_pages
from vcmm.ranges import AddressRange

#: Linux's IOVA_RANGE_CACHE_MAX_SIZE is 6 (orders 0..5 cached): sizes up to 2**5 granules.
DEFAULT_RCACHE_MAX_ORDER = 5
#: One CPU's share of a Linux rcache bin before 6.7: loaded + previous magazine + 32
#: depot magazines of 128 entries each (IOVA_MAG_SIZE, MAX_GLOBAL_MAGS).
DEFAULT_RCACHE_CAPACITY = 34 * 128
#: The fault-injection site, read once: an enum member looked up through its class
#: costs more than the rest of a cached allocation's checks (Python 3.11).
_IOVA_SITE = inject.AllocSite.IOVA


@dataclass(frozen=True, slots=True)
class IovaCounters:
    """Event counts of an IOVA domain (the seed policy counts only successful calls)."""

    allocs: int = 0
    frees: int = 0
    rcache_hits: int = 0
    rcache_misses: int = 0
    rcache_overflows: int = 0
    rcache_flushes: int = 0


@dataclass(frozen=True, slots=True)
class IovaSnapshot:
    """The complete state of an :class:`IovaDomain`, comparable with ``==``."""

    nodes: tuple[tuple[int, int], ...]
    live: tuple[tuple[int, int], ...]
    reserved: tuple[tuple[int, int], ...]
    rcache: tuple[tuple[int, tuple[int, ...]], ...]
    cached32_node: int
    cached_node: int
    counters: IovaCounters


#: The state before a flush of the range cache: the tree, the bins, the failure hints.
FlushSave: TypeAlias = tuple[TreeSave, dict[int, list[int]], dict[tuple[int, bool], int]]

#: How to take one allocation back (:meth:`IovaDomain.undo_alloc`).  An allocation
#: that took the top entry of its bin records only its first frame (the bin is its
#: live size): undo is newest first, so the bin is then as the allocation left it and
#: the entry goes back on top.
#: Any other records ``(pfn, bin_at, cached, flush_saved, cacheable, hit)``: put it
#: back in its bin (``bin_at`` = (bin size, index)), or take it out of the tree and
#: restore the cached nodes (``cached``), or, if a flush ran, restore the whole state
#: from before the flush (``flush_saved``, which takes precedence).  Plain values: one
#: is made per allocation, and a frozen dataclass would cost as much as a cache hit.
SeedUndo: TypeAlias = (
    int | tuple[int, tuple[int, int] | None, tuple[int, int] | None, FlushSave | None, bool, bool]
)

#: ``alignment - 1`` of a size-aligned range of *n* granules, for small *n* (the
#: cached sizes by default): a table lookup is cheaper than computing it per call.
_ALIGN_MASKS = tuple((1 << order) - 1 for order in SMALL_ORDERS)


class IovaDomain(IovaSpace[SeedUndo]):
    """The IOVA space of one IOMMU domain: top-down, size-aligned, with a range cache."""

    policy = "seed"

    def __init__(
        self,
        granule: int,
        aperture: AddressRange | None = None,
        *,
        rcache: bool = True,
        rcache_max_order: int = DEFAULT_RCACHE_MAX_ORDER,
        rcache_capacity: int = DEFAULT_RCACHE_CAPACITY,
    ) -> None:
        super().__init__(granule, aperture)
        rcache_max_order = check_int("", "rcache_max_order", rcache_max_order, minimum=None)
        rcache_capacity = check_int("", "rcache_capacity", rcache_capacity, minimum=None)
        if not 0 <= rcache_max_order <= 20:
            raise InvalidArgumentError(f"rcache_max_order {rcache_max_order} is outside 0..20")
        if rcache_capacity < 1:
            raise InvalidArgumentError(f"rcache_capacity {rcache_capacity} must be >= 1")
        self._rcache = bool(rcache)
        self._rcache_max = 1 << rcache_max_order
        #: Largest cached size in granules, 0 without a cache (one test on the hot path).
        self._cacheable_max = self._rcache_max if self._rcache else 0
        self._rcache_capacity = rcache_capacity
        self._bins: dict[int, list[int]] = {}
        #: The range :meth:`free` returned for a frame now cached or live again from
        #: the cache: freeing it again returns the same immutable value instead of
        #: building one (which costs a third of a cached alloc+free).  An entry goes
        #: when its tree node goes, so a frame here always has the size it had.
        self._freed: dict[int, AddressRange] = {}
        self._fail_hint: dict[tuple[int, bool], int] = {}
        self._allocs = 0
        self._frees = 0
        self._hits = 0
        #: Cache hits of the top bin entry: allocations and hits that the counters
        #: add to ``_allocs`` and ``_hits`` (one increment on the hot path, not two).
        self._top_hits = 0
        self._misses = 0
        self._overflows = 0
        self._flushes = 0

    # -- properties --------------------------------------------------------------

    @property
    def rcache_enabled(self) -> bool:
        return self._rcache

    @property
    def rcache_max_size(self) -> int:
        """Largest cached range in bytes (``2**rcache_max_order`` granules)."""
        return self._rcache_max << self._shift

    @property
    def counters(self) -> IovaCounters:
        top = self._top_hits
        return IovaCounters(
            self._allocs + top,
            self._frees,
            self._hits + top,
            self._misses,
            self._overflows,
            self._flushes,
        )

    @property
    def cached_count(self) -> int:
        """Freed ranges parked in the rcache (still occupying the tree)."""
        return sum(len(b) for b in self._bins.values())

    # -- allocation --------------------------------------------------------------

    def alloc(self, size: int, limit: int | None = None, *, size_aligned: bool = True) -> int:
        """Allocate ``size`` bytes (rounded up to the granule) ending at or below ``limit``.

        ``limit`` is inclusive, like a device's ``dma_mask`` (default: the aperture's
        last address).  With ``size_aligned`` the IOVA is aligned to the size rounded up
        to a power of two granules, as dma-iommu always asks.

        The body is the cache hit of the top bin entry written out (the steady state
        of a streaming device); every other case goes to :meth:`_alloc_general`, which
        does the same for that case.
        """
        if type(size) is int and type(limit) is int and size > 0 and limit >= 0:
            npages = (size + self._granule_mask) >> self._shift
        else:
            npages, limit = self._check_request(size, limit)
        limit_excl = (limit + 1) >> self._shift
        if limit_excl > self._end_pfn:
            limit_excl = self._end_pfn + 1
        if limit_excl <= self._start_pfn:
            self._check_limit(limit_excl, limit)
        if inject.armed:
            inject.check(_IOVA_SITE, self, OutOfAddressSpaceError)
        if npages <= self._cacheable_max:
            entries = self._bins.get(npages)
            if entries:
                pfn = entries[-1]
                mask = _ALIGN_MASKS[npages] if npages <= SMALL_MAX else align_pages(npages) - 1
                if pfn + npages <= limit_excl and not (size_aligned and pfn & mask):
                    del entries[-1]
                    self._live[pfn] = npages
                    self._top_hits += 1
                    if self._last is not None:
                        self._older.append(self._last)
                    self._last = pfn
                    return pfn << self._shift
            return self._alloc_general(npages, limit, limit_excl, size_aligned, True)
        return self._alloc_general(npages, limit, limit_excl, size_aligned, False)

    def _alloc_general(
        self, npages: int, limit: int, limit_excl: int, aligned: bool, cacheable: bool
    ) -> int:
        """An allocation after the checks: a cache search, the tree, the flush."""
        found = self._rcache_get(npages, limit_excl, aligned) if cacheable else None
        bin_at = cached = None
        flush_saved: FlushSave | None = None
        if found is not None:
            pfn: int | None = found[0]
            bin_at = (npages, found[1])
        else:
            cached = (self._tree.cached32, self._tree.cached)
            pfn = self._tree_alloc(npages, limit_excl, aligned)
        if pfn is None and self._bins and any(self._bins.values()):
            pfn, flush_saved = self._flush_and_retry(npages, limit_excl, aligned)
            if pfn is None:
                flush_saved = None
        if pfn is None:
            raise self._no_room(npages, limit, aligned)
        self._live[pfn] = npages
        self._allocs += 1
        if cacheable:
            if found is not None:
                self._hits += 1
            else:
                self._misses += 1
        if flush_saved is not None:
            self._flushes += 1
        self._remember(flushed=flush_saved is not None)
        self._last = (pfn, bin_at, cached, flush_saved, cacheable, found is not None)
        return pfn << self._shift

    def undo_alloc(self, addr: int) -> AddressRange:
        """Take back the most recent allocation, ``addr``, leaving the domain exactly as
        before it (:meth:`snapshot` equal): for a mapping that failed after its IOVA
        was allocated.  Refused (changing nothing) if anything else happened since.
        Repeated, it takes back the allocations before, newest first (a compound
        operation undoing several mappings), up to :data:`~vcmm.mm.iova_base.UNDO_DEPTH` of them."""
        pfn = self._check_undo(addr)
        last = self._last
        assert last is not None
        npages = self._live.pop(pfn)
        if isinstance(last, int):  # the top entry of its bin
            self._bins.setdefault(npages, []).append(pfn)
            self._top_hits -= 1
        else:
            self._undo_general(last)
        self._pop_last()
        return self._geo.range(pfn, npages)

    def _undo_general(
        self,
        last: tuple[
            int, tuple[int, int] | None, tuple[int, int] | None, FlushSave | None, bool, bool
        ],
    ) -> None:
        pfn, bin_at, cached, flush_saved, cacheable, hit = last
        if flush_saved is not None:
            tree, bins, hints = flush_saved
            self._tree.restore(tree)
            self._bins, self._fail_hint = bins, hints
            self._flushes -= 1
        elif bin_at is not None:
            size, index = bin_at
            self._bins.setdefault(size, []).insert(index, pfn)
        else:
            assert cached is not None
            self._tree_remove(pfn)  # frees space: a remembered failure may fit now
            self._tree.cached32, self._tree.cached = cached
        self._allocs -= 1
        if cacheable:
            if hit:
                self._hits -= 1
            else:
                self._misses -= 1

    def _rcache_get(self, npages: int, limit_excl: int, aligned: bool) -> tuple[int, int] | None:
        """A cached range that fits, taken out of its bin: ``(pfn, index in bin)``."""
        entries = self._bins.get(npages)
        if not entries:
            return None
        align = 1 << (npages - 1).bit_length()
        for j in range(len(entries) - 1, -1, -1):
            pfn = entries[j]
            if pfn + npages <= limit_excl and (not aligned or pfn % align == 0):
                del entries[j]
                return pfn, j
        return None

    def _tree_alloc(self, size: int, limit_excl: int, aligned: bool) -> int | None:
        """Find and insert a ``size``-frame node below ``limit_excl``; ``None`` if full."""
        hint = self._fail_hint.get((limit_excl, aligned))
        if hint is not None and size >= hint:
            return None
        found = self._tree.search(size, limit_excl, aligned)
        if found is None:
            self._fail_hint[(limit_excl, aligned)] = size
            return None
        self._tree.insert(found[0], size, found[1])
        return found[0]

    def _tree_remove(self, pfn: int) -> None:
        self._tree.remove(pfn)
        self._fail_hint.clear()

    def _flush_bins(self) -> int:
        count = 0
        for size in sorted(self._bins):
            for pfn in self._bins[size]:
                self._freed.pop(pfn, None)
                self._tree_remove(pfn)
                count += 1
        self._bins.clear()
        return count

    def _flush_and_retry(
        self, npages: int, limit_excl: int, aligned: bool
    ) -> tuple[int | None, FlushSave]:
        """Flush the cache and search again; on failure the flush is reverted.  Returns
        the frame found and the state before the flush (for :meth:`undo_alloc`)."""
        saved = (
            self._tree.save(),
            {size: entries.copy() for size, entries in self._bins.items()},
            dict(self._fail_hint),
        )
        self._flush_bins()
        pfn = self._tree_alloc(npages, limit_excl, aligned)
        if pfn is None:
            tree, bins, hints = saved
            self._tree.restore(tree)
            self._bins, self._fail_hint = bins, hints
        return pfn, saved

    def flush_rcache(self) -> int:
        """Really free every cached range (Linux: free_cpu_cached_iovas); returns the count."""
        self._forget_last()
        count = self._flush_bins()
        if count:
            self._flushes += 1
        return count

    # -- the policy's parts of free and reserve --------------------------------------

    def free(self, addr: int) -> AddressRange:
        """Free the range whose first granule holds ``addr``; returns the range freed
        (see :meth:`IovaSpace.free`).  A range of up to ``2**rcache_max_order``
        granules is parked in its bin while the bin has room; otherwise its node goes."""
        if type(addr) is not int or addr < 0:
            addr = self._check_free(addr)
        pfn = addr >> self._shift
        npages = self._live.pop(pfn, None)
        if npages is None:
            raise self._not_live(addr)
        self._last = None
        if self._older:
            self._older.clear()
        self._frees += 1
        if npages <= self._cacheable_max:
            entries = self._bins.get(npages)
            if entries is None:
                entries = self._bins[npages] = []
            if len(entries) < self._rcache_capacity:
                entries.append(pfn)
                freed = self._freed.get(pfn)
                if freed is None:
                    freed = self._freed[pfn] = AddressRange(
                        pfn << self._shift, npages << self._shift
                    )
                return freed
            self._overflows += 1
            self._freed.pop(pfn, None)
        self._tree_remove(pfn)
        return AddressRange(pfn << self._shift, npages << self._shift)

    def _cached_pfns(self) -> set[int]:
        return {pfn for entries in self._bins.values() for pfn in entries}

    def _evict(self, pfn: int) -> None:
        for entries in self._bins.values():
            if pfn in entries:
                entries.remove(pfn)
        self._freed.pop(pfn, None)
        self._tree_remove(pfn)

    def snapshot(self) -> IovaSnapshot:
        return IovaSnapshot(
            nodes=self._tree.nodes(),
            live=tuple(sorted(self._live.items())),
            reserved=tuple(sorted(self._reserved.items())),
            rcache=tuple((s, tuple(e)) for s, e in sorted(self._bins.items()) if e),
            cached32_node=self._tree.cached32,
            cached_node=self._tree.cached,
            counters=self.counters,
        )

    def __repr__(self) -> str:
        return (
            f"IovaDomain(granule={self.granule:#x}, aperture={self.aperture}, "
            f"{len(self._live)} live, {self.cached_count} cached, rcache={self._rcache})"
        )
