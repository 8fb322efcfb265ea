"""Sweep points on Dask (``dask.distributed``): when one machine is not enough.

An architect sizing IOTLBs sweeps thousands of points; Dask runs them on an existing
cluster instead of a home-made one.  :class:`DaskExecutor` implements the sweep's
executor seam (:mod:`vcmm.workload.executors`) with Dask futures, so everything else
(validation, longest-first order, rows in grid order, failures, Ctrl-C, resume) is
the sweep's own and the same for every executor.

- Without an address it starts a ``LocalCluster`` bound to 127.0.0.1: ``workers``
  worker *processes* of one thread each (a point is CPU-bound Python, which threads
  would serialise), the dashboard off (the scheduler's small HTTP server for health
  checks listens on a random loopback port), Dask's own logs silenced.  The worker
  processes start with SIGINT ignored, as the local pool's do: a Ctrl-C at the
  terminal reaches the whole process group, and the sweep decides what stops.
- With an address (``tcp://host:8786``) it connects to a running scheduler; the
  workers are the cluster's, and each needs vcmm (the same version) installed.  The
  points are submitted as ``vcmm.workload.sweep.run_point`` by reference.
- Submission order is priority: the first point submitted runs first (the sweep
  submits longest first).
- Cancelling (a Ctrl-C) cancels every outstanding future.  A ``LocalCluster`` is then
  closed, which stops its workers, mid-point or not.  On a scheduler of your own, a
  point already running finishes on its worker and its result is dropped.

Dask is optional (``pip install 'vcmm[dask]'``); it is imported only when this
executor is built, and its absence is an :class:`ExecutorError` saying so.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.workload.executors import (
    ExecutorError,
    ManagedExecutor,
    PointFunction,
    PointOutcome,
    sigint_deferred,
)
from vcmm.workload.scenario import Scenario

#: How to get Dask, for the error that says it is missing.
INSTALL_HINT = "pip install 'vcmm[dask]'"
#: Seconds a cancelled LocalCluster's busy worker gets before it is killed.
STOP_SECONDS = 0.5
#: Loopback only: the cluster this executor starts is reachable from this machine alone.
LOOPBACK = "127.0.0.1"


def load_distributed() -> Any:
    """``dask.distributed``, or :class:`ExecutorError` with the install command."""
    try:
        import distributed
    except ImportError:
        raise ExecutorError(
            f"the dask executor needs Dask (dask.distributed), which is not installed: "
            f"{INSTALL_HINT}"
        ) from None
    return distributed


class DaskExecutor(ManagedExecutor):
    """Runs sweep points as Dask futures (see the module notes)."""

    def __init__(
        self,
        work: PointFunction,
        *,
        address: str | None = None,
        workers: int = 2,
    ) -> None:
        if not is_int(workers) or workers < 1:
            raise InvalidArgumentError(f"DaskExecutor workers {workers!r} must be an integer >= 1")
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InvalidArgumentError(
                f"DaskExecutor address {address!r} must name a scheduler (tcp://host:port)"
            )
        distributed = load_distributed()
        self._work = work
        self._futures: dict[Any, int] = {}
        self._submitted = 0
        self._closed = False
        self._batch = uuid.uuid4().hex[:12]  # keys unique even on a shared scheduler
        self._cluster: Any = None
        if address is None:
            with sigint_deferred():  # the workers spawned now inherit SIGINT ignored
                self._cluster, self._client = _local_cluster(distributed, workers)
        else:
            self._client = _connect(distributed, address)
            try:
                _check_versions(self._client, address)
            except BaseException:
                self._client.close()
                raise
        #: Points that run at once: the cluster's worker threads when it was found.
        self.workers: int = workers if address is None else sum(self._client.nthreads().values())
        self.address: str = self._client.scheduler.address

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the points go through (to inspect the cluster)."""
        return self._client

    def submit(self, index: int, scenario: Scenario, params: dict[str, object]) -> None:
        self._submitted += 1
        future = self._client.submit(
            self._work,
            scenario,
            params,
            key=f"vcmm-point-{self._batch}-{index}",
            priority=-self._submitted,
        )
        self._futures[future] = index

    def completed(self) -> Iterator[tuple[int, PointOutcome]]:
        distributed = load_distributed()
        for future in distributed.as_completed(list(self._futures), loop=self._client.loop):
            index = self._futures.pop(future)
            outcome = _outcome(future)
            future.release()
            yield index, outcome

    def cancel(self) -> None:
        """Cancel the outstanding points and let go of the cluster; a second Ctrl-C
        meanwhile waits (stopping half way would leave workers behind)."""
        if self._closed:
            return
        self._closed = True
        with sigint_deferred():
            outstanding = list(self._futures)
            self._futures.clear()
            if outstanding:
                self._client.cancel(outstanding, force=True)
            if self._cluster is not None:
                stop_workers(self._cluster)
            self._shut_down()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._shut_down()

    def _shut_down(self) -> None:
        self._client.close()
        if self._cluster is not None:
            stop_workers(self._cluster)  # idle by now; Dask's own close takes seconds more
            self._cluster.close()


def local_cluster(workers: int) -> Any:
    """A ``LocalCluster`` as the ``dask`` executor starts one: ``workers`` one-thread
    worker processes, everything on 127.0.0.1, no dashboard, Dask's own logs silenced
    (a point's failure reaches vcmm through its future; a Ctrl-C reaches the workers too,
    being in the terminal's process group, and a worker stopped mid-heartbeat would
    otherwise print the scheduler connection's traceback), and one point per worker at a time (the scheduler keeps the rest queued
    in priority order, so longest first holds; Dask's default lets each worker hold a
    second task, which can wait behind a long one).  Tests and benchmarks use it too."""
    distributed = load_distributed()
    import dask

    with dask.config.set({"distributed.scheduler.worker-saturation": 1.0}):
        return distributed.LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host=LOOPBACK,
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": f"{LOOPBACK}:0"},
            silence_logs=logging.CRITICAL,
        )


def _local_cluster(distributed: Any, workers: int) -> tuple[Any, Any]:
    """:func:`local_cluster` and a client of it."""
    try:
        cluster = local_cluster(workers)
    except Exception as err:
        raise ExecutorError(f"could not start a Dask LocalCluster on {LOOPBACK}: {err}") from None
    try:
        return cluster, distributed.Client(cluster, set_as_default=False)
    except BaseException:
        cluster.close()
        raise


def stop_workers(cluster: Any) -> None:
    """Stop a ``LocalCluster``'s worker processes now, busy or not: Dask's own close
    gives a busy worker seconds to finish its point before it kills it, and a Ctrl-C
    should not wait for that (nor should a test session's end: pytest-xdist's worker
    interrupts itself when its teardown takes over 5 s)."""
    nannies = list(cluster.workers.values())

    async def close_all() -> None:
        await asyncio.gather(
            *(nanny.close(timeout=STOP_SECONDS) for nanny in nannies), return_exceptions=True
        )

    cluster.sync(close_all)


def _connect(distributed: Any, address: str) -> Any:
    """A client of the scheduler at ``address``, waiting as long as Dask's
    ``distributed.comm.timeouts.connect`` says (``DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT``)."""
    import dask
    from dask.utils import parse_timedelta

    timeout = parse_timedelta(dask.config.get("distributed.comm.timeouts.connect"))
    try:
        return distributed.Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as err:
        raise ExecutorError(
            f"cannot reach a Dask scheduler at {address!r} within {timeout:g} s "
            f"({_one_line(err)}); start one with 'dask scheduler', or use --executor dask "
            "for a cluster on this machine"
        ) from None


def vcmm_version() -> str:
    """This process's vcmm version (run on the scheduler and the workers, by reference)."""
    from vcmm import __version__

    return __version__


def _check_versions(client: Any, address: str) -> None:
    """The scheduler (which unpickles the points) and every worker (which runs them)
    must have this vcmm: otherwise points fail, or worse, never come back."""
    mine = vcmm_version()
    try:
        found: dict[str, object] = {"the scheduler": client.run_on_scheduler(vcmm_version)}
    except Exception as err:
        found = {"the scheduler": err}
    for name, answer in client.run(vcmm_version, on_error="return").items():
        found[f"worker {name}"] = answer
    for who, theirs in found.items():
        if theirs != mine:
            has = f"vcmm {theirs}" if isinstance(theirs, str) else f"no vcmm ({_one_line(theirs)})"
            raise ExecutorError(
                f"{who} of the Dask cluster at {address!r} has {has}, but this is vcmm "
                f"{mine}: install the same vcmm on the scheduler and every worker"
            )


def _one_line(err: object) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if isinstance(err, BaseException) else text


def _outcome(future: Any) -> PointOutcome:
    """A finished future's rows, or the exception that stands for its failure."""
    if future.status == "finished":
        rows: PointOutcome = future.result()
        return rows
    if future.status == "error":
        error = future.exception()
        return error if isinstance(error, Exception) else RuntimeError(repr(error))
    return RuntimeError(f"the point's task was {future.status} on the Dask cluster")
