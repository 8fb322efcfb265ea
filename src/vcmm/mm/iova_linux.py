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

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError
from vcmm.mm.iova import IovaCounters
from vcmm.mm.iova_base import IovaSpace
from vcmm.mm.iova_rcache import (
    IOVA_MAG_SIZE,
    RCACHE_ORDERS,
    BinState,
    CacheSave,
    GetUndo,
    MagazineCache,
    order_base_2,
)
from vcmm.mm.iova_tree import TreeSave, align_pages
from vcmm.ranges import AddressRange

#: Sizes below this many granules are rounded up to a power of two.
ROUND_BELOW = 1 << (RCACHE_ORDERS - 1)
#: ``unsigned long`` on arm64: the kernel's pfn arithmetic wraps at 64 bits.
ULONG_MASK = (1 << 64) - 1


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


@dataclass(frozen=True, slots=True)
class _LastAlloc:
    """How to take the most recent allocation back: the magazine search's undo
    (``None``: the size is not cacheable), the tree's cached nodes and hint before,
    and the whole tree and cache at the flush if one ran."""

    pfn: int
    got: GetUndo | None
    cached: tuple[int, int, int]
    flush_saved: tuple[TreeSave, CacheSave, int] | None
    hit: bool


class LinuxIovaDomain(IovaSpace):
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
        self._last: _LastAlloc | None = None
        #: Undo records of the allocations before ``_last``, newest last (LIFO undo).
        self._older: list[_LastAlloc] = []
        self._counts = [0] * 6  # allocs, frees, hits, misses, overflows (never), flushes

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
        return IovaCounters(*self._counts)

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
        npages, limit = self._check_request(size, limit)
        if size_aligned is not True:
            raise InvalidArgumentError(
                "size_aligned=False: mainline's alloc_iova_fast always size-aligns; "
                "only the seed policy places unaligned ranges"
            )
        limit_excl = min(limit >> self._shift, self._geo.end_pfn) + 1
        self._check_limit(limit_excl, limit)
        alloc_pages = align_pages(npages) if npages < ROUND_BELOW else npages
        order = order_base_2(alloc_pages)
        cache = self._cache if order < RCACHE_ORDERS else None
        cached = (self._tree.cached32, self._tree.cached, self._max32)
        pfn, got = None, None
        if cache is not None:
            pfn, got = cache.get(order, (limit_excl - alloc_pages) & ULONG_MASK)
        hit = pfn is not None
        flush_saved = None
        if pfn is None:
            pfn = self._alloc_iova(alloc_pages, limit_excl)
        if pfn is None and self._cache is not None:
            flush_saved = (self._tree.save(), self._cache.save(), self._max32)
            self._flush()
            pfn = self._alloc_iova(alloc_pages, limit_excl)
        if pfn is None:
            self._forget_last()
            raise self._no_room(alloc_pages, limit, True, npages)
        self._live[pfn] = npages
        self._counts[0] += 1
        if cache is not None:
            self._counts[2 if hit else 3] += 1
        self._remember(flushed=flush_saved is not None)
        self._last = _LastAlloc(pfn, got, cached, flush_saved, hit)
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
        last = self._last
        self._check_undo(addr, None if last is None else last.pfn)
        assert last is not None
        npages = self._live.pop(last.pfn)
        if last.flush_saved is not None and self._cache is not None:
            tree, cache, _ = last.flush_saved
            self._tree.restore(tree)
            self._cache.restore(cache)
            self._counts[5] -= 1
        elif not last.hit:
            self._tree.remove(last.pfn)
        self._tree.cached32, self._tree.cached, self._max32 = last.cached
        if last.got is not None and self._cache is not None:
            self._cache.undo_get(last.got)
            self._counts[2 if last.hit else 3] -= 1
        self._counts[0] -= 1
        self._last = self._older.pop() if self._older else None
        return self._geo.range(last.pfn, npages)

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
            self._remove(pfn)
        self._counts[5] += 1
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
            self._remove(pfn)
        return len(frames)

    # -- the policy's parts of free and reserve --------------------------------------

    def _release(self, pfn: int, npages: int) -> None:
        """``free_iova_fast``: the order of the size asked for picks the bin."""
        self._forget_last()
        order = order_base_2(npages)
        if self._cache is not None and order < RCACHE_ORDERS:
            self._cache.insert(order, pfn)
        else:
            self._remove(pfn)
        self._counts[1] += 1

    def _cached_pfns(self) -> set[int]:
        return self._cache.frames() if self._cache is not None else set()

    def _evict(self, pfn: int) -> None:
        if self._cache is not None:
            self._cache.evict(pfn)
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
