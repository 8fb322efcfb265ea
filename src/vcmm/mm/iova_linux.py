"""Mainline Linux's IOVA placement policy (``"linux"``): iova.c and dma-iommu.c of 6.x.

The seed's policy (:mod:`vcmm.mm.iova`) follows the 2015 allocator seed 002 used;
IOVA layouts and exhaustion studies made with it do not match a current kernel.  This
one does what ``iommu_dma_alloc_iova`` / ``alloc_iova_fast`` and
``iommu_dma_free_iova`` / ``free_iova_fast`` do (drivers/iommu/dma-iommu.c, iova.c,
Linux 6.7 and later):

- the device limit becomes page frames as the kernel computes them: the limit is
  clamped to the aperture's end, ``limit >> shift`` is the last usable frame, so a
  limit that is not granule-aligned still lets the granule holding it be used;
- a size below 32 granules is rounded up to a power of two before anything else
  (``alloc_iova_fast``: "freeing non-power-of-two-sized allocations back into the
  IOVA caches will come back to bite us"); the node in the tree has the rounded size,
  the caller's extent stays what it asked for;
- the range cache (:class:`~vcmm.mm.iova_rcache.MagazineCache`) is binned by order
  (sizes up to 32 granules: orders 0..5), searches only the loaded 127-entry magazine
  and moves its top entry into the hole it takes from;
- the tree search is the shared walk (:mod:`vcmm.mm.iova_tree`) with one failure hint
  per domain, ``max32_alloc_size``: a failed search of *n* granules (any limit) makes
  later requests of *n* or more under a limit at or below 4 GiB fail at once, until a
  node starting below 4 GiB is removed;
- a tree failure flushes the whole cache and searches again; if that fails too, the
  allocation fails **and the cache stays flushed, the hint stays set and the loaded
  magazine stays rotated**, as in the kernel.  This is the one place where a failing
  vcmm call changes state, and only this allocator's: the live ranges, the tree nodes
  of live and reserved ranges and the counters of successful calls are as before,
  and every cached range the flush returned to the tree is free, as it was to any
  caller.  (The seed policy undoes its flush.)

Exact undo (:meth:`LinuxIovaDomain.undo_alloc`) of a *successful* allocation is kept:
the DMA API takes back an IOVA whose mapping then failed, and the domain (magazine
rotation and flush included) is as before the allocation.

Not modelled: PCI's 32-bit-first retry (``pci_32bit_workaround``; vcmm's masters are
platform devices), several CPUs' magazines, and the 100 ms clock of the depot work
(call :meth:`LinuxIovaDomain.trim_depots` where that time would have passed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from vcmm import inject
from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError
from vcmm.mm.iova import IovaCounters
from vcmm.mm.iova_base import IovaSpace
from vcmm.mm.iova_rcache import (
    IOVA_MAG_SIZE,
    RCACHE_ORDERS,
    BinState,
    CacheSave,
    GetUndo,
    MagazineCache,
)
from vcmm.mm.iova_tree import SMALL_ORDERS, TreeSave
from vcmm.ranges import AddressRange

#: Sizes below this many granules are rounded up to a power of two.
ROUND_BELOW = 1 << (RCACHE_ORDERS - 1)
#: ``unsigned long`` on arm64: the kernel's pfn arithmetic wraps at 64 bits.
ULONG_MASK = (1 << 64) - 1
#: The fault-injection site, read once: looking an enum member up through its class
#: costs a dictionary look-up on every allocation.
_IOVA_SITE = inject.AllocSite.IOVA


@dataclass(frozen=True, slots=True)
class LinuxIovaSnapshot:
    """The complete state of a :class:`LinuxIovaDomain`, comparable with ``==``."""

    nodes: tuple[tuple[int, int], ...]
    live: tuple[tuple[int, int], ...]
    reserved: tuple[tuple[int, int], ...]
    rcache: tuple[BinState, ...]
    cached32_node: int
    cached_node: int
    max32_alloc_size: int
    counters: IovaCounters


#: How to take one allocation back that is not a hit of the loaded magazine's top:
#: ``(pfn, got, cached, flush_saved, hit)``: the magazine search's undo (``None``: the
#: size is not cacheable), the tree's cached nodes and hint before (``None`` for a
#: cache hit, which does not move them), and the whole tree and cache at the flush if
#: one ran.
GeneralUndo: TypeAlias = tuple[
    int, GetUndo | None, tuple[int, int, int] | None, tuple[TreeSave, CacheSave, int] | None, bool
]
#: How to take one allocation back: the bare first frame for a hit of the loaded
#: magazine's top (undo is newest first, so it goes back on top of the bin of its live
#: size's order), else :data:`GeneralUndo`.  Nothing is built for the common hit, and
#: a plain tuple otherwise: a frozen dataclass would cost as much as a cache hit.
LinuxUndo: TypeAlias = int | GeneralUndo


class LinuxIovaDomain(IovaSpace[LinuxUndo]):
    """The IOVA space of one IOMMU domain, placed as mainline Linux places it."""

    policy = "linux"

    def __init__(
        self,
        granule: int,
        aperture: AddressRange | None = None,
        *,
        rcache: bool = True,
        magazine_size: int = IOVA_MAG_SIZE,
    ) -> None:
        super().__init__(granule, aperture)
        magazine_size = check_int("", "magazine_size", magazine_size, minimum=1)
        self._max32 = self._geo.dma32_pfn
        self._cache = MagazineCache(magazine_size) if rcache else None
        # The hot paths' view of the cache (see MagazineCache): its bins, the magazine
        # size, and the largest cached size in granules (0 without a cache: one test).
        self._bins = self._cache.bins if self._cache is not None else ()
        self._magazine_size = magazine_size
        self._cacheable_max = ROUND_BELOW if self._cache is not None else 0
        #: The range :meth:`free` returned for a frame now cached or live again from
        #: the cache (see the seed policy's ``_freed``); an entry goes when its tree
        #: node goes.  A frame may come back with another size of the same order, so
        #: the size is checked before an entry is reused.
        self._freed: dict[int, AddressRange] = {}
        self._allocs = 0
        self._frees = 0
        self._hits = 0
        self._misses = 0
        self._flushes = 0
        #: Hits of the loaded magazine's top: allocations and hits that the counters add
        #: to ``_allocs`` and ``_hits`` (one increment on the hot path, not two).
        self._top_hits = 0

    # -- properties --------------------------------------------------------------

    @property
    def rcache_enabled(self) -> bool:
        return self._cache is not None

    @property
    def rcache_max_size(self) -> int:
        """Largest cached range in bytes (order 5: 32 granules)."""
        return ROUND_BELOW << self._shift

    @property
    def max32_alloc_size(self) -> int:
        """The failure hint in granules (``dma_32bit_pfn`` when nothing failed)."""
        return self._max32

    @property
    def counters(self) -> IovaCounters:
        """Event counts; ``rcache_flushes`` counts every flush that ran, a failed
        allocation's included (it stays flushed); the depot never overflows."""
        top = self._top_hits
        return IovaCounters(
            self._allocs + top, self._frees, self._hits + top, self._misses, 0, self._flushes
        )

    @property
    def cached_count(self) -> int:
        """Freed ranges parked in the magazines (still occupying the tree)."""
        return len(self._cache) if self._cache is not None else 0

    def rcache_state(self) -> tuple[BinState, ...]:
        """Every order's loaded and previous magazine and depot."""
        return self._cache.state() if self._cache is not None else ()

    # -- allocation --------------------------------------------------------------

    def alloc(self, size: int, limit: int | None = None, *, size_aligned: bool = True) -> int:
        """``iommu_dma_alloc_iova``: ``size`` bytes below the inclusive ``limit`` (a DMA
        mask; default the aperture's last address), rounded and cached as mainline does.

        Raises :class:`~vcmm.errors.OutOfAddressSpaceError` when nothing fits even
        after the flush, which then stays (see the module documentation).
        """
        if type(size) is int and type(limit) is int and size > 0 and limit >= 0:
            npages = (size + self._granule_mask) >> self._shift
        else:
            npages, limit = self._check_request(size, limit)
        if size_aligned is not True:
            raise InvalidArgumentError(
                "size_aligned=False: mainline's alloc_iova_fast always size-aligns; "
                "only the seed policy places unaligned ranges"
            )
        limit_excl = limit >> self._shift
        if limit_excl > self._end_pfn:
            limit_excl = self._end_pfn
        limit_excl += 1
        if limit_excl <= self._start_pfn:
            self._check_limit(limit_excl, limit)
        if inject.armed:
            inject.check(_IOVA_SITE, self, OutOfAddressSpaceError)
        if npages > self._cacheable_max:  # not a cached size, or no cache
            alloc_pages = 1 << SMALL_ORDERS[npages] if npages < ROUND_BELOW else npages
            return self._alloc_tree(npages, alloc_pages, limit, limit_excl, None)
        # The common hit, written out: the loaded magazine's top frame fits.  (A limit
        # below the rounded size, which wraps to ULONG_MAX in the kernel so that any
        # frame fits, takes the general path.)
        order = SMALL_ORDERS[npages]
        mag = self._bins[order].loaded
        if mag and mag[-1] <= limit_excl - (1 << order):
            pfn = mag.pop()
            self._live[pfn] = npages
            self._top_hits += 1
            if self._last is not None:
                self._older.append(self._last)
            self._last = pfn
            return pfn << self._shift
        return self._alloc_cached(npages, limit, limit_excl, order)

    def _alloc_cached(self, npages: int, limit: int, limit_excl: int, order: int) -> int:
        """A cached size that the loaded magazine's top does not serve: the whole
        magazine search with its rotation (``__iova_rcache_get``), then the tree."""
        assert self._cache is not None
        alloc_pages = 1 << order
        pfn, got = self._cache.get(order, (limit_excl - alloc_pages) & ULONG_MASK)
        if pfn is None:
            return self._alloc_tree(npages, alloc_pages, limit, limit_excl, got)
        self._live[pfn] = npages
        self._allocs += 1
        self._hits += 1
        self._remember(flushed=False)
        self._last = (pfn, got, None, None, True)
        return pfn << self._shift

    def _alloc_tree(
        self, npages: int, alloc_pages: int, limit: int, limit_excl: int, got: GetUndo | None
    ) -> int:
        """The allocation after a cache miss (``got``: the magazine search's undo, or
        ``None`` when the size is not cached): the tree, then the flush and retry."""
        cached = (self._tree.cached32, self._tree.cached, self._max32)
        flush_saved = None
        pfn = self._alloc_iova(alloc_pages, limit_excl)
        if pfn is None and self._cache is not None:
            flush_saved = (self._tree.save(), self._cache.save(), self._max32)
            self._flush()
            pfn = self._alloc_iova(alloc_pages, limit_excl)
        if pfn is None:
            self._forget_last()
            raise self._no_room(alloc_pages, limit, True, npages)
        self._live[pfn] = npages
        self._allocs += 1
        if got is not None:
            self._misses += 1
        self._remember(flushed=flush_saved is not None)
        self._last = (pfn, got, cached, flush_saved, False)
        return pfn << self._shift

    def _alloc_iova(self, size: int, limit_excl: int) -> int | None:
        """``__alloc_and_insert_iova_range`` with its ``max32_alloc_size`` hint."""
        if limit_excl <= self._geo.dma32_pfn and size >= self._max32:
            return None
        found = self._tree.search(size, limit_excl, True)
        if found is None:
            self._max32 = size
            return None
        self._tree.insert(found[0], size, found[1])
        return found[0]

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
        if isinstance(last, int):  # a hit of the loaded magazine's top
            assert self._cache is not None
            self._cache.undo_pop_top(SMALL_ORDERS[npages], pfn)
            self._top_hits -= 1
        else:
            self._undo_general(last)
        self._pop_last()
        return self._geo.range(pfn, npages)

    def _undo_general(self, last: GeneralUndo) -> None:
        pfn, got, cached, flush_saved, hit = last
        if flush_saved is not None and self._cache is not None:
            tree, cache, _ = flush_saved
            self._tree.restore(tree)
            self._cache.restore(cache)
            self._flushes -= 1
        elif not hit:
            self._tree.remove(pfn)
        if cached is not None:
            self._tree.cached32, self._tree.cached, self._max32 = cached
        if got is not None and self._cache is not None:
            self._cache.undo_get(got)
            if hit:
                self._hits -= 1
            else:
                self._misses -= 1
        self._allocs -= 1

    # -- the cache ---------------------------------------------------------------

    def _remove(self, pfn: int) -> None:
        """``remove_iova``: the node goes, and a node below 4 GiB resets the hint."""
        self._tree.remove(pfn)
        if pfn < self._geo.dma32_pfn:
            self._max32 = self._geo.dma32_pfn

    def _flush(self) -> int:
        assert self._cache is not None
        frames = self._cache.drain()
        for pfn in frames:
            self._freed.pop(pfn, None)
            self._remove(pfn)
        self._flushes += 1
        return len(frames)

    def flush_rcache(self) -> int:
        """Really free every cached range (the flush of a failed allocation, or a CPU
        going offline); returns the count."""
        self._forget_last()
        return self._flush() if self._cache is not None else 0

    def trim_depots(self) -> int:
        """Run the depot work items to completion (what 100 ms per surplus magazine
        does in the kernel): each order keeps one depot magazine; returns the count
        of ranges freed."""
        if self._cache is None:
            return 0
        self._forget_last()
        frames = self._cache.trim_depots()
        for pfn in frames:
            self._freed.pop(pfn, None)
            self._remove(pfn)
        return len(frames)

    # -- the policy's parts of free and reserve --------------------------------------

    def free(self, addr: int) -> AddressRange:
        """``iommu_dma_free_iova``/``free_iova_fast``: free the range whose first
        granule holds ``addr`` and return it (see :meth:`IovaSpace.free`).  The order
        of the size asked for picks the bin; a larger range's node goes at once."""
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
        if npages <= self._cacheable_max:  # order < RCACHE_ORDERS
            order = SMALL_ORDERS[npages]
            mag = self._bins[order].loaded
            if len(mag) < self._magazine_size:  # __iova_rcache_insert, written out
                mag.append(pfn)
            else:  # full: the magazine rotation
                assert self._cache is not None
                self._cache.insert(order, pfn)
            freed = self._freed.get(pfn)
            if freed is None or freed.size != npages << self._shift:
                freed = self._freed[pfn] = AddressRange(pfn << self._shift, npages << self._shift)
            return freed
        self._remove(pfn)
        return AddressRange(pfn << self._shift, npages << self._shift)

    def _cached_pfns(self) -> set[int]:
        return self._cache.frames() if self._cache is not None else set()

    def _evict(self, pfn: int) -> None:
        if self._cache is not None:
            self._cache.evict(pfn)
        self._freed.pop(pfn, None)
        self._remove(pfn)

    def snapshot(self) -> LinuxIovaSnapshot:
        return LinuxIovaSnapshot(
            nodes=self._tree.nodes(),
            live=tuple(sorted(self._live.items())),
            reserved=tuple(sorted(self._reserved.items())),
            rcache=self.rcache_state(),
            cached32_node=self._tree.cached32,
            cached_node=self._tree.cached,
            max32_alloc_size=self._max32,
            counters=self.counters,
        )

    def __repr__(self) -> str:
        return (
            f"LinuxIovaDomain(granule={self.granule:#x}, aperture={self.aperture}, "
            f"{len(self._live)} live, {self.cached_count} cached, "
            f"rcache={self.rcache_enabled})"
        )
