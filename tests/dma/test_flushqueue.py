"""The flush queue against a model of the kernel's rules, and the simulated clock.

The model below is written from drivers/iommu/dma-iommu.c as a transcription of its
rules, not of vcmm's class: a ring of ``IOVA_FQ_SIZE`` slots with ``head`` and
``tail`` indices (full when ``tail + 1 == head``, so one slot stays empty), flush
start/finish counters stamped on each entry (an entry is freed once a flush that
started after it finished), ``queue_iova`` freeing what is already flushed, flushing a
full ring, adding, and arming the timer only when it is off, and the timer callback
turning the flag off, flushing and freeing the ring.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.dma.clock import SimClock
from vcmm.dma.flushqueue import EXPLICIT, FQ_SIZE, FQ_TIMEOUT_NS, RING_FULL, TIMEOUT, FlushQueue
from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange

IOVA_FQ_SIZE = 256  # dma-iommu.c
IOVA_FQ_TIMEOUT_MS = 10


@dataclass
class _Entry:
    iova: int
    counter: int


class KernelFlushQueue:
    """dma-iommu.c's per-CPU flush queue and timer for one CPU."""

    def __init__(self) -> None:
        self.entries: list[_Entry | None] = [None] * IOVA_FQ_SIZE
        self.head = self.tail = 0
        self.flush_start_cnt = self.flush_finish_cnt = 0
        self.timer_on = False
        self.expires = 0
        self.now = 0
        self.freed: list[int] = []
        self.flushes: Counter[str] = Counter()

    def _full(self) -> bool:
        return (self.tail + 1) % IOVA_FQ_SIZE == self.head

    def _flush_iotlb(self, why: str) -> None:
        self.flush_start_cnt += 1
        self.flushes[why] += 1  # flush_iotlb_all
        self.flush_finish_cnt += 1

    def _ring_free(self) -> None:
        while self.head != self.tail:
            entry = self.entries[self.head]
            assert entry is not None
            if entry.counter >= self.flush_finish_cnt:
                break
            self.freed.append(entry.iova)
            self.head = (self.head + 1) % IOVA_FQ_SIZE

    def queue_iova(self, iova: int) -> None:
        self._ring_free()
        if self._full():
            self._flush_iotlb("ring_full")
            self._ring_free()
        idx = self.tail
        self.tail = (idx + 1) % IOVA_FQ_SIZE
        self.entries[idx] = _Entry(iova, self.flush_start_cnt)
        if not self.timer_on:
            self.timer_on = True
            self.expires = self.now + IOVA_FQ_TIMEOUT_MS * 1_000_000

    def advance(self, ns: int) -> None:
        end = self.now + ns
        if self.timer_on and self.expires <= end:
            self.now = self.expires
            self.timer_on = False  # fq_flush_timeout
            self._flush_iotlb("timeout")
            self._ring_free()
        self.now = end

    @property
    def held(self) -> int:
        return (self.tail - self.head) % IOVA_FQ_SIZE


class Harness:
    """vcmm's FlushQueue on a SimClock, recording invalidations and frees."""

    def __init__(self) -> None:
        self.clock = SimClock()
        self.invalidations: list[tuple[str, int]] = []
        self.freed: list[int] = []
        self.queue = FlushQueue(
            self.clock,
            lambda cause: self.invalidations.append((cause, self.clock.now)),
            lambda iova: self.freed.append(iova.start),
        )


def test_the_constants_are_the_kernels() -> None:
    assert FQ_SIZE == IOVA_FQ_SIZE and FQ_TIMEOUT_NS == IOVA_FQ_TIMEOUT_MS * 1_000_000


def test_a_ring_holds_255_and_the_256th_add_flushes_first() -> None:
    h = Harness()
    for n in range(FQ_SIZE - 1):
        h.queue.add(AddressRange(n << 12, 0x1000))
    assert len(h.queue.held) == 255 and not h.invalidations and not h.freed
    h.queue.add(AddressRange(255 << 12, 0x1000))
    assert h.invalidations == [(RING_FULL, 0)]
    assert h.freed == [n << 12 for n in range(255)]  # oldest first
    assert [q.iova.start for q in h.queue.held] == [255 << 12]


def test_the_timer_fires_ten_ms_after_the_add_that_armed_it_and_is_not_rearmed() -> None:
    h = Harness()
    h.queue.add(AddressRange(0x1000, 0x1000))
    h.clock.advance(4_000_000)
    h.queue.add(AddressRange(0x2000, 0x1000))  # the timer is on: not pushed back
    assert h.queue.timer_deadline == FQ_TIMEOUT_NS
    h.clock.advance(FQ_TIMEOUT_NS - 4_000_000 - 1)
    assert not h.invalidations and len(h.queue.held) == 2
    h.clock.advance(1)
    assert h.invalidations == [(TIMEOUT, FQ_TIMEOUT_NS)] and h.freed == [0x1000, 0x2000]
    assert h.queue.timer_deadline is None  # armed again only by the next add
    h.clock.advance(50 * FQ_TIMEOUT_NS)
    assert h.invalidations == [(TIMEOUT, FQ_TIMEOUT_NS)]


def test_a_ring_full_flush_leaves_the_timer_armed_and_it_flushes_anyway() -> None:
    h = Harness()
    for n in range(FQ_SIZE):
        h.queue.add(AddressRange(n << 12, 0x1000))
    h.clock.advance(FQ_TIMEOUT_NS)
    assert [c for c, _ in h.invalidations] == [RING_FULL, TIMEOUT]
    assert h.queue.flushes == {RING_FULL: 1, TIMEOUT: 1, EXPLICIT: 0}


def test_an_explicit_flush_and_closing() -> None:
    h = Harness()
    h.queue.add(AddressRange(0x1000, 0x1000))
    assert h.queue.flush() == 1 and h.invalidations == [(EXPLICIT, 0)]
    h.queue.add(AddressRange(0x2000, 0x1000))
    h.queue.close()  # the domain goes away: flushed, and its timer stops
    assert h.freed == [0x1000, 0x2000] and not h.clock.pending()
    assert h.queue.peak == 1 and h.queue.queued_total == 2


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("queue"), st.integers(1, 120)),
        st.tuples(st.just("advance"), st.integers(0, 15_000_000)),
    ),
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(_ops)
def test_random_sequences_match_the_kernel_model(ops: list[tuple[str, int]]) -> None:
    h, model = Harness(), KernelFlushQueue()
    iova = 0
    for op, value in ops:
        if op == "queue":
            for _ in range(value):
                iova += 0x1000
                h.queue.add(AddressRange(iova, 0x1000))
                model.queue_iova(iova)
        else:
            h.clock.advance(value)
            model.advance(value)
        assert len(h.queue.held) == model.held
        assert h.freed == model.freed
        assert Counter(c for c, _ in h.invalidations) == model.flushes
        expected = model.expires if model.timer_on else None
        assert h.queue.timer_deadline == expected


def test_the_clock_fires_timers_at_their_deadlines_in_order() -> None:
    clock = SimClock()
    seen: list[tuple[str, int]] = []
    clock.schedule(30, lambda: seen.append(("b", clock.now)))
    clock.schedule(10, lambda: seen.append(("a", clock.now)))
    cancelled = clock.schedule(20, lambda: seen.append(("x", clock.now)))
    cancelled.cancel()
    assert clock.advance(100) == 100
    assert seen == [("a", 10), ("b", 30)] and clock.now == 100


@pytest.mark.parametrize("bad", [-1, 1.5, "10", None, True])
def test_the_clock_refuses_bad_steps_and_stays(bad: object) -> None:
    clock = SimClock()
    clock.advance(7)
    with pytest.raises(InvalidArgumentError, match="ns"):
        clock.advance(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="delay_ns"):
        clock.schedule(bad, lambda: None)  # type: ignore[arg-type]
    assert clock.now == 7 and not clock.pending()
