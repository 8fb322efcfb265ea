"""A job runner: device work ordered by the buffers' fences, on real threads.

Tom Cooksey's scheme (001 L119-140): a job is queued against the buffers it uses and
runs as soon as the jobs it depends on are done, without a round trip to user space.
An :class:`Engine` is one device's queue: :meth:`Engine.submit` locks every buffer the
job touches *together* through a wound/wait acquire context (so two submitters taking
the same buffers in opposite orders cannot deadlock), collects the fences the job
conflicts with (readers wait for the last writer, writers for everyone), publishes the
job's own fence (exclusive on buffers it writes, shared on buffers it reads) and
unlocks.  The engine's thread then waits for those fences, runs the work and signals
the job's fence.  A dependency that never signals makes the job fail with a timeout
error on its fence, and a job reading a buffer whose last writer failed fails too
(its input is garbage), so nothing hangs and no error goes unnoticed.  A job that only
overwrites a buffer does not inherit the failure of its previous writer.

A job's work runs under the machine locks (:mod:`vcmm.hw.lock`) of the systems its
buffers belong to, and of the engine's own system if it was given one, so the work is
one atomic step of the machine against every other thread.  (Work of a job with
neither touches no machine the engine knows; its hardware calls still lock each.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass

from vcmm.core.interfaces import VcmmApi
from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.hw.lock import MachineLock
from vcmm.share.dmabuf import DmaBuf
from vcmm.share.fence import DEFAULT_TIMEOUT, Fence, FenceTimeline, check_timeout, wait_all
from vcmm.share.lock import check_may_wait, lock_of
from vcmm.share.resv import RESERVATION_CLASS
from vcmm.share.ww import AcquireContext


@dataclass
class Job:
    """A queued piece of device work and what it waits for."""

    name: str
    work: Callable[[], None]
    deps: tuple[Fence, ...]
    #: Last writers of the buffers the job reads: if one failed, the input is garbage.
    sources: tuple[Fence, ...]
    fence: Fence
    timeout: float | None
    #: Back-offs the submitter's acquire context needed (wound/wait at work).
    backoffs: int = 0
    #: Machine locks the work runs under (ordered, so two jobs never take them crosswise).
    locks: tuple[MachineLock, ...] = ()


def _buffers(call: str, label: str, items: Iterable[DmaBuf]) -> list[DmaBuf]:
    if isinstance(items, DmaBuf) or not isinstance(items, Iterable):
        raise InvalidArgumentError(f"{call}: {label} {items!r} is not an iterable of DmaBuf")
    out: list[DmaBuf] = []
    for item in items:
        if not isinstance(item, DmaBuf):
            raise InvalidArgumentError(f"{call}: {label} holds {item!r}, not a DmaBuf")
        if item.released:
            raise StateError(f"{call}: {item.name} was already released")
        if not any(item is x for x in out):
            out.append(item)
    return out


def _job_locks(system: VcmmApi | None, buffers: list[DmaBuf]) -> tuple[MachineLock, ...]:
    found: dict[int, MachineLock] = {}
    for owner in ([system] if system is not None else []) + [b.exporter.system for b in buffers]:
        lock = lock_of(owner)
        found[id(lock)] = lock
    return tuple(found[k] for k in sorted(found))


class Engine:
    """One device's job queue: jobs run one at a time, in submission order.

    ``system`` (optional) is the machine the engine's device belongs to: its lock is
    held by every job's work even when the job names no buffer.
    """

    def __init__(self, name: str, system: VcmmApi | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Engine name {name!r} must be a non-empty string")
        if system is not None:
            lock_of(system)
        self.system = system
        self.name = name
        self.timeline = FenceTimeline(name)
        self.completed: list[Job] = []
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        self._submit_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"engine-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Engine {self.name} done={len(self.completed)}>"

    def submit(
        self,
        work: Callable[[], None],
        *,
        reads: Iterable[DmaBuf] = (),
        writes: Iterable[DmaBuf] = (),
        timeout: float | None = DEFAULT_TIMEOUT,
        name: str = "",
    ) -> Job:
        """Queue ``work`` (a callable doing the device's transfers) after the jobs it
        conflicts with; returns the job, whose ``fence`` signals when it is done.

        ``timeout`` bounds both the locking of the buffers and the wait for
        dependencies.  A buffer both read and written counts as written.
        """
        call = f"{self.name}.submit"
        if self._closed:
            raise StateError(f"{call}: the engine was closed")
        if not callable(work):
            raise InvalidArgumentError(f"{call}: work {work!r} is not callable")
        written = _buffers(call, "writes", writes)
        read_all = _buffers(call, "reads", reads)
        read = [b for b in read_all if not any(b is w for w in written)]
        limit = check_timeout(call, timeout)
        with AcquireContext(RESERVATION_CLASS, f"{call}:{name or 'job'}") as ctx:
            backoffs = ctx.acquire_all([b.resv.mutex for b in written + read], limit)
            # Fence numbers must follow queue order (a later fence of a timeline implies
            # the earlier ones), so both happen under the engine's lock, which is never
            # held while waiting for anything.
            with self._submit_lock:
                fence = self.timeline.create(name or "")
                sources = [b.resv.exclusive_fence for b in read_all]
                deps: list[Fence] = []
                for b in written:
                    deps += b.resv.fences(for_write=True)
                    b.resv.add_exclusive_fence(fence)
                for b in read:
                    deps += b.resv.fences(for_write=False)
                    b.resv.add_shared_fence(fence)
                unique = tuple({id(f): f for f in deps}.values())
                inputs = tuple(f for f in sources if f is not None)
                locks = _job_locks(self.system, written + read)
                job = Job(fence.name, work, unique, inputs, fence, limit, backoffs, locks)
                self._queue.put(job)
            ctx.unlock_all()
        return job

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            error: str | None = None
            try:
                wait_all(job.deps, job.timeout)
            except WaitTimeoutError as exc:
                error = f"dependency timeout: {exc}"
            failed = [f for f in job.sources if f.error is not None]
            if error is None and failed:
                error = f"dependency {failed[0].name} failed: {failed[0].error}"
            if error is None:
                try:
                    with ExitStack() as held:
                        for lock in job.locks:
                            held.enter_context(lock)
                        job.work()
                except Exception as exc:
                    error = f"{type(exc).__name__}: {exc}"
            self.completed.append(job)
            job.fence.signal(error)

    def close(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Finish the queued jobs and stop the thread."""
        limit = check_timeout(f"{self.name}.close", timeout)
        if self._closed:
            return
        check_may_wait(f"{self.name}.close")
        self._closed = True
        self._queue.put(None)
        self._thread.join(limit)
        if self._thread.is_alive():
            raise WaitTimeoutError(f"{self.name}.close: jobs still running after {limit} s")
