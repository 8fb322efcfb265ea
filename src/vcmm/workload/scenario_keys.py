"""How the scenario file writes the values its plain codecs cannot: buffer sizes that
are frames (``"1920x1080 nv12"``), tiles (``"64x32"``), one target or a list, and the
``access = "rw" | "ro"`` of a buffer.

Each is a :class:`~vcmm.platform.codecs.Codec` named once, in the field it reads
(:mod:`vcmm.workload.scenario`), so reading, construction checks and errors keyed
``file: buffers[0].size: problem`` come from the same declaration as the platform's.
Scenarios are only read, never written, so these codecs have no ``dump``.
"""

from __future__ import annotations

from typing import Final

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.platform.codecs import Codec, Integer, parse_number
from vcmm.platform.errors import KeyedError, suggest
from vcmm.platform.fields import Invalid
from vcmm.platform.toml_table import Reading, TomlTable
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K
from vcmm.workload.patterns import DEFAULT_TILE, FrameFormat


class ScenarioError(KeyedError):
    """A scenario breaks a rule; the message names the file, the key and the problem."""


#: Allocation policies and the block sizes each allows (``None``: every size, largest
#: first).  A single size makes every chunk, hence every page of the mapping, that
#: size: the clean experiment of the seed's 4K/64K/1M argument.
POLICIES: Final[dict[str, tuple[int, ...] | None]] = {
    "4k": (SZ_4K,),
    "64k": (SZ_64K,),
    "1m": (SZ_1M,),
    "16m": (SZ_16M,),
    "largest": None,
}
#: Policies in increasing block size, the x axis of every policy plot.
POLICY_ORDER: Final = ("4k", "64k", "1m", "16m", "largest")
#: TLB replacement policies a scenario's ``[tlb]`` may choose.
REPLACEMENTS: Final = ("lru", "fifo", "random")

#: What ``access`` says about a buffer, as the ``readonly`` flag it sets.
ACCESS_MODES: Final = {"rw": False, "ro": True}


def is_frame_text(value: object) -> bool:
    """``"1920x1080 nv12"`` is a frame; ``"0x1000"`` and ``"64K"`` are byte sizes."""
    return isinstance(value, str) and "x" in value.lower() and not value.lower().startswith("0x")


def frame_of(table: TomlTable, key: str = "size") -> FrameFormat | None:
    """The frame a buffer's ``size`` describes (its ``stride`` the first plane's row
    pitch), or ``None`` for a byte size."""
    value = table.data.get(key)
    if not is_frame_text(value):
        return None
    stride = table.data.get("stride")
    if stride is not None:
        stride = table.checked_integer("stride", stride)
    try:
        return FrameFormat.parse(str(value), stride=stride)
    except InvalidArgumentError as err:
        raise table.error(key, str(err)) from None


class BufferSize(Codec):
    """Bytes in the size notation (``"1M+4K"``), or a frame whose bytes it takes."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> int:
        value = table.require(key)
        frame = frame_of(table, key)
        if frame is not None:
            return frame.size
        return parse_number(value, "size", lambda problem: table.error(key, problem))

    def check(self, value: object) -> None:
        if not is_int(value):
            raise Invalid(f"expected an integer, got {value!r}")
        if value < 1:
            raise Invalid(f"size {value} must be at least 1 byte")


class RowStride(Codec):
    """Bytes between rows; for a frame it is the frame's pitch (held by the frame)."""

    check = Integer(minimum=1).check

    def read(self, table: TomlTable, key: str, reading: Reading) -> int | None:
        if is_frame_text(table.data.get("size")):
            return None  # the frame took it
        return table.checked_integer(key, table.require(key))


def is_frame(value: object) -> None:
    if not isinstance(value, FrameFormat):
        raise Invalid(f"expected a FrameFormat, got {value!r}")


class TargetNames(Codec):
    """``target = "blocks"`` or ``target = ["blocks", "contig"]``: tried in order."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[str, ...]:
        raw = table.require(key)
        if isinstance(raw, str):
            return (raw,)
        if isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            return tuple(raw)
        raise table.error(key, f"expected a target name or a list of names, got {raw!r}")

    def check(self, value: object) -> None:
        if not isinstance(value, tuple) or not value or not all(isinstance(t, str) for t in value):
            raise Invalid(f"expected a target name or a list of names, got {value!r}")


class AccessMode(Codec):
    """``access = "rw"`` or ``"ro"``, held as the buffer's ``readonly`` flag."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> bool:
        value = table.checked_string(key, table.require(key))
        if value not in ACCESS_MODES:
            raise table.error(
                key,
                f"{value!r} is not one of {', '.join(ACCESS_MODES)}{suggest(value, ACCESS_MODES)}",
            )
        return ACCESS_MODES[value]

    def check(self, value: object) -> None:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {value!r}")


class Tile(Codec):
    """A macro-tile ``"WIDTHxROWS"`` (bytes x rows), held as ``(width, rows)``."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[int, int]:
        raw = table.require(key)
        parts = raw.lower().split("x") if isinstance(raw, str) else []
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise table.error(key, f"expected 'WIDTHxROWS' such as '64x32', got {raw!r}")
        width, rows = (int(p) for p in parts)
        return width, rows

    def check(self, value: object) -> None:
        if (
            not isinstance(value, tuple)
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise Invalid(f"expected (width, rows) such as {DEFAULT_TILE}, got {value!r}")
        if value[0] < 1 or value[1] < 1:
            raise Invalid(f"tile {value[0]}x{value[1]} must be at least 1x1")
