"""Exit statuses a script can rely on: 3 when a sweep point failed or a device
faulted (unless --faults says the fault is the experiment), 0 otherwise."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

Vcmm = Callable[..., Result]

#: mdp writes a buffer every device maps read-only: a permission fault on frame 0.
FAULTING = """\
name = "ro_write"
[[buffers]]
name = "frame"
size = "64K"
target = "blocks"
access = "ro"
[[steps]]
device = "mdp"
buffer = "frame"
access = "write"
"""

#: 5M from the block pool: the 4k policy needs 1280 4K blocks and the pool has 1024.
TOO_BIG_FOR_4K = """\
name = "big"
[[buffers]]
name = "b"
size = "5M"
target = "blocks"
policy = "1m"
[[steps]]
device = "mdp"
buffer = "b"
access = "read"
"""


@pytest.fixture
def faulting(tmp_path: Path) -> Path:
    path = tmp_path / "ro_write.toml"
    path.write_text(FAULTING, encoding="utf-8")
    return path


def _failed_line(result: Result) -> str:
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("vcmm: failed: ") and "Traceback" not in result.output
    return line


def test_a_run_whose_device_faulted_exits_3_after_printing_everything(
    vcmm: Vcmm, faulting: Path
) -> None:
    result = vcmm("run", faulting, expect=3)
    assert "FAULT frame 0" in result.stdout and "\nTotals\n" in result.stdout
    assert "1 device fault(s) in the run (--faults allow accepts them)" in _failed_line(result)
    assert vcmm("run", faulting, "--json", expect=3).stdout.lstrip().startswith("{")


def test_faults_allow_and_expect_make_the_fault_the_outcome(
    vcmm: Vcmm, faulting: Path, tiny: Path
) -> None:
    vcmm("run", faulting, "--faults", "allow", expect=0)
    vcmm("run", faulting, "--faults", "expect", expect=0)
    vcmm("run", tiny, "--faults", "allow", expect=0)
    line = _failed_line(vcmm("run", tiny, "--faults", "expect", expect=3))
    assert "no device faulted in the run, but --faults expect was given" in line


def test_a_sweep_with_a_failed_point_exits_3_and_still_writes_every_point(
    vcmm: Vcmm, tmp_path: Path
) -> None:
    path = tmp_path / "big.toml"
    path.write_text(TOO_BIG_FOR_4K, encoding="utf-8")
    out = tmp_path / "sweep"
    result = vcmm("sweep", path, "--grid", "policy=4k,1m", "--out", out, "--no-plots", expect=3)
    assert "1 of 2 point(s) failed (policy=4k); see the error column" in _failed_line(result)
    # Said as it happened, with the point's parameters and its error; the sweep went on.
    said = [line for line in result.stderr.splitlines() if line.startswith("vcmm: point ")]
    assert len(said) == 1 and said[0].startswith("vcmm: point policy=4k failed: ")
    assert "cannot allocate" in said[0] and said[0].endswith("; the sweep goes on")
    with (out / "sweep.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["context"] == "all"]
    assert [(r["policy"], bool(r["error"])) for r in rows] == [("4k", True), ("1m", False)]


def test_a_sweep_whose_points_fault_follows_faults(
    vcmm: Vcmm, faulting: Path, tmp_path: Path
) -> None:
    args = ("sweep", faulting, "--grid", "ways=1,4", "--out", tmp_path / "s", "--no-plots")
    line = _failed_line(vcmm(*args, expect=3))
    assert "2 of 2 point(s) had device faults" in line
    vcmm(*args, "--faults", "allow", expect=0)
    vcmm(*args, "--faults", "expect", expect=0)


def test_a_report_of_a_faulting_run_is_written_and_exits_3(
    vcmm: Vcmm, faulting: Path, tmp_path: Path
) -> None:
    result = vcmm("report", faulting, "-o", tmp_path / "rep", "--no-policies", expect=3)
    assert (tmp_path / "rep" / "index.html").exists()
    assert "device fault(s)" in _failed_line(result)
    vcmm("report", faulting, "-o", tmp_path / "rep", "--no-policies", "--faults", "allow")
