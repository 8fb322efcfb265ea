"""Where sweep points run: in this process, in worker processes, or on a Dask cluster.

A sweep hands its points to a :class:`PointExecutor` and collects the rows as the
points finish; that is the whole seam, so another executor (a cluster, say) only has
to implement three calls:

- ``submit(index, scenario, params)``: queue one point (``run_point(scenario, params)``);
  points start in the order they are submitted, as far as the executor can tell;
- ``completed()``: yield ``(index, rows)`` as points finish, until every submitted
  point has; a point that raised yields ``(index, exception)`` instead, and the
  others go on;
- ``cancel()``: drop the points not started, stop the running ones, release the
  workers; safe to call more than once and after the work ended.

Executors are context managers: leaving the ``with`` block normally waits for the
workers to exit, leaving it by an exception (a Ctrl-C, a bug in a point) cancels.
Worker processes ignore SIGINT: a Ctrl-C at the terminal reaches the whole process
group, and it is the parent that decides what stops and what is kept.

``make_executor`` builds one from a choice the user names: ``local`` (this process for
one job, else a process pool), ``dask`` (a ``LocalCluster`` on 127.0.0.1) or
``dask=ADDRESS`` (a running Dask scheduler); see :mod:`vcmm.workload.dask_executor`.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, VcmmError

if TYPE_CHECKING:
    from vcmm.workload.dask_executor import DaskExecutor
    from vcmm.workload.scenario import Scenario

#: One point's work: ``run_point(scenario, params) -> rows``.
PointFunction = Callable[["Scenario", dict[str, object]], list[dict[str, Any]]]
#: What ``completed()`` yields for a point: its rows, or the exception it raised.
PointOutcome = list[dict[str, Any]] | Exception
#: The executors a user can name (``--executor``).
EXECUTOR_KINDS: tuple[str, ...] = ("local", "dask")
#: Worker processes when none are asked for: one for ``local``, two for ``dask``.
DEFAULT_WORKERS: dict[str, int] = {"local": 1, "dask": 2}


class ExecutorError(VcmmError):
    """An executor cannot be had: Dask is not installed, or its scheduler cannot be
    reached.  Nothing has run."""


class PointExecutor(Protocol):
    """What a sweep needs from whatever runs its points (see the module notes)."""

    def submit(self, index: int, scenario: Scenario, params: dict[str, object]) -> None: ...

    def completed(self) -> Iterator[tuple[int, PointOutcome]]: ...

    def cancel(self) -> None: ...

    def __enter__(self) -> PointExecutor: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None: ...


class ManagedExecutor:
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


class InlineExecutor(ManagedExecutor):
    """Runs the points one after another in this process, when ``completed()`` asks.

    A Ctrl-C interrupts the point running; the points finished before it were
    already yielded.
    """

    workers = 1

    def __init__(self, work: PointFunction) -> None:
        self._work = work
        self._pending: list[tuple[int, Scenario, dict[str, object]]] = []

    def submit(self, index: int, scenario: Scenario, params: dict[str, object]) -> None:
        self._pending.append((index, scenario, params))

    def completed(self) -> Iterator[tuple[int, PointOutcome]]:
        while self._pending:
            index, scenario, params = self._pending.pop(0)
            try:
                outcome: PointOutcome = self._work(scenario, params)
            except Exception as err:  # the point's failure, not the sweep's
                outcome = err
            yield index, outcome

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


class ProcessExecutor(ManagedExecutor):
    """Runs points in ``jobs`` worker processes (a :class:`multiprocessing.Pool`, which
    unlike ``concurrent.futures`` can terminate workers that are mid-point)."""

    def __init__(self, work: PointFunction, jobs: int) -> None:
        if not is_int(jobs) or jobs < 1:
            raise InvalidArgumentError(f"ProcessExecutor jobs {jobs!r} must be an integer >= 1")
        self._work = work
        self.workers = jobs
        self._pool = multiprocessing.Pool(jobs, initializer=_ignore_sigint)
        self._done: queue.SimpleQueue[tuple[int, Any, BaseException | None]] = queue.SimpleQueue()
        self._outstanding = 0
        self._closed = False

    def submit(self, index: int, scenario: Scenario, params: dict[str, object]) -> None:
        self._pool.apply_async(
            self._work,
            (scenario, params),
            callback=lambda rows: self._done.put((index, rows, None)),
            error_callback=lambda exc: self._done.put((index, None, exc)),
        )
        self._outstanding += 1

    def completed(self) -> Iterator[tuple[int, PointOutcome]]:
        while self._outstanding:
            index, rows, exc = self._done.get()  # a Ctrl-C interrupts this wait
            self._outstanding -= 1
            yield index, rows if exc is None else _as_exception(exc)

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


def _as_exception(exc: BaseException) -> Exception:
    """A worker's ``BaseException`` (a ``SystemExit`` in a point) as a point failure."""
    return exc if isinstance(exc, Exception) else RuntimeError(f"{type(exc).__name__}: {exc}")


def parse_executor(spec: str) -> tuple[str, str | None]:
    """``"local"`` -> ``("local", None)``, ``"dask"`` -> ``("dask", None)``,
    ``"dask=tcp://host:8786"`` -> ``("dask", "tcp://host:8786")``."""
    if not isinstance(spec, str):
        raise InvalidArgumentError(
            f"executor {spec!r} must be a string: local, dask or dask=ADDRESS"
        )
    kind, sep, address = spec.strip().partition("=")
    kind, address = kind.strip(), address.strip()
    if kind not in EXECUTOR_KINDS or (sep and kind != "dask"):
        raise InvalidArgumentError(f"executor {spec!r} is not one of local, dask, dask=ADDRESS")
    if sep and (not address or any(c.isspace() for c in address)):
        raise InvalidArgumentError(
            f"executor {spec!r} needs a scheduler address after 'dask=' (e.g. "
            "dask=tcp://127.0.0.1:8786)"
        )
    return kind, address or None


def make_executor(
    work: PointFunction, jobs: int | None, points: int, spec: str = "local"
) -> InlineExecutor | ProcessExecutor | DaskExecutor:
    """The executor ``spec`` names (see :func:`parse_executor`) for ``points`` points.

    ``local``: in-process for one job or one point, else ``min(jobs, points)`` worker
    processes.  ``dask``: a ``LocalCluster`` of ``jobs`` workers (default 2) on
    127.0.0.1.  ``dask=ADDRESS``: the scheduler there, whose workers are its own (so
    ``jobs`` must not be given).
    """
    kind, address = parse_executor(spec)
    if jobs is not None and (not is_int(jobs) or jobs < 1):
        raise InvalidArgumentError(f"jobs {jobs!r} must be an integer >= 1")
    if kind == "dask":
        if address is not None and jobs is not None:
            raise InvalidArgumentError(
                f"jobs {jobs} cannot be given with executor {spec!r}: the scheduler's "
                "workers are its own (start more with 'dask worker')"
            )
        from vcmm.workload.dask_executor import DaskExecutor

        return DaskExecutor(work, address=address, workers=jobs or DEFAULT_WORKERS["dask"])
    jobs = jobs or DEFAULT_WORKERS["local"]
    if jobs == 1 or points <= 1:
        return InlineExecutor(work)
    return ProcessExecutor(work, min(jobs, points))
