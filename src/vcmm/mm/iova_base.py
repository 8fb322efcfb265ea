"""What both IOVA placement policies share: the tree, the live ranges, reserve, find, free.

An IOVA domain hands out size-aligned ranges of granules top-down from a limit and
keeps the occupied ones in an :class:`~vcmm.mm.iova_tree.IovaTree`.  The two policies
(``"seed"``: :class:`~vcmm.mm.iova.IovaDomain`; ``"linux"``:
:class:`~vcmm.mm.iova_linux.LinuxIovaDomain`) differ in how a request becomes a tree
search (size rounding, limit arithmetic), in their range cache and in their failure
hint; argument checks, lookups, reservations and the bookkeeping of what is live are
the same and live here, so both answer a misuse with the same error.

A live allocation is remembered with the size its caller asked for (in granules); its
tree node may be larger when the policy rounds sizes up.  :meth:`IovaSpace.find` and
:meth:`IovaSpace.free` answer with the requested extent, which is what the caller
mapped; the rounding padding stays occupied in the tree until the node goes.
"""

from __future__ import annotations

from collections import deque
from typing import ClassVar, Generic, TypeVar, cast

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError, StateError
from vcmm.mm.iova_tree import IovaGeometry, IovaTree, align_pages
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

#: How many recent allocations of a domain ``undo_alloc`` can take back, newest first.
UNDO_DEPTH = 256

#: A policy's undo record of one allocation (each policy has its own tuple shape).
UndoT = TypeVar("UndoT")


class IovaSpace(Generic[UndoT]):
    """Base of the IOVA domains: geometry, tree, live and reserved ranges.

    ``UndoT`` is the policy's record of how to take one allocation back.  Records are
    plain values (the bare first frame for a cache hit of the top entry, else a
    tuple) rather than dataclasses: one is made on every allocation, and a frozen
    dataclass costs about as much as the whole cached allocation.
    """

    #: The placement policy's name (``"seed"`` or ``"linux"``).
    policy: ClassVar[str] = ""

    def __init__(self, granule: int, aperture: AddressRange | None) -> None:
        self._geo = IovaGeometry.of(granule, aperture)
        self._shift = self._geo.shift
        self._tree = IovaTree(self._geo)
        #: Live allocations: first page frame -> granules requested.
        self._live: dict[int, int] = {}
        #: Reserved ranges: first page frame -> granules.
        self._reserved: dict[int, int] = {}
        #: How to take the most recent allocation back, or None once anything else
        #: changed the domain.
        self._last: UndoT | None = None
        #: Undo records of the allocations before ``_last``, newest last; the oldest
        #: fall off beyond :data:`UNDO_DEPTH`.
        self._older: deque[UndoT] = deque(maxlen=UNDO_DEPTH)
        # The hot paths' constants, read once per call instead of through ``_geo``.
        self._granule_mask = self._geo.granule - 1
        self._start_pfn = self._geo.start_pfn
        self._end_pfn = self._geo.end_pfn

    # -- properties --------------------------------------------------------------

    @property
    def granule(self) -> int:
        return self._geo.granule

    @property
    def aperture(self) -> AddressRange:
        """The IOVAs this domain can hand out (page frame 0 already excluded)."""
        return self._geo.aperture

    @property
    def allocated_bytes(self) -> int:
        """Bytes of the live allocations as requested (without rounding padding)."""
        return sum(self._live.values()) << self._shift

    def __len__(self) -> int:
        return len(self._live)

    def allocated(self) -> list[AddressRange]:
        """Live ranges as requested, lowest IOVA first."""
        return [self._geo.range(pfn, n) for pfn, n in sorted(self._live.items())]

    # -- argument checks shared by the policies ------------------------------------

    def _check_request(self, size: object, limit: object) -> tuple[int, int]:
        """``(granules, limit)`` of an allocation request, validated."""
        size = check_int("", "size", size, minimum=None)
        if size <= 0:
            raise InvalidArgumentError(f"IOVA size {size:#x} must be > 0")
        if limit is None:
            limit = ((self._geo.end_pfn + 1) << self._shift) - 1
        limit = check_int("", "limit", limit, minimum=None)
        if limit < 0:
            raise InvalidArgumentError(f"IOVA limit {limit:#x} is negative")
        return -(-size // self._geo.granule), limit

    def _check_limit(self, limit_excl: int, limit: int) -> None:
        if limit_excl <= self._geo.start_pfn:
            raise InvalidArgumentError(
                f"IOVA limit {limit:#x} is below the aperture {self.aperture}: no granule fits"
            )

    def _no_room(
        self, npages: int, limit: int, aligned: bool, asked: int | None = None
    ) -> OutOfAddressSpaceError:
        """The error of a search that found nothing (``asked``: the granules requested,
        when the policy rounded them up to ``npages``)."""
        align = f" aligned to {format_size(align_pages(npages) << self._shift)}"
        rounded = ""
        if asked is not None and asked != npages:
            rounded = f" ({format_size(asked << self._shift)} rounded up)"
        return OutOfAddressSpaceError(
            f"IOVA domain {self.aperture} ({self.policy} policy): no free "
            f"{format_size(npages << self._shift)} range{rounded}{align if aligned else ''} "
            f"ending at or below limit {limit:#x} ({len(self._live)} live ranges, "
            f"{format_size(self.allocated_bytes)} in use)"
        )

    def _check_undo(self, addr: object) -> int:
        """The first frame of the most recent allocation, if ``addr`` is it; else
        refuse the ``undo_alloc`` (nothing is recorded once something else changed the
        domain).  A record is the bare first frame or a tuple that starts with it."""
        addr = check_int("", "address", addr, minimum=None)
        last = self._last
        last_pfn = last if last is None or isinstance(last, int) else cast(tuple[int, ...], last)[0]
        if last_pfn is None or addr < 0 or last_pfn != addr >> self._shift:
            raise StateError(
                f"undo_alloc of IOVA {addr:#x}: it is not the most recent allocation of "
                "this domain (or something changed the domain since); free it instead"
            )
        return int(last_pfn)

    # -- free and lookup ---------------------------------------------------------

    def free(self, addr: int) -> AddressRange:
        """Free the range whose first granule holds ``addr``; returns the range freed.

        ``addr`` may carry a sub-granule offset (a DMA handle from ``map_page`` does);
        the size comes from the allocator, so the caller cannot free the wrong amount.
        Each policy writes its ``free`` out in one method (it is half of every DMA
        unmap), starting with :meth:`_check_free` for anything but a plain address.
        """
        raise NotImplementedError

    def _check_free(self, addr: object) -> int:
        """The address of a :meth:`free` that is not a plain non-negative ``int``
        (a numpy integer), validated; raises for anything else."""
        addr = check_int("", "address", addr, minimum=None)
        if addr < 0:
            raise InvalidArgumentError(f"IOVA {addr:#x} is negative")
        return addr

    def _not_live(self, addr: int) -> StateError:
        """The error of a :meth:`free` of ``addr`` where no live range starts."""
        return StateError(f"free of IOVA {addr:#x}: {self._describe_not_live(addr >> self._shift)}")

    def _describe_not_live(self, pfn: int) -> str:
        if pfn in self._reserved:
            return "it is a reserved range, which is never freed"
        node = self._tree.node_at(pfn)
        if node is not None and node[0] in self._live:
            start = node[0] << self._shift
            return f"it lies inside the live range starting at {start:#x}, not at its start"
        return "no live range starts there (never allocated, or already freed: double free)"

    def find(self, addr: int) -> AddressRange | None:
        """The live range containing ``addr`` (any address inside it), or ``None``."""
        addr = check_int("", "address", addr, minimum=None)
        if addr < 0:
            return None
        pfn = addr >> self._shift
        node = self._tree.node_at(pfn)
        if node is None or node[0] not in self._live:
            return None
        npages = self._live[node[0]]
        if pfn >= node[0] + npages:
            return None  # rounding padding: occupied, but nothing was asked for there
        return self._geo.range(node[0], npages)

    # -- reservations ------------------------------------------------------------

    def reserve(self, range: AddressRange) -> AddressRange:
        """Keep ``range`` (rounded out to granules, clipped to the aperture) from ever
        being allocated, like ``reserve_iova`` for MSI doorbells or firmware windows.

        Cached (already freed) ranges in the way are evicted from the range cache first.
        """
        if not isinstance(range, AddressRange) or range.size == 0:
            raise InvalidArgumentError(f"reserve needs a non-empty AddressRange, got {range!r}")
        first = max(range.start >> self._shift, self._geo.start_pfn)
        last = min(range.last >> self._shift, self._geo.end_pfn)
        if first > last:
            raise InvalidArgumentError(f"reserved range {range} lies outside {self.aperture}")
        cached = self._cached_pfns()
        blockers = self._tree.overlapping(first, last)
        for lo, hi in blockers:
            if lo not in cached:
                owner = "reserved" if lo in self._reserved else "allocated"
                node = self._geo.range(lo, hi + 1 - lo)
                raise StateError(f"cannot reserve {range}: it overlaps the {owner} range {node}")
        self._forget_last()
        for lo, _ in blockers:
            self._evict(lo)
        self._tree.insert_reserved(first, last)
        self._reserved[first] = last + 1 - first
        return self._geo.range(first, last + 1 - first)

    def _cached_pfns(self) -> set[int]:
        """First page frames of the ranges parked in the range cache."""
        raise NotImplementedError

    def _evict(self, pfn: int) -> None:
        """Take a cached range out of the cache and the tree (for :meth:`reserve`)."""
        raise NotImplementedError

    def _forget_last(self) -> None:
        """Something other than an allocation changed the domain: no undo any more."""
        self._last = None
        self._older.clear()

    def _remember(self, *, flushed: bool) -> None:
        """A new allocation is coming: keep the current undo record beneath it (the
        deepest :data:`UNDO_DEPTH` are kept).  An allocation that ``flushed`` the
        range cache keeps a copy of the whole domain to undo it, so it ends the chain
        instead: at most two such copies are ever held."""
        if flushed:
            self._older.clear()
        elif self._last is not None:
            self._older.append(self._last)

    def _pop_last(self) -> None:
        """The most recent allocation was taken back: the one before is now the latest."""
        self._last = self._older.pop() if self._older else None
