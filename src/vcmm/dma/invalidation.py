"""How a DMA domain invalidates the IOTLB after an unmap, and what that costs.

Each :class:`~vcmm.dma.domain.DmaDomain` has one :class:`DomainInvalidation`, in the
mode the platform or the ``DmaApi`` chose (:mod:`vcmm.tlbcost`):

- **strict**: the unmap runs as before (the SMMU update bracket invalidates what it
  removed before the call returns); it is charged, on every context running the
  domain, one command per page or block removed (what io-pgtable reports with
  ``tlb_add_page``, counted from the table before the unmap) and one sync;
- **lazy**: the unmap clears the entries, but each context's TLB gather is told the
  range is *queued* (:meth:`~vcmm.hw.tlbgather.TlbGather.queued`) so its entries stay
  cached, and the IOVA allocator hands the range to the domain's
  :class:`~vcmm.dma.flushqueue.FlushQueue` instead of freeing it.  A flush then
  invalidates every context running the domain (one TLBIASID-like command and one
  sync each) and frees the queued ranges.

Until that flush a device whose IOTLB still holds a translation of an unmapped page
reaches the page through it (the window lazy mode opens); the DMA-debug checker
reports such accesses (``DEVICE_ACCESS_STALE_IOTLB``).  An unmap that takes back a
mapping just made (``DmaApi.undoing()``) is always strict, since its IOVA is reusable
at once and no translation of it may survive, and is not counted: the failed
operation it undoes leaves no trace, its counters included.

Costs come from each context's SMMU (``[smmus.invalidation]`` in the platform file,
:class:`~vcmm.tlbcost.InvalidationCost`); the counters say what was issued and the
modelled time it took.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from vcmm.dma.clock import SimClock
from vcmm.dma.flushqueue import FLUSH_CAUSES, FlushQueue, QueuedIova
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.errors import StateError
from vcmm.hw.pgtable.walker import Slots, Visitor, walk_range
from vcmm.tlbcost import LAZY, InvalidationCost, check_mode
from vcmm.undo import rolling_back

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi
    from vcmm.core.objects import Reservation, Vcm
    from vcmm.hw.pgtable import PageTable
    from vcmm.hw.smmu import SmmuContext


class LeafCount(Visitor):
    """Counts the leaves (pages and blocks, a large page once) of a range walk."""

    def __init__(self) -> None:
        self.leaves = 0

    def table(self, slots: Slots) -> None:
        for kind in slots.level.leaf_kinds:
            index = np.flatnonzero(kind.match_many(slots.words))
            if kind.copies > 1:
                index = np.unique((slots.i0 + index) // kind.copies)
            self.leaves += int(index.size)


#: Leaves counted by walking to each in turn before one range walk counts the rest
#: (a point walk costs about a sixth of a range walk's fixed numpy work).
POINT_WALKS = 4


def count_leaves(table: PageTable, va: int, size: int) -> int:
    """Pages and blocks mapped in ``[va, va+size)`` of the page table ``table``: the
    first few by walking to each (a 4 KiB ``map_page`` is one walk), the rest by one
    vectorised range walk."""
    end, leaves = va + size, 0
    for _ in range(POINT_WALKS):
        if va >= end:
            return leaves
        walk = table.walk(va)
        if not walk.ok:
            break  # a hole: the range walk skips it
        leaves += 1
        va = walk.va_base + walk.page_size
    if va >= end:
        return leaves
    counter = LeafCount()
    walk_range(table.geometry, table.memory, table.root, va, end, counter)
    return leaves + counter.leaves


@dataclass
class InvalidationStats:
    """What one domain's invalidations issued and cost (counters only grow)."""

    mode: str
    #: Unmaps the domain handled (each strict, or each queued).
    unmaps: int = 0
    #: Invalidation commands (by address, or whole context) and syncs issued.
    commands: int = 0
    syncs: int = 0
    cycles: int = 0
    #: Modelled time spent invalidating, in nanoseconds.
    time_ns: float = 0.0
    #: IOVA ranges held back by the flush queue now, and at most.
    held: int = 0
    peak_held: int = 0
    #: Flushes of the queue by cause (``ring_full``, ``timeout``, ``explicit``).
    flushes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FLUSH_CAUSES, 0))

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class DomainInvalidation:
    """The invalidation policy of one domain: strict, or lazy with a flush queue."""

    def __init__(
        self,
        system: VcmmApi,
        vcm: Vcm,
        allocator: IovaVcmAllocator,
        mode: str,
        clock: SimClock,
    ) -> None:
        self.mode = check_mode(mode)
        self._system = system
        self._vcm = vcm
        self._allocator = allocator
        self._stats = InvalidationStats(self.mode)
        self.queue: FlushQueue | None = None
        if self.mode == LAZY:
            self.queue = FlushQueue(clock, self._flush_all, allocator.release)

    def __repr__(self) -> str:
        return f"<DomainInvalidation {self.mode} {self.queue!r}>"

    # -- the contexts and what they cost --------------------------------------------------

    def contexts(self) -> list[SmmuContext]:
        """The SMMU contexts running the domain now (each once): what may cache it."""
        seen: dict[int, SmmuContext] = {}
        for assoc in self._vcm.associations:
            ctx = assoc.context
            if assoc.active and ctx is not None:
                seen.setdefault(id(ctx), ctx)
        return list(seen.values())

    def cost(self, ctx: SmmuContext) -> InvalidationCost:
        """The cost model of ``ctx``'s SMMU (the platform's ``invalidation`` table)."""
        cost: InvalidationCost = ctx.smmu.invalidation
        return cost

    def _charge(self, ctx: SmmuContext, commands: int, syncs: int) -> None:
        cost = self.cost(ctx)
        stats = self._stats
        stats.commands += commands
        stats.syncs += syncs
        stats.cycles += cost.cycles(commands, syncs)
        stats.time_ns += cost.nanoseconds(commands, syncs)

    # -- unmap and flush ---------------------------------------------------------------------

    @contextlib.contextmanager
    def unmapping(self, res: Reservation) -> Iterator[None]:
        """The block unmaps reservation ``res`` of the domain (``vcm_unback`` then
        ``vcm_unreserve``); strict or lazy as the module notes say.  Nothing is counted
        or queued unless the block succeeds."""
        ctxs = self.contexts()
        iova = res.range
        if iova is None:
            raise StateError(f"unmapping {res.name}: the reservation was freed")
        if rolling_back():
            yield  # strict, and uncounted: a failed operation leaves no trace
            return
        if self.queue is None:
            table = self._vcm.table
            leaves = count_leaves(table, iova.start, iova.size) if ctxs and table else 0
            yield
            for ctx in ctxs:
                self._charge(ctx, leaves, 1)
            self._stats.unmaps += 1
            return
        with contextlib.ExitStack() as stack:
            for ctx in ctxs:
                stack.enter_context(ctx.tlb_gather.queued((iova,)))
            stack.enter_context(self._allocator.queueing(self.queue.add))
            yield
        self._stats.unmaps += 1

    def unmap_direct(self, res: Reservation) -> bool:
        """Unback ``res`` with ``vcm_unback_direct`` and count it as :meth:`unmapping`
        counts a strict unmap (the pages it removed are the leaves, one per page);
        False, having done nothing, in lazy mode, while an undo runs, or when the
        core says the general path is needed."""
        if self.queue is not None or rolling_back():
            return False
        ctxs = self.contexts()
        leaves = self._system.vcm_unback_direct(res)
        if leaves is None:
            return False
        for ctx in ctxs:
            self._charge(ctx, leaves if self._vcm.table else 0, 1)
        self._stats.unmaps += 1
        return True

    def _flush_all(self, cause: str) -> None:
        """``flush_iotlb_all``: invalidate the whole domain on every context."""
        for ctx in self.contexts():
            ctx.invalidate_tlb()
            self._charge(ctx, 1, 1)

    def flush(self) -> int:
        """Flush the queue now (explicit); ranges freed (0 in strict mode)."""
        return self.queue.flush() if self.queue is not None else 0

    def holding(self, addr: int) -> QueuedIova | None:
        """The queued (unmapped, not yet invalidated) range containing ``addr``."""
        return self.queue.holding(addr) if self.queue is not None else None

    def close(self) -> None:
        if self.queue is not None:
            self.queue.close()

    def stats(self) -> InvalidationStats:
        """A copy of the counters, with the queue's figures filled in."""
        out = InvalidationStats(**asdict(self._stats))
        if self.queue is not None:
            out.held = len(self.queue.held)
            out.peak_held = self.queue.peak
            out.flushes = dict(self.queue.flushes)
        return out

    def snapshot(self) -> tuple[object, ...]:
        queue = self.queue.snapshot() if self.queue is not None else None
        stats = asdict(self._stats)
        flushes = tuple(stats.pop("flushes").items())
        return (self.mode, tuple(stats.items()), flushes, queue)
