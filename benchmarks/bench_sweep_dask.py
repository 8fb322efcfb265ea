"""Sweep speed-up on Dask: 1 worker against 2, read against a pure-Python control.

A grid of 32 points (block policy x TLB entries x ways x access pattern over the
packaged ``video_1080p`` pipeline, one frame, 256-byte bursts) runs on a Dask
``LocalCluster`` of 1 worker process and on one of 2, as ``--executor dask`` starts
them (both on 127.0.0.1, started before the clock runs; the time is from the first
submission to the last point finished, so cluster start-up and shutdown are left
out).  The machine may be shared, so the sweep's speed-up is read against a control
split the same way: 32 pure-Python CPU-bound tasks, task ``i`` as long as point ``i``
took on one worker, submitted in the sweep's (longest-first) order through the same
executor.  The ratio sweep speed-up / control speed-up is what vcmm's sweep keeps of
what the machine gives two workers (1.0: all of it).  Three rounds, interleaved;
min-max of each figure.  The rows of every sweep must be identical (timing aside).

Run: ``python benchmarks/bench_sweep_dask.py`` (needs ``pip install 'vcmm[dask]'``)
"""

from __future__ import annotations

import time
from typing import Any

from vcmm.workload.dask_executor import DaskExecutor, local_cluster
from vcmm.workload.scenario import load_scenario
from vcmm.workload.sweep import parse_grid, plan_sweep, run_plan, run_point

ROUNDS = 3
GRID = ["policy=4k,64k", "tlb_entries=16,64,256,1024", "ways=1,4", "pattern=raster,random"]


def spin(_scenario: object, params: dict[str, object]) -> list[dict[str, Any]]:
    """The control: ``params["n"]`` iterations of Python arithmetic, no vcmm at all."""
    total = 0
    for i in range(int(str(params["n"]))):
        total += i * i % 7
    return [{"context": "all", "error": "", "n": params["n"], "total": total}]


def spin_rate() -> float:
    """Control iterations per second in this process."""
    n = 2_000_000
    started = time.perf_counter()
    spin(None, {"n": n})
    return n / (time.perf_counter() - started)


def timed_sweep(address: str, plan: Any) -> tuple[float, list[dict[str, Any]]]:
    """Seconds from the first submission to the last point finished, and the rows."""
    done: list[float] = []
    started = time.perf_counter()
    result = run_plan(
        plan,
        executor=DaskExecutor(run_point, address=address),
        progress=lambda n: done.append(time.perf_counter()),
    )
    return done[-1] - started, result.rows


def timed_control(address: str, order: list[int], iterations: list[int]) -> float:
    done: list[float] = []
    started = time.perf_counter()
    with DaskExecutor(spin, address=address) as executor:
        for i in order:
            executor.submit(i, None, {"n": iterations[i]})
        for _ in executor.completed():
            done.append(time.perf_counter())
    return done[-1] - started


def without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def main() -> None:
    scenario = load_scenario("video_1080p").with_params(frames=1, burst=256)
    plan = plan_sweep(scenario, parse_grid(GRID))
    one, two = local_cluster(1), local_cluster(2)
    try:
        rate = spin_rate()
        sweep_1, sweep_2, control_1, control_2 = [], [], [], []
        reference: list[dict[str, Any]] | None = None
        identical = True
        for _ in range(ROUNDS):
            seconds_1, rows = timed_sweep(one.scheduler_address, plan)
            seconds_2, rows_2 = timed_sweep(two.scheduler_address, plan)
            reference = reference or rows
            identical &= without_timing(rows) == without_timing(reference)
            identical &= without_timing(rows_2) == without_timing(reference)
            per_point = [r["seconds"] for r in rows if r["context"] == "all"]
            iterations = [max(1, int(s * rate)) for s in per_point]
            sweep_1.append(seconds_1)
            sweep_2.append(seconds_2)
            control_1.append(timed_control(one.scheduler_address, plan.order, iterations))
            control_2.append(timed_control(two.scheduler_address, plan.order, iterations))
    finally:  # last started, first closed: each restores the log levels it found
        two.close()
        one.close()
    sweep_up = [a / b for a, b in zip(sweep_1, sweep_2, strict=True)]
    control_up = [a / b for a, b in zip(control_1, control_2, strict=True)]
    ratio = [s / c for s, c in zip(sweep_up, control_up, strict=True)]

    def span(values: list[float], unit: str = "") -> str:
        return f"{min(values):.2f}-{max(values):.2f}{unit}"

    print(f"Dask sweep of {len(plan.points)} points, {ROUNDS} rounds (min-max)")
    print(f"  sweep    1 worker {span(sweep_1, ' s')}   2 workers {span(sweep_2, ' s')}")
    print(f"  control  1 worker {span(control_1, ' s')}   2 workers {span(control_2, ' s')}")
    print(f"  speed-up: sweep {span(sweep_up, 'x')}, control {span(control_up, 'x')}")
    print(f"  sweep speed-up / control speed-up: {span(ratio)}")
    print(f"  rows identical on 1 and 2 workers (timing aside): {'yes' if identical else 'NO'}")


if __name__ == "__main__":
    main()
