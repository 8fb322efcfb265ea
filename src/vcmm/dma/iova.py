"""The IOVA allocator as the VCM allocator hook: dma-iommu's ``__alloc_iova`` on a VCM.

``vcm_create(..., allocator=...)`` takes any object with ``alloc(size, align)``,
``free(addr)`` and ``snapshot()`` (the custom-allocator hook the VCMM's reviewers
asked for, 000 L4053).  :class:`IovaVcmAllocator` plugs a
:class:`~vcmm.mm.iova.IovaDomain` (seed policy) or
:class:`~vcmm.mm.iova_linux.LinuxIovaDomain` (mainline policy) in, so every
reservation of a DMA domain's VCM gets a Linux IOVA: top-down from the *device's* limit, size-aligned to a power of two,
never page frame 0, never outside the aperture.  The limit is per call (``dma_mask``
for streaming mappings, ``coherent_dma_mask`` for coherent buffers), so the DMA API
sets it around each ``vcm_reserve`` with :meth:`IovaVcmAllocator.limited`.  When a
mapping fails after its reservation was made, the DMA API releases it inside
:meth:`IovaVcmAllocator.undoing`, so the free is an exact undo of the allocation (the
range does not stay parked in the range cache).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from vcmm.errors import InvalidArgumentError
from vcmm.mm.iova import IovaSnapshot
from vcmm.mm.iova_base import IovaSpace
from vcmm.mm.iova_linux import LinuxIovaSnapshot
from vcmm.mm.iova_policy import IovaAllocator
from vcmm.ranges import AddressRange


class IovaVcmAllocator:
    """Adapter from the VCM allocator interface to an IOVA domain of either policy."""

    def __init__(self, iova: IovaAllocator) -> None:
        if not isinstance(iova, IovaSpace):
            raise InvalidArgumentError(f"IovaVcmAllocator needs an IOVA domain, got {iova!r}")
        self.iova = iova
        self._limit: int | None = None
        self._undo = False
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
    def undoing(self) -> Iterator[None]:
        """Frees inside the block take back the most recent allocation exactly
        (:meth:`IovaDomain.undo_alloc`) instead of freeing it into the range cache."""
        saved = self._undo
        self._undo = True
        try:
            yield
        finally:
            self._undo = saved

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

    @property
    def undoing_now(self) -> bool:
        """Whether frees are exact undos right now (inside :meth:`undoing`)."""
        return self._undo

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
        if self._undo:
            return self.iova.undo_alloc(addr)
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
