"""Access-pattern generators, checked against plain-Python reference loops and the
byte arithmetic of the frame formats (written out independently below)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import InvalidArgumentError
from vcmm.workload.patterns import (
    FrameFormat,
    Plane,
    cover,
    distinct_pages,
    linear,
    random_bursts,
    raster,
    repeat_frames,
    tiled,
)


def ref_cover(segments: list[tuple[int, int]], burst: int) -> list[int]:
    """Reference: every aligned burst overlapping each segment, segment by segment."""
    out = []
    for start, length in segments:
        addr = start - start % burst
        while addr < start + length:
            out.append(addr)
            addr += burst
    return out


def ref_tiled(plane: Plane, tw: int, th: int, burst: int) -> list[int]:
    segments = []
    for ty in range(math.ceil(plane.rows / th)):
        for tx in range(math.ceil(plane.width / tw)):
            for r in range(th):
                row = ty * th + r
                if row >= plane.rows:
                    continue
                col = tx * tw
                segments.append(
                    (plane.offset + row * plane.stride + col, min(tw, plane.width - col))
                )
    return ref_cover(segments, burst)


# -- frame formats ----------------------------------------------------------------------


def test_nv12_1080p_layout_is_luma_then_half_height_interleaved_chroma() -> None:
    frame = FrameFormat.parse("1920x1080 nv12")
    assert frame.size == 1920 * 1080 * 3 // 2 == 3_110_400
    luma, chroma = frame.planes
    assert (luma.name, luma.offset, luma.width, luma.rows, luma.stride) == (
        "luma",
        0,
        1920,
        1080,
        1920,
    )
    assert (chroma.offset, chroma.width, chroma.rows, chroma.stride) == (
        1920 * 1080,
        1920,
        540,
        1920,
    )


def test_i420_has_three_planes_with_quarter_size_chroma() -> None:
    frame = FrameFormat.parse("640x480 I420")
    y, u, v = frame.planes
    assert (y.offset, u.offset, v.offset) == (0, 640 * 480, 640 * 480 + 320 * 240)
    assert (u.width, u.rows, u.stride) == (320, 240, 320)
    assert frame.size == 640 * 480 * 3 // 2


def test_stride_pads_every_row_of_every_plane() -> None:
    frame = FrameFormat.parse("1920x1080 nv12", stride=2048)
    assert frame.size == 2048 * 1080 + 2048 * 540
    assert all(p.stride == 2048 and p.width == 1920 for p in frame.planes)


def test_packed_rgb_formats_use_bytes_per_pixel() -> None:
    assert FrameFormat.parse("100x10 rgba8888").size == 100 * 4 * 10
    assert FrameFormat.parse("100x10 argb8888").format == "rgba8888"
    assert FrameFormat.parse("100x10 rgb565").planes[0].width == 200


def test_odd_sizes_round_chroma_up() -> None:
    frame = FrameFormat.parse("5x3 nv12")
    assert frame.planes[1].rows == 2 and frame.planes[1].width == 6


@pytest.mark.parametrize(
    ("text", "stride", "needle"),
    [
        ("1920 nv12", None, "WIDTHxHEIGHT"),
        ("1920x1080 yuv999", None, "unknown pixel format 'yuv999'"),
        ("1920x1080 nv12", 1000, "stride 1000 is smaller"),
        ("0x1080 nv12", None, "width 0 must be >= 1"),
    ],
)
def test_bad_frame_sizes_are_refused_with_the_reason(
    text: str, stride: int | None, needle: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        FrameFormat.parse(text, stride=stride)


def test_plane_refuses_stride_below_width() -> None:
    with pytest.raises(InvalidArgumentError, match="stride 10 is smaller than the row width 20"):
        Plane("p", 0, 20, 2, 10)


# -- generators -----------------------------------------------------------------------------


def test_linear_covers_each_burst_once_in_order() -> None:
    stream = linear(4096, burst=64)
    assert stream.dtype == np.uint64
    assert stream.tolist() == list(range(0, 4096, 64))


def test_unaligned_segments_are_covered_by_the_aligned_bursts_they_touch() -> None:
    assert linear(10, start=100).tolist() == [64]
    assert linear(10, start=60).tolist() == [0, 64]
    assert cover([60, 200], [10, 1], 64).tolist() == [0, 64, 192]


@settings(max_examples=60, deadline=None)
@given(
    segments=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(1, 3000)), min_size=1, max_size=12
    ),
    burst_log=st.integers(0, 12),
)
def test_cover_matches_the_reference_loop(segments: list[tuple[int, int]], burst_log: int) -> None:
    burst = 1 << burst_log
    starts, lengths = zip(*segments, strict=True)
    assert cover(list(starts), list(lengths), burst).tolist() == ref_cover(segments, burst)


def test_no_burst_crosses_a_4k_page() -> None:
    stream = tiled(Plane("p", 3000, 5000, 40, 6000), 96, 8, burst=256)
    assert np.all(stream % 256 == 0)
    assert np.all((stream % 4096) + 256 <= 4096)


def test_raster_skips_the_padding_between_rows() -> None:
    plane = Plane("p", 128, 200, 3, 256)
    assert raster(plane, burst=64).tolist() == ref_cover(
        [(128 + r * 256, 200) for r in range(3)], 64
    )


def test_raster_of_an_unpadded_frame_is_a_linear_sweep() -> None:
    frame = FrameFormat.parse("1920x1080 nv12")
    stream = np.concatenate([raster(p) for p in frame.planes])
    assert np.array_equal(stream, linear(frame.size))


@pytest.mark.parametrize(("tw", "th"), [(64, 2), (64, 32), (100, 3), (7, 5)])
def test_tiled_matches_the_reference_loop_including_clipped_edge_tiles(tw: int, th: int) -> None:
    plane = Plane("p", 64, 150, 5, 192)
    assert tiled(plane, tw, th, burst=16).tolist() == ref_tiled(plane, tw, th, 16)


def test_a_64x32_tile_of_a_1080p_luma_plane_spans_15_pages() -> None:
    luma = FrameFormat.parse("1920x1080 nv12").planes[0]
    stream = tiled(luma, 64, 32)
    first_tile = stream[:32]
    assert first_tile.tolist() == [r * 1920 for r in range(32)]
    # 32 rows x 1920 bytes = 61440 bytes: pages 0..14 of 4 KiB.
    assert distinct_pages(first_tile, 4096) == 15
    # Same bursts as a raster scan, only the order differs.
    assert sorted(stream.tolist()) == sorted(raster(luma).tolist())


def test_random_bursts_are_seeded_aligned_and_inside_the_range() -> None:
    a = random_bursts(1 << 20, 5000, seed=7, start=4096)
    b = random_bursts(1 << 20, 5000, seed=7, start=4096)
    c = random_bursts(1 << 20, 5000, seed=8, start=4096)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 4096 and a.max() < 4096 + (1 << 20)
    assert np.all(a % 64 == 0)
    # Uniform over 256 pages: 5000 draws touch nearly all of them.
    assert distinct_pages(a, 4096) > 240


def test_repeat_frames_tiles_the_stream() -> None:
    s = linear(256)
    assert repeat_frames(s, 3).tolist() == s.tolist() * 3


@pytest.mark.parametrize("n", [1, 4095, 4096, 4097, 3_110_400])
@pytest.mark.parametrize("page", [4096, 65536, 1 << 20])
def test_a_linear_sweep_touches_ceil_n_over_s_pages(n: int, page: int) -> None:
    assert distinct_pages(linear(n), page) == math.ceil(n / page)


@pytest.mark.parametrize("burst", [0, 3, 8192, True, 1.5])
def test_bad_bursts_are_refused(burst: object) -> None:
    with pytest.raises(InvalidArgumentError, match="burst"):
        linear(4096, burst=burst)  # type: ignore[arg-type]


def test_bad_arguments_name_the_rule() -> None:
    with pytest.raises(InvalidArgumentError, match="length 0 must be >= 1"):
        linear(0)
    with pytest.raises(InvalidArgumentError, match="2 segment starts but 1 segment lengths"):
        cover([0, 1], [1])
    with pytest.raises(InvalidArgumentError, match="segment starts must be integers"):
        cover([1.5], [2])
    with pytest.raises(InvalidArgumentError, match="not a Plane"):
        raster("luma")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="count 0 must be >= 1"):
        random_bursts(4096, 0, seed=1)
    with pytest.raises(InvalidArgumentError, match="frames 0 must be >= 1"):
        repeat_frames(linear(64), 0)
