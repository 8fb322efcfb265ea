"""What a new or careless user types: sizes, bare commands, scenario names and paths."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from click.testing import Result

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
