"""Parameter sweeps: one scenario run over a grid of policies and TLB geometries.

The question the seed's block pools answer is quantitative: how many IOTLB misses does
a 1M block save over 4K pages, for which TLB size and access pattern?  A sweep runs the
scenario once per point of a grid (``policy=4k,64k,1m`` x ``tlb_entries=16,64,256``
...) on a fresh system each time, and tabulates the counters.  The points are
independent, so they run wherever an executor puts them (this process, worker
processes, a Dask cluster: :mod:`vcmm.workload.executors`), and the result is the
same whichever did:

- every point is validated before any runs, so a typo fails at once;
- a point's randomness is seeded from its parameters alone (:func:`point_seed`), and
  rows come back in grid order whatever finishes first;
- points start longest first (:mod:`vcmm.workload.cost`), so no long point starts last;
- a point that fails while running (a pool too small for a 4K policy, a lost worker)
  is recorded with its error and the others go on;
- a sweep can resume from the ``sweep.csv`` of a stopped one (:mod:`vcmm.workload.resume`).
"""

from __future__ import annotations

import csv
import itertools
import json
import random
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vcmm.checks import is_int
from vcmm.errors import VcmmError
from vcmm.workload.cost import estimate_cost
from vcmm.workload.executors import PointExecutor, make_executor
from vcmm.workload.resume import PointRows, read_finished
from vcmm.workload.rows import INT_KEYS, METRICS, csv_cell, failed_row
from vcmm.workload.runner import TLB_FIELDS, run_scenario
from vcmm.workload.scenario import Scenario, ScenarioError
from vcmm.workload.scenario_params import SWEEP_KEYS

__all__ = [
    "METRICS",
    "SweepInterrupted",
    "SweepPlan",
    "SweepResult",
    "grid_points",
    "parse_grid",
    "plan_sweep",
    "point_seed",
    "run_plan",
    "run_point",
    "run_sweep",
    "write_sweep",
]


def parse_grid(specs: Sequence[str]) -> dict[str, list[object]]:
    """``["policy=4k,64k", "ways=1,4"]`` -> ``{"policy": ["4k", "64k"], "ways": [1, 4]}``.

    Errors name the offending ``--grid`` option.
    """
    grid: dict[str, list[object]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise ScenarioError(
                f"{spec!r} is not KEY=V1,V2,... (e.g. policy=4k,64k,1m)", key="--grid"
            )
        if key not in SWEEP_KEYS:
            raise ScenarioError(
                f"unknown parameter {key!r}; allowed: {', '.join(SWEEP_KEYS)}", key=f"--grid {key}"
            )
        if key in grid:
            raise ScenarioError(f"parameter {key!r} is given twice", key=f"--grid {key}")
        items = [v.strip() for v in values.split(",") if v.strip()]
        parsed: list[object] = []
        for item in items:
            if key in INT_KEYS:
                try:
                    parsed.append(int(item, 0))
                except ValueError:
                    raise ScenarioError(
                        f"{item!r} is not an integer", key=f"--grid {key}"
                    ) from None
            else:
                parsed.append(item)
        if len(set(map(str, parsed))) != len(parsed):
            raise ScenarioError(f"values repeat in {values!r}", key=f"--grid {key}")
        grid[key] = parsed
    if not grid:
        raise ScenarioError("a sweep needs at least one --grid KEY=V1,V2", key="--grid")
    return grid


def grid_points(grid: dict[str, list[object]]) -> list[dict[str, object]]:
    """Every combination, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def point_seed(params: dict[str, object]) -> int:
    """The seed of a point's randomness: a digest of its parameters (names and values,
    in any order), so the point draws the same numbers on any worker and after any
    other point."""
    text = json.dumps({k: str(v) for k, v in params.items()}, sort_keys=True)
    return zlib.crc32(text.encode("utf-8"))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Python's and numpy's global generators seeded with ``seed`` for the duration,
    their previous states restored after (an in-process sweep leaves the caller's
    random state as it was)."""
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def run_point(scenario: Scenario, params: dict[str, object]) -> list[dict[str, Any]]:
    """Run one grid point; rows for the whole run (``context = all``) and each context.

    A module-level function so worker processes can receive it by reference.  The
    scenario's own generators are seeded by the scenario (a ``random`` step's
    ``seed``, the TLB's); anything drawing from the global generators gets
    :func:`point_seed`.
    """
    with seeded(point_seed(params)):
        return _run_point(scenario, params)


def _run_point(scenario: Scenario, params: dict[str, object]) -> list[dict[str, Any]]:
    started = time.perf_counter()
    base = dict(params)
    try:
        result = run_scenario(scenario.with_params(**params))
    except VcmmError as err:
        return [failed_row(base, str(err))]
    seconds = time.perf_counter() - started
    totals = result.totals()
    rows = [
        base
        | {"context": "all"}
        | {name: totals[name] for name in TLB_FIELDS}
        | {
            "miss_rate": totals["miss_rate"],
            "table_bytes": totals["table_bytes"],
            "faults": totals["faults"],
            "bytes_moved": totals["bytes_moved"],
            "seconds": round(seconds, 4),
            "error": "",
        }
    ]
    for ctx in result.contexts:
        rows.append(
            base
            | {"context": ctx.name}
            | dict(ctx.tlb)
            | {
                "miss_rate": ctx.miss_rate,
                "table_bytes": ctx.table_bytes,
                "faults": ctx.faults,
                "bytes_moved": ctx.bytes_read + ctx.bytes_written,
                "seconds": None,
                "error": "",
            }
        )
    return rows


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep will do: every point, the rows resumed from a previous sweep, and
    the order the others run in (longest first by :func:`estimate_cost`, grid order
    among equals)."""

    scenario: Scenario
    keys: list[str]
    points: list[dict[str, object]]
    resumed: PointRows
    order: list[int]


def plan_sweep(
    scenario: Scenario, grid: dict[str, list[object]], *, resume: str | Path | None = None
) -> SweepPlan:
    """Validate every point of ``grid`` (a bad value raises before anything runs),
    read the finished points of ``resume`` (a previous ``sweep.csv``), and order the
    rest longest first."""
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"run_sweep needs a Scenario, got {type(scenario).__name__}")
    if resume is not None and not isinstance(resume, str | Path):
        raise ScenarioError(
            f"resume {resume!r} must name a sweep.csv (a str or Path)", key="--resume"
        )
    points = grid_points(grid)
    costs = [estimate_cost(scenario.with_params(**point)) for point in points]
    keys = list(grid)
    resumed = read_finished(resume, scenario.name, keys, points) if resume is not None else {}
    todo = [i for i in range(len(points)) if i not in resumed]
    order = sorted(todo, key=lambda i: -costs[i])  # stable: grid order among equals
    return SweepPlan(scenario, keys, points, resumed, order)


@dataclass
class SweepResult:
    scenario: str
    source: str
    keys: list[str]
    points: list[dict[str, object]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    jobs: int = 1
    seconds: float = 0.0
    #: True when the sweep was stopped (Ctrl-C): ``rows`` hold the finished points only.
    interrupted: bool = False
    #: Where the points ran: ``local``, ``dask``, ``dask=ADDRESS``, or an executor's class.
    executor: str = "local"
    #: Points whose rows were read from the resumed sweep's file, not run again.
    resumed: int = 0

    @property
    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per point: the whole-run totals."""
        return [r for r in self.rows if r["context"] == "all"]

    @property
    def failed(self) -> list[dict[str, Any]]:
        """Points that did not run to the end (their ``error`` says why)."""
        return [r for r in self.summary_rows if r.get("error")]

    @property
    def faulted(self) -> list[dict[str, Any]]:
        """Points that ran and in which some device faulted."""
        return [r for r in self.summary_rows if not r.get("error") and r.get("faults")]

    @property
    def finished(self) -> int:
        """Points whose rows are here (all of them unless the sweep was interrupted)."""
        return len(self.summary_rows)

    @property
    def columns(self) -> list[str]:
        return [*self.keys, *METRICS]

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "source": self.source,
            "grid": {k: list(dict.fromkeys(p[k] for p in self.points)) for k in self.keys},
            "executor": self.executor,
            "jobs": self.jobs,
            "seconds": self.seconds,
            "points": len(self.points),
            "finished": self.finished,
            "interrupted": self.interrupted,
            "resumed": self.resumed,
            "rows": self.rows,
        }


class SweepInterrupted(KeyboardInterrupt):
    """A Ctrl-C stopped the sweep: ``result`` holds the points that had finished (the
    workers are already stopped).  A ``KeyboardInterrupt``, so code that does not
    care still stops as it would on any Ctrl-C."""

    def __init__(self, result: SweepResult) -> None:
        super().__init__(
            f"sweep interrupted after {result.finished} of {len(result.points)} points"
        )
        self.result = result


def run_sweep(
    scenario: Scenario,
    grid: dict[str, list[object]],
    *,
    jobs: int | None = None,
    executor: str | PointExecutor = "local",
    resume: str | Path | None = None,
    progress: Callable[[int], None] | None = None,
    on_failure: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run every point of ``grid`` (:func:`plan_sweep`, then :func:`run_plan`).

    ``executor`` is ``"local"`` (``jobs`` worker processes, default 1: this process),
    ``"dask"`` (a Dask ``LocalCluster`` of ``jobs`` workers, default 2, on 127.0.0.1),
    ``"dask=ADDRESS"`` (a running Dask scheduler) or an executor object (see
    :mod:`vcmm.workload.executors`).  ``resume`` names the ``sweep.csv`` of a previous
    sweep whose finished points are kept, not run.  A Ctrl-C cancels the points not
    finished, stops the workers and raises :class:`SweepInterrupted` carrying the
    finished points.
    """
    plan = plan_sweep(scenario, grid, resume=resume)
    return run_plan(plan, jobs=jobs, executor=executor, progress=progress, on_failure=on_failure)


def run_plan(
    plan: SweepPlan,
    *,
    jobs: int | None = None,
    executor: str | PointExecutor = "local",
    progress: Callable[[int], None] | None = None,
    on_failure: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Run the points of ``plan`` not resumed, longest first, on ``executor`` (as in
    :func:`run_sweep`).  ``progress(1)`` is called as each point finishes,
    ``on_failure(row)`` with the ``context = all`` row of each point that failed.
    Rows come back in grid order whatever order the points finish in."""
    if jobs is not None and (not is_int(jobs) or jobs < 1):
        raise ScenarioError(f"jobs {jobs!r} must be an integer >= 1", key="--jobs")
    started = time.perf_counter()
    results: list[list[dict[str, Any]] | None] = [
        plan.resumed.get(i) for i in range(len(plan.points))
    ]
    chosen: PointExecutor | None = None
    workers, label = jobs or 1, executor if isinstance(executor, str) else type(executor).__name__
    if plan.order:
        if isinstance(executor, str):
            built = make_executor(run_point, jobs, len(plan.order), executor)
            chosen, workers = built, built.workers
        else:
            chosen = executor

    def outcome(interrupted: bool = False) -> SweepResult:
        return SweepResult(
            scenario=plan.scenario.name,
            source=plan.scenario.source,
            keys=plan.keys,
            points=plan.points,
            rows=[row for part in results if part is not None for row in part],
            jobs=workers,
            seconds=time.perf_counter() - started,
            interrupted=interrupted,
            executor=label,
            resumed=len(plan.resumed),
        )

    if chosen is None:
        return outcome()
    try:
        with chosen:
            for i in plan.order:
                chosen.submit(i, plan.scenario, plan.points[i])
            for i, done in chosen.completed():
                rows = done if isinstance(done, list) else [_crashed(plan.points[i], done)]
                results[i] = rows
                if on_failure and rows[0]["error"]:
                    on_failure(rows[0])
                if progress:
                    progress(1)
    except KeyboardInterrupt:  # the executor has cancelled what was left
        raise SweepInterrupted(outcome(interrupted=True)) from None
    return outcome()


def _crashed(params: dict[str, object], error: BaseException) -> dict[str, Any]:
    """The row of a point that raised instead of returning rows: a bug, or a worker
    lost (the message names the exception's type; ``VcmmError`` rows come from
    :func:`run_point` itself)."""
    return failed_row(params, f"{type(error).__name__}: {error}")


def write_sweep(result: SweepResult, out_dir: str | Path) -> list[Path]:
    """Write ``sweep.csv`` (one row per point and context) and ``sweep.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "sweep.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=result.columns)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: csv_cell(row.get(k)) for k in result.columns})
    json_path = out / "sweep.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return [csv_path, json_path]
