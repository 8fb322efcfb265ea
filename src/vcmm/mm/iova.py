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
from vcmm.mm.iova_tree import TreeSave
from vcmm.ranges import AddressRange

#: Linux's IOVA_RANGE_CACHE_MAX_SIZE is 6 (orders 0..5 cached): sizes up to 2**5 granules.
DEFAULT_RCACHE_MAX_ORDER = 5
#: One CPU's share of a Linux rcache bin before 6.7: loaded + previous magazine + 32
#: depot magazines of 128 entries each (IOVA_MAG_SIZE, MAX_GLOBAL_MAGS).
DEFAULT_RCACHE_CAPACITY = 34 * 128


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


@dataclass(frozen=True, slots=True)
class _LastAlloc:
    """How to take the most recent allocation back (:meth:`IovaDomain.undo_alloc`): put
    it back in its bin (``bin_at`` = (bin size, index)), take it out of the tree and
    restore the cached nodes (``cached``), or, if a flush ran, restore the whole state
    from before the flush (``flush_saved``, which takes precedence)."""

    pfn: int
    bin_at: tuple[int, int] | None
    cached: tuple[int, int] | None
    flush_saved: FlushSave | None
    cacheable: bool
    hit: bool
    flushed: bool


class IovaDomain(IovaSpace):
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
        self._rcache_capacity = rcache_capacity
        self._bins: dict[int, list[int]] = {}
        self._fail_hint: dict[tuple[int, bool], int] = {}
        #: How to take the most recent allocation back, or None once anything else
        #: changed the domain.
        self._last: _LastAlloc | None = None
        #: Undo records of the allocations before ``_last``, newest last (LIFO undo).
        self._older: list[_LastAlloc] = []
        self._allocs = 0
        self._frees = 0
        self._hits = 0
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
        return IovaCounters(
            self._allocs, self._frees, self._hits, self._misses, self._overflows, self._flushes
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
        """
        npages, limit = self._check_request(size, limit)
        limit_excl = min((limit + 1) >> self._shift, self._geo.end_pfn + 1)
        self._check_limit(limit_excl, limit)
        inject.check(inject.AllocSite.IOVA, self, OutOfAddressSpaceError)
        cacheable = self._rcache and npages <= self._rcache_max
        found = self._rcache_get(npages, limit_excl, size_aligned) if cacheable else None
        hit = found is not None
        flushed = False
        bin_at = cached = None
        flush_saved: FlushSave | None = None
        if found is not None:
            pfn: int | None = found[0]
            bin_at = (npages, found[1])
        else:
            cached = (self._tree.cached32, self._tree.cached)
            pfn = self._tree_alloc(npages, limit_excl, size_aligned)
        if pfn is None and self._bins and any(self._bins.values()):
            pfn, flush_saved = self._flush_and_retry(npages, limit_excl, size_aligned)
            flushed = pfn is not None
        if pfn is None:
            raise self._no_room(npages, limit, size_aligned)
        self._live[pfn] = npages
        self._allocs += 1
        if cacheable:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
        if flushed:
            self._flushes += 1
        self._remember(flushed=flushed)
        self._last = _LastAlloc(pfn, bin_at, cached, flush_saved, cacheable, hit, flushed)
        return pfn << self._shift

    def undo_alloc(self, addr: int) -> AddressRange:
        """Take back the most recent allocation, ``addr``, leaving the domain exactly as
        before it (:meth:`snapshot` equal): for a mapping that failed after its IOVA
        was allocated.  Refused (changing nothing) if anything else happened since.
        Repeated, it takes back the allocations before, newest first (a compound
        operation undoing several mappings), up to :data:`~vcmm.mm.iova_base.UNDO_DEPTH` of them."""
        last = self._last
        self._check_undo(addr, None if last is None else last.pfn)
        assert last is not None
        pfn = last.pfn
        npages = self._live.pop(pfn)
        if last.flush_saved is not None:
            tree, bins, hints = last.flush_saved
            self._tree.restore(tree)
            self._bins, self._fail_hint = bins, hints
        elif last.bin_at is not None:
            size, index = last.bin_at
            self._bins.setdefault(size, []).insert(index, pfn)
        else:
            assert last.cached is not None
            self._tree.remove(pfn)
            self._tree.cached32, self._tree.cached = last.cached
        self._allocs -= 1
        if last.cacheable:
            if last.hit:
                self._hits -= 1
            else:
                self._misses -= 1
        if last.flushed:
            self._flushes -= 1
        self._last = self._older.pop() if self._older else None
        return self._geo.range(pfn, npages)

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

    def _release(self, pfn: int, npages: int) -> None:
        self._forget_last()
        if self._rcache and npages <= self._rcache_max:
            entries = self._bins.setdefault(npages, [])
            if len(entries) < self._rcache_capacity:
                entries.append(pfn)
            else:
                self._overflows += 1
                self._tree_remove(pfn)
        else:
            self._tree_remove(pfn)
        self._frees += 1

    def _cached_pfns(self) -> set[int]:
        return {pfn for entries in self._bins.values() for pfn in entries}

    def _evict(self, pfn: int) -> None:
        for entries in self._bins.values():
            if pfn in entries:
                entries.remove(pfn)
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
