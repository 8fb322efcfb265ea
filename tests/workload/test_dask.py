"""Sweeps on a real Dask ``LocalCluster``: 2 worker processes on loopback, no dashboard
(the ``dask_cluster`` fixture), and the executor's own cluster.

The cluster's workers are separate interpreters (each with its own hash seed), so
agreement with the in-process sweep shows the results depend on nothing but the
points.  Points are small: the cluster's start-up is most of the time.
"""

from __future__ import annotations

import ipaddress
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from vcmm.workload.dask_executor import DaskExecutor
from vcmm.workload.executors import ExecutorError
from vcmm.workload.scenario import loads_scenario
from vcmm.workload.sweep import parse_grid, run_point, run_sweep

pytestmark = pytest.mark.usefixtures("dask_distributed")  # skip without Dask, fail in CI

#: Random streams and random replacement: what would differ if a point's result
#: depended on where or after what it ran.
GRID = ["policy=4k,64k", "pattern=linear,random", "replacement=lru,random"]


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def test_dask_local_pool_and_one_process_give_the_same_rows(
    dask_cluster: Any, make_linear: Callable[..., str]
) -> None:
    # 64 pages of 4K against a 16-entry TLB: replacement and stream order matter.
    sc = loads_scenario(make_linear("256K", "4k", tlb="tlb = { entries = 16, ways = 4 }"))
    grid = parse_grid(GRID)
    inline = run_sweep(sc, grid)
    pool = run_sweep(sc, grid, jobs=2)
    on_dask = run_sweep(sc, grid, executor=f"dask={dask_cluster.scheduler_address}")
    assert without_timing(on_dask.rows) == without_timing(inline.rows)
    assert without_timing(pool.rows) == without_timing(inline.rows)
    assert on_dask.executor == f"dask={dask_cluster.scheduler_address}" and on_dask.jobs == 2
    # The grid really exercises randomness: random replacement changes the misses.
    by_point = {(r["policy"], r["pattern"], r["replacement"]): r for r in inline.summary_rows}
    assert (
        by_point[("4k", "random", "lru")]["misses"]
        != by_point[("4k", "random", "random")]["misses"]
    )
    keep = ("scenario", "source", "grid", "points", "finished", "interrupted")
    assert {k: on_dask.to_dict()[k] for k in keep} == {k: inline.to_dict()[k] for k in keep}


def _explode(scenario: Any, params: dict[str, object]) -> list[dict[str, Any]]:
    """A point function with a bug for one point (runs on the workers)."""
    if params["ways"] == 2:
        raise ZeroDivisionError("a bug in the point")
    return run_point(scenario, params)


def test_a_point_that_raises_on_a_worker_is_reported_and_the_rest_run(
    dask_cluster: Any, make_linear: Callable[..., str]
) -> None:
    import cloudpickle

    # Functions of this module reach the workers by value (they cannot import it).
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sc = loads_scenario(make_linear("64K", "4k"))
    failed: list[dict[str, Any]] = []
    executor = DaskExecutor(_explode, address=dask_cluster.scheduler_address)
    result = run_sweep(sc, parse_grid(["ways=1,2,4"]), executor=executor, on_failure=failed.append)
    assert [(r["ways"], r["error"]) for r in result.summary_rows] == [
        (1, ""),
        (2, "ZeroDivisionError: a bug in the point"),
        (4, ""),
    ]
    assert failed == result.failed
    # Another sweep can still use the cluster: the executor let go of it cleanly.
    assert len(dask_cluster.scheduler_info["workers"]) == 2


def test_the_dask_executors_own_cluster_is_loopback_only_and_keeps_submission_order(
    make_linear: Callable[..., str],
) -> None:
    """``dask`` without an address: the executor's own LocalCluster (one worker here).
    No socket of it listens beyond 127.0.0.1 (scheduler and HTTP server in this
    process, the worker process), the dashboard is off, and submission order is
    priority whatever the indices."""
    sc = loads_scenario(make_linear("64K", "4k"))
    points = [{"tlb_entries": n} for n in (8, 16, 32, 64)]
    with DaskExecutor(run_point, workers=1) as executor:
        assert executor.workers == 1
        _check_loopback_only(executor.client.scheduler_info()["services"]["dashboard"])
        for index in (2, 0, 3, 1):
            executor.submit(index, sc, points[index])
        finished = list(executor.completed())
    assert [index for index, _ in finished] == [2, 0, 3, 1]
    for index, rows in finished:
        assert without_timing(rows) == without_timing(run_point(sc, points[index]))


def _check_loopback_only(http_port: int) -> None:
    import psutil

    me = psutil.Process()
    listening = [
        c.laddr
        for process in (me, *me.children(recursive=True))
        for c in process.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    # The scheduler, its HTTP server and the worker (with its own HTTP server).
    assert len(listening) >= 3 and http_port in {addr.port for addr in listening}
    assert all(ipaddress.ip_address(addr.ip).is_loopback for addr in listening), listening
    # The HTTP server answers health checks but serves no dashboard.
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health", timeout=10) as answer:
        assert answer.status == 200
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/status", timeout=10)
    assert info.value.code == 404


def test_an_unreachable_scheduler_is_one_clear_error(make_linear: Callable[..., str]) -> None:
    import dask

    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[int] = []
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(ExecutorError) as info,
    ):
        run_sweep(
            sc, parse_grid(["ways=1,4"]), executor="dask=tcp://127.0.0.1:9", progress=calls.append
        )
    message = str(info.value)
    assert message.startswith("cannot reach a Dask scheduler at 'tcp://127.0.0.1:9' within 1 s")
    assert "\n" not in message and calls == []


def test_a_cluster_with_another_vcmm_is_refused_before_anything_runs(
    dask_cluster: Any, make_linear: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers (other processes) run this checkout's vcmm; pretend this process
    (and the scheduler in it) is another release: the sweep must refuse the cluster,
    naming a worker and both versions."""
    import vcmm

    real = vcmm.__version__
    monkeypatch.setattr(vcmm, "__version__", "9.9")
    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[int] = []
    address = dask_cluster.scheduler_address
    with pytest.raises(ExecutorError) as info:
        run_sweep(sc, parse_grid(["ways=1,4"]), executor=f"dask={address}", progress=calls.append)
    assert re.fullmatch(
        rf"worker tcp://127\.0\.0\.1:\d+ of the Dask cluster at '{re.escape(address)}' has "
        rf"vcmm {re.escape(real)}, but this is vcmm 9\.9: install the same vcmm on the "
        "scheduler and every worker",
        str(info.value),
    )
    assert calls == [] and len(dask_cluster.scheduler_info["workers"]) == 2
