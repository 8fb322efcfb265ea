"""Reading a devicetree file: a ``.dtb`` through libfdt, a ``.dts`` through ``dtc``.

The blob is checked whole first (libfdt's fdt_check_full), so a truncated or
corrupted file is one error naming the file and libfdt's reason, never a half-read
tree.  A ``.dts`` source is compiled by the devicetree compiler when it is installed
(Debian's ``device-tree-compiler``); without it the error says so.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from vcmm.platform.devicetree.tree import DeviceTreeError, DtNode, DtTree
from vcmm.platform.inputfile import read_input

#: Suffixes read as devicetrees by System.from_file and the CLI's --platform.
DEVICETREE_SUFFIXES = (".dtb", ".dts")
#: dtc is quick; a source that keeps it busy this long is not a devicetree.
_DTC_TIMEOUT_S = 60


def is_devicetree_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a devicetree (``.dtb`` or ``.dts``) rather than TOML."""
    return os.fspath(path).lower().endswith(DEVICETREE_SUFFIXES)


def read_devicetree(path: str | os.PathLike[str]) -> DtTree:
    """The tree in ``path`` (``.dts`` compiled with ``dtc``, anything else read as a blob)."""
    if not isinstance(path, str | os.PathLike):
        raise DeviceTreeError(f"devicetree path must be a str or path, got {path!r}")
    name = os.fspath(path)
    if name.lower().endswith(".dts"):
        return parse_blob(compile_source(name), name)
    return parse_blob(read_input(name, "devicetree", DeviceTreeError), name)


def compile_source(path: str) -> bytes:
    """``dtc -I dts -O dtb path``; errors name the tool or quote its first message."""
    dtc = shutil.which("dtc")
    if dtc is None:
        raise DeviceTreeError(
            "reading a .dts needs the devicetree compiler 'dtc', which is not installed "
            "(Debian and Ubuntu: apt-get install device-tree-compiler); or give the .dtb",
            source=path,
        )
    if not os.path.isfile(path):
        raise DeviceTreeError("cannot read devicetree: no such file", source=path)
    try:
        done = subprocess.run(
            [dtc, "-q", "-I", "dts", "-O", "dtb", path],
            capture_output=True,
            timeout=_DTC_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DeviceTreeError(f"dtc failed to run: {err}", source=path) from None
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise DeviceTreeError(
            f"dtc could not compile it: {message[0] if message else 'no message'}", source=path
        )
    return done.stdout


def _libfdt() -> Any:
    try:
        import libfdt
    except ImportError:  # pragma: no cover - a declared dependency
        raise DeviceTreeError(
            "reading a devicetree needs pylibfdt (pip install pylibfdt)"
        ) from None
    return libfdt


def parse_blob(data: bytes, source: str = "<blob>") -> DtTree:
    """Unflatten a devicetree blob; a malformed one is a :class:`DeviceTreeError`."""
    if not isinstance(data, bytes | bytearray):
        raise DeviceTreeError(f"devicetree blob must be bytes, got {type(data).__name__}")
    libfdt = _libfdt()
    buffer = bytearray(data)
    status = libfdt.fdt_check_full(buffer, len(buffer)) if len(buffer) >= 40 else -libfdt.TRUNCATED
    if status:
        raise DeviceTreeError(
            f"not a valid devicetree blob ({libfdt.strerror(status)})", source=source
        )
    fdt = libfdt.Fdt(bytes(buffer))
    root = DtNode("", "/", _properties(libfdt, fdt, 0))
    _add_children(libfdt, fdt, 0, root)
    return DtTree(root, source)


def _properties(libfdt: Any, fdt: Any, offset: int) -> dict[str, bytes]:
    props: dict[str, bytes] = {}
    at = fdt.first_property_offset(offset, libfdt.QUIET_NOTFOUND)
    while at >= 0:
        prop = fdt.get_property_by_offset(at)
        props[prop.name] = bytes(prop)
        at = fdt.next_property_offset(at, libfdt.QUIET_NOTFOUND)
    return props


def _add_children(libfdt: Any, fdt: Any, offset: int, node: DtNode) -> None:
    child = fdt.first_subnode(offset, libfdt.QUIET_NOTFOUND)
    while child >= 0:
        name = fdt.get_name(child)
        path = f"{node.path.rstrip('/')}/{name}"
        sub = DtNode(name, path, _properties(libfdt, fdt, child), parent=node)
        node.children.append(sub)
        _add_children(libfdt, fdt, child, sub)
        child = fdt.next_subnode(child, libfdt.QUIET_NOTFOUND)
