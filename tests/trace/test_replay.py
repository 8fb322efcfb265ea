"""The replay: problems of every kind, true page tables, platforms, both modes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.platform import load_default
from vcmm.trace import (
    PROBLEM_KINDS,
    Replayer,
    TraceError,
    attribute,
    boot,
    parse_text,
    replay,
    replay_text,
)

from .lines import (
    dma_alloc_line,
    dma_free_line,
    dma_map_line,
    dma_unmap_line,
    fault_line,
    header,
    map_line,
    trace,
    unmap_line,
)

A, B = "0000:00:02.0", "0000:00:03.0"
K4 = 0x1000


def mapped(iova: int, pa: int, size: int, dev: str = A, **h: object) -> list[str]:
    return [map_line(iova, pa, size, **h), dma_map_line(dev, iova, size, pa, **h)]


def unmapped(iova: int, size: int, dev: str = A, **h: object) -> list[str]:
    return [unmap_line(iova, size, **h), dma_unmap_line(dev, iova, size, **h)]


def kinds(text: str, **options: object) -> list[tuple[str, int]]:
    report = replay_text(text, **options)  # type: ignore[arg-type]
    return [(p.kind, p.line) for p in report.problems]


def test_clean_trace_has_no_problems() -> None:
    report = replay_text(trace(*mapped(0xFFFFF000, 0x81000000, K4), *unmapped(0xFFFFF000, K4)))
    assert report.problems == [] and report.skipped == []
    assert report.events == 4
    st = report.devices[A]
    assert (st.map, st.unmap, st.mapped_bytes_peak, st.live_at_end) == (1, 1, K4, 0)


def test_double_unmap_names_the_first_unmap() -> None:
    text = trace(*mapped(0xFFFFF000, 0x81000000, K4), *unmapped(0xFFFFF000, K4),
                 *unmapped(0xFFFFF000, K4))  # fmt: skip
    report = replay_text(text)
    (p,) = report.problems
    assert (p.kind, p.line, p.device, p.iova) == ("double-unmap", 7, A, 0xFFFFF000)
    assert "already unmapped at line 5" in p.detail


def test_unmap_of_never_mapped_and_unmaps_before_maps() -> None:
    """A trace whose unmap precedes its map: the unmap is of nothing, the map leaks."""
    text = trace(*unmapped(0x5000, K4), *mapped(0x5000, 0x81000000, K4))
    assert kinds(text) == [("unmap-unmapped", 3), ("leak", 5)]


def test_overlapping_map_keeps_the_first_mapping() -> None:
    text = trace(*mapped(0x10000, 0x81000000, 0x4000), *mapped(0x12000, 0x82000000, K4))
    report = replay_text(text)
    assert [(p.kind, p.line) for p in report.problems] == [
        ("leak", 3), ("overlapping-map", 5)]  # fmt: skip
    assert "mapped by 0000:00:02.0 at line 3" in report.problems[1].detail


def test_faults_after_unmap_and_on_unmapped() -> None:
    text = trace(
        *mapped(0x20000, 0x81000000, 0x2000),
        *unmapped(0x20000, 0x2000),
        fault_line(A, 0x21010, 0x1),
        fault_line(A, 0x90000, 0x0),
        fault_line(B, 0x20000, 0x0),  # another domain never mapped it
    )
    report = replay_text(text)
    got = [(p.kind, p.line, p.device) for p in report.problems]
    assert got == [("fault-after-unmap", 7, A), ("fault-unmapped", 8, A), ("fault-unmapped", 9, B)]
    detail = report.problems[0].detail
    assert "write fault" in detail and "unmapped at line 5" in detail
    assert "translation fault" in detail  # the real table walk agrees
    assert report.devices[A].faults == 2


def test_fault_at_a_mapped_address_is_no_problem() -> None:
    assert kinds(trace(*mapped(0x20000, 0x81000000, K4), fault_line(A, 0x20000, 1),
                       *unmapped(0x20000, K4))) == []  # fmt: skip


def test_every_kind_is_reachable() -> None:
    text = trace(
        *unmapped(0x5000, K4),
        *mapped(0x10000, 0x81000000, K4),
        *mapped(0x10000, 0x82000000, K4),
        *unmapped(0x10000, K4),
        *unmapped(0x10000, K4),
        fault_line(A, 0x10000, 0),
        fault_line(A, 0x70000, 0),
        *mapped(0x30000, 0x83000000, K4),
    )
    assert {k for k, _ in kinds(text)} == set(PROBLEM_KINDS)


def test_domains_reuse_iovas() -> None:
    text = trace(*mapped(0xFFFFF000, 0x81000000, K4, A), *mapped(0xFFFFF000, 0x82000000, K4, B),
                 *unmapped(0xFFFFF000, K4, A), *unmapped(0xFFFFF000, K4, B))  # fmt: skip
    assert kinds(text) == []


def _replayer(text: str, **options: object) -> Replayer:
    items = list(attribute(parse_text(text)))
    replayer = Replayer(boot(None, items), **options)  # type: ignore[arg-type]
    replayer.feed(items)
    replayer.finish()
    return replayer


def test_tables_hold_the_traced_translations() -> None:
    """After the replay the device's VMSAv8-64 table translates as the trace mapped."""
    text = trace(
        *mapped(0x40000000, 0x88000000, K4),
        *mapped(0x40001000, 0x8A000000, 0x2000),
        *mapped(0x7FE00000, 0x90000000, K4),
    )
    rep = _replayer(text)
    table = rep.system.device(A).ctx.low_table
    assert table.walk(0x40000123).pa == 0x88000123
    assert table.walk(0x40002FFF).pa == 0x8A001FFF
    assert table.walk(0x7FE00010).pa == 0x90000010
    assert not table.walk(0x40003000).ok


def test_table_bytes_peak_counts_the_four_level_tables() -> None:
    """VMSAv8-64, 4 KiB granule, 48-bit input: four levels of 4 KiB tables (ARM ARM D8).

    One page needs root, L1, L2 and L3 tables: 16 KiB.  A page in another GiB adds an
    L2 and an L3 (24 KiB), a 2 MiB block at level 2 needs no L3 table (12 KiB), and
    the peak stays after the unmaps free tables.
    """
    one = replay_text(trace(*mapped(0x40000000, 0x80000000, K4)))
    assert one.devices[A].table_bytes_peak == 16 * 1024
    two = replay_text(trace(*mapped(0x40000000, 0x80000000, K4), *unmapped(0x40000000, K4),
                            *mapped(0x80000000, 0x80000000, K4),
                            *mapped(0x40000000, 0x80000000, K4)))  # fmt: skip
    assert two.devices[A].table_bytes_peak == 24 * 1024
    block = replay_text(trace(*mapped(0x40000000, 0x80000000, 0x200000)))
    assert block.devices[A].table_bytes_peak == 12 * 1024


def test_contiguous_maps_are_written_as_one_run() -> None:
    """Top-down IOVAs with physically contiguous pages: one table call for three maps."""
    text = trace(*mapped(0xFFFFE000, 0x81001000, K4), *mapped(0xFFFFD000, 0x81000000, K4),
                 *mapped(0xFFFFF000, 0x81002000, K4))  # fmt: skip
    report = _replayer(text).report
    assert report.table_calls == 1
    assert replay_text(text, tables=False).devices[A].table_bytes_peak is None


def test_iovas_past_the_input_range_are_skipped() -> None:
    report = replay_text(trace(*mapped(1 << 48, 0x81000000, K4), *mapped(0x1000, 0x80000, 0x800)))
    reasons = [(s.line, s.reason) for s in report.skipped]
    assert reasons[0][0] == 3 and "48-bit input range" in reasons[0][1]
    assert reasons[1][0] == 5 and "4 KiB granule" in reasons[1][1]


def test_on_the_default_platform() -> None:
    """32-bit ARMv7 SMMUs, a device behind no IOMMU, a device the platform lacks."""
    text = trace(
        *mapped(0x100000, 0x81000000, K4, "vcodec_a_mm1"),
        *mapped(0x1_0000_0000, 0x81000000, K4, "vcodec_a_mm1"),
        *mapped(0x100000, 0x81000000, K4, "dsp"),
        *mapped(0x100000, 0x81000000, K4, A),
    )
    report = replay_text(text, platform=load_default())
    assert report.devices["vcodec_a_mm1"].map == 1
    assert [s.line for s in report.skipped] == [5, 7, 9]
    assert "32-bit input range" in report.skipped[0].reason
    assert "not behind an IOMMU" in report.skipped[1].reason
    assert "not on platform msm-default" in report.skipped[2].reason


def test_reallocate_places_under_the_mask_and_finds_the_same_problems() -> None:
    text = trace(
        *mapped(0x12340000, 0x81000000, 0x4000),
        dma_free_line(A, 0x12340000, 0x4000),
        unmap_line(0x12340000, 0x4000),
        map_line(0x55550000, 0x82000000, 0x2000),
        dma_alloc_line(A, 0x55550000, 0x2000),
        *unmapped(0x12340000, 0x4000),
    )
    traced = replay_text(text)
    moved = replay_text(text, reallocate=True)
    assert [(p.kind, p.line) for p in moved.problems] == [
        (p.kind, p.line) for p in traced.problems] == [("leak", 7), ("double-unmap", 9)]  # fmt: skip
    place = moved.placements[A]
    assert place.maps == 2
    assert place.vcmm_high is not None and place.vcmm_high <= 1 << 32
    assert moved.to_dict()["placements"][A]["trace_range"] == [0x12340000, 0x55552000]
    rep = _replayer(text, reallocate=True)
    table = rep.system.device(A).ctx.low_table
    live = sorted((e.va, e.pa, e.size) for e in table.mappings())
    assert [pa for _, pa, _ in live] == [0x82000000, 0x82001000]  # the live one, moved
    assert place.vcmm_low is not None and place.vcmm_low <= live[0][0] < place.vcmm_high


def test_strict_names_the_first_skipped_line() -> None:
    text = trace(*mapped(0x1000, 0x81000000, K4), "not a trace line")
    with pytest.raises(TraceError, match=r"line 5: not an ftrace event line .*--strict"):
        replay_text(text, strict=True)
    assert [s.line for s in replay_text(text).skipped] == [5]


def test_json_shape() -> None:
    data = replay_text(trace(*mapped(0x1000, 0x81000000, K4), "junk")).to_dict()
    assert set(data) >= {"events", "skipped", "devices", "problems"}
    assert data["skipped"] == [{"line": 5, "reason": data["skipped"][0]["reason"]}]
    assert set(data["devices"][A]) >= {
        "map", "unmap", "mapped_bytes_peak", "live_at_end", "table_bytes_peak"}  # fmt: skip
    assert data["problems"][0] == {
        "kind": "leak", "line": 3, "device": A, "iova": 0x1000,
        "detail": data["problems"][0]["detail"]}  # fmt: skip


def test_bad_arguments() -> None:
    with pytest.raises(TraceError, match="needs a System"):
        Replayer("system")  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="a trace is text"):
        replay_text(42)  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="give text to replay_text"):
        replay(trace())  # type: ignore[arg-type]
    with pytest.raises(TraceError, match="is not a parsed trace event"):
        replay([1, 2])  # type: ignore[list-item]


def test_merged_small_maps_keep_small_pages() -> None:
    """512 separate 4 KiB maps filling a 2 MiB-aligned region stay 4 KiB pages (the
    kernel mapped them one call each), written as one run; a 2 MiB map alone is a block."""
    lines = [
        line
        for k in range(512)
        for line in mapped(0x40000000 + k * K4, 0x80000000 + k * K4, K4, pid=5)
    ]
    rep = _replayer(trace(*lines))
    assert rep.report.table_calls == 1
    table = rep.system.device(A).ctx.low_table
    assert table.walk(0x40123000).page_size == K4
    assert rep.report.devices[A].table_bytes_peak == 16 * 1024
    block = _replayer(trace(*mapped(0x40000000, 0x80000000, 0x200000)))
    assert block.system.device(A).ctx.low_table.walk(0x40123000).page_size == 0x200000


BOARD = {
    "#address-cells": 1,
    "#size-cells": 1,
    "model": "trace board",
    "memory@40000000": {"device_type": "memory", "reg": [0x4000_0000, 0x1000_0000]},
    "iommu@1000": {
        "compatible": "arm,mmu-500",
        "reg": [0x1000, 0x10000],
        "#iommu-cells": 1,
        "#global-interrupts": 0,
        "phandle": 1,
    },
    "usb@20000": {"reg": [0x20000, 0x100], "iommus": [1, 3]},
    "dma@30000": {"reg": [0x30000, 0x100], "iommus": [1, 3]},  # same stream: same group
    "gpu@40000": {"reg": [0x40000, 0x100], "iommus": [1, 5]},
}


def test_devicetree_groups_share_a_domain(make_dtb: Callable[..., str]) -> None:
    """Linux names from the devicetree; two masters of one IOMMU group share a domain,
    so their maps of one IOVA overlap, while another group's domain reuses it freely."""
    text = trace(
        *mapped(0x100000, 0x48000000, K4, "20000.usb"),
        *mapped(0x100000, 0x49000000, K4, "30000.dma"),
        *mapped(0x100000, 0x4A000000, K4, "40000.gpu"),
    )
    report = replay_text(text, platform=make_dtb(BOARD))
    assert report.platform == "board"  # named after the file
    assert [(p.kind, p.line, p.device) for p in report.problems] == [
        ("leak", 3, "20000.usb"),
        ("overlapping-map", 5, "30000.dma"),
        ("leak", 7, "40000.gpu"),
    ]


GOOD = [
    *mapped(0x10000, 0x81000000, K4),
    *unmapped(0x10000, K4),
    fault_line(A, 0x10000, 1),
]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(GOOD),
            st.sampled_from(GOOD).map(lambda s: s[: len(s) // 2]),  # truncated
            st.text(alphabet=st.characters(blacklist_characters="\x00\r\n"), max_size=80),
        ),
        max_size=12,
    )
)
def test_any_text_replays_without_a_traceback(lines: list[str]) -> None:
    """Garbage, truncated and shuffled lines: every unusable line is a skip with a
    1-based number inside the file, never an exception."""
    text = "\n".join(lines) + "\n"
    report = replay_text(text)
    numbers = [s.line for s in report.skipped]
    assert all(1 <= n <= len(lines) for n in numbers)
    assert numbers == sorted(numbers)
    assert report.events + len(report.skipped) <= len(lines)


def test_trace_groups_share_a_domain_on_the_generic_platform() -> None:
    """add_device_to_group puts two devices in group 7: one domain, so their maps of
    one IOVA overlap; a third device in group 8 has a domain of its own."""
    groups = [
        header() + f"add_device_to_group: IOMMU: groupID=7 device={A}",
        header() + f"add_device_to_group: IOMMU: groupID=7 device={B}",
        header() + "add_device_to_group: IOMMU: groupID=8 device=0000:00:04.0",
    ]
    maps = [
        *mapped(0x100000, 0x81000000, K4, A),
        *mapped(0x100000, 0x82000000, K4, B),
        *mapped(0x100000, 0x83000000, K4, "0000:00:04.0"),
    ]
    grouped = replay_text(trace(*groups, *maps))
    assert [(p.kind, p.line) for p in grouped.problems] == [
        ("leak", 6),
        ("overlapping-map", 8),
        ("leak", 10),
    ]
    assert [p.kind for p in replay_text(trace(*maps)).problems] == ["leak"] * 3
