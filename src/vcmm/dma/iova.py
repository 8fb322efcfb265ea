"""The IOVA allocator as the VCM allocator hook: dma-iommu's ``__alloc_iova`` on a VCM.

``vcm_create(..., allocator=...)`` takes any object with ``alloc(size, align)``,
``free(addr)`` and ``snapshot()`` (the custom-allocator hook the VCMM's reviewers
asked for, 000 L4053).  :class:`IovaVcmAllocator` plugs a
:class:`~vcmm.mm.iova.IovaDomain` (seed policy) or
:class:`~vcmm.mm.iova_linux.LinuxIovaDomain` (mainline policy) in, so every
reservation of a DMA domain's VCM gets a Linux IOVA: top-down from the *device's* limit, size-aligned to a power of two,
never page frame 0, never outside the aperture.  The limit is per call (``dma_mask``
for streaming mappings, ``coherent_dma_mask`` for coherent buffers), so the DMA API
sets it around each ``vcm_reserve`` with :meth:`IovaVcmAllocator.limited`.  A free
made while a transaction takes its steps back (:func:`vcmm.undo.rolling_back`: a
mapping that failed after its reservation was made, or one a failed compound call
takes back) is an exact undo of the allocation, so the range does not stay parked in
the range cache and the domain is as before the call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vcmm.errors import InvalidArgumentError, StateError
from vcmm.mm.iova import IovaSnapshot
from vcmm.mm.iova_base import IovaSpace
from vcmm.mm.iova_linux import LinuxIovaSnapshot
from vcmm.mm.iova_policy import IovaAllocator
from vcmm.ranges import AddressRange
from vcmm.undo import rolling_back


class IovaVcmAllocator:
    """Adapter from the VCM allocator interface to an IOVA domain of either policy."""

    def __init__(self, iova: IovaAllocator) -> None:
        if not isinstance(iova, IovaSpace):
            raise InvalidArgumentError(f"IovaVcmAllocator needs an IOVA domain, got {iova!r}")
        self.iova = iova
        self._limit: int | None = None
        self._queue: Callable[[AddressRange], None] | None = None

    @contextmanager
    def limited(self, limit: int) -> Iterator[None]:
        """Allocations inside the block end at or below ``limit`` (a DMA mask)."""
        saved = self._limit
        self._limit = limit
        try:
            yield
        finally:
            self._limit = saved

    @contextmanager
    def queueing(self, queue: Callable[[AddressRange], None]) -> Iterator[None]:
        """Frees inside the block hand the range to ``queue`` (a lazy-invalidation
        flush queue) instead of freeing it: the range stays allocated, so it cannot
        be handed out again, until the queue calls :meth:`release`."""
        saved = self._queue
        self._queue = queue
        try:
            yield
        finally:
            self._queue = saved

    def release(self, iova: AddressRange) -> None:
        """Free a range a flush queue held back (the invalidation it waited for ran)."""
        self.iova.free(iova.start)

    def alloc(self, size: int, align: int | None = None) -> int:
        """A size-aligned IOVA range of ``size`` bytes below the current limit.

        The VCMM asks for the alignment of the largest page size not above ``size``;
        the power-of-two size alignment of the IOVA allocator always satisfies it.
        """
        addr = self.iova.alloc(size, self._limit, size_aligned=True)
        if align is not None and addr % align:
            self.iova.undo_alloc(addr)
            raise InvalidArgumentError(
                f"IOVA {addr:#x} for {size:#x} bytes is not aligned to {align:#x}; the "
                "allocator only aligns to the size rounded up to a power of two"
            )
        return addr

    def alloc_at(self, addr: int, size: int) -> int:
        """Refused: IOVAs are placed by the allocator (only one-to-one VCMs place
        reservations at a given address)."""
        raise InvalidArgumentError(
            f"alloc_at({addr:#x}, {size:#x}): an IOVA domain places allocations itself "
            "(top-down from the device's mask); fixed placement is for one-to-one VCMs"
        )

    def free(self, addr: int) -> AddressRange:
        """Free ``addr``'s range; during a roll back, take its allocation back exactly
        (:meth:`IovaDomain.undo_alloc`) when it is the domain's most recent one, which
        undo steps taken newest first make it."""
        if rolling_back():
            try:
                return self.iova.undo_alloc(addr)
            except StateError:
                pass  # something else changed the domain since: an ordinary free
        if self._queue is not None:
            found = self.iova.find(addr)
            if found is not None:
                self._queue(found)
                return found
        return self.iova.free(addr)

    def find(self, addr: int) -> AddressRange | None:
        """The live IOVA range containing ``addr`` (any address inside it)."""
        return self.iova.find(addr)

    def snapshot(self) -> IovaSnapshot | LinuxIovaSnapshot:
        return self.iova.snapshot()

    def __repr__(self) -> str:
        return f"IovaVcmAllocator({self.iova!r})"
