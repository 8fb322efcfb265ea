"""``vcmm platform import`` / ``show`` on a devicetree built in the test."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from vcmm.cli import cli
from vcmm.platform import load_platform

from .dtboard import BOARD


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_import_writes_toml_that_loads_back_equal(
    make_dtb: Callable[..., str], tmp_path: Path
) -> None:
    dtb = make_dtb(BOARD)
    out = tmp_path / "board.toml"
    code, stdout, stderr = _run("platform", "import", dtb, "-o", str(out))
    assert code == 0, stderr
    assert f"wrote {out}: 2 masters, 1 IOMMUs" in stdout
    assert load_platform(out).devices == load_platform(dtb).devices


def test_show_json_lists_iommus_masters_and_skips(make_dtb: Callable[..., str]) -> None:
    code, stdout, _ = _run("platform", "show", make_dtb(BOARD), "--json")
    assert code == 0
    data = json.loads(stdout)
    (iommu,) = data["iommus"]
    assert (iommu["name"], iommu["format"], iommu["context_banks"]) == ("1000.iommu", "lpae", 1)
    lcd = next(m for m in data["masters"] if m["name"] == "2000.lcd")
    assert (lcd["streams"], lcd["disabled"]) == (["0x3"], True)
    assert any("disabled" in note for note in data["skipped"])
    code, text, _ = _run("platform", "show", make_dtb(BOARD))
    assert "2000.lcd" in text and "DISABLED" in text and "lpae" in text


def test_platform_errors_are_one_line(make_dtb: Callable[..., str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.dtb"
    bad.write_bytes(b"not a blob at all, not a blob at all, not a blob")
    code, _, stderr = _run("platform", "show", str(bad))
    assert code != 0 and stderr.count("\n") == 1
    assert stderr.startswith("vcmm: error: ") and "not a valid devicetree blob" in stderr
    code, _, stderr = _run("platform", "import", str(tmp_path / "x.toml"), "-o", "y.toml")
    assert code != 0 and "is not a .dtb or .dts file" in stderr
