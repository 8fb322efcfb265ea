"""``vcmm`` on a real (pseudo-)terminal: progress, colour, width, and Ctrl-C.

Ctrl-C for real: the subprocess gets SIGINT as a terminal sends it, to the whole
foreground process group (the sweep's workers included).  One Ctrl-C must stop the
work, stop every worker, keep what a sweep finished, and exit with status 130 without
a traceback.  The progress bar on the terminal says how far the work got, which is
how the tests know when to interrupt.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from vcmm.workload.scenario import load_scenario
from vcmm.workload.sweep import parse_grid, run_sweep, write_sweep

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")

pytestmark = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs POSIX signals")


def _terminal_signals() -> None:
    """Give the child the dispositions a shell gives a foreground job.

    A test run started in the background by a non-interactive shell (a CI script, a
    loop of runs) inherits SIGINT and SIGQUIT ignored, and an ignored signal stays
    ignored across exec: Python then installs no KeyboardInterrupt handler and the
    Ctrl-C under test would never arrive.  A terminal's foreground job has them at
    their defaults, so the child gets that.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


class Terminal:
    """``python -m vcmm ARGS`` with stderr on a pseudo-terminal, in its own process group."""

    def __init__(
        self, tmp_path: Path, *args: str, stdout_too: bool = False, columns: int = 160
    ) -> None:
        try:
            self.master, slave = pty.openpty()
        except OSError as err:  # pragma: no cover - containers without /dev/ptmx
            pytest.skip(f"no pseudo-terminal: {err}")
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        paths = [str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
        env = os.environ | {
            "PYTHONPATH": os.pathsep.join(p for p in paths if p),
            "VCMM_PROGRESS_DELAY": "0",
            "TERM": "xterm-256color",
        }
        env.pop("COLUMNS", None)
        env.pop("NO_COLOR", None)
        self.stdout = (tmp_path / "stdout.txt").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vcmm", *args],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=slave if stdout_too else self.stdout,
            stderr=slave,
            env=env,
            start_new_session=True,
            preexec_fn=_terminal_signals,
        )
        os.close(slave)
        self.raw = ""
        self.seen = ""

    def _read(self) -> bool:
        ready, _, _ = select.select([self.master], [], [], 0.1)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # the other side closed: the process has ended
            return False
        self.raw += chunk.decode("utf-8", "replace")
        self.seen = ANSI.sub("", self.raw)
        return bool(chunk)

    def wait_for(self, pattern: str, polls: int = 1200) -> re.Match[str]:
        """Read the terminal until ``pattern`` shows (a hang guard of ``polls`` reads)."""
        for _ in range(polls):
            found = re.search(pattern, self.seen)
            if found:
                return found
            if not self._read() or self.proc.poll() is not None:
                self._read()
                break
        pytest.fail(f"never saw {pattern!r}; the terminal showed: {self.seen[-2000:]!r}")

    def finish(self) -> int:
        """Read until the process ends; its exit status."""
        while self._read():
            pass
        os.close(self.master)
        self.stdout.close()
        return self.proc.wait(timeout=120)

    def interrupt(self, times: int = 1) -> int:
        """Ctrl-C ``times`` to the whole process group; the exit status."""
        for _ in range(times):
            os.killpg(self.proc.pid, signal.SIGINT)
        status = self.proc.wait(timeout=120)
        while self._read():
            pass
        os.close(self.master)
        self.stdout.close()
        return status

    def group_is_gone(self, polls: int = 200) -> bool:
        """No process of the group is left (workers, helpers): nothing orphaned."""
        for _ in range(polls):
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return True
            time.sleep(0.05)
        return False


#: Points start longest first: on two workers the long point and a short one start
#: together, the short ones finish within a second each and the long one (minutes) is
#: still running when the interrupt comes, with one to three points finished.  How many
#: exactly depends on the machine and on the executor (Dask may finish two short points
#: in one progress refresh), so the tests read the count from what the sweep wrote.
#: Only the long point's length matters to the timing: the short ones are kept short
#: (a frame is a few tens of milliseconds) because the test waits for the first of them.
LONG = 10000  # the most a scenario step takes
ONE_QUICK = ("--grid", f"frames=8,{LONG},9,10", "--grid", "policy=4k")


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_one_ctrl_c_stops_a_parallel_sweep_and_keeps_the_finished_points(
    tmp_path: Path, executor: str, request: pytest.FixtureRequest
) -> None:
    if executor == "dask":
        request.getfixturevalue("dask_distributed")  # skip without Dask, fail in CI
    args = ("sweep", "video_1080p", *ONE_QUICK, "-j", "2", "--executor", executor)
    term = Terminal(tmp_path, *args, "--out", "out")
    term.wait_for(r"\b[1-3]/4\b")
    assert term.interrupt() == 130
    data = json.loads((tmp_path / "out" / "sweep.json").read_text())
    finished = data["finished"]
    assert data["interrupted"] is True and 1 <= finished < 4 and data["points"] == 4
    assert (
        f"vcmm: interrupted: {finished} of 4 points finished, the workers are stopped; "
        "wrote out/sweep.csv, out/sweep.json" in term.seen
    )
    assert "Traceback" not in term.seen
    assert term.group_is_gone()
    summary = [r for r in data["rows"] if r["context"] == "all"]
    assert len(summary) == finished and all(r["error"] == "" for r in summary)
    assert LONG not in [r["frames"] for r in summary]  # the long point was cancelled
    csv_lines = (tmp_path / "out" / "sweep.csv").read_text().splitlines()
    assert [line.split(",")[2] for line in csv_lines[1:]].count("all") == finished


@pytest.mark.usefixtures("dask_distributed")
def test_an_interrupted_dask_sweep_resumed_writes_what_an_uninterrupted_one_does(
    tmp_path: Path,
) -> None:
    frames = ",".join(str(n) for n in range(20, 32))
    grid = ("--grid", f"frames={frames}", "--grid", "policy=4k", "--no-plots")
    term = Terminal(tmp_path, "sweep", "video_1080p", *grid, "--executor", "dask", "--out", "out")
    # Progress may jump by two (two workers): any count from 2 with points to spare.
    term.wait_for(r"\b[2-8]/12\b")
    assert term.interrupt() == 130 and term.group_is_gone()
    stopped = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert stopped["interrupted"] and 2 <= stopped["finished"] < 12
    resume = ("-j", "2", "--resume", "out/sweep.csv", "--out", "out")
    resumed = subprocess.run(
        [sys.executable, "-m", "vcmm", "sweep", "video_1080p", *grid, *resume],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"({stopped['finished']} resumed)" in resumed.stdout
    # The reference in this process, one point after another: how it runs is not what
    # is compared (another test shows the executors agree), and no pool starts for it.
    whole = run_sweep(load_scenario("video_1080p"), parse_grid(grid[1:4:2]))
    write_sweep(whole, tmp_path / "whole")

    def rows(name: str) -> list[list[str]]:
        lines = [
            line.split(",") for line in (tmp_path / name / "sweep.csv").read_text().splitlines()
        ]
        seconds = lines[0].index("seconds")
        return [cells[:seconds] + cells[seconds + 1 :] for cells in lines]

    assert rows("out") == rows("whole")


def test_an_impatient_second_ctrl_c_still_leaves_no_worker_and_no_traceback(
    tmp_path: Path,
) -> None:
    term = Terminal(tmp_path, "sweep", "video_1080p", *ONE_QUICK, "-j", "2", "--out", "out")
    term.wait_for(r"\b[1-3]/4\b")
    assert term.interrupt(times=2) == 130
    assert "vcmm: interrupted" in term.seen and "Traceback" not in term.seen
    assert term.group_is_gone()


@pytest.mark.parametrize(
    "args",
    [
        ("run", "video_1080p", "--set", "frames=3000", "--set", "policy=4k"),
        ("report", "video_1080p", "-o", "rep", "--no-policies", "--set", "frames=3000"),
    ],
)
def test_ctrl_c_during_run_and_report_exits_130_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    term = Terminal(tmp_path, *args)
    term.wait_for(r"\b[1-9]\d*/6000\b")  # the run is under way
    assert term.interrupt() == 130
    assert term.seen.rstrip().endswith("vcmm: interrupted")
    assert "Traceback" not in term.seen
    assert (tmp_path / "stdout.txt").read_text() == ""
    assert term.group_is_gone()


def test_a_run_on_a_terminal_fits_its_width_in_colour(tmp_path: Path) -> None:
    args = ("run", "video_1080p", "--set", "frames=50", "--no-progress")
    term = Terminal(tmp_path, *args, stdout_too=True, columns=90)
    assert term.finish() == 0
    assert "\x1b[1m" in term.raw  # bold titles: colour on a terminal
    lines = term.seen.splitlines()
    assert max(len(line) for line in lines) <= 90
    assert "50 frames summarised to fit the terminal; every frame: vcmm run --json" in lines


def test_progress_shows_on_a_terminal_after_the_delay_only(tmp_path: Path) -> None:
    term = Terminal(tmp_path, "run", "video_1080p", "--set", "frames=20", "--set", "policy=4k")
    term.wait_for(r"running video_1080p .* \d+/40")
    assert term.finish() == 0
    # A pipe gets no progress (and no colour) at all.
    piped = subprocess.run(
        [sys.executable, "-m", "vcmm", "run", "video_1080p", "--set", "frames=2"],
        capture_output=True,
        text=True,
        env=os.environ | {"PYTHONPATH": str(ROOT / "src"), "VCMM_PROGRESS_DELAY": "0"},
        check=True,
    )
    assert piped.stderr == "" and "\x1b[" not in piped.stdout
