"""Resuming a sweep from the sweep.csv of a stopped one (``--resume``)."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import vcmm.workload.sweep as sweep_module
from vcmm.workload.rows import TIMING_COLUMNS
from vcmm.workload.scenario import ScenarioError, loads_scenario
from vcmm.workload.sweep import (
    SweepInterrupted,
    parse_grid,
    run_sweep,
    write_sweep,
)

GRID = ["policy=4k,64k", "tlb_entries=16,64", "pattern=linear,random"]


def csv_without_timing(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            {k: v for k, v in row.items() if k not in TIMING_COLUMNS}
            for row in csv.DictReader(handle)
        ]


def json_without_timing(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("seconds", "resumed", "jobs", "executor"):
        data.pop(key)
    for row in data["rows"]:
        for key in TIMING_COLUMNS:
            row.pop(key)
    return data


@pytest.fixture
def scenario(make_linear: Callable[..., str]) -> Any:
    return loads_scenario(make_linear("256K", "4k"))


@pytest.fixture
def whole(scenario: Any, tmp_path: Path) -> Path:
    """The uninterrupted sweep's files."""
    write_sweep(run_sweep(scenario, parse_grid(GRID)), tmp_path / "whole")
    return tmp_path / "whole"


def interrupted_sweep(
    scenario: Any, out: Path, monkeypatch: pytest.MonkeyPatch, after: int
) -> None:
    """A sweep stopped by a Ctrl-C once ``after`` points finished; its files written."""
    real = sweep_module.run_point
    calls: list[int] = []

    def run_or_interrupt(sc: Any, params: dict[str, object]) -> list[dict[str, Any]]:
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt
        return real(sc, params)

    with monkeypatch.context() as patch:
        patch.setattr(sweep_module, "run_point", run_or_interrupt)
        with pytest.raises(SweepInterrupted) as info:
            run_sweep(scenario, parse_grid(GRID))
    write_sweep(info.value.result, out)


def test_a_resumed_interrupted_sweep_writes_what_an_uninterrupted_one_does(
    scenario: Any, whole: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: Any
) -> None:
    out = tmp_path / "out"
    interrupted_sweep(scenario, out, monkeypatch, after=3)
    first = json.loads((out / "sweep.json").read_text())
    assert first["interrupted"] and first["finished"] == 3
    done = [
        {k: r[k] for k in ("policy", "tlb_entries", "pattern")}
        for r in first["rows"]
        if r["context"] == "all"
    ]
    result = run_sweep(scenario, parse_grid(GRID), executor=recorder, resume=out / "sweep.csv")
    write_sweep(result, out)
    # Only the missing points ran; the files are those of the uninterrupted sweep.
    assert len(recorder.ran) == 5 and not any(p in done for p in recorder.ran)
    assert result.resumed == 3 and not result.interrupted and result.finished == 8
    assert csv_without_timing(out / "sweep.csv") == csv_without_timing(whole / "sweep.csv")
    assert json_without_timing(out / "sweep.json") == json_without_timing(whole / "sweep.json")


def test_resuming_a_finished_sweep_runs_nothing(scenario: Any, whole: Path, recorder: Any) -> None:
    result = run_sweep(scenario, parse_grid(GRID), executor=recorder, resume=whole / "sweep.csv")
    assert recorder.order == [] and result.resumed == 8 and result.finished == 8
    # Read back, the values have the types the points produced (ints, floats, None).
    fresh = run_sweep(scenario, parse_grid(GRID))
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in fresh.rows]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in result.rows] == strip


def test_a_grown_grid_runs_only_the_new_points(scenario: Any, whole: Path, recorder: Any) -> None:
    grid = parse_grid(["policy=4k,64k,1m", "tlb_entries=16,64", "pattern=linear,random"])
    result = run_sweep(scenario, grid, executor=recorder, resume=whole / "sweep.csv")
    assert {p["policy"] for p in recorder.ran} == {"1m"} and len(recorder.ran) == 4
    assert [r["policy"] for r in result.summary_rows] == ["4k"] * 4 + ["64k"] * 4 + ["1m"] * 4


def test_failed_points_are_run_again(
    make_linear: Callable[..., str], tmp_path: Path, recorder: Any
) -> None:
    # 5M of 4K blocks is more than the pool has: the 4k point fails, 1m runs.
    sc = loads_scenario(make_linear("5M", "1m"))
    grid = parse_grid(["policy=4k,1m"])
    write_sweep(run_sweep(sc, grid), tmp_path)
    result = run_sweep(sc, grid, executor=recorder, resume=tmp_path / "sweep.csv")
    assert recorder.ran == [{"policy": "4k"}] and result.resumed == 1
    assert [r["policy"] for r in result.failed] == ["4k"]


def _rewrite(path: Path, edit: Callable[[str], str]) -> None:
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (
            lambda text: text.replace("policy,tlb_entries,pattern,", "policy,ways,pattern,", 1),
            "its columns are policy, ways, pattern, context",
        ),
        (lambda text: text.replace(",all,", ",all,many,", 1), "line 2: column"),
        (lambda text: "", "its columns are none"),
    ],
)
def test_a_file_that_is_not_this_sweeps_is_refused_before_anything_runs(
    scenario: Any, whole: Path, edit: Callable[[str], str], needle: str, recorder: Any
) -> None:
    _rewrite(whole / "sweep.csv", edit)
    before = (whole / "sweep.csv").read_bytes()
    with pytest.raises(ScenarioError) as info:
        run_sweep(scenario, parse_grid(GRID), executor=recorder, resume=whole / "sweep.csv")
    assert info.value.key == f"--resume {whole / 'sweep.csv'}" and needle in info.value.problem
    assert recorder.order == [] and (whole / "sweep.csv").read_bytes() == before


def test_a_sweep_of_another_scenario_is_refused(
    make_linear: Callable[..., str], whole: Path
) -> None:
    other = loads_scenario(make_linear("256K", "4k").replace('name = "linear"', 'name = "other"'))
    with pytest.raises(ScenarioError, match="it holds a sweep of scenario 'linear'"):
        run_sweep(other, parse_grid(GRID), resume=whole / "sweep.csv")


def test_a_missing_file_is_one_clear_error(scenario: Any, tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot be read") as info:
        run_sweep(scenario, parse_grid(GRID), resume=tmp_path / "nope.csv")
    assert "nope.csv" in str(info.value)
