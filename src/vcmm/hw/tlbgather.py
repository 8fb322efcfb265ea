"""TLB maintenance after table changes: gather the changed ranges, then invalidate once.

Whoever changes a translation table (an SMMU context's map API, the VCMM's mappers
editing a VCM's table, the CPU's own mapping calls) reports each changed input range
to a :class:`TlbGather` with :meth:`~TlbGather.add_range` or
:meth:`~TlbGather.add_page`, and calls :meth:`~TlbGather.sync` when the changes are
complete, as Linux's io-pgtable reports unmapped ranges to an ``iommu_iotlb_gather``
and flushes it with ``iotlb_sync``.  The gather alone decides how to invalidate:

- ranges that overlap or touch are merged first;
- up to :data:`PRECISE_INVALIDATION_LIMIT` merged ranges are invalidated one by one,
  removing exactly the TLB entries that overlap them (what TLBIMVA at every granule of
  the range does; an entry of any page size overlapping the range goes);
- past that, the whole address space's entries are dropped in one operation (the
  bank's tag, TLBIASID; the kernel's global entries, TLBIALL), which costs refills
  but never correctness: Linux's arm64 ``__flush_tlb_range`` makes the same trade
  past ``MAX_TLBI_OPS``.

A gather can be told that some ranges are *queued* (:meth:`TlbGather.queued`, Linux's
``iommu_iotlb_gather.queued``): a lazy-invalidation flush queue takes over their
invalidation (one invalidation of the whole address space later), so ``sync`` leaves
their TLB entries in place and invalidates only what else was reported.

What is invalidated is a :class:`FlushTarget`: an SMMU context's bank
(:class:`~vcmm.hw.smmu.binding.ContextBinding`) or the CPU for one ASID or for the
kernel's global mappings (:meth:`vcmm.hw.cpu.Cpu.tlb_gather`).  Until ``sync`` a device
or the CPU keeps using whatever it has cached, exactly as hardware does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from vcmm.checks import check_int, is_int
from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange, coalesce

#: Past this many merged ranges, :meth:`TlbGather.sync` invalidates the whole target.
PRECISE_INVALIDATION_LIMIT = 64


@runtime_checkable
class FlushTarget(Protocol):
    """The TLB entries of one address space: what a gather invalidates."""

    def flush_range(self, va: int, size: int) -> int:
        """Invalidate the entries overlapping ``[va, va+size)``; how many went."""
        ...

    def flush_all(self) -> int:
        """Invalidate every entry of the address space; how many went."""
        ...


class TlbGather:
    """Changed input ranges of one address space, held until :meth:`sync`."""

    __slots__ = ("_limit", "_queued", "_ranges", "_target")

    def __init__(self, target: FlushTarget, *, limit: int = PRECISE_INVALIDATION_LIMIT) -> None:
        if not isinstance(target, FlushTarget):
            raise InvalidArgumentError(
                f"TlbGather target {target!r} has no flush_range(va, size) and flush_all()"
            )
        if not is_int(limit) or limit < 1:
            raise InvalidArgumentError(f"TlbGather limit {limit!r} must be an integer >= 1")
        self._target = target
        self._limit = limit
        self._ranges: list[tuple[int, int]] = []
        self._queued: tuple[AddressRange, ...] = ()

    def __repr__(self) -> str:
        return f"TlbGather({len(self._ranges)} ranges for {self._target!r})"

    def __len__(self) -> int:
        """Ranges reported since the last :meth:`sync` (before merging)."""
        return len(self._ranges)

    @property
    def target(self) -> FlushTarget:
        return self._target

    def add_range(self, va: int, size: int) -> None:
        """Report that the translations of ``[va, va+size)`` changed."""
        v = check_int("TlbGather.add_range", "va", va)
        n = check_int("TlbGather.add_range", "size", size)
        if n == 0 or v + n > 1 << 64:
            raise InvalidArgumentError(
                f"TlbGather.add_range: [{v:#x}, +{n:#x}) must be non-empty within 64 bits"
            )
        self._ranges.append((v, n))

    def add_page(self, va: int, page_size: int) -> None:
        """Report that the page or block of ``page_size`` at ``va`` changed."""
        v = check_int("TlbGather.add_page", "va", va)
        n = check_int("TlbGather.add_page", "page_size", page_size)
        if n == 0 or n & (n - 1) or v % n:
            raise InvalidArgumentError(
                f"TlbGather.add_page: page size {n:#x} must be a power of two that aligns va {v:#x}"
            )
        self.add_range(v, n)

    def pending(self) -> list[tuple[int, int]]:
        """The ranges a :meth:`sync` would invalidate now, merged."""
        return coalesce(self._ranges)

    def sync(self) -> int:
        """Invalidate what was reported (see the module notes) and start afresh;
        returns the number of TLB entries removed."""
        ranges, self._ranges = self._ranges, []
        if len(ranges) > 1:  # one range (most brackets) is merged already
            ranges = coalesce(ranges)
        if self._queued:
            ranges = [r for r in ranges if not self._is_queued(*r)]
        if len(ranges) > self._limit:
            return self._target.flush_all()
        removed = 0
        for va, size in ranges:
            removed += self._target.flush_range(va, size)
        return removed

    def _is_queued(self, va: int, size: int) -> bool:
        return any(q.start <= va and va + size <= q.end for q in self._queued)

    @contextmanager
    def queued(self, ranges: tuple[AddressRange, ...]) -> Iterator[None]:
        """Inside the block, a :meth:`sync` leaves the entries of changes lying wholly
        inside ``ranges`` in the TLB: a flush queue invalidates them later (Linux's
        lazy mode skips ``iotlb_sync`` for a queued gather).  A merged range reaching
        outside them is invalidated as usual."""
        if not all(isinstance(r, AddressRange) for r in ranges):
            raise InvalidArgumentError(f"TlbGather.queued: {ranges!r} are not AddressRanges")
        saved, self._queued = self._queued, tuple(ranges)
        try:
            yield
        finally:
            self._queued = saved

    def discard(self) -> None:
        """Forget what was reported (the changes were undone exactly, so the cached
        entries are right again)."""
        self._ranges = []
