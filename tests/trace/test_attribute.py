"""Maps and unmaps get their device from the dma_* event of the same task and CPU."""

from __future__ import annotations

from vcmm.trace import Attribution, IommuMap, IommuUnmap, Skipped, attribute, parse_text

from .lines import (
    dma_alloc_line,
    dma_free_line,
    dma_map_line,
    dma_map_sg_line,
    dma_unmap_line,
    dma_unmap_sg_line,
    header,
    map_line,
    trace,
    unmap_line,
)

A, B = "0000:00:02.0", "ff8d0000.usb"


def _run(text: str) -> list[object]:
    return list(attribute(parse_text(text)))


def _devices(items: list[object]) -> list[tuple[str, int, str | None]]:
    return [
        (type(i).__name__, i.line, i.device) for i in items if isinstance(i, IommuMap | IommuUnmap)
    ]


def test_map_before_dma_map_page_and_unmap_before_dma_unmap_page() -> None:
    items = _run(trace(
        map_line(0xFFFFF000, 0x81000000, 4096),
        dma_map_line(A, 0xFFFFF000, 4096, 0x81000000),
        unmap_line(0xFFFFF000, 4096),
        dma_unmap_line(A, 0xFFFFF000, 4096),
    ))  # fmt: skip
    assert _devices(items) == [("IommuMap", 3, A), ("IommuUnmap", 5, A)]
    assert [i.line for i in items] == [3, 4, 5, 6]  # trace order kept


def test_unmap_sg_and_free_precede_their_unmaps() -> None:
    items = _run(trace(
        map_line(0xFFF00000, 0x81000000, 0x2000),
        map_line(0xFFF02000, 0x85000000, 0x1000),
        dma_map_sg_line(A, [0xFFF00000], [0x3000], [0x81000000, 0x85000000]),
        map_line(0xFFFE0000, 0x90000000, 0x4000, cpu=1, pid=7),
        dma_alloc_line(B, 0xFFFE0000, 0x4000, cpu=1, pid=7),
        dma_unmap_sg_line(A, [0x81000000, 0x85000000]),
        unmap_line(0xFFF00000, 0x3000),
        dma_free_line(B, 0xFFFE0000, 0x4000, cpu=1, pid=7),
        unmap_line(0xFFFE0000, 0x4000, cpu=1, pid=7),
    ))  # fmt: skip
    assert _devices(items) == [
        ("IommuMap", 3, A), ("IommuMap", 4, A), ("IommuMap", 6, B),
        ("IommuUnmap", 9, A), ("IommuUnmap", 11, B),
    ]  # fmt: skip


def test_tasks_and_cpus_are_kept_apart() -> None:
    """Two tasks interleave; the same pid on another CPU is another stream."""
    items = _run(trace(
        map_line(0x1000, 0x81000000, 4096, pid=1, cpu=0),
        map_line(0x1000, 0x82000000, 4096, pid=2, cpu=1),
        map_line(0x5000, 0x83000000, 4096, pid=1, cpu=2),
        dma_map_line(B, 0x1000, 4096, 0x82000000, pid=2, cpu=1),
        dma_map_line(A, 0x1000, 4096, 0x81000000, pid=1, cpu=0),
        dma_map_line(B, 0x5000, 4096, 0x83000000, pid=1, cpu=2),
    ))  # fmt: skip
    assert _devices(items) == [("IommuMap", 3, A), ("IommuMap", 4, B), ("IommuMap", 5, B)]
    assert [i.line for i in items] == [3, 4, 5, 6, 7, 8]


def test_unattributed_maps_and_unmaps_are_skipped_with_reasons() -> None:
    items = _run(trace(
        map_line(0x1000, 0x81000000, 4096),
        dma_unmap_line(A, 0x9000, 4096),  # a dma event that claims no maps
        unmap_line(0x2000, 4096, pid=9),  # nothing follows it
    ))  # fmt: skip
    skipped = [i for i in items if isinstance(i, Skipped)]
    assert [s.line for s in skipped] == [3, 5]
    assert "next dma event of the task, line 4, is dma_unmap_page" in skipped[0].reason
    assert "no dma_unmap/dma_free event of the task came with it" in skipped[1].reason


def test_free_window_takes_only_unmaps_inside_the_freed_range() -> None:
    items = _run(trace(
        dma_free_line(A, 0xFFFE0000, 0x4000),
        unmap_line(0x10000, 0x1000),  # not the free's: it waits for its dma_unmap_page
        dma_unmap_line(B, 0x10000, 0x1000),
    ))  # fmt: skip
    assert _devices(items) == [("IommuUnmap", 4, B)]


def test_failed_map_sg_takes_both_maps_and_unmaps() -> None:
    items = _run(trace(
        map_line(0x1000, 0x81000000, 4096),
        unmap_line(0x1000, 4096),
        header() + f"dma_map_sg_err: {A} dir=TO_DEVICE dma_addrs={{0x81000000}} err=-12 attrs=",
    ))  # fmt: skip
    assert _devices(items) == [("IommuMap", 3, A), ("IommuUnmap", 4, A)]


def test_counts() -> None:
    att = Attribution()
    list(att.run(parse_text(trace(
        map_line(0x1000, 0x81000000, 4096),
        dma_map_line(A, 0x1000, 4096, 0x81000000),
        map_line(0x2000, 0x81000000, 4096),
    ))))  # fmt: skip
    assert (att.attributed, att.unattributed) == (1, 1)
