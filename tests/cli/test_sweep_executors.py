"""``vcmm sweep --executor local|dask[=ADDRESS]`` and ``--resume`` from the command line."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

Vcmm = Callable[..., Result]
GRID = ("--grid", "policy=4k,64k", "--grid", "pattern=raster,random", "--no-plots")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(handle)]


def json_data(path: Path) -> dict[str, Any]:
    """sweep.json less what says how and how fast it ran."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in ("seconds", "jobs", "executor"):
        data.pop(key)
    for row in data["rows"]:
        row.pop("seconds")
    return data


@pytest.mark.usefixtures("dask_distributed")
def test_dask_local_pool_and_one_process_write_the_same_files(
    vcmm: Vcmm, tiny: Path, tmp_path: Path
) -> None:
    one = vcmm("sweep", tiny, *GRID, "--out", tmp_path / "one")
    vcmm("sweep", tiny, *GRID, "-j", "2", "--out", tmp_path / "pool")
    dask = vcmm("sweep", tiny, *GRID, "--executor", "dask", "--out", tmp_path / "dask")
    assert "4 points" in one.stdout and "on 1 worker(s)" in one.stdout
    assert "on dask, 2 worker(s)" in dask.stdout  # a LocalCluster of 2 by default
    for other in ("pool", "dask"):
        assert csv_rows(tmp_path / other / "sweep.csv") == csv_rows(tmp_path / "one" / "sweep.csv")
        assert json_data(tmp_path / other / "sweep.json") == json_data(
            tmp_path / "one" / "sweep.json"
        )
    assert json.loads((tmp_path / "dask" / "sweep.json").read_text())["executor"] == "dask"


def test_a_sweep_on_a_running_scheduler(
    vcmm: Vcmm, tiny: Path, tmp_path: Path, dask_cluster: Any
) -> None:
    address = dask_cluster.scheduler_address
    result = vcmm("sweep", tiny, *GRID, "--executor", f"dask={address}", "--out", tmp_path / "d")
    assert f"on dask={address}, 2 worker(s)" in result.stdout
    vcmm("sweep", tiny, *GRID, "--out", tmp_path / "one")
    assert csv_rows(tmp_path / "d" / "sweep.csv") == csv_rows(tmp_path / "one" / "sweep.csv")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--executor", "dusk"), "executor 'dusk' is not one of local, dask, dask=ADDRESS"),
        (("--executor", "dask="), "needs a scheduler address after 'dask='"),
        (
            ("--executor", "dask=tcp://127.0.0.1:9", "-j", "3"),
            "jobs 3 cannot be given with executor 'dask=tcp://127.0.0.1:9'",
        ),
    ],
)
def test_bad_executors_are_one_line_and_write_nothing(
    vcmm: Vcmm,
    tiny: Path,
    tmp_path: Path,
    error_line: Callable[[Result], str],
    args: tuple[str, ...],
    needle: str,
) -> None:
    result = vcmm("sweep", tiny, *GRID, *args, "--out", tmp_path / "s", expect=1)
    assert needle in error_line(result)
    assert not (tmp_path / "s").exists()


def test_without_dask_the_error_says_how_to_install_it(
    vcmm: Vcmm,
    tiny: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error_line: Callable[[Result], str],
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    result = vcmm("sweep", tiny, *GRID, "--executor", "dask", "--out", tmp_path / "s", expect=1)
    assert error_line(result) == (
        "vcmm: error: the dask executor needs Dask (dask.distributed), which is not "
        "installed: pip install 'vcmm[dask]'"
    )
    assert not (tmp_path / "s").exists()


def test_resume_runs_the_missing_points_only(vcmm: Vcmm, tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "s"
    vcmm("sweep", tiny, *GRID, "--out", out)
    whole = csv_rows(out / "sweep.csv")
    # Keep the first two points' rows, as a sweep stopped after them would have.
    lines = (out / "sweep.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if ",all," in line]
    (out / "sweep.csv").write_text("".join(lines[: starts[2]]), encoding="utf-8")
    result = vcmm("sweep", tiny, *GRID, "--resume", out / "sweep.csv", "--out", out)
    assert "sweep of tiny: 4 points" in result.stdout and "(2 resumed)" in result.stdout
    assert csv_rows(out / "sweep.csv") == whole
    assert json.loads((out / "sweep.json").read_text())["resumed"] == 2


def test_resume_of_a_file_of_another_grid_is_one_line(
    vcmm: Vcmm, tiny: Path, tmp_path: Path, error_line: Callable[[Result], str]
) -> None:
    vcmm("sweep", tiny, "--grid", "ways=1,4", "--no-plots", "--out", tmp_path / "w")
    result = vcmm(
        "sweep", tiny, *GRID, "--resume", tmp_path / "w" / "sweep.csv", "--out", tmp_path, expect=1
    )
    line = error_line(result)
    assert f"--resume {tmp_path / 'w' / 'sweep.csv'}: its columns are ways, context" in line
    assert not (tmp_path / "sweep.csv").exists()
