"""An IOVA allocator with the semantics of Linux's drivers/iommu/iova.c, as dma-iommu uses it.

Seed 002 builds the DMA API on an IOMMU from this allocator: the granule is the
smallest IOMMU page size, page frame 0 is never handed out (so IOVA 0 stays an invalid
handle), allocations are searched top-down from the device's DMA mask and are
size-aligned to a power of two.  The review of that patch asked for the aperture to
bound every allocation and for a double unmap not to crash; both are enforced here.

How it works (the same shape as the kernel, written for Python):

- Occupied ranges are nodes ``[lo, hi]`` (page frames, inclusive) in two parallel sorted
  lists, with an *anchor* node above the aperture so every search has a starting node.
  Inserting or removing is a ``bisect`` plus a list memmove.
- A search starts at a *cached node* (``cached32`` for limits inside 4 GiB, ``cached``
  for the others), walks down to the first gap that fits, and retries once from the
  limit down to the cached node if the lower part was full.  The cached node follows
  the last allocation and moves up when something at or above it is freed, so a
  steady map/unmap stream finds its gap at once instead of scanning the population.
- A failed search remembers the smallest size that failed for that limit until the
  next real free (the kernel's ``max32_alloc_size``), so repeated failures are cheap.
  This hint is the only thing a failing call may change; it is a pure search shortcut
  and not part of :meth:`IovaDomain.snapshot`.
- The range cache (rcache) keeps recently freed ranges of up to ``2**rcache_max_order``
  granules *still occupied in the tree* and hands them straight back to an allocation of
  the same size under a suitable limit.  Linux bins by power-of-two order after rounding
  cached sizes up to a power of two; here bins are keyed by the exact granule count, so
  :meth:`IovaDomain.find` and the unmap size stay exact (the seed's unmap path unmaps
  what the allocator says it mapped), and power-of-two sizes behave exactly as in
  Linux.  A full bin makes a free really free.  When the tree has no room, the cache is
  flushed and the search retried, as ``alloc_iova_fast`` does; if that also fails the
  flush is undone so the failing call changes nothing.
- :meth:`IovaDomain.undo_alloc` takes the most recent allocation back *exactly*: a
  range that came from the rcache goes back to its place in its bin, a tree node is
  removed and the cached nodes restored, a flush is reverted, the counters step back.
  A DMA mapping that fails after its IOVA was allocated (table memory running out)
  uses it, so the domain ends as it began; an ordinary ``free`` would park the range
  in the cache instead.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from vcmm import inject
from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError, StateError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4G, format_size, is_power_of_two

#: Linux's IOVA_RANGE_CACHE_MAX_SIZE is 6 (orders 0..5 cached): sizes up to 2**5 granules.
DEFAULT_RCACHE_MAX_ORDER = 5
#: One CPU's share of a Linux rcache bin: loaded + previous magazine + 32 depot
#: magazines of 128 entries each (IOVA_MAG_SIZE, MAX_GLOBAL_MAGS).
DEFAULT_RCACHE_CAPACITY = 34 * 128


@dataclass(frozen=True, slots=True)
class IovaCounters:
    """Event counts of an :class:`IovaDomain` (only successful calls count)."""

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


@dataclass(frozen=True, slots=True)
class _LastAlloc:
    """How to take the most recent allocation back (:meth:`IovaDomain.undo_alloc`):
    ``how`` is ``"bin"`` (``data`` = (bin size, index)), ``"tree"`` (``data`` = the
    cached nodes before) or ``"flush"`` (``data`` = the whole state before the flush)."""

    pfn: int
    how: str
    data: Any
    cacheable: bool
    hit: bool
    flushed: bool


class IovaDomain:
    """The IOVA space of one IOMMU domain: top-down, size-aligned, with a range cache."""

    def __init__(
        self,
        granule: int,
        aperture: AddressRange | None = None,
        *,
        rcache: bool = True,
        rcache_max_order: int = DEFAULT_RCACHE_MAX_ORDER,
        rcache_capacity: int = DEFAULT_RCACHE_CAPACITY,
    ) -> None:
        granule = check_int("", "granule", granule, minimum=None)
        if not is_power_of_two(granule):
            raise InvalidArgumentError(f"IOVA granule {granule:#x} is not a power of two")
        if aperture is None:
            aperture = AddressRange(0, SZ_4G)
        if not isinstance(aperture, AddressRange):
            raise InvalidArgumentError(f"aperture {aperture!r} is not an AddressRange")
        if aperture.size == 0 or not aperture.is_aligned(granule):
            raise InvalidArgumentError(
                f"aperture {aperture} must be non-empty and aligned to the granule {granule:#x}"
            )
        rcache_max_order = check_int("", "rcache_max_order", rcache_max_order, minimum=None)
        rcache_capacity = check_int("", "rcache_capacity", rcache_capacity, minimum=None)
        if not 0 <= rcache_max_order <= 20:
            raise InvalidArgumentError(f"rcache_max_order {rcache_max_order} is outside 0..20")
        if rcache_capacity < 1:
            raise InvalidArgumentError(f"rcache_capacity {rcache_capacity} must be >= 1")
        shift = granule.bit_length() - 1
        start_pfn = max(1, aperture.start >> shift)  # page frame 0 is never an IOVA
        end_pfn = (aperture.end >> shift) - 1
        if end_pfn < start_pfn:
            raise InvalidArgumentError(
                f"aperture {aperture} holds no granule above IOVA 0 (granule {granule:#x})"
            )
        self._granule = granule
        self._shift = shift
        self._start_pfn = start_pfn
        self._end_pfn = end_pfn
        self._dma32_pfn = SZ_4G >> shift
        anchor = end_pfn + 1
        self._lo: list[int] = [anchor]
        self._hi: list[int] = [anchor]
        self._cached32 = anchor
        self._cached = anchor
        self._live: dict[int, int] = {}
        self._reserved: dict[int, int] = {}
        self._rcache = bool(rcache)
        self._rcache_max = 1 << rcache_max_order
        self._rcache_capacity = rcache_capacity
        self._bins: dict[int, list[int]] = {}
        self._fail_hint: dict[tuple[int, bool], int] = {}
        #: How to take the most recent allocation back: (pfn, how, data), or None once
        #: anything else changed the domain.
        self._last: _LastAlloc | None = None
        self._allocs = 0
        self._frees = 0
        self._hits = 0
        self._misses = 0
        self._overflows = 0
        self._flushes = 0

    # -- properties --------------------------------------------------------------

    @property
    def granule(self) -> int:
        return self._granule

    @property
    def aperture(self) -> AddressRange:
        """The IOVAs this domain can hand out (page frame 0 already excluded)."""
        return AddressRange(
            self._start_pfn << self._shift, (self._end_pfn + 1 - self._start_pfn) << self._shift
        )

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

    @property
    def allocated_bytes(self) -> int:
        return sum(self._live.values()) << self._shift

    def __len__(self) -> int:
        return len(self._live)

    # -- allocation --------------------------------------------------------------

    def alloc(self, size: int, limit: int | None = None, *, size_aligned: bool = True) -> int:
        """Allocate ``size`` bytes (rounded up to the granule) ending at or below ``limit``.

        ``limit`` is inclusive, like a device's ``dma_mask`` (default: the aperture's
        last address).  With ``size_aligned`` the IOVA is aligned to the size rounded up
        to a power of two granules, as dma-iommu always asks.
        """
        size = check_int("", "size", size, minimum=None)
        if size <= 0:
            raise InvalidArgumentError(f"IOVA size {size:#x} must be > 0")
        if limit is None:
            limit = ((self._end_pfn + 1) << self._shift) - 1
        limit = check_int("", "limit", limit, minimum=None)
        if limit < 0:
            raise InvalidArgumentError(f"IOVA limit {limit:#x} is negative")
        npages = -(-size // self._granule)
        limit_excl = min((limit + 1) >> self._shift, self._end_pfn + 1)
        if limit_excl <= self._start_pfn:
            raise InvalidArgumentError(
                f"IOVA limit {limit:#x} is below the aperture {self.aperture}: no granule fits"
            )
        inject.check(inject.AllocSite.IOVA, self, OutOfAddressSpaceError)
        cacheable = self._rcache and npages <= self._rcache_max
        found = self._rcache_get(npages, limit_excl, size_aligned) if cacheable else None
        hit = found is not None
        flushed = False
        undo: tuple[str, Any]
        if found is not None:
            pfn: int | None = found[0]
            undo = ("bin", (npages, found[1]))
        else:
            cached = (self._cached32, self._cached)
            pfn = self._tree_alloc(npages, limit_excl, size_aligned)
            undo = ("tree", cached)
        if pfn is None and self._bins and any(self._bins.values()):
            pfn, saved = self._flush_and_retry(npages, limit_excl, size_aligned)
            flushed = pfn is not None
            undo = ("flush", saved)
        if pfn is None:
            align = f" aligned to {format_size(self._align_pages(npages) << self._shift)}"
            raise OutOfAddressSpaceError(
                f"IOVA domain {self.aperture}: no free {format_size(npages << self._shift)} range"
                f"{align if size_aligned else ''} ending at or below limit {limit:#x} "
                f"({len(self._live)} live ranges, {format_size(self.allocated_bytes)} in use)"
            )
        self._live[pfn] = npages
        self._allocs += 1
        if cacheable:
            if hit:
                self._hits += 1
            else:
                self._misses += 1
        if flushed:
            self._flushes += 1
        self._last = _LastAlloc(pfn, undo[0], undo[1], cacheable, hit, flushed)
        return pfn << self._shift

    def undo_alloc(self, addr: int) -> AddressRange:
        """Take back the most recent allocation, ``addr``, leaving the domain exactly as
        before it (:meth:`snapshot` equal): for a mapping that failed after its IOVA
        was allocated.  Refused (changing nothing) if anything else happened since."""
        addr = check_int("", "address", addr, minimum=None)
        last = self._last
        if last is None or addr < 0 or last.pfn != addr >> self._shift:
            raise StateError(
                f"undo_alloc of IOVA {addr:#x}: it is not the most recent allocation of "
                "this domain (or something changed the domain since); free it instead"
            )
        pfn, how, data = last.pfn, last.how, last.data
        npages = self._live.pop(pfn)
        if how == "bin":
            size, index = data
            self._bins.setdefault(size, []).insert(index, pfn)
        elif how == "tree":
            i = bisect.bisect_left(self._lo, pfn)
            del self._lo[i]
            del self._hi[i]
            self._cached32, self._cached = data
        else:
            lo, hi, cached32, cached, bins, hints = data
            self._lo, self._hi, self._cached32, self._cached = lo, hi, cached32, cached
            self._bins, self._fail_hint = bins, hints
        self._allocs -= 1
        if last.cacheable:
            if last.hit:
                self._hits -= 1
            else:
                self._misses -= 1
        if last.flushed:
            self._flushes -= 1
        self._last = None
        return AddressRange(pfn << self._shift, npages << self._shift)

    @staticmethod
    def _align_pages(npages: int) -> int:
        return 1 << (npages - 1).bit_length()

    def _rcache_get(self, npages: int, limit_excl: int, aligned: bool) -> tuple[int, int] | None:
        """A cached range that fits, taken out of its bin: ``(pfn, index in bin)``."""
        entries = self._bins.get(npages)
        if not entries:
            return None
        align = self._align_pages(npages)
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
        lo, hi = self._lo, self._hi
        mask = -self._align_pages(size) if aligned else -1
        key = self._cached32 if limit_excl <= self._dma32_pfn else self._cached
        idx = bisect.bisect_left(lo, key)
        retry_pfn = hi[idx]
        high, low = limit_excl, self._start_pfn
        while True:
            while True:  # walk down from the start node to the first gap that fits
                high = min(high, lo[idx])
                new = (high - size) & mask
                prev = idx
                idx -= 1
                if idx < 0 or new > hi[idx] or new < low:
                    break
            if new >= low:
                break
            if low == self._start_pfn and retry_pfn < limit_excl:
                # The part below the cached node is full: search the part above it.
                high, low = limit_excl, retry_pfn + 1
                idx = bisect.bisect_left(lo, limit_excl)
                continue
            self._fail_hint[(limit_excl, aligned)] = size
            return None
        lo.insert(prev, new)
        hi.insert(prev, new + size - 1)
        if new + size - 1 < self._dma32_pfn:
            self._cached32 = new
        else:
            self._cached = new
        return new

    def _tree_remove(self, pfn: int) -> None:
        lo, hi = self._lo, self._hi
        i = bisect.bisect_left(lo, pfn)
        node_lo, node_hi = lo[i], hi[i]
        if node_lo == self._cached32 or (node_hi < self._dma32_pfn and node_lo >= self._cached32):
            self._cached32 = lo[i + 1]
        if node_lo >= self._cached:
            self._cached = lo[i + 1]
        del lo[i]
        del hi[i]
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
    ) -> tuple[int | None, Any]:
        """Flush the cache and search again; on failure the flush is reverted.  Returns
        the frame found and the state before the flush (for :meth:`undo_alloc`)."""
        saved = (
            self._lo.copy(),
            self._hi.copy(),
            self._cached32,
            self._cached,
            {size: entries.copy() for size, entries in self._bins.items()},
            dict(self._fail_hint),
        )
        self._flush_bins()
        pfn = self._tree_alloc(npages, limit_excl, aligned)
        if pfn is None:
            lo, hi, cached32, cached, bins, hints = saved
            self._lo, self._hi, self._cached32, self._cached = lo, hi, cached32, cached
            self._bins, self._fail_hint = bins, hints
        return pfn, saved

    def flush_rcache(self) -> int:
        """Really free every cached range (Linux: free_cpu_cached_iovas); returns the count."""
        self._last = None
        count = self._flush_bins()
        if count:
            self._flushes += 1
        return count

    # -- free and lookup ---------------------------------------------------------

    def free(self, addr: int) -> AddressRange:
        """Free the range whose first granule holds ``addr``; returns the range freed.

        ``addr`` may carry a sub-granule offset (a DMA handle from ``map_page`` does);
        the size comes from the allocator, so the caller cannot free the wrong amount.
        """
        addr = check_int("", "address", addr, minimum=None)
        if addr < 0:
            raise InvalidArgumentError(f"IOVA {addr:#x} is negative")
        pfn = addr >> self._shift
        npages = self._live.get(pfn)
        if npages is None:
            raise StateError(f"free of IOVA {addr:#x}: {self._describe_not_live(pfn)}")
        del self._live[pfn]
        self._last = None
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
        return AddressRange(pfn << self._shift, npages << self._shift)

    def _describe_not_live(self, pfn: int) -> str:
        if pfn in self._reserved:
            return "it is a reserved range, which is never freed"
        node = self._node_at(pfn)
        if node is not None and node[0] in self._live:
            start = node[0] << self._shift
            return f"it lies inside the live range starting at {start:#x}, not at its start"
        return "no live range starts there (never allocated, or already freed: double free)"

    def _node_at(self, pfn: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self._lo, pfn) - 1
        if i >= 0 and pfn <= self._hi[i] and i < len(self._lo) - 1:
            return self._lo[i], self._hi[i]
        return None

    def find(self, addr: int) -> AddressRange | None:
        """The live range containing ``addr`` (any address inside it), or ``None``."""
        addr = check_int("", "address", addr, minimum=None)
        if addr < 0:
            return None
        node = self._node_at(addr >> self._shift)
        if node is None or node[0] not in self._live:
            return None
        return AddressRange(node[0] << self._shift, (node[1] + 1 - node[0]) << self._shift)

    def reserve(self, range: AddressRange) -> AddressRange:
        """Keep ``range`` (rounded out to granules, clipped to the aperture) from ever
        being allocated, like ``reserve_iova`` for MSI doorbells or firmware windows.

        Cached (already freed) ranges in the way are evicted from the rcache first.
        """
        if not isinstance(range, AddressRange) or range.size == 0:
            raise InvalidArgumentError(f"reserve needs a non-empty AddressRange, got {range!r}")
        first = max(range.start >> self._shift, self._start_pfn)
        last = min(range.last >> self._shift, self._end_pfn)
        if first > last:
            raise InvalidArgumentError(f"reserved range {range} lies outside {self.aperture}")
        i = bisect.bisect_right(self._lo, last) - 1
        cached = {pfn for entries in self._bins.values() for pfn in entries}
        blockers = []
        while i >= 0 and self._hi[i] >= first:
            if self._lo[i] not in cached:
                owner = "reserved" if self._lo[i] in self._reserved else "allocated"
                node = AddressRange(
                    self._lo[i] << self._shift, (self._hi[i] + 1 - self._lo[i]) << self._shift
                )
                raise StateError(f"cannot reserve {range}: it overlaps the {owner} range {node}")
            blockers.append(self._lo[i])
            i -= 1
        self._last = None
        for pfn in blockers:
            for entries in self._bins.values():
                if pfn in entries:
                    entries.remove(pfn)
            self._tree_remove(pfn)
        at = bisect.bisect_left(self._lo, first)
        self._lo.insert(at, first)
        self._hi.insert(at, last)
        self._reserved[first] = last + 1 - first
        return AddressRange(first << self._shift, (last + 1 - first) << self._shift)

    def allocated(self) -> list[AddressRange]:
        """Live ranges, lowest IOVA first."""
        return [
            AddressRange(pfn << self._shift, n << self._shift)
            for pfn, n in sorted(self._live.items())
        ]

    def snapshot(self) -> IovaSnapshot:
        return IovaSnapshot(
            nodes=tuple(zip(self._lo[:-1], self._hi[:-1], strict=True)),
            live=tuple(sorted(self._live.items())),
            reserved=tuple(sorted(self._reserved.items())),
            rcache=tuple((s, tuple(e)) for s, e in sorted(self._bins.items()) if e),
            cached32_node=self._cached32,
            cached_node=self._cached,
            counters=self.counters,
        )

    def __repr__(self) -> str:
        return (
            f"IovaDomain(granule={self._granule:#x}, aperture={self.aperture}, "
            f"{len(self._live)} live, {self.cached_count} cached, rcache={self._rcache})"
        )
