"""The occupied-range tree of an IOVA domain, walked the way Linux's iova.c walks it.

Both IOVA placement policies (:mod:`vcmm.mm.iova`, the seed's; :mod:`vcmm.mm.iova_linux`,
mainline's) keep their occupied ranges here and search it with the same top-down walk,
because the walk itself did not change between the 2015 kernel the seed used and
mainline 6.x: what changed is around it (size rounding, the range cache, the failure
hint), and that lives in the policies.

Linux keeps nodes ``[pfn_lo, pfn_hi]`` in a red-black tree with an *anchor* node above
every real one.  Here they are two parallel sorted lists (a ``bisect`` and a list
memmove per insert or remove), and a node is named by its ``pfn_lo``, which is unique:

- ``cached32`` / ``cached`` are the kernel's ``cached32_node`` / ``cached_node``: the
  walk for a limit at or below 4 GiB starts at ``cached32``, above it at ``cached``.
  An insert moves the one on its side of 4 GiB to the new node; a remove moves it to
  the next node up when the removed node is the cached one or lies above it
  (``__cached_rbnode_delete_update``).
- :meth:`IovaTree.search` is ``__alloc_and_insert_iova_range`` without its failure
  hint: walk down from the cached node to the first gap that fits below the limit,
  and, when the part below the cached node is full, once more from the limit down to
  just above the cached node.  Starting the second pass at the lowest node at or above
  the limit gives the same result as the kernel's ``iova_find_limit`` (which may start
  a node higher: the ``min`` with the limit skips it).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import TypeAlias

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4G, is_power_of_two

#: A copy of a whole tree (:meth:`IovaTree.save`): lows, highs and the cached nodes.
TreeSave: TypeAlias = tuple[list[int], list[int], int, int]


@dataclass(frozen=True, slots=True)
class IovaGeometry:
    """Granule and usable page frames of a domain (page frame 0 is never an IOVA)."""

    granule: int
    shift: int
    start_pfn: int
    end_pfn: int

    @classmethod
    def of(cls, granule: object, aperture: object) -> IovaGeometry:
        """Validate a domain's granule and aperture (default: the 32-bit space)."""
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
        shift = granule.bit_length() - 1
        start_pfn = max(1, aperture.start >> shift)
        end_pfn = (aperture.end >> shift) - 1
        if end_pfn < start_pfn:
            raise InvalidArgumentError(
                f"aperture {aperture} holds no granule above IOVA 0 (granule {granule:#x})"
            )
        return cls(granule, shift, start_pfn, end_pfn)

    @property
    def aperture(self) -> AddressRange:
        """The IOVAs the domain can hand out."""
        return AddressRange(
            self.start_pfn << self.shift, (self.end_pfn + 1 - self.start_pfn) << self.shift
        )

    @property
    def dma32_pfn(self) -> int:
        """First page frame at or above 4 GiB (the kernel's ``dma_32bit_pfn``)."""
        return SZ_4G >> self.shift

    def range(self, pfn: int, npages: int) -> AddressRange:
        return AddressRange(pfn << self.shift, npages << self.shift)


def align_pages(npages: int) -> int:
    """``npages`` rounded up to a power of two: the alignment of a size-aligned range."""
    return 1 << (npages - 1).bit_length()


#: The largest size in granules that :data:`SMALL_ORDERS` covers.
SMALL_MAX = 64
#: ``order_base_2(n)`` (``align_pages(n) == 1 << order``) for ``1 <= n <= SMALL_MAX``
#: (index 0 unused): the allocators' hot paths look small sizes up instead of calling
#: ``int.bit_length``, which costs as much as the rest of a range-cache hit's arithmetic.
SMALL_ORDERS = (0, *((n - 1).bit_length() for n in range(1, SMALL_MAX + 1)))


class IovaTree:
    """Occupied page-frame ranges, the anchor above them and the two cached nodes."""

    __slots__ = ("cached", "cached32", "dma32_pfn", "hi", "lo", "start_pfn")

    def __init__(self, geometry: IovaGeometry) -> None:
        anchor = geometry.end_pfn + 1
        #: ``pfn_lo`` and ``pfn_hi`` of every node, sorted, the anchor last.
        self.lo: list[int] = [anchor]
        self.hi: list[int] = [anchor]
        self.cached32 = anchor
        self.cached = anchor
        self.start_pfn = geometry.start_pfn
        self.dma32_pfn = geometry.dma32_pfn

    def search(self, size: int, limit_excl: int, aligned: bool) -> tuple[int, int] | None:
        """A free ``size``-frame range ending below ``limit_excl``: ``(pfn, list index
        to insert it at)``, or ``None`` when the walk and its retry find no gap."""
        lo, hi = self.lo, self.hi
        mask = -align_pages(size) if aligned else -1
        key = self.cached32 if limit_excl <= self.dma32_pfn else self.cached
        idx = bisect.bisect_left(lo, key)
        retry_pfn = hi[idx]
        high, low = limit_excl, self.start_pfn
        while True:
            while True:  # walk down from the start node to the first gap that fits
                high = min(high, lo[idx])
                new = (high - size) & mask
                prev = idx
                idx -= 1
                if idx < 0 or new > hi[idx] or new < low:
                    break
            if new >= low:
                return new, prev
            if low == self.start_pfn and retry_pfn < limit_excl:
                # The part below the cached node is full: search the part above it.
                high, low = limit_excl, retry_pfn + 1
                idx = bisect.bisect_left(lo, limit_excl)
                continue
            return None

    def insert(self, pfn: int, size: int, index: int) -> None:
        """Insert an allocated node where :meth:`search` found it; the cached node on
        its side of 4 GiB moves to it (``__cached_rbnode_insert_update``)."""
        self.lo.insert(index, pfn)
        self.hi.insert(index, pfn + size - 1)
        if pfn + size - 1 < self.dma32_pfn:
            self.cached32 = pfn
        else:
            self.cached = pfn

    def insert_reserved(self, first: int, last: int) -> None:
        """Insert a reserved node (``reserve_iova``: the cached nodes stay)."""
        at = bisect.bisect_left(self.lo, first)
        self.lo.insert(at, first)
        self.hi.insert(at, last)

    def remove(self, pfn: int) -> tuple[int, int]:
        """Remove the node starting at ``pfn``; returns it ``(lo, hi)``."""
        lo, hi = self.lo, self.hi
        i = bisect.bisect_left(lo, pfn)
        if i >= len(lo) - 1 or lo[i] != pfn:
            raise StateError(f"no IOVA tree node starts at page frame {pfn:#x}")
        node_lo, node_hi = lo[i], hi[i]
        if node_lo == self.cached32 or (node_hi < self.dma32_pfn and node_lo >= self.cached32):
            self.cached32 = lo[i + 1]
        if node_lo >= self.cached:
            self.cached = lo[i + 1]
        del lo[i]
        del hi[i]
        return node_lo, node_hi

    def node_at(self, pfn: int) -> tuple[int, int] | None:
        """The node holding page frame ``pfn`` (never the anchor)."""
        i = bisect.bisect_right(self.lo, pfn) - 1
        if 0 <= i < len(self.lo) - 1 and pfn <= self.hi[i]:
            return self.lo[i], self.hi[i]
        return None

    def overlapping(self, first: int, last: int) -> list[tuple[int, int]]:
        """Nodes sharing a frame with ``[first, last]``, highest first."""
        found = []
        i = bisect.bisect_right(self.lo, last) - 1
        while i >= 0 and self.hi[i] >= first:
            found.append((self.lo[i], self.hi[i]))
            i -= 1
        return found

    def nodes(self) -> tuple[tuple[int, int], ...]:
        """Every node but the anchor, lowest first."""
        return tuple(zip(self.lo[:-1], self.hi[:-1], strict=True))

    def save(self) -> TreeSave:
        """A copy of the whole tree, for :meth:`restore`."""
        return self.lo.copy(), self.hi.copy(), self.cached32, self.cached

    def restore(self, saved: TreeSave) -> None:
        self.lo, self.hi, self.cached32, self.cached = saved
