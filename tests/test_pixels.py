"""Pixel formats: plane sizes from the formats' definitions (V4L2's documented sizes),
and the same bytes as the workload layer's frame layouts where both know a format."""

from __future__ import annotations

import pytest

from vcmm.errors import InvalidArgumentError
from vcmm.pixels import FORMATS, TILE_64X32, layout, pixel_format
from vcmm.workload.patterns import FrameFormat


@pytest.mark.parametrize(
    ("fmt", "width", "height", "size"),
    [
        ("nv12", 1920, 1080, 1920 * 1080 * 3 // 2),  # 12 bits per pixel
        ("i420", 640, 480, 640 * 480 * 3 // 2),
        ("p010", 1920, 1080, 1920 * 1080 * 3),  # 16-bit samples, 4:2:0
        ("yuyv", 640, 480, 640 * 480 * 2),  # 4:2:2 packed, 2 bytes per pixel
        ("rgba8888", 1920, 1080, 1920 * 1080 * 4),
        ("rgb565", 320, 240, 320 * 240 * 2),
        ("y8", 100, 10, 1000),
    ],
)
def test_linear_sizes_are_the_formats_bits_per_pixel(
    fmt: str, width: int, height: int, size: int
) -> None:
    assert layout(fmt, width, height).size == size


def test_nv12_chroma_shares_the_luma_pitch_and_i420_halves_it() -> None:
    nv12 = layout("nv12", 1280, 720, bytes_per_row_divisor=256)
    assert [p.bytes_per_row for p in nv12.planes] == [1280, 1280]
    assert [p.offset for p in nv12.planes] == [0, 1280 * 720]
    wide = layout("nv12", 1000, 10, bytes_per_row_divisor=64)
    assert [p.bytes_per_row for p in wide.planes] == [1024, 1024]
    assert wide.size == 1024 * 10 + 1024 * 5
    i420 = layout("i420", 1000, 10, bytes_per_row_divisor=16)
    assert [p.bytes_per_row for p in i420.planes] == [1008, 512, 512]


def test_the_64x32_tile_pads_rows_and_row_counts() -> None:
    tiled = layout("nv12", 1920, 1080, modifier=TILE_64X32)
    # 1080 luma rows -> 1088 (34 tiles); 540 chroma rows -> 544 (17 tiles).
    assert [(p.bytes_per_row, p.rows) for p in tiled.planes] == [(1920, 1088), (1920, 544)]
    assert tiled.size == 1920 * (1088 + 544)


@pytest.mark.parametrize("fmt", ["nv12", "nv21", "i420", "y8", "rgb565", "rgb888", "rgba8888"])
@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (1280, 720), (64, 2), (1282, 7)])
def test_linear_layouts_match_the_workload_frame_layouts(fmt: str, width: int, height: int) -> None:
    ours = layout(fmt, width, height)
    theirs = FrameFormat.build(width, height, fmt)
    assert ours.size == theirs.size
    assert [(p.offset, p.bytes_per_row, p.rows) for p in ours.planes] == [
        (p.offset, p.stride, p.rows) for p in theirs.planes
    ]


def test_a_minimum_pitch_raises_every_plane() -> None:
    image = layout("nv12", 100, 4, min_bytes_per_row=128)
    assert image.bytes_per_row == 128 and image.size == 128 * 4 + 128 * 2


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        (("nv13", 8, 8), {}, "unknown pixel format 'nv13'"),
        ((12, 8, 8), {}, "is not a string"),
        (("nv12", 0, 8), {}, "width 0 must be >= 1"),
        (("nv12", 8, 8), {"modifier": "afbc"}, "not one of linear, tile-64x32"),
        (("rgba8888", 8, 8), {"modifier": TILE_64X32}, "cannot be laid out tile-64x32"),
        (("nv12", 8, 8), {"bytes_per_row_divisor": 0}, "bytes_per_row_divisor 0"),
        (("nv12", 8, 8), {"min_bytes_per_row": -1}, "min_bytes_per_row -1"),
    ],
)
def test_bad_layouts_say_what_is_wrong(
    args: tuple[object, ...], kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        layout(*args, **kwargs)  # type: ignore[arg-type]


def test_format_lookup_ignores_case_and_lists_the_known() -> None:
    assert pixel_format("NV12") is FORMATS["nv12"]
    with pytest.raises(InvalidArgumentError, match="known: nv12, nv21"):
        pixel_format("bgr24")
