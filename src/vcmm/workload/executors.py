"""Where sweep points run: in this process, or in worker processes.

A sweep hands its points to a :class:`PointExecutor` and collects the rows as the
points finish; that is the whole seam, so another executor (a cluster, say) only has
to implement three calls:

- ``submit(index, scenario, params)``: queue one point (``run_point(scenario, params)``);
- ``completed()``: yield ``(index, rows)`` as points finish, until every submitted
  point has;
- ``cancel()``: drop the points not started, stop the running ones, release the
  workers; safe to call more than once and after the work ended.

Executors are context managers: leaving the ``with`` block normally waits for the
workers to exit, leaving it by an exception (a Ctrl-C, a bug in a point) cancels.
Worker processes ignore SIGINT: a Ctrl-C at the terminal reaches the whole process
group, and it is the parent that decides what stops and what is kept.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Protocol, Self

from vcmm.errors import InvalidArgumentError

#: One point's work: ``run_point(scenario, params) -> rows``.
PointFunction = Callable[[Any, dict[str, object]], list[dict[str, Any]]]


class PointExecutor(Protocol):
    """What a sweep needs from whatever runs its points (see the module notes)."""

    def submit(self, index: int, scenario: Any, params: dict[str, object]) -> None: ...

    def completed(self) -> Iterator[tuple[int, list[dict[str, Any]]]]: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> PointExecutor: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class _Managed:
    """``with executor:`` closes it normally and cancels it on an exception."""

    def cancel(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if error is None:
            self.close()
        else:
            self.cancel()


class InlineExecutor(_Managed):
    """Runs the points one after another in this process, when ``completed()`` asks.

    A Ctrl-C interrupts the point running; the points finished before it were
    already yielded.
    """

    def __init__(self, work: PointFunction) -> None:
        self._work = work
        self._pending: list[tuple[int, Any, dict[str, object]]] = []

    def submit(self, index: int, scenario: Any, params: dict[str, object]) -> None:
        self._pending.append((index, scenario, params))

    def completed(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        while self._pending:
            index, scenario, params = self._pending.pop(0)
            yield index, self._work(scenario, params)

    def cancel(self) -> None:
        self._pending.clear()

    def close(self) -> None:
        self._pending.clear()


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ignore SIGINT for the duration (in the main thread; elsewhere signals cannot
    be set and do not arrive anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _ignore_sigint() -> None:
    """Worker initialiser: the parent handles Ctrl-C (and terminates the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor(_Managed):
    """Runs points in ``jobs`` worker processes (a :class:`multiprocessing.Pool`, which
    unlike ``concurrent.futures`` can terminate workers that are mid-point)."""

    def __init__(self, work: PointFunction, jobs: int) -> None:
        if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
            raise InvalidArgumentError(f"ProcessExecutor jobs {jobs!r} must be an integer >= 1")
        self._work = work
        self._pool = multiprocessing.Pool(jobs, initializer=_ignore_sigint)
        self._done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        self._outstanding = 0
        self._closed = False

    def submit(self, index: int, scenario: Any, params: dict[str, object]) -> None:
        self._pool.apply_async(
            self._work,
            (scenario, params),
            callback=lambda rows: self._done.put((index, rows, None)),
            error_callback=lambda exc: self._done.put((index, None, exc)),
        )
        self._outstanding += 1

    def completed(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        while self._outstanding:
            index, rows, exc = self._done.get()  # a Ctrl-C interrupts this wait
            self._outstanding -= 1
            if exc is not None:
                raise exc
            yield index, rows

    def cancel(self) -> None:
        """Terminate the workers (pending and running points are dropped).  A second
        Ctrl-C meanwhile waits: stopping half way would leave workers behind."""
        if self._closed:
            return
        self._closed = True
        self._outstanding = 0
        with sigint_deferred():
            self._pool.terminate()
            self._pool.join()

    def close(self) -> None:
        """Let the workers exit once the submitted points are done, and wait for them."""
        if self._closed:
            return
        self._closed = True
        self._pool.close()
        self._pool.join()


def make_executor(work: PointFunction, jobs: int, points: int) -> InlineExecutor | ProcessExecutor:
    """In-process for one job or one point, else ``min(jobs, points)`` workers."""
    if jobs == 1 or points <= 1:
        return InlineExecutor(work)
    return ProcessExecutor(work, min(jobs, points))
