"""Simulated time for the DMA API: nanoseconds that pass only when told to.

Linux's lazy IOTLB invalidation runs on a timer (the flush queue's 10 ms
``fq_timer``), so modelling it needs time; vcmm must stay deterministic and its tests
may not depend on the wall clock, so the DMA API owns a :class:`SimClock` instead.
Nothing advances it behind the caller's back: :meth:`SimClock.advance` (``DmaApi.
advance(ns)``) moves it, and the workload runner advances it by each operation's
modelled duration.  A timer whose deadline the clock passes fires at its deadline,
in deadline order (ties in the order they were set), before ``advance`` returns, so
what a timer does is seen at exactly the simulated instant it would happen.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

from vcmm.checks import check_int


class Timer:
    """A pending call at a simulated instant; :meth:`cancel` stops it firing."""

    __slots__ = ("callback", "cancelled", "deadline")

    def __init__(self, deadline: int, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled else "pending"
        return f"<Timer at {self.deadline} ns, {state}>"


class SimClock:
    """Simulated nanoseconds since the DMA API was created, and the timers set on them."""

    def __init__(self) -> None:
        self._now = 0
        self._seq = itertools.count()
        self._timers: list[tuple[int, int, Timer]] = []

    @property
    def now(self) -> int:
        """The current simulated time, in nanoseconds."""
        return self._now

    def __repr__(self) -> str:
        return f"<SimClock {self._now} ns, {len(self.pending())} timer(s) pending>"

    def schedule(self, delay_ns: int, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` once the clock has advanced ``delay_ns`` from now."""
        delay = check_int("SimClock.schedule", "delay_ns", delay_ns, minimum=0)
        timer = Timer(self._now + delay, callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._seq), timer))
        return timer

    def pending(self) -> list[Timer]:
        """Timers not yet fired nor cancelled, earliest first."""
        return [t for _, _, t in sorted(self._timers) if not t.cancelled]

    def advance(self, ns: int) -> int:
        """Let ``ns`` nanoseconds pass, firing every timer due meanwhile at its own
        deadline; returns the new time."""
        step = check_int("SimClock.advance", "ns", ns, minimum=0)
        end = self._now + step
        while self._timers and self._timers[0][0] <= end:
            deadline, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self._now = deadline
            timer.callback()
        self._now = end
        return end
