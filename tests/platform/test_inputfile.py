"""The three file readers (platform TOML, devicetree blob, scenario) report a missing or
non-text file the same way: their own error class, the path first, what was being read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from vcmm.platform import load_platform
from vcmm.platform.devicetree import DeviceTreeError, read_devicetree
from vcmm.platform.errors import KeyedError, PlatformError
from vcmm.workload.scenario import ScenarioError, load_scenario

READERS: list[tuple[str, Callable[[str], object], type[KeyedError], str]] = [
    ("board.toml", load_platform, PlatformError, "platform file"),
    ("board.dtb", read_devicetree, DeviceTreeError, "devicetree"),
    ("run.toml", load_scenario, ScenarioError, "scenario file"),
]


@pytest.mark.parametrize(("name", "read", "error", "what"), READERS, ids=[r[3] for r in READERS])
def test_a_missing_file_names_itself_and_what_was_read(
    tmp_path: Path, name: str, read: Callable[[str], object], error: type[KeyedError], what: str
) -> None:
    path = str(tmp_path / name)
    with pytest.raises(error) as raised:
        read(path)
    assert type(raised.value) is error
    assert str(raised.value) == f"{path}: cannot read {what}: No such file or directory"
    assert raised.value.source == path


@pytest.mark.parametrize(
    ("name", "read", "error", "what"),
    [r for r in READERS if r[0].endswith(".toml")],
    ids=["platform file", "scenario file"],
)
def test_a_binary_where_toml_is_expected_is_refused_as_not_utf8(
    tmp_path: Path, name: str, read: Callable[[str], object], error: type[KeyedError], what: str
) -> None:
    path = tmp_path / name
    path.write_bytes(b"\x7fELF\x02\x01\x01\x00\xff\xfe")
    with pytest.raises(error, match=f"^{path}: {what} is not UTF-8: "):
        read(str(path))
