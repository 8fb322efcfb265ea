"""Access-pattern generators: the address streams a device issues over a buffer.

A multimedia engine never touches a frame byte by byte; it issues *bursts* (typically
64 bytes) in an order its algorithm dictates: a display scans rows, a block-based codec
walks macro-tiles, a DMA engine sweeps linearly.  Which order it uses decides how many
distinct pages sit between two accesses, and that, against the IOTLB's size and the
page size the buffer was mapped with, decides the miss rate the seed's 1M/64K blocks
are meant to cut.  So each generator here returns the stream as a numpy ``uint64``
array of burst start *offsets* from the buffer's first byte (the caller adds the
device address); nothing is looped per burst in Python.

Every burst is aligned to the burst size (a power of two dividing 4 KiB), so one burst
never crosses a 4 KiB page and is exactly one translation, as
:meth:`vcmm.hw.bus.BusMaster.access_batch` requires.  A segment whose ends are not
aligned is covered by the aligned bursts that overlap it.

Frame formats (``FrameFormat.parse("1920x1080 nv12")``) lay out the planes of the usual
video and display formats with a row stride, so patterns can follow real geometry.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import SZ_4K, is_power_of_two

U64Array = npt.NDArray[np.uint64]

#: The usual bus burst of a multimedia master (one 64-byte cache line).
DEFAULT_BURST = 64
#: Default macro-tile of tiled video formats: 64 bytes wide, 32 rows high.
DEFAULT_TILE = (64, 32)
#: Names of the generators, as scenario files spell them.
PATTERNS: tuple[str, ...] = ("linear", "raster", "tiled", "random")


def check_burst(burst: object, who: str = "pattern") -> int:
    """A burst size must be a power of two that divides 4 KiB (one translation each)."""
    size = check_int(who, "burst", burst, minimum=1)
    if not is_power_of_two(size) or size > SZ_4K:
        raise InvalidArgumentError(
            f"{who}: burst {size} must be a power of two between 1 and {SZ_4K} so that no "
            "burst crosses a 4 KiB page"
        )
    return size


# -- geometry ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plane:
    """One plane of a frame: ``rows`` rows of ``width`` bytes, ``stride`` bytes apart.

    ``offset`` is where its first row starts, counted from the buffer's first byte.
    """

    name: str
    offset: int
    width: int
    rows: int
    stride: int

    def __post_init__(self) -> None:
        who = f"plane {self.name!r}"
        check_int(who, "offset", self.offset)
        check_int(who, "width", self.width, minimum=1)
        check_int(who, "rows", self.rows, minimum=1)
        check_int(who, "stride", self.stride, minimum=1)
        if self.stride < self.width:
            raise InvalidArgumentError(
                f"{who}: stride {self.stride} is smaller than the row width {self.width}"
            )

    @property
    def extent(self) -> int:
        """Bytes from the first row's start to the last row's end."""
        return self.stride * (self.rows - 1) + self.width

    @property
    def end(self) -> int:
        return self.offset + self.extent


#: Per format: (plane name, bytes per pixel, horizontal subsampling, vertical
#: subsampling, stride divisor relative to the first plane's stride).
_FORMATS: dict[str, tuple[tuple[str, int, int, int, int], ...]] = {
    "nv12": (("luma", 1, 1, 1, 1), ("chroma", 2, 2, 2, 1)),
    "nv21": (("luma", 1, 1, 1, 1), ("chroma", 2, 2, 2, 1)),
    "i420": (("y", 1, 1, 1, 1), ("u", 1, 2, 2, 2), ("v", 1, 2, 2, 2)),
    "y8": (("luma", 1, 1, 1, 1),),
    "rgb565": (("rgb", 2, 1, 1, 1),),
    "rgb888": (("rgb", 3, 1, 1, 1),),
    "rgba8888": (("rgba", 4, 1, 1, 1),),
}
_ALIASES = {"yuv420": "i420", "yv12": "i420", "gray8": "y8", "argb8888": "rgba8888"}
_ALIASES |= {"xrgb8888": "rgba8888", "bgra8888": "rgba8888", "rgbx8888": "rgba8888"}
#: Every format name :meth:`FrameFormat.parse` accepts.
FORMAT_NAMES: tuple[str, ...] = tuple(sorted(set(_FORMATS) | set(_ALIASES)))
_FRAME_TEXT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s+([A-Za-z0-9]+)\s*$")


@dataclass(frozen=True, slots=True)
class FrameFormat:
    """A video or display frame: pixel size, format and the planes it lays out.

    Planes follow one another with no gap; chroma planes of 4:2:0 formats have half the
    rows (rounded up).  ``stride`` is the first plane's row pitch in bytes (at least
    its row width); other planes derive theirs from it the way the format does.
    """

    width: int
    height: int
    format: str
    stride: int
    planes: tuple[Plane, ...]

    @property
    def size(self) -> int:
        """Bytes the frame occupies."""
        last = self.planes[-1]
        return last.offset + last.stride * last.rows

    def plane(self, name: str) -> Plane:
        for p in self.planes:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.planes)
        raise InvalidArgumentError(f"format {self.format} has no plane {name!r} (planes: {known})")

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.format}"

    @classmethod
    def build(
        cls, width: int, height: int, format: str, *, stride: int | None = None
    ) -> FrameFormat:
        """Lay out a ``width`` x ``height`` frame of ``format`` (see :data:`FORMAT_NAMES`)."""
        who = "frame format"
        w = check_int(who, "width", width, minimum=1)
        h = check_int(who, "height", height, minimum=1)
        if not isinstance(format, str):
            raise InvalidArgumentError(f"{who}: format {format!r} is not a string")
        name = _ALIASES.get(format.lower(), format.lower())
        layout = _FORMATS.get(name)
        if layout is None:
            raise InvalidArgumentError(
                f"{who}: unknown pixel format {format!r}; known: {', '.join(FORMAT_NAMES)}"
            )
        _, bpp0, sub_x0, _, _ = layout[0]
        row0 = math.ceil(w / sub_x0) * bpp0
        pitch = row0 if stride is None else check_int(who, "stride", stride, minimum=1)
        if pitch < row0:
            raise InvalidArgumentError(
                f"{who}: stride {pitch} is smaller than a {w}-pixel {name} row ({row0} bytes)"
            )
        planes = []
        offset = 0
        for plane_name, bpp, sub_x, sub_y, pitch_div in layout:
            row = math.ceil(w / sub_x) * bpp
            rows = math.ceil(h / sub_y)
            plane_stride = max(row, math.ceil(pitch / pitch_div))
            planes.append(Plane(plane_name, offset, row, rows, plane_stride))
            offset += plane_stride * rows
        return cls(w, h, name, pitch, tuple(planes))

    @classmethod
    def parse(cls, text: str, *, stride: int | None = None) -> FrameFormat:
        """Read ``"1920x1080 nv12"`` (width x height, then a pixel format)."""
        if not isinstance(text, str):
            raise InvalidArgumentError(f"frame size {text!r} is not a string like '1920x1080 nv12'")
        match = _FRAME_TEXT.match(text)
        if match is None:
            raise InvalidArgumentError(
                f"frame size {text!r} is not 'WIDTHxHEIGHT FORMAT' (e.g. '1920x1080 nv12')"
            )
        width, height, fmt = match.groups()
        return cls.build(int(width), int(height), fmt, stride=stride)


# -- the generators ------------------------------------------------------------------------


def cover(starts: npt.ArrayLike, lengths: npt.ArrayLike, burst: int = DEFAULT_BURST) -> U64Array:
    """The aligned bursts covering each segment ``[start, start+length)``, in order.

    Vectorised: every segment's first burst and burst count are computed at once and
    the stream is expanded with one ``repeat`` and one ``arange``.
    """
    size = check_burst(burst, "cover")
    raw_s, raw_n = np.asarray(starts), np.asarray(lengths)
    for name, raw in (("starts", raw_s), ("lengths", raw_n)):
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise InvalidArgumentError(f"cover: segment {name} must be integers, got {raw.dtype}")
    s = raw_s.astype(np.int64).ravel()
    n = raw_n.astype(np.int64).ravel()
    if s.shape != n.shape:
        raise InvalidArgumentError(f"cover: {s.size} segment starts but {n.size} segment lengths")
    if s.size and (s.min() < 0 or n.min() < 1):
        raise InvalidArgumentError("cover: segment starts must be >= 0 and lengths >= 1")
    first = s - s % size
    last = (s + n - 1) - (s + n - 1) % size
    counts = (last - first) // size + 1
    total = int(counts.sum())
    if total == 0:
        return np.empty(0, dtype=np.uint64)
    begin = np.repeat(np.cumsum(counts) - counts, counts)
    out = np.repeat(first, counts) + (np.arange(total, dtype=np.int64) - begin) * size
    return out.astype(np.uint64)


def linear(length: int, *, burst: int = DEFAULT_BURST, start: int = 0) -> U64Array:
    """A sweep from ``start`` over ``length`` bytes: what a DMA copy or a simple
    streaming engine issues.  ``ceil(length / page)`` distinct pages, each visited once."""
    n = check_int("linear", "length", length, minimum=1)
    s = check_int("linear", "start", start)
    return cover([s], [n], burst)


def raster(plane: Plane, *, burst: int = DEFAULT_BURST) -> U64Array:
    """Row after row of a plane: a display controller's scan-out.  With a stride wider
    than the row, the gaps between rows are skipped."""
    if not isinstance(plane, Plane):
        raise InvalidArgumentError(f"raster: {plane!r} is not a Plane")
    rows = np.arange(plane.rows, dtype=np.int64)
    return cover(plane.offset + rows * plane.stride, np.full(plane.rows, plane.width), burst)


def tiled(
    plane: Plane,
    tile_width: int = DEFAULT_TILE[0],
    tile_height: int = DEFAULT_TILE[1],
    *,
    burst: int = DEFAULT_BURST,
) -> U64Array:
    """Macro-tile after macro-tile over a plane stored in rows (raster layout).

    This is how a block-based codec touches a frame: tiles left to right, top to
    bottom, and inside a tile its ``tile_height`` rows of ``tile_width`` bytes.  Each
    tile spans ``tile_height`` rows, so ``tile_height * stride`` bytes of address space:
    with a 1920-byte stride one 64x32 tile touches 15 or 16 different 4 KiB pages,
    which is what makes this pattern hard on a small TLB with small pages.  Tiles at
    the right and bottom edges are clipped to the plane.
    """
    if not isinstance(plane, Plane):
        raise InvalidArgumentError(f"tiled: {plane!r} is not a Plane")
    tw = check_int("tiled", "tile width", tile_width, minimum=1)
    th = check_int("tiled", "tile height", tile_height, minimum=1)
    tiles_x = math.ceil(plane.width / tw)
    tiles_y = math.ceil(plane.rows / th)
    ty, tx, r = np.meshgrid(
        np.arange(tiles_y, dtype=np.int64),
        np.arange(tiles_x, dtype=np.int64),
        np.arange(th, dtype=np.int64),
        indexing="ij",
    )
    row = (ty * th + r).ravel()
    col = (tx * tw).ravel()
    keep = row < plane.rows
    row, col = row[keep], col[keep]
    lengths = np.minimum(tw, plane.width - col)
    return cover(plane.offset + row * plane.stride + col, lengths, burst)


def random_bursts(
    length: int, count: int, *, seed: int, burst: int = DEFAULT_BURST, start: int = 0
) -> U64Array:
    """``count`` bursts drawn uniformly (with replacement) from ``[start, start+length)``,
    reproducible from ``seed``: the worst case for any TLB, as every page is as likely
    as any other."""
    n = check_int("random", "length", length, minimum=1)
    k = check_int("random", "count", count, minimum=1)
    s = check_int("random", "start", start)
    sd = check_int("random", "seed", seed)
    size = check_burst(burst, "random")
    first = s // size
    last = (s + n - 1) // size
    rng = np.random.default_rng(sd)
    picks = rng.integers(first, last + 1, size=k, dtype=np.int64)
    return (picks * size).astype(np.uint64)


def repeat_frames(stream: U64Array, frames: int) -> U64Array:
    """The same stream issued ``frames`` times back to back (a video's frame loop)."""
    if not isinstance(stream, np.ndarray) or stream.ndim != 1:
        raise InvalidArgumentError("repeat_frames: stream must be a 1-D numpy array")
    n = check_int("repeat_frames", "frames", frames, minimum=1)
    return np.tile(stream.astype(np.uint64, copy=False), n)


def distinct_pages(stream: U64Array, page_size: int) -> int:
    """How many different pages of ``page_size`` a stream touches: the misses a TLB
    large enough to hold them all takes on the first pass (its compulsory misses)."""
    size = check_int("distinct_pages", "page_size", page_size, minimum=1)
    if not is_power_of_two(size):
        raise InvalidArgumentError(f"distinct_pages: page size {size} is not a power of two")
    if not isinstance(stream, np.ndarray):
        raise InvalidArgumentError("distinct_pages: stream must be a numpy array")
    shift = np.uint64(size.bit_length() - 1)
    return int(np.unique(stream.astype(np.uint64) >> shift).size)
