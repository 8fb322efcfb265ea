"""Mainline Linux's IOVA range cache: per-order bins of 127-entry magazines and a depot.

Freed IOVA ranges of up to 32 granules do not go back to the tree at once; they are
parked, still occupying their tree nodes, in a *magazine* cache after Bonwick and
Adams (drivers/iommu/iova.c since 4.7; the depot as a list with delayed trimming since
6.7).  One bin per order 0..5 (``order_base_2`` of the size); each bin has, per CPU, a
*loaded* and a *previous* magazine of up to 127 page frames, and one shared *depot*
(a stack) of full magazines.  vcmm's kernel makes its DMA calls on one CPU, so a bin
here is that CPU's two magazines plus the depot.

- insert: into the loaded magazine; if it is full, swap with the previous one if that
  is not full; otherwise push the loaded one onto the depot and start a new empty one.
- get: from the loaded magazine; if it is empty, swap in the previous one if that is
  not empty; otherwise replace it by the depot's top magazine.  Then only the loaded
  magazine is searched, from its top entry down, for the first frame at or below the
  limit; the top entry moves into the hole the taken one leaves.  Nothing suitable
  there is a miss, even if the other magazines or the depot hold a fitting range.
- drain (the flush after a failed allocation): each order's loaded then previous
  magazine, entry by entry, then each order's depot from the top.
- depot trimming: a delayed work item (100 ms) frees one depot magazine while the
  depot holds more magazines than there are CPUs online, and re-arms itself.

Page frames are plain ints; a magazine is a list used as the kernel's array (only the
first ``size`` entries are live).
"""

from __future__ import annotations

from dataclasses import dataclass

#: IOVA_MAG_SIZE: entries per magazine (a 1 KiB kmalloc object since 6.5).
IOVA_MAG_SIZE = 127
#: IOVA_RANGE_CACHE_MAX_SIZE: orders 0 .. 5 are cached.
RCACHE_ORDERS = 6
#: CPUs online in vcmm's kernel (the depot work keeps this many magazines).
ONLINE_CPUS = 1


def order_base_2(n: int) -> int:
    """``ceil(log2(n))`` for ``n >= 1`` (the kernel's ``order_base_2``)."""
    return (n - 1).bit_length()


#: How to take a :meth:`MagazineCache.get` back: order, rotation ("", "swap",
#: "depot"), the slot taken from (-1: none) and the frame taken.
GetUndo = tuple[int, str, int, int]

#: A deep copy of every bin (:meth:`MagazineCache.save`): loaded, previous, depot.
CacheSave = list[tuple[list[int], list[int], list[list[int]]]]


@dataclass(frozen=True, slots=True)
class BinState:
    """One order's magazines: loaded, previous, depot (bottom first)."""

    loaded: tuple[int, ...]
    prev: tuple[int, ...]
    depot: tuple[tuple[int, ...], ...]


class Bin:
    """``struct iova_rcache`` with its one CPU's ``iova_cpu_rcache``."""

    __slots__ = ("depot", "loaded", "prev")

    def __init__(self) -> None:
        self.loaded: list[int] = []
        self.prev: list[int] = []
        self.depot: list[list[int]] = []


class MagazineCache:
    """The per-order range cache of one IOVA domain.

    ``bins[order]`` is one order's :class:`Bin`; the tuple and its bins are the same
    objects for the cache's lifetime (only their magazines are replaced), so a domain
    may hold the tuple.  :class:`~vcmm.mm.iova_linux.LinuxIovaDomain` does, and writes
    out the two steps a streaming device takes nearly every time: the first step of
    :meth:`get` (the loaded magazine is not empty and its top frame fits: pop it) and
    :meth:`insert` into a loaded magazine that is not full (append).  Everything else
    goes through the methods here.
    """

    def __init__(self, magazine_size: int = IOVA_MAG_SIZE) -> None:
        self.magazine_size = magazine_size
        self.bins = tuple(Bin() for _ in range(RCACHE_ORDERS))

    def get(self, order: int, limit_pfn: int) -> tuple[int | None, GetUndo]:
        """``__iova_rcache_get``: a cached first frame ``<= limit_pfn`` of ``order``, or
        ``None``.  The magazine rotation happens even when nothing fits.  The second
        value takes the call back exactly (:meth:`undo_get`)."""
        rc = self.bins[order]
        rotation = ""
        if not rc.loaded:
            if rc.prev:
                rc.loaded, rc.prev = rc.prev, rc.loaded
                rotation = "swap"
            elif rc.depot:
                rc.loaded = rc.depot.pop()
                rotation = "depot"
            else:
                return None, (order, rotation, -1, 0)
        mag = rc.loaded
        i = len(mag) - 1
        while mag[i] > limit_pfn:
            if i == 0:
                return None, (order, rotation, -1, 0)
            i -= 1
        pfn = mag[i]
        top = mag.pop()
        if i < len(mag):
            mag[i] = top
        return pfn, (order, rotation, i, pfn)

    def undo_pop_top(self, order: int, pfn: int) -> None:
        """Take back a hit of the loaded magazine's top frame (``bins[order].loaded``
        popped; nothing else changed the cache since): the frame goes back on top."""
        self.bins[order].loaded.append(pfn)

    def undo_get(self, undo: GetUndo) -> None:
        """Take a :meth:`get` back: the frame to its slot, the magazines unrotated."""
        order, rotation, i, pfn = undo
        rc = self.bins[order]
        if i >= 0:
            mag = rc.loaded
            if i < len(mag):
                mag.append(mag[i])
                mag[i] = pfn
            else:
                mag.append(pfn)
        if rotation == "swap":
            rc.loaded, rc.prev = rc.prev, rc.loaded
        elif rotation == "depot":
            rc.depot.append(rc.loaded)
            rc.loaded = []

    def insert(self, order: int, pfn: int) -> None:
        """``__iova_rcache_insert`` (a new magazine never fails to allocate here)."""
        rc = self.bins[order]
        if len(rc.loaded) >= self.magazine_size:
            if len(rc.prev) < self.magazine_size:
                rc.loaded, rc.prev = rc.prev, rc.loaded
            else:
                rc.depot.append(rc.loaded)
                rc.loaded = []
        rc.loaded.append(pfn)

    def drain(self) -> list[int]:
        """Empty every magazine; returns the frames in the order the kernel frees them
        (``free_cpu_cached_iovas`` then ``free_global_cached_iovas``)."""
        out: list[int] = []
        for rc in self.bins:
            out += rc.loaded
            out += rc.prev
            rc.loaded, rc.prev = [], []
        for rc in self.bins:
            while rc.depot:
                out += rc.depot.pop()
        return out

    def trim_depots(self) -> list[int]:
        """The depot work items run to completion: each order's depot shrinks to
        :data:`ONLINE_CPUS` magazines, top first; returns the frames to free."""
        out: list[int] = []
        for rc in self.bins:
            while len(rc.depot) > ONLINE_CPUS:
                out += rc.depot.pop()
        return out

    def evict(self, pfn: int) -> None:
        """Take ``pfn`` out of whichever magazine holds it (vcmm's ``reserve`` after
        allocations; the kernel reserves only before any)."""
        for rc in self.bins:
            for mag in (rc.loaded, rc.prev, *rc.depot):
                if pfn in mag:
                    i = mag.index(pfn)
                    top = mag.pop()
                    if i < len(mag):
                        mag[i] = top
                    if not mag and any(mag is m for m in rc.depot):
                        rc.depot.remove(mag)
                    return

    def frames(self) -> set[int]:
        return {pfn for rc in self.bins for mag in (rc.loaded, rc.prev, *rc.depot) for pfn in mag}

    def __len__(self) -> int:
        return sum(
            len(rc.loaded) + len(rc.prev) + sum(len(m) for m in rc.depot) for rc in self.bins
        )

    def save(self) -> CacheSave:
        """A deep copy of every bin, for :meth:`restore`."""
        return [
            (rc.loaded.copy(), rc.prev.copy(), [m.copy() for m in rc.depot]) for rc in self.bins
        ]

    def restore(self, saved: CacheSave) -> None:
        for rc, (loaded, prev, depot) in zip(self.bins, saved, strict=True):
            rc.loaded, rc.prev, rc.depot = loaded, prev, depot

    def state(self) -> tuple[BinState, ...]:
        """Every order's magazines, comparable."""
        return tuple(
            BinState(tuple(rc.loaded), tuple(rc.prev), tuple(tuple(m) for m in rc.depot))
            for rc in self.bins
        )
