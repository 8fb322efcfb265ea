"""The flush queue of lazy IOTLB invalidation (Linux's ``iova_fq`` in dma-iommu.c).

In lazy mode an unmap clears the page-table entries but leaves the IOTLB alone: the
freed IOVA range goes into a ring, and is handed out again only after an invalidation
of the whole domain made sure no TLB still translates it.  The kernel's rules, which
this class follows one by one:

- the ring has :data:`FQ_SIZE` (256) slots, one of which always stays empty (a ring
  is full when ``tail + 1 == head``), so it holds at most 255 ranges;
- adding to a full ring first invalidates the whole domain (``flush_iotlb_all``) and
  frees every range queued, then adds;
- adding arms the timer unless it is already armed; the timer is never re-armed
  early, nor cancelled by a ring-full flush, so it fires :data:`FQ_TIMEOUT_NS` (10 ms)
  after the add that armed it and then invalidates the domain and frees the ring,
  even if a ring-full flush emptied it meanwhile;
- vcmm has one CPU, so one ring per domain (Linux has one per CPU, and a flush frees
  the ranges of every CPU's ring).

Time is the DMA API's :class:`~vcmm.dma.clock.SimClock`.  An explicit :meth:`flush`
(``DmaApi.flush_queues()``, or the domain going away) is counted apart from the two
kernel causes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from vcmm.dma.clock import SimClock, Timer
from vcmm.ranges import AddressRange

#: Slots per ring (``IOVA_FQ_SIZE``); at most ``FQ_SIZE - 1`` ranges are held.
FQ_SIZE: Final = 256
#: The timer's delay (``IOVA_FQ_TIMEOUT``, 10 ms), in nanoseconds.
FQ_TIMEOUT_NS: Final = 10_000_000

RING_FULL: Final = "ring_full"
TIMEOUT: Final = "timeout"
EXPLICIT: Final = "explicit"
#: Why a flush happened, in report order.
FLUSH_CAUSES: Final = (RING_FULL, TIMEOUT, EXPLICIT)


@dataclass(frozen=True, slots=True)
class QueuedIova:
    """An unmapped IOVA range waiting for the domain's next invalidation."""

    iova: AddressRange
    #: Simulated time (ns) it was queued.
    queued_at: int


class FlushQueue:
    """One domain's ring of unmapped IOVA ranges and its timer.

    ``invalidate(cause)`` invalidates the domain's IOTLB entries everywhere they may
    be cached; ``release(iova)`` frees a range to the IOVA allocator.
    """

    def __init__(
        self,
        clock: SimClock,
        invalidate: Callable[[str], None],
        release: Callable[[AddressRange], None],
        *,
        size: int = FQ_SIZE,
        timeout_ns: int = FQ_TIMEOUT_NS,
    ) -> None:
        self.clock = clock
        self.size = size
        self.timeout_ns = timeout_ns
        self._invalidate = invalidate
        self._release = release
        self._ring: deque[QueuedIova] = deque()
        self._timer: Timer | None = None
        #: Flushes by cause, and the most ranges ever held at once.
        self.flushes: dict[str, int] = dict.fromkeys(FLUSH_CAUSES, 0)
        self.peak = 0
        self.queued_total = 0

    def __repr__(self) -> str:
        return f"<FlushQueue {len(self._ring)}/{self.size - 1} held, timer {self._timer!r}>"

    @property
    def held(self) -> tuple[QueuedIova, ...]:
        """The ranges waiting, oldest first."""
        return tuple(self._ring)

    @property
    def timer_deadline(self) -> int | None:
        """When the armed timer fires (simulated ns), or None."""
        return self._timer.deadline if self._timer is not None else None

    def holding(self, addr: int) -> QueuedIova | None:
        """The queued range containing ``addr``, if any."""
        for entry in self._ring:
            if addr in entry.iova:
                return entry
        return None

    def add(self, iova: AddressRange) -> None:
        """Queue an unmapped range (``queue_iova``)."""
        if len(self._ring) >= self.size - 1:
            self.flush(RING_FULL)
        self._ring.append(QueuedIova(iova, self.clock.now))
        self.queued_total += 1
        self.peak = max(self.peak, len(self._ring))
        if self._timer is None:
            self._timer = self.clock.schedule(self.timeout_ns, self._expire)

    def _expire(self) -> None:
        self._timer = None
        self.flush(TIMEOUT)

    def flush(self, cause: str = EXPLICIT) -> int:
        """Invalidate the domain, then free every queued range; how many were freed."""
        self._invalidate(cause)
        self.flushes[cause] += 1
        freed, self._ring = self._ring, deque()
        for entry in freed:
            self._release(entry.iova)
        return len(freed)

    def close(self) -> None:
        """The domain goes away: stop the timer and flush what is queued."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ring:
            self.flush(EXPLICIT)

    def snapshot(self) -> tuple[object, ...]:
        return (
            tuple((e.iova.start, e.iova.size, e.queued_at) for e in self._ring),
            self.timer_deadline,
            tuple(self.flushes.values()),
            self.peak,
            self.queued_total,
        )
