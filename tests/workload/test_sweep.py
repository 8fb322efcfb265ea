"""Sweeps: grid parsing, serial and parallel runs agreeing, files written."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from vcmm.workload.scenario import ScenarioError, loads_scenario
from vcmm.workload.sweep import (
    SweepInterrupted,
    grid_points,
    parse_grid,
    run_point,
    run_sweep,
    write_sweep,
)


def test_parse_grid_types_values_and_keeps_order() -> None:
    grid = parse_grid(["policy=4k, 64k,1m", "tlb_entries=16,0x40", "ways=1,4"])
    assert grid == {"policy": ["4k", "64k", "1m"], "tlb_entries": [16, 64], "ways": [1, 4]}
    points = grid_points(grid)
    assert len(points) == 12
    assert points[0] == {"policy": "4k", "tlb_entries": 16, "ways": 1}
    assert points[1] == {"policy": "4k", "tlb_entries": 16, "ways": 4}
    assert points[-1] == {"policy": "1m", "tlb_entries": 64, "ways": 4}


@pytest.mark.parametrize(
    ("specs", "key", "needle"),
    [
        (["policy"], "--grid", "is not KEY=V1,V2"),
        (["colour=red"], "--grid colour", "unknown parameter 'colour'"),
        (["ways=one"], "--grid ways", "'one' is not an integer"),
        (["ways=1,1"], "--grid ways", "values repeat"),
        (["ways=1", "ways=2"], "--grid ways", "given twice"),
        ([], "--grid", "at least one"),
    ],
)
def test_bad_grids_name_the_option(specs: list[str], key: str, needle: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_grid(specs)
    assert info.value.key == key and needle in info.value.problem


def test_serial_and_parallel_sweeps_give_the_same_rows(make_linear: Callable[..., str]) -> None:
    sc = loads_scenario(make_linear("256K", "4k"))
    grid = parse_grid(["policy=4k,64k", "tlb_entries=16,64"])
    serial = run_sweep(sc, grid, jobs=1)
    parallel = run_sweep(sc, grid, jobs=2)

    def strip(rows: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(serial.rows) == strip(parallel.rows)
    summary = {(r["policy"], r["tlb_entries"]): r for r in serial.summary_rows}
    # 256K linear, two frames: 64 4K pages fill a 64-entry TLB exactly (16 sets x 4),
    # so frame two hits; a 16-entry TLB misses all 64 again.
    assert summary[("4k", 64)]["misses"] == 64
    assert summary[("4k", 16)]["misses"] == 128
    assert summary[("64k", 16)]["misses"] == 4
    for row in serial.summary_rows:
        per_context = [
            r
            for r in serial.rows
            if r["context"] != "all"
            and r["policy"] == row["policy"]
            and r["tlb_entries"] == row["tlb_entries"]
        ]
        assert row["misses"] == sum(r["misses"] for r in per_context)


def test_a_point_that_fails_is_recorded_and_the_rest_run(make_linear: Callable[..., str]) -> None:
    # 16M blocks: the default pool has two, and the 5M buffer needs one; the 4k policy
    # needs 1280 4K blocks and the pool has 1024.
    sc = loads_scenario(make_linear("5M", "1m"))
    result = run_sweep(sc, parse_grid(["policy=4k,1m,16m"]))
    errors = {r["policy"]: r["error"] for r in result.summary_rows}
    assert "cannot allocate" in errors["4k"]
    assert errors["1m"] == "" and errors["16m"] == ""
    assert [r["policy"] for r in result.failed] == ["4k"]


def test_bad_points_fail_before_anything_runs(make_linear: Callable[..., str]) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[int] = []
    with pytest.raises(ScenarioError, match="4 ways do not divide 6 entries"):
        run_sweep(sc, parse_grid(["tlb_entries=8,6", "ways=4"]), progress=calls.append)
    assert calls == []
    with pytest.raises(ScenarioError, match="jobs 0"):
        run_sweep(sc, parse_grid(["ways=4"]), jobs=0)


def test_write_sweep_writes_csv_and_json_that_parse(
    tmp_path: Path, make_linear: Callable[..., str]
) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    result = run_sweep(sc, parse_grid(["policy=4k,64k"]))
    csv_path, json_path = write_sweep(result, tmp_path / "out")
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["policy"] for r in rows if r["context"] == "all"] == ["4k", "64k"]
    assert int(rows[0]["misses"]) == result.rows[0]["misses"]
    data = json.loads(json_path.read_text())
    assert data["grid"] == {"policy": ["4k", "64k"]}
    assert data["rows"] == json.loads(json.dumps(result.rows))


class _RecordingExecutor:
    """Another executor behind the seam: records what it is given, runs in order."""

    def __init__(self) -> None:
        self.submitted: list[int] = []
        self.cancelled = False
        self.work: list[tuple[int, object, dict[str, object]]] = []

    def submit(self, index: int, scenario: object, params: dict[str, object]) -> None:
        self.submitted.append(index)
        self.work.append((index, scenario, params))

    def completed(self) -> Iterator[tuple[int, list[dict[str, object]]]]:
        for index, scenario, params in reversed(self.work):  # finish in reverse order
            yield index, run_point(scenario, params)  # type: ignore[arg-type]

    def cancel(self) -> None:
        self.cancelled = True

    def __enter__(self) -> _RecordingExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.cancel()


def test_another_executor_plugs_into_the_seam(make_linear: Callable[..., str]) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    grid = parse_grid(["policy=4k,64k,1m"])
    executor = _RecordingExecutor()
    result = run_sweep(sc, grid, executor=executor)
    assert executor.submitted == [0, 1, 2] and not executor.cancelled
    # Rows come back in grid order whatever order the points finished in.
    assert [r["policy"] for r in result.summary_rows] == ["4k", "64k", "1m"]
    assert strip_seconds(result.rows) == strip_seconds(run_sweep(sc, grid).rows)


def test_ctrl_c_keeps_the_finished_points(
    make_linear: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In process (jobs=1): the Ctrl-C lands inside the third point."""
    import vcmm.workload.sweep as sweep_module

    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[dict[str, object]] = []
    real = sweep_module.run_point

    def run_or_interrupt(scenario: object, params: dict[str, object]) -> list[dict[str, object]]:
        calls.append(params)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(scenario, params)  # type: ignore[arg-type]

    monkeypatch.setattr(sweep_module, "run_point", run_or_interrupt)
    with pytest.raises(SweepInterrupted) as info:
        run_sweep(sc, parse_grid(["tlb_entries=8,16,32,64"]))
    partial = info.value.result
    assert isinstance(info.value, KeyboardInterrupt)  # callers that do not care still stop
    assert partial.interrupted and partial.finished == 2 and len(partial.points) == 4
    assert [r["tlb_entries"] for r in partial.summary_rows] == [8, 16]
    assert len(calls) == 3  # the fourth point never started
    assert partial.to_dict()["interrupted"] is True


def strip_seconds(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
