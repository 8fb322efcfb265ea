"""``vcmm replay`` and ``vcmm run --perfetto`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from vcmm.cli import cli

from .lines import dma_map_line, dma_unmap_line, fault_line, map_line, trace, unmap_line

A = "0000:00:02.0"
CLEAN = trace(
    map_line(0xFFFFF000, 0x81000000, 4096, ts=1.0),
    dma_map_line(A, 0xFFFFF000, 4096, 0x81000000, ts=1.0),
    unmap_line(0xFFFFF000, 4096, ts=2.0),
    dma_unmap_line(A, 0xFFFFF000, 4096, ts=2.0),
)
FAULTY = CLEAN + fault_line(A, 0xFFFFF000, 1, ts=3.0) + "\n"


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def write(tmp_path: Path, text: str, name: str = "trace.txt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_clean_trace_exits_0_with_a_summary(tmp_path: Path) -> None:
    result = run("replay", write(tmp_path, CLEAN))
    assert result.exit_code == 0, result.output
    assert "4 events used, 0 lines skipped, 0 problems" in result.stdout
    assert A in result.stdout and result.stderr == ""


def test_problems_exit_3_and_json_lists_them(tmp_path: Path) -> None:
    result = run("replay", write(tmp_path, FAULTY), "--json")
    assert result.exit_code == 3
    data = json.loads(result.stdout)
    assert [(p["kind"], p["line"]) for p in data["problems"]] == [("fault-after-unmap", 7)]
    assert data["devices"][A]["map"] == 1
    assert result.stderr.strip() == ("vcmm: failed: 1 problem(s) in the trace: 1 fault-after-unmap")


def test_binary_missing_and_strict_are_one_line_errors(tmp_path: Path) -> None:
    blob = tmp_path / "trace.dat"
    blob.write_bytes(bytes(range(256)) * 4)
    for args in (
        ("replay", blob),
        ("replay", tmp_path / "nothing.txt"),
        ("replay", write(tmp_path, CLEAN + "garbage\n", "bad.txt"), "--strict"),
        ("replay", write(tmp_path, CLEAN, "ok.txt"), "--platform", tmp_path / "none.toml"),
    ):
        result = run(*args)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vcmm: error: ")
    assert "line 7: not an ftrace event line" in run(
        "replay", write(tmp_path, CLEAN + "garbage\n"), "--strict").stderr  # fmt: skip


def test_skipped_lines_are_listed_without_strict(tmp_path: Path) -> None:
    result = run("replay", write(tmp_path, CLEAN + "garbage\n"))
    assert result.exit_code == 0
    assert "line 7: not an ftrace event line" in result.stdout


def _events(path: Path) -> list[dict[str, object]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["displayTimeUnit"] == "ns"
    events: list[dict[str, object]] = data["traceEvents"]
    return events


def test_perfetto_tracks_spans_instants_and_counters(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    assert run("replay", write(tmp_path, FAULTY), "--perfetto", out).exit_code == 3
    events = _events(out)
    names = [e for e in events if e["ph"] == "M"]
    assert [n["args"] for n in names] == [{"name": A}]  # one track: the device
    begins = [e for e in events if e["ph"] == "b"]
    ends = [e for e in events if e["ph"] == "e"]
    assert [(b["id"], b["ts"]) for b in begins] == [(3, 1_000_000.0)]
    assert [(e["id"], e["ts"]) for e in ends] == [(3, 2_000_000.0)]
    assert begins[0]["name"] == ends[0]["name"] == "map 0xfffff000+0x1000"
    instants = [e["name"] for e in events if e["ph"] == "i"]
    assert instants == ["unmap + IOTLB invalidation", "io_page_fault"]
    counters = [e["args"]["bytes"] for e in events if e["ph"] == "C"]  # type: ignore[index]
    assert counters == [4096, 0]


def test_run_perfetto_writes_the_same_format(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    result = run("run", "video_1080p", "--set", "frames=1", "--perfetto", out)
    assert result.exit_code == 0, result.output
    events = _events(out)
    tracks = {e["args"]["name"] for e in events if e["ph"] == "M"}  # type: ignore[index]
    assert tracks == {"vcodec_a_mm1", "mdp"}
    steps = [e for e in events if e["ph"] == "b" and e["cat"] == "step"]
    assert len(steps) == 2  # one frame, two steps
    maps = [e for e in events if e["ph"] == "b" and e["cat"] == "mapping"]
    assert {e["pid"] for e in maps} == {e["pid"] for e in events if e["ph"] == "M"}
    assert all(e["ph"] != "C" or e["args"]["bytes"] > 0 for e in events)  # type: ignore[index]
