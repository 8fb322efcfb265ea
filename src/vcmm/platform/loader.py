"""Read platform files (TOML) into :class:`~vcmm.platform.schema.PlatformSpec`, and back.

The file's shape is the records' declared fields (:mod:`vcmm.platform.fields`): which
keys exist where (a misspelt key is an error with a suggestion, never silently
ignored), which are required, their types and the size notation (``"2M+4K"``,
``"64K"``, ``"0x1000"`` or plain integers).  The rules about what the values mean
(overlaps, references, alignment) are checked when the records are constructed; the
reader re-raises their errors with the file name and the full key path, so every
message reads ``board.toml: smmus[0].tlb.ways: ways 5 does not divide entries 64``.

:func:`dumps_platform` writes a description back in the same format; loading its output
gives an equal description, which is how the default file and the docs are checked.
"""

from __future__ import annotations

import functools
import os
import tomllib
from importlib import resources
from typing import Final

from vcmm.errors import InvalidArgumentError
from vcmm.platform.codecs import parse_number as parse_number
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import shape_of
from vcmm.platform.inputfile import read_text_input
from vcmm.platform.schema import PlatformSpec
from vcmm.platform.toml_table import TomlTable, dump_record, read_record

#: Where the default platform lives inside the ``vcmm`` package.
DEFAULT_RESOURCE: Final = "platforms/default.toml"
#: The ``source`` of the default platform.
DEFAULT_SOURCE: Final = "<default>"


def loads_platform(text: str, source: str = "<string>") -> PlatformSpec:
    """Parse platform TOML ``text``; ``source`` names it in error messages."""
    if not isinstance(text, str):
        raise PlatformError(
            f"platform text must be a str, got {type(text).__name__}", source=source
        )
    if not isinstance(source, str):
        raise PlatformError(f"source must be a str, got {source!r}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PlatformError(f"not valid TOML: {err}", source=source) from None
    shape = shape_of(PlatformSpec)
    top = TomlTable(data, "", source, shape.allowed(), PlatformError)
    spec: PlatformSpec = read_record(shape, top, given={"source": source})
    return spec


def load_platform(path: str | os.PathLike[str], *, ram: int | str | None = None) -> PlatformSpec:
    """Read a platform file: TOML, or a Linux devicetree (``.dtb``, ``.dts``) imported
    by :func:`vcmm.platform.devicetree.load_devicetree` (``ram`` sizes the RAM banks a
    devicetree leaves to the bootloader).  A missing or unreadable file is a
    :class:`PlatformError`."""
    if not isinstance(path, str | os.PathLike):
        raise PlatformError(f"platform path must be a str or path, got {path!r}")
    name = os.fspath(path)
    from vcmm.platform.devicetree import is_devicetree_path, load_devicetree

    if is_devicetree_path(name):
        return load_devicetree(name, ram=ram)
    if ram is not None:
        raise PlatformError(
            f"ram={ram!r} applies to devicetrees (.dtb, .dts); a TOML platform gives its "
            "memory sizes itself",
            source=name,
        )
    return loads_platform(read_text_input(name, "platform file", PlatformError), source=name)


@functools.cache
def load_default() -> PlatformSpec:
    """The platform shipped inside the package (an MSM-class SoC, see docs/PLATFORM.md)."""
    text = resources.files("vcmm").joinpath(DEFAULT_RESOURCE).read_text(encoding="utf-8")
    return loads_platform(text, source=DEFAULT_SOURCE)


def dumps_platform(spec: PlatformSpec) -> str:
    """Write ``spec`` as platform TOML that :func:`loads_platform` reads back equal."""
    if not isinstance(spec, PlatformSpec):
        raise InvalidArgumentError(f"dumps_platform needs a PlatformSpec, got {spec!r}")
    return dump_record(spec)
