"""The parser reads every documented variant of the trace format, and says why not."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcmm.trace import (
    DmaEvent,
    DmaRole,
    GroupEvent,
    IommuMap,
    IommuUnmap,
    IoPageFault,
    Skipped,
    TraceError,
    parse_line,
    parse_text,
    read_trace,
)

from .lines import (
    dma_alloc_line,
    dma_free_line,
    dma_map_line,
    dma_map_sg_line,
    dma_unmap_line,
    dma_unmap_sg_line,
    fault_line,
    header,
    map_line,
    trace,
    unmap_line,
)

DEV = "0000:00:02.0"


@pytest.mark.parametrize("flags", ["d..1", "dNh1.", "d..2.1.", None])
@pytest.mark.parametrize("tgid", [None, "1234", "-------"])
@pytest.mark.parametrize(
    "comm", ["kworker/u16:2", "Chrome_IOThread", "my (odd) task-name", "a b/c-d", "<idle>"]
)
def test_header_variants(flags: str | None, tgid: str | None, comm: str) -> None:
    line = map_line(0xFFFFF000, 0x81234000, 4096, comm=comm, pid=812, cpu=3, ts=5.25,
                    flags=flags, tgid=tgid)  # fmt: skip
    ev = parse_line(7, line)
    assert isinstance(ev, IommuMap)
    assert (ev.line, ev.comm, ev.pid, ev.cpu, ev.ts) == (7, comm, 812, 3, 5.25)
    assert (ev.iova, ev.paddr, ev.size) == (0xFFFFF000, 0x81234000, 4096)


@pytest.mark.parametrize("end", [True, False])
def test_map_and_unmap_with_and_without_end(end: bool) -> None:
    m = parse_line(1, map_line(0x1000_0000_0000, 0x9000_0000, 0x3000, end=end))
    u = parse_line(2, unmap_line(0x1000_0000_0000, 0x3000, 0x2000, end=end))
    assert isinstance(m, IommuMap) and (m.iova, m.paddr, m.size) == (1 << 44, 0x90000000, 0x3000)
    assert isinstance(u, IommuUnmap) and (u.iova, u.size, u.unmapped) == (1 << 44, 0x3000, 0x2000)


def test_end_that_is_not_iova_plus_size_is_skipped() -> None:
    line = header() + (
        "map: IOMMU: iova=0x0000000000001000 - 0x0000000000009000 "
        "paddr=0x0000000080000000 size=4096"
    )
    ev = parse_line(4, line)
    assert isinstance(ev, Skipped) and ev.line == 4
    assert "end 0x9000 is not iova 0x1000 + size 0x1000" in ev.reason


def test_fault_with_and_without_driver() -> None:
    ev = parse_line(1, fault_line(DEV, 0xDEAD000, 0x1))
    assert isinstance(ev, IoPageFault)
    assert (ev.driver, ev.device, ev.iova, ev.write) == ("arm-smmu", DEV, 0xDEAD000, True)
    bare = parse_line(2, fault_line(DEV, 0xDEAD000, 0x0, driver=""))
    assert isinstance(bare, IoPageFault) and bare.driver == "" and not bare.write


def test_group_events() -> None:
    add = parse_line(1, header() + f"add_device_to_group: IOMMU: groupID=7 device={DEV}")
    attach = parse_line(2, header() + f"attach_device_to_domain: IOMMU: device={DEV}")
    assert isinstance(add, GroupEvent) and (add.name, add.device, add.group) == (
        "add_device_to_group", DEV, 7)  # fmt: skip
    assert isinstance(attach, GroupEvent) and attach.group is None


@pytest.mark.parametrize("event", ["dma_map_page", "dma_map_phys", "dma_map_resource"])
def test_single_dma_maps(event: str) -> None:
    ev = parse_line(1, dma_map_line(DEV, 0xFFFFF010, 100, 0x81234010, event=event,
                                    attrs="WEAK_ORDERING|SKIP_CPU_SYNC"))  # fmt: skip
    assert isinstance(ev, DmaEvent) and ev.role is DmaRole.CLAIMS_MAPS
    assert (ev.device, ev.direction, ev.dma_addr, ev.size, ev.phys) == (
        DEV, "TO_DEVICE", 0xFFFFF010, 100, 0x81234010)  # fmt: skip


@pytest.mark.parametrize(
    ("event", "role"),
    [("dma_unmap_page", DmaRole.CLAIMS_UNMAPS), ("dma_unmap_phys", DmaRole.CLAIMS_UNMAPS),
     ("dma_sync_single_for_cpu", DmaRole.NEUTRAL)],
)  # fmt: skip
def test_single_dma_unmaps_and_syncs(event: str, role: DmaRole) -> None:
    ev = parse_line(1, dma_unmap_line(DEV, 0xFFFFF000, 4096, event=event))
    assert isinstance(ev, DmaEvent) and ev.role is role and ev.dma_addr == 0xFFFFF000


@pytest.mark.parametrize("counts", [False, True])
def test_map_sg_arrays(counts: bool) -> None:
    line = dma_map_sg_line(DEV, [0xFFF00000, 0xFFF10000], [0x2000, 0x1000],
                           [0x81000000, 0x82000000, 0x83000000], counts=counts)  # fmt: skip
    ev = parse_line(1, line)
    assert isinstance(ev, DmaEvent) and ev.role is DmaRole.CLAIMS_MAPS
    assert ev.dma_addrs == (0xFFF00000, 0xFFF10000) and ev.sizes == (0x2000, 0x1000)
    assert ev.phys_addrs == (0x81000000, 0x82000000, 0x83000000)
    assert ev.nents == ((3, 3) if counts else None)


def test_truncated_sg_and_arrays_with_spaces() -> None:
    line = header() + (
        f"dma_map_sg: {DEV} dir=BIDIRECTIONAL nents=128/300 ents=2/2 [TRUNCATED] "
        "dma_addrs={0x1000, 0x3000} sizes={0x1000, 0x2000} phys_addrs={0x80000000} attrs="
    )
    ev = parse_line(1, line)
    assert isinstance(ev, DmaEvent)
    assert ev.nents == (128, 300) and ev.truncated and ev.dma_addrs == (0x1000, 0x3000)


def test_alloc_free_and_unmap_sg() -> None:
    old = parse_line(1, dma_alloc_line(DEV, 0xFFFF0000, 8192))
    new = parse_line(2, dma_alloc_line(DEV, 0xFFFF0000, 8192, direction=True))
    free = parse_line(3, dma_free_line(DEV, 0xFFFF0000, 8192))
    unmap_sg = parse_line(4, dma_unmap_sg_line(DEV, [0x81000000]))
    assert isinstance(old, DmaEvent) and old.direction == "" and old.size == 8192
    assert isinstance(new, DmaEvent) and new.direction == "BIDIRECTIONAL"
    assert isinstance(free, DmaEvent) and free.role is DmaRole.OPENS_UNMAPS
    assert isinstance(unmap_sg, DmaEvent) and unmap_sg.phys_addrs == (0x81000000,)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (map_line(0x1000, 0x80000000, 4096)[:-30], "no paddr= field (a truncated line?)"),
        (header() + "sched_switch: prev_comm=a", "event 'sched_switch' is not an iommu"),
        ("random garbage", "not an ftrace event line"),
        ("CPU:2 [LOST 1234 EVENTS]", "the ring buffer lost events"),
        (header() + "map: IOMMU: iova=0xzz paddr=0x1000 size=4096", "iova='0xzz'"),
        (header() + "dma_map_sg: dev dir=TO_DEVICE dma_addrs={0x1000,0x2", "dma_addrs="),
        (header() + "io_page_fault: IOMMU:arm-smmu", "io_page_fault body"),
    ],
)
def test_unusable_lines_say_why(line: str, reason: str) -> None:
    ev = parse_line(9, line)
    assert isinstance(ev, Skipped) and ev.line == 9
    assert reason in ev.reason


def test_comments_and_blanks_are_no_events_even_when_they_look_like_one() -> None:
    """Any line whose first non-blank character is ``#`` is a comment, also an indented
    one that holds a whole event line (a commented-out event is not replayed)."""
    event = map_line(0x1000, 0x80000000, 4096)
    assert parse_line(1, event) is not None
    for line in ("#" + event, "   #" + event.lstrip(), "\t# tracer: nop", "", "   ", "\r"):
        assert parse_line(1, line) is None, line


def test_line_numbers_are_one_based_and_count_comments() -> None:
    items = parse_text(trace(map_line(0x1000, 0x80000000, 4096), "", "junk"))
    assert [i.line for i in items] == [3, 5]


def test_binary_file_is_refused(tmp_path: Path) -> None:
    blob = tmp_path / "trace.dat"
    blob.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)))
    with pytest.raises(TraceError, match="not a text trace"):
        read_trace(blob)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"\xff\xfe\xfa not utf-8 " * 10)
    with pytest.raises(TraceError, match="not UTF-8"):
        read_trace(latin)
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.txt")
    with pytest.raises(TraceError, match="must be a str or path"):
        read_trace(3)  # type: ignore[arg-type]
