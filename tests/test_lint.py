"""The style gate runs inside the test suite, so CI and the README's one test command
enforce it: ruff (lint and format) and mypy must be clean on the whole tree.

On a developer's machine without the tools the checks skip (``pip install '.[test]'``
brings them); under CI (``CI=true``, which ``.ci/run`` exports) a missing tool FAILS,
so the gate can never pass without checking anything."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def under_ci() -> bool:
    """Whether this run is CI's (the ``CI`` variable CI services and ``.ci/run`` set)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(tool: str, installed: bool) -> None:
    """Skip a check whose tool is missing, or fail it under CI."""
    if installed:
        return
    missing = f"{tool} is not installed (pip install '.[test]' brings it)"
    if under_ci():
        pytest.fail(f"{missing}: under CI the style gate must check, not skip")
    pytest.skip(missing)


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)


def test_ruff_lint_is_clean() -> None:
    require_tool("ruff", shutil.which("ruff") is not None)
    result = _run("ruff", "check", "src", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    require_tool("ruff", shutil.which("ruff") is not None)
    result = _run("ruff", "format", "--check", "src", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    require_tool("mypy", importlib.util.find_spec("mypy") is not None)
    result = _run(sys.executable, "-m", "mypy", "src/vcmm")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_a_missing_tool_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"ruff is not installed.*under CI"):
        require_tool("ruff", installed=False)
    require_tool("ruff", installed=True)  # present: nothing to say


def test_a_missing_tool_skips_on_a_developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="mypy is not installed"):
        require_tool("mypy", installed=False)
