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
