"""Parameter sweeps: one scenario run over a grid of policies and TLB geometries.

The question the seed's block pools answer is quantitative: how many IOTLB misses does
a 1M block save over 4K pages, for which TLB size and access pattern?  A sweep runs the
scenario once per point of a grid (``policy=4k,64k,1m`` x ``tlb_entries=16,64,256``
...) on a fresh system each time, in worker processes when asked (the points are
independent), and tabulates the counters.  Every point is validated before any runs,
so a typo fails at once; a point that fails while running (a pool too small for a 4K
policy, say) is recorded with its error and the others go on.
"""

from __future__ import annotations

import csv
import itertools
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcmm.errors import VcmmError
from vcmm.workload.executors import PointExecutor, make_executor
from vcmm.workload.runner import TLB_FIELDS, run_scenario
from vcmm.workload.scenario import SWEEP_KEYS, Scenario, ScenarioError

_INT_KEYS = ("tlb_entries", "ways", "frames", "burst")
#: Columns of every sweep row after the grid's own keys.
METRICS: tuple[str, ...] = (
    "context",
    *TLB_FIELDS,
    "miss_rate",
    "table_bytes",
    "faults",
    "bytes_moved",
    "seconds",
    "error",
)


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
            if key in _INT_KEYS:
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


def run_point(scenario: Scenario, params: dict[str, object]) -> list[dict[str, Any]]:
    """Run one grid point; rows for the whole run (``context = all``) and each context.

    A module-level function so worker processes can receive it by reference.
    """
    started = time.perf_counter()
    base = dict(params)
    try:
        result = run_scenario(scenario.with_params(**params))
    except VcmmError as err:
        row = base | {m: None for m in METRICS} | {"context": "all", "error": str(err)}
        return [row]
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
            "jobs": self.jobs,
            "seconds": self.seconds,
            "points": len(self.points),
            "finished": self.finished,
            "interrupted": self.interrupted,
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
    jobs: int = 1,
    progress: Callable[[int], None] | None = None,
    executor: PointExecutor | None = None,
) -> SweepResult:
    """Run every point of ``grid``; ``jobs > 1`` uses that many worker processes.

    Points are validated up front (``with_params``), so a bad value raises before any
    work starts.  Rows come back in grid order whatever order the workers finish in.
    ``executor`` replaces the default (see :mod:`vcmm.workload.executors`).  A Ctrl-C
    cancels the points not finished, stops the workers and raises
    :class:`SweepInterrupted` carrying the finished points.
    """
    if not isinstance(scenario, Scenario):
        raise ScenarioError(f"run_sweep needs a Scenario, got {type(scenario).__name__}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ScenarioError(f"jobs {jobs!r} must be an integer >= 1", key="--jobs")
    points = grid_points(grid)
    for point in points:
        scenario.with_params(**point)
    started = time.perf_counter()
    results: list[list[dict[str, Any]] | None] = [None] * len(points)

    def outcome(interrupted: bool = False) -> SweepResult:
        return SweepResult(
            scenario=scenario.name,
            source=scenario.source,
            keys=list(grid),
            points=points,
            rows=[row for part in results if part is not None for row in part],
            jobs=jobs,
            seconds=time.perf_counter() - started,
            interrupted=interrupted,
        )

    chosen = executor if executor is not None else make_executor(run_point, jobs, len(points))
    try:
        with chosen:
            for i, point in enumerate(points):
                chosen.submit(i, scenario, point)
            for i, rows in chosen.completed():
                results[i] = rows
                if progress:
                    progress(1)
    except KeyboardInterrupt:  # the executor has cancelled what was left
        raise SweepInterrupted(outcome(interrupted=True)) from None
    return outcome()


def write_sweep(result: SweepResult, out_dir: str | Path) -> list[Path]:
    """Write ``sweep.csv`` (one row per point and context) and ``sweep.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "sweep.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=result.columns)
        writer.writeheader()
        for row in result.rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in result.columns})
    json_path = out / "sweep.json"
    json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return [csv_path, json_path]
