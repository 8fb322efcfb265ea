"""The replay against a page-by-page reference model, on random traces.

The reference keeps, per device (each its own domain on the generic platform), which
line mapped every 4 KiB page and which line last unmapped it, and applies the rules
of docs/TRACE.md literally, one page at a time.  The replay (interval maps, page
tables) must find the same problems on the same lines, the same peaks, and leave
the device's real page table translating exactly the pages the model holds.
"""

from __future__ import annotations

from collections.abc import Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.trace import Replayer, attribute, boot, parse_text

from .lines import (
    dma_map_line,
    dma_map_sg_line,
    dma_unmap_line,
    fault_line,
    map_line,
    trace,
    unmap_line,
)

DEVICES = ("0000:00:01.0", "0000:00:02.0")
BASE, PAGE = 0x40000000, 0x1000
#: What one last-level VMSAv8-64 table translates: the first pages land in two of them.
SPAN = 0x200000

op = st.tuples(
    st.sampled_from(["map", "sg", "unmap", "fault"]),
    st.sampled_from(DEVICES),
    st.integers(0, 15),  # first page: 0-7 in one last-level table, 8-15 in the next
    st.integers(1, 4),  # pages
)


def _lines(ops: list[tuple[str, str, int, int]]) -> list[str]:
    out = []
    for kind, dev, first, n in ops:
        iova, size = BASE + (first // 8) * SPAN + (first % 8) * PAGE, n * PAGE
        pid = DEVICES.index(dev) + 10
        if kind == "map":
            pa = 0x80000000 + len(out) * 0x10000
            out += [map_line(iova, pa, size, pid=pid), dma_map_line(dev, iova, size, pa, pid=pid)]
        elif kind == "sg":  # iommu_map_sg: one map a page, then the dma_map_sg
            pa = 0x80000000 + len(out) * 0x10000
            out += [map_line(iova + k * PAGE, pa + k * PAGE, PAGE, pid=pid) for k in range(n)]
            out.append(dma_map_sg_line(dev, [iova], [size], [pa], pid=pid))
        elif kind == "unmap":
            out += [unmap_line(iova, size, pid=pid), dma_unmap_line(dev, iova, size, pid=pid)]
        else:
            out.append(fault_line(dev, iova + 0x10, 1, pid=pid))
    return out


def _table_bytes(pages: Iterable[int]) -> int:
    """VMSAv8-64, 4 KiB granule (ARM ARM D8): the root, plus one table per distinct
    VA[47:39] (level 1), VA[47:30] (level 2) and VA[47:21] (level 3) of the pages."""
    vas = [BASE + p * PAGE for p in pages]
    return PAGE * (1 + sum(len({va >> shift for va in vas}) for shift in (39, 30, 21)))


def _reference(lines: list[str]) -> tuple[set[tuple[str, int]], dict[str, int], dict]:
    live: dict[str, dict[int, tuple[int, int]]] = {d: {} for d in DEVICES}  # page->(line, pa)
    gone: dict[str, dict[int, int]] = {d: {} for d in DEVICES}
    problems: set[tuple[str, int]] = set()
    mapped = dict.fromkeys(DEVICES, 0)
    peak = dict.fromkeys(DEVICES, 0)
    table_peak = dict.fromkeys(DEVICES, PAGE)  # the root table alone
    # Linux's io-pgtable keeps a table its last unmap emptied: the tables are those of
    # every page ever mapped
    ever: dict[str, set[int]] = {d: set() for d in DEVICES}
    items = list(attribute(parse_text(trace(*lines))))
    for ev in items:
        name = type(ev).__name__
        if name == "IommuMap":
            pages = range((ev.iova - BASE) // PAGE, (ev.iova + ev.size - BASE) // PAGE)
            if any(p in live[ev.device] for p in pages):
                problems.add(("overlapping-map", ev.line))
                continue
            for k, p in enumerate(pages):
                live[ev.device][p] = (ev.line, ev.paddr + k * PAGE)
                gone[ev.device].pop(p, None)
            mapped[ev.device] += ev.size
            peak[ev.device] = max(peak[ev.device], mapped[ev.device])
            ever[ev.device].update(pages)
            table_peak[ev.device] = _table_bytes(ever[ev.device])
        elif name == "IommuUnmap":
            pages = range((ev.iova - BASE) // PAGE, (ev.iova + ev.size - BASE) // PAGE)
            holes = [p for p in pages if p not in live[ev.device]]
            if holes:
                again = any(p in gone[ev.device] for p in holes)
                problems.add(("double-unmap" if again else "unmap-unmapped", ev.line))
            for p in pages:
                if p in live[ev.device]:
                    del live[ev.device][p]
                    gone[ev.device][p] = ev.line
                    mapped[ev.device] -= PAGE
        elif name == "IoPageFault":
            p = (ev.iova - BASE) // PAGE
            if p not in live[ev.device]:
                kind = "fault-after-unmap" if p in gone[ev.device] else "fault-unmapped"
                problems.add((kind, ev.line))
    for dev in DEVICES:
        problems |= {("leak", line) for line, _ in live[dev].values()}
    peak.update({f"table {d}": table_peak[d] for d in DEVICES})
    return problems, peak, live


@settings(max_examples=40, deadline=None)
@given(st.lists(op, min_size=1, max_size=14))
def test_replay_matches_the_reference(ops: list[tuple[str, str, int, int]]) -> None:
    lines = _lines(ops)
    expected, peak, live = _reference(lines)
    items = list(attribute(parse_text(trace(*lines))))
    replayer = Replayer(boot(None, items))
    replayer.feed(items)
    report = replayer.finish()
    assert {(p.kind, p.line) for p in report.problems} == expected
    assert len(report.problems) == len(expected)
    for dev in DEVICES:
        if dev in report.devices:
            assert report.devices[dev].mapped_bytes_peak == peak[dev]
            assert report.devices[dev].table_bytes_peak == peak[f"table {dev}"]
        if not any(d == dev for _, d, _, _ in ops):
            continue
        table = replayer.system.device(dev).ctx.low_table
        for page in [r * SPAN // PAGE + k for r in range(2) for k in range(12)]:
            walk = table.walk(BASE + page * PAGE)
            if page in live[dev]:
                assert walk.pa == live[dev][page][1]
            else:
                assert not walk.ok
