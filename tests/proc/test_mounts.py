"""Mounted directories of the path namespace: entries asked for at each lookup."""

from __future__ import annotations

import pytest

from vcmm.errors import InvalidArgumentError, NotFoundError, StateError
from vcmm.proc import File, ProcessTable


def test_a_mounted_directory_resolves_names_at_each_open(table: ProcessTable) -> None:
    files = {"a": File("/dev/things/a")}
    table.mount("/dev/things", lambda: list(files), files.get)
    table.register("/dev/things/fixed", File("/dev/things/fixed"))
    proc = table.spawn("p")
    assert table.listdir("/dev/things") == ["a", "fixed"]
    fd = proc.open("/dev/things/a")
    assert proc.file(fd).file is files["a"]
    files["b"] = File("/dev/things/b")  # appears without registering anything
    assert table.lookup("/dev/things/b") is files["b"]
    del files["a"]
    with pytest.raises(NotFoundError, match=r"no such file '/dev/things/a'.*/dev/things/b"):
        proc.open("/dev/things/a")
    with pytest.raises(NotFoundError):
        table.lookup("/dev/things/")


def test_mount_misuse(table: ProcessTable) -> None:
    with pytest.raises(InvalidArgumentError, match="absolute"):
        table.mount("dev/x", list, dict().get)
    with pytest.raises(InvalidArgumentError, match="callable"):
        table.mount("/dev/x", [], dict().get)  # type: ignore[arg-type]
    table.mount("/dev/x", list, dict().get)
    with pytest.raises(StateError, match="already mounted"):
        table.mount("/dev/x/", list, dict().get)
    assert table.listdir("/dev/x") == []
