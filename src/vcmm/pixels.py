"""Pixel formats and their memory layout: how many bytes an image of a format takes.

A buffer collection negotiates *images* as well as bytes: a camera says it writes
NV12 of at least 1280x720, a display that it scans rows whose pitch is a multiple of
64 bytes.  Folding those into one buffer size needs the plane layout of each format,
which this module computes, with nothing above the value layer.

A format is a list of planes.  Each plane packs ``group_bytes`` bytes per
``group_pixels`` horizontal pixels (NV12's chroma: 2 bytes, a Cb and a Cr, per 2
pixels) and has one row per ``sub_y`` image rows (4:2:0 chroma: every second row).
A *modifier* names the arrangement of the bytes, as Linux's DRM format modifiers do:
``linear`` rows one after another, or ``tile-64x32`` (``DRM_FORMAT_MOD_SAMSUNG_64_32_TILE``,
the tiled NV12 of video decoders: rows padded to whole 64-byte x 32-row tiles).

The layout (:func:`layout`) follows Linux's V4L2 and DRM conventions for planar and
semi-planar formats: the first plane's bytes per row (its *pitch*) is the natural
row length raised to ``min_bytes_per_row`` and rounded up to ``bytes_per_row_divisor``;
every other plane's pitch is the first's scaled by the plane's share of the row
(NV12's chroma: the same pitch; I420's Cb and Cr: half), rounded up to the same
divisor; planes follow one another with no gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError

#: The modifiers :func:`layout` knows: linear rows, and 64-byte x 32-row tiles.
LINEAR: Final = "linear"
TILE_64X32: Final = "tile-64x32"
MODIFIERS: Final = (LINEAR, TILE_64X32)
#: The tile of :data:`TILE_64X32`: bytes per tile row, tile rows.
TILE_BYTES, TILE_ROWS = 64, 32


@dataclass(frozen=True, slots=True)
class PlaneShape:
    """How one plane packs pixels: bytes per horizontal group, rows per image row."""

    name: str
    group_bytes: int
    group_pixels: int = 1
    sub_y: int = 1

    def row_bytes(self, width: int) -> int:
        """Bytes of one row of a ``width``-pixel image, without padding."""
        return math.ceil(width / self.group_pixels) * self.group_bytes

    def rows(self, height: int) -> int:
        return math.ceil(height / self.sub_y)


@dataclass(frozen=True, slots=True)
class PixelFormat:
    """A named pixel format: its planes, and the modifiers it may be laid out with."""

    name: str
    planes: tuple[PlaneShape, ...]
    modifiers: tuple[str, ...] = (LINEAR,)
    #: Whether the format is YUV (else RGB or grey); reports show it.
    yuv: bool = False


def _semi_planar(name: str, sample: int) -> PixelFormat:
    """NV12-like: a luma plane and one interleaved CbCr plane at half resolution."""
    luma = PlaneShape("luma", sample)
    chroma = PlaneShape("chroma", 2 * sample, 2, 2)
    return PixelFormat(name, (luma, chroma), (LINEAR, TILE_64X32), yuv=True)


#: The formats, in the order a collection prefers them when several remain possible.
FORMATS: Final[dict[str, PixelFormat]] = {
    f.name: f
    for f in (
        _semi_planar("nv12", 1),
        _semi_planar("nv21", 1),
        _semi_planar("p010", 2),
        PixelFormat(
            "i420",
            (PlaneShape("y", 1), PlaneShape("u", 1, 2, 2), PlaneShape("v", 1, 2, 2)),
            yuv=True,
        ),
        PixelFormat("yuyv", (PlaneShape("yuyv", 4, 2),), yuv=True),
        PixelFormat("uyvy", (PlaneShape("uyvy", 4, 2),), yuv=True),
        PixelFormat("rgba8888", (PlaneShape("rgba", 4),)),
        PixelFormat("bgra8888", (PlaneShape("bgra", 4),)),
        PixelFormat("rgb888", (PlaneShape("rgb", 3),)),
        PixelFormat("rgb565", (PlaneShape("rgb", 2),)),
        PixelFormat("y8", (PlaneShape("luma", 1),)),
    )
}


def pixel_format(name: object) -> PixelFormat:
    """The format called ``name`` (case-insensitive); unknown names list the known."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"pixel format {name!r} is not a string")
    found = FORMATS.get(name.lower())
    if found is None:
        raise InvalidArgumentError(f"unknown pixel format {name!r}; known: {', '.join(FORMATS)}")
    return found


def check_format(name: object, modifier: object) -> tuple[str, str]:
    """``(format, modifier)`` normalised, refusing a modifier the format cannot take."""
    fmt = pixel_format(name)
    if not isinstance(modifier, str) or modifier.lower() not in MODIFIERS:
        raise InvalidArgumentError(
            f"format modifier {modifier!r} is not one of {', '.join(MODIFIERS)}"
        )
    mod = modifier.lower()
    if mod not in fmt.modifiers:
        raise InvalidArgumentError(
            f"pixel format {fmt.name} cannot be laid out {mod} (it takes {', '.join(fmt.modifiers)})"
        )
    return fmt.name, mod


@dataclass(frozen=True, slots=True)
class PlaneLayout:
    """Where one plane lies in the buffer: ``rows`` rows ``bytes_per_row`` apart."""

    name: str
    offset: int
    bytes_per_row: int
    rows: int

    @property
    def size(self) -> int:
        return self.bytes_per_row * self.rows


@dataclass(frozen=True, slots=True)
class ImageLayout:
    """An image of one format and size, its planes laid out end to end."""

    format: str
    modifier: str
    width: int
    height: int
    planes: tuple[PlaneLayout, ...]

    @property
    def size(self) -> int:
        """Bytes the image occupies."""
        last = self.planes[-1]
        return last.offset + last.size

    @property
    def bytes_per_row(self) -> int:
        """The first plane's pitch (what V4L2 calls ``bytesperline``)."""
        return self.planes[0].bytes_per_row

    def describe(self) -> str:
        pitch = f", {self.bytes_per_row} bytes/row"
        mod = "" if self.modifier == LINEAR else f" {self.modifier}"
        return f"{self.width}x{self.height} {self.format}{mod}{pitch}"


def layout(
    format: str,
    width: int,
    height: int,
    *,
    modifier: str = LINEAR,
    bytes_per_row_divisor: int = 1,
    min_bytes_per_row: int = 0,
) -> ImageLayout:
    """The planes of a ``width`` x ``height`` image of ``format`` (module docstring)."""
    who = "pixels.layout"
    name, mod = check_format(format, modifier)
    w = check_int(who, "width", width, minimum=1)
    h = check_int(who, "height", height, minimum=1)
    divisor = check_int(who, "bytes_per_row_divisor", bytes_per_row_divisor, minimum=1)
    floor = check_int(who, "min_bytes_per_row", min_bytes_per_row)
    shapes = FORMATS[name].planes
    if mod == TILE_64X32:
        divisor = math.lcm(divisor, TILE_BYTES)
    natural0 = shapes[0].row_bytes(w)
    pitch0 = _round_up(max(natural0, floor), divisor)
    planes = []
    offset = 0
    for shape in shapes:
        natural = shape.row_bytes(w)
        pitch = _round_up(max(natural, math.ceil(pitch0 * natural / natural0)), divisor)
        rows = shape.rows(h)
        if mod == TILE_64X32:
            rows = _round_up(rows, TILE_ROWS)
        planes.append(PlaneLayout(shape.name, offset, pitch, rows))
        offset += pitch * rows
    return ImageLayout(name, mod, w, h, tuple(planes))


def _round_up(value: int, divisor: int) -> int:
    return -(-value // divisor) * divisor
