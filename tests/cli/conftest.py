"""Fixtures of the command-line tests: a runner and a tiny scenario file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from vcmm.cli import cli

TINY = """\
name = "tiny"
description = "A 256x128 NV12 frame written by the codec and read by the display."
frames = 2

[[buffers]]
name = "frame"
size = "256x128 nv12"
target = "blocks"
policy = "4k"

[[steps]]
device = "vcodec_a_mm1"
buffer = "frame"
access = "write"
pattern = "raster"

[[steps]]
device = "mdp"
buffer = "frame"
access = "read"
pattern = "tiled"
tile = "64x8"
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


@pytest.fixture
def vcmm() -> Callable[..., Result]:
    """Invoke the command line as a user would; exceptions are not swallowed."""
    runner = CliRunner()

    def invoke(*args: str | Path, expect: int | None = 0) -> Result:
        result = runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, result.output
        return result

    return invoke


def one_error_line(result: Result) -> str:
    """The single stderr line a user mistake must produce."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vcmm: error: ")
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def error_line() -> Callable[[Result], str]:
    return one_error_line
