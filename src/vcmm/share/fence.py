"""Fences: one-shot completion events that order device jobs and CPU access.

The dma-buf thread asked how a prepare call could "block until that device had
finished accessing that buffer" without deadlocking (001 L1-16, L109-123).  The answer
Linux settled on is the fence: a device job creates one when it is queued and signals
it when the hardware is done; anybody who must not touch the buffer before that waits
on it, with a timeout, so a job that never completes turns into an error instead of a
hang.

A wait that would block while the calling thread holds the hardware lock
(:mod:`vcmm.share.lock`: inside job work or a ``locked()`` block) is refused with
:class:`~vcmm.errors.StateError`: the fence's job needs that lock, so the wait could
only end in a timeout.

Fences here are real threading primitives: :meth:`Fence.signal` may be called from any
thread (a job runner, a simulated interrupt) and wakes every waiter and runs every
callback exactly once.  Fences created on one :class:`FenceTimeline` carry increasing
sequence numbers, so a reservation object can tell which of two fences from the same
engine is the later one and keep only that (as ``dma_fence_is_later`` lets
``dma_resv`` do).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.share.lock import check_may_wait

#: Seconds a wait lasts when the caller does not say: long enough for any simulated job,
#: short enough that a fence nobody signals shows up as an error in a test run.
DEFAULT_TIMEOUT = 10.0

_fence_ids = itertools.count(1)
_timeline_ids = itertools.count(1)

FenceCallback = Callable[["Fence"], None]


def check_timeout(call: str, timeout: object) -> float | None:
    """Validate a timeout in seconds: a number >= 0, or ``None`` to wait forever."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentError(f"{call}: timeout {timeout!r} is not a number of seconds")
    if timeout != timeout or timeout < 0:
        raise InvalidArgumentError(f"{call}: timeout {timeout!r} must be >= 0 seconds")
    if timeout == float("inf"):
        return None
    return float(timeout)


class Deadline:
    """A point in time shared by several waits, so N fences do not get N timeouts."""

    def __init__(self, timeout: float | None) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` for no limit."""
        if self._end is None:
            return None
        return max(0.0, self._end - time.monotonic())


class FenceTimeline:
    """An engine's ordered stream of fences (the kernel's fence *context*).

    Jobs of one engine complete in submission order, so a later fence on the same
    timeline implies every earlier one: a reservation object may drop the older one.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"FenceTimeline name {name!r} must be a non-empty string")
        self.name = name
        self.id = next(_timeline_ids)
        self._seqno = itertools.count(1)
        self._lock = threading.Lock()

    def create(self, label: str = "") -> Fence:
        """A new unsignalled fence with the next sequence number of this timeline."""
        with self._lock:
            seqno = next(self._seqno)
        return Fence(label or f"{self.name}#{seqno}", timeline=self, seqno=seqno)

    def __repr__(self) -> str:
        return f"<FenceTimeline {self.name}>"


@dataclass(frozen=True, slots=True)
class CallbackHandle:
    """What :meth:`Fence.add_callback` returns, to remove the callback again."""

    fence_id: int
    serial: int


class Fence:
    """A one-shot event: unsignalled until :meth:`signal`, then signalled forever.

    ``error`` records why a job failed (a fence is still signalled when its job fails,
    so waiters never hang on a broken job); ``timestamp`` is when it was signalled
    (``time.monotonic()``), which lets tests check the order jobs finished in.
    """

    def __init__(
        self, name: str = "fence", *, timeline: FenceTimeline | None = None, seqno: int = 0
    ) -> None:
        if not isinstance(name, str):
            raise InvalidArgumentError(f"Fence name {name!r} is not a string")
        if timeline is not None and not isinstance(timeline, FenceTimeline):
            raise InvalidArgumentError(f"Fence timeline {timeline!r} is not a FenceTimeline")
        if not is_int(seqno) or seqno < 0:
            raise InvalidArgumentError(f"Fence seqno {seqno!r} must be an integer >= 0")
        self.id = next(_fence_ids)
        self.name = name
        self.timeline = timeline
        self.seqno = seqno
        self.error: str | None = None
        self.timestamp: float | None = None
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: dict[int, FenceCallback] = {}
        self._serial = itertools.count(1)

    # -- state ------------------------------------------------------------------------

    @property
    def signaled(self) -> bool:
        return self._event.is_set()

    def __repr__(self) -> str:
        state = "signaled" if self.signaled else "pending"
        if self.error is not None:
            state += f" error={self.error!r}"
        return f"<Fence {self.name} {state}>"

    def is_later(self, other: Fence) -> bool:
        """Whether this fence comes after ``other`` on their common timeline."""
        if not isinstance(other, Fence):
            raise InvalidArgumentError(f"is_later: {other!r} is not a Fence")
        if self.timeline is None or self.timeline is not other.timeline:
            raise InvalidArgumentError(
                f"is_later: {self.name} and {other.name} are not on one timeline; "
                "only fences of the same timeline are ordered"
            )
        return self.seqno > other.seqno

    # -- signalling ---------------------------------------------------------------------

    def signal(self, error: str | None = None) -> None:
        """Mark the job done (``error`` says it failed), wake waiters, run callbacks.

        Callbacks run in the signalling thread, after the fence is visibly signalled,
        outside any lock, so a callback may itself wait on or signal other fences.  If a
        callback raises, the others still run and the first exception propagates.
        """
        if error is not None and not isinstance(error, str):
            raise InvalidArgumentError(f"{self.name}.signal: error {error!r} is not a string")
        with self._lock:
            if self._event.is_set():
                raise StateError(f"{self.name}.signal: the fence is already signalled")
            self.error = error
            self.timestamp = time.monotonic()
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            self._event.set()
        first: BaseException | None = None
        for callback in callbacks:
            try:
                callback(self)
            except BaseException as exc:  # every callback must run
                first = first or exc
        if first is not None:
            raise first

    def add_callback(self, callback: FenceCallback) -> CallbackHandle | None:
        """Run ``callback(fence)`` when the fence signals.

        Returns ``None`` without registering when the fence is already signalled (the
        kernel's ``-ENOENT``): the caller then knows the event is past and acts at once.
        """
        if not callable(callback):
            raise InvalidArgumentError(f"{self.name}.add_callback: {callback!r} is not callable")
        with self._lock:
            if self._event.is_set():
                return None
            serial = next(self._serial)
            self._callbacks[serial] = callback
            return CallbackHandle(self.id, serial)

    def remove_callback(self, handle: CallbackHandle) -> bool:
        """Unregister a callback; False when it already ran (or was removed)."""
        if not isinstance(handle, CallbackHandle) or handle.fence_id != self.id:
            raise InvalidArgumentError(
                f"{self.name}.remove_callback: {handle!r} is not a handle of this fence"
            )
        with self._lock:
            return self._callbacks.pop(handle.serial, None) is not None

    # -- waiting -----------------------------------------------------------------------

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Block until signalled; :class:`WaitTimeoutError` after ``timeout`` seconds."""
        limit = check_timeout(f"{self.name}.wait", timeout)
        if self._event.is_set():
            return
        check_may_wait(f"{self.name}.wait")
        if not self._event.wait(limit):
            raise WaitTimeoutError(
                f"{self.name}.wait: not signalled within {limit} s; "
                "the job that owns it never completed"
            )


def signaled_fence(name: str = "stub") -> Fence:
    """An already signalled fence (the kernel's stub fence), for "nothing to wait for"."""
    fence = Fence(name)
    fence.signal()
    return fence


def _check_fences(call: str, fences: Iterable[Fence]) -> list[Fence]:
    if isinstance(fences, Fence) or not isinstance(fences, Iterable):
        raise InvalidArgumentError(f"{call}: {fences!r} is not an iterable of fences")
    out = list(fences)
    for fence in out:
        if not isinstance(fence, Fence):
            raise InvalidArgumentError(f"{call}: {fence!r} is not a Fence")
    return out


def wait_all(fences: Iterable[Fence], timeout: float | None = DEFAULT_TIMEOUT) -> None:
    """Wait until every fence has signalled, within one shared ``timeout``."""
    call = "wait_all"
    checked = _check_fences(call, fences)
    limit = check_timeout(call, timeout)
    if not all(f.signaled for f in checked):
        check_may_wait(call)
    deadline = Deadline(limit)
    for fence in checked:
        if not fence._event.wait(deadline.remaining()):
            raise WaitTimeoutError(
                f"{call}: {fence.name} not signalled within {limit} s "
                f"({sum(not f.signaled for f in checked)} of {len(checked)} fences pending)"
            )


def wait_any(fences: Iterable[Fence], timeout: float | None = DEFAULT_TIMEOUT) -> Fence:
    """Wait until at least one fence has signalled and return it (the first found)."""
    call = "wait_any"
    checked = _check_fences(call, fences)
    limit = check_timeout(call, timeout)
    if not checked:
        raise InvalidArgumentError(f"{call}: no fences to wait for")
    woken = threading.Event()
    handles = [(f, f.add_callback(lambda _f: woken.set())) for f in checked]
    try:
        for fence, handle in handles:
            if handle is None:
                return fence
        check_may_wait(call)
        if not woken.wait(limit):
            raise WaitTimeoutError(
                f"{call}: none of {len(checked)} fences signalled within {limit} s"
            )
        return next(f for f in checked if f.signaled)
    finally:
        for fence, handle in handles:
            if handle is not None:
                fence.remove_callback(handle)
