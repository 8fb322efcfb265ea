"""Tables that fit a terminal: frames summarised, notes wrapped, wide tables continued,
colour only where it can be seen."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result

from vcmm.cli import cli
from vcmm.report.tables import Table, render_result
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import loads_scenario

#: 50 frames, and the reader's random pattern makes every later frame different.
FIFTY = """\
name = "fifty"
frames = 50
[[buffers]]
name = "frame"
size = "256K"
target = "blocks"
policy = "4k"
[[steps]]
device = "vcodec_a_mm1"
buffer = "frame"
access = "write"
[[steps]]
device = "mdp"
buffer = "frame"
access = "read"
pattern = "random"
count = 64
"""


def test_fifty_frames_are_summarised_to_fit_and_the_summary_is_right() -> None:
    result = run_scenario(loads_scenario(FIFTY))
    full = render_result(result)
    assert "frame 49" in full and max(len(line) for line in full.splitlines()) > 300
    text = render_result(result, 100)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "50 frames summarised to fit the terminal; every frame: vcmm run --json" in lines
    rows = {line.split()[1]: line.split() for line in lines if line.lstrip()[:2] in ("0 ", "1 ")}
    for step in result.steps:
        misses = [f.misses for f in step.frames]
        later = [m for m in misses[1:] if m is not None]
        row = rows[step.device]
        assert [int(row[6].replace(",", "")), int(row[7]), int(row[9])] == [
            misses[0],
            min(later),
            max(later),
        ]
        assert float(row[8]) == round(statistics.fmean(later), 1)


def test_a_long_note_wraps_inside_the_width_and_keeps_every_word() -> None:
    note = "FAULT frame 0: " + " ".join(f"word{i}" for i in range(40))
    t = Table("Steps", ["step", "misses", "notes"])
    t.add([0, 12, note])
    t.add([1, 3, "ok"])
    lines = t.to_text(60).splitlines()
    assert max(len(line) for line in lines) <= 60
    body = lines[3:]
    assert body[0].startswith("   0      12  FAULT frame 0:")
    wrapped = [line[14:] for line in body if not line.lstrip().startswith("1 ")]
    assert " ".join(w.strip() for w in wrapped) == note
    assert body[-1].split() == ["1", "3", "ok"]


def test_too_many_columns_continue_in_a_second_block_repeating_the_first() -> None:
    t = Table("Wide", ["context", *[f"counter {i}" for i in range(10)]])
    t.add(["vcodec_a_mm1", *range(10)])
    t.add(["mdp", *range(10, 20)])
    lines = t.to_text(60).splitlines()
    assert max(len(line) for line in lines) <= 60
    headers = [line for line in lines if line.startswith("context")]
    assert len(headers) >= 2
    shown = [h for line in headers for h in re.findall(r"counter \d+", line)]
    assert shown == [f"counter {i}" for i in range(10)]
    assert sum(line.startswith("mdp ") for line in lines) == len(headers)


def test_off_a_terminal_run_has_every_column_and_no_colour(tmp_path: Path) -> None:
    path = tmp_path / "fifty.toml"
    path.write_text(FIFTY, encoding="utf-8")
    invoke: Callable[..., Result] = CliRunner().invoke
    piped = invoke(cli, ["run", str(path)], env={"COLUMNS": "100"}, color=True)
    assert piped.exit_code == 0, piped.output
    assert "frame 49" in piped.stdout  # a file or pipe gets every column
    assert "\x1b[" not in piped.stdout  # and no colour codes at all
