"""What a new or careless user types: sizes, bare commands, scenario names and paths."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from vcmm.platform import loads_platform
from vcmm.workload.scenario import loads_scenario

Vcmm = Callable[..., Result]
ErrorLine = Callable[[Result], str]

SI_SCENARIO = """\
[[buffers]]
name = "b"
size = "2 GB"

[[steps]]
device = "mdp"
buffer = "b"
access = "read"
"""


def test_an_si_size_is_one_line_naming_the_binary_spelling(
    vcmm: Vcmm, error_line: ErrorLine, tmp_path: Path
) -> None:
    path = tmp_path / "si.toml"
    path.write_text(SI_SCENARIO, encoding="utf-8")
    line = error_line(vcmm("run", path, expect=1))
    assert "buffers[0].size" in line and "write 2G or 2GiB" in line


def test_bare_vcmm_and_vcmm_pt_print_the_normal_help(vcmm: Vcmm) -> None:
    for args, usage, command in (
        ((), "vcmm [OPTIONS] COMMAND", "sweep"),
        (("pt",), "vcmm pt", "dump"),
    ):
        result = vcmm(*args)
        assert result.stderr == ""
        lines = result.stdout.splitlines()
        assert lines[0].startswith(f"Usage: {usage}")
        assert "Commands:" in lines
        assert any(line.split()[:1] == [command] for line in lines)  # one command per line
        assert result.stdout == vcmm(*args, "--help").stdout


def _copy_of(vcmm: Vcmm, name: str, *edits: tuple[str, str]) -> str:
    text = vcmm("scenarios", "--print", name).stdout
    for old, new in edits:
        assert old in text
        text = text.replace(old, new)
    return text


def test_a_local_file_wins_over_the_packaged_scenario_and_the_header_says_so(
    vcmm: Vcmm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    mine = _copy_of(vcmm, "video_1080p", ('name = "video_1080p"', 'name = "my_video"'))
    (tmp_path / "video_1080p.toml").write_text(mine + "frames = 1\n", encoding="utf-8")
    result = vcmm("run", "video_1080p", "--json")
    data = json.loads(result.stdout)
    assert (data["scenario"], data["file"]) == ("my_video", "video_1080p.toml")
    assert "running the file video_1080p.toml, not the packaged scenario" in result.stderr
    head = vcmm("run", "video_1080p").stdout.splitlines()[0]
    assert head.startswith("scenario my_video (file video_1080p.toml) on platform")
    # The packaged one still runs by name where no such file is.
    packaged = vcmm("run", "camera_dsp").stdout.splitlines()[0]
    assert packaged.startswith("scenario camera_dsp (packaged: ")
    assert Path(packaged.split("packaged: ")[1].split(")")[0]).name == "camera_dsp.toml"


def test_a_platform_file_next_to_the_scenario_wins_over_the_packaged_default(
    vcmm: Vcmm, tmp_path: Path
) -> None:
    board = _copy_of(vcmm, "default", ('name = "msm-default"', 'name = "my-board"'))
    (tmp_path / "default.toml").write_text(board, encoding="utf-8")
    scenario = _copy_of(vcmm, "video_1080p")
    (tmp_path / "video.toml").write_text(scenario, encoding="utf-8")
    assert 'platform = "default"' in scenario
    data = json.loads(vcmm("run", tmp_path / "video.toml", "--set", "frames=1", "--json").stdout)
    assert data["platform"] == "my-board"


def test_scenarios_lists_paths_and_prints_an_example_to_copy(vcmm: Vcmm) -> None:
    out = vcmm("scenarios").stdout.splitlines()
    paths = [Path(line.strip()) for line in out if line.startswith(" ") and line.endswith(".toml")]
    assert {p.name for p in paths} == {
        "video_1080p.toml",
        "codec_tiled.toml",
        "camera_dsp.toml",
        "video_collection.toml",
        "net_stream.toml",
        "codec_banked.toml",
        "default.toml",
        "banked.toml",
    }
    for path in paths:
        printed = vcmm("scenarios", "--print", path.stem).stdout
        assert printed == path.read_text(encoding="utf-8")
    assert loads_platform(vcmm("scenarios", "--print", "default").stdout).name == "msm-default"
    assert loads_platform(vcmm("scenarios", "--print", "banked").stdout).name == "msm-banked"
    copied = loads_scenario(vcmm("scenarios", "--print", "codec_tiled").stdout)
    assert copied.name == "codec_tiled"


def test_an_unknown_name_lists_the_packaged_ones(
    vcmm: Vcmm, error_line: ErrorLine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = error_line(vcmm("run", "video_108p", expect=1))
    assert "cannot read scenario file" in line and "no packaged scenario 'video_108p'" in line
    assert "camera_dsp, codec_banked, codec_tiled, net_stream, video_1080p" in line
    line = error_line(vcmm("scenarios", "--print", "nope", expect=1))
    assert "no packaged scenario or platform named 'nope'" in line
