"""The batched table writes against one page-table call per map and unmap.

``Replayer(batch=False)`` calls the page table once per traced map and unmap, as the
kernel did; the batched writer (:mod:`vcmm.trace.tables`) holds changes back, merges
them into ``map_many`` calls, cancels map/unmap pairs that touch no table page and
writes unmaps late.  Whatever it does, every device's table must come out byte for
byte the same (the table pages of all contexts come from one table memory, so the
order of allocations across devices counts too), with the same problems, counts and
table peaks, on random traces of several devices sharing IOVAs, crossing last-level
tables, with block-sized maps, overlaps, double unmaps and faults in between.
"""

from __future__ import annotations

import random

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

DEVICES = ("0000:00:01.0", "0000:00:02.0", "0000:00:03.0")
PAGE, SPAN = 0x1000, 0x200000
BASE = 0x40000000

op = st.tuples(
    st.sampled_from(["map", "map", "sg", "below", "unmap", "unmap", "fault", "block"]),
    st.sampled_from(DEVICES),
    st.integers(0, 23),  # first page: 8 per last-level table, three tables
    st.integers(1, 10),  # pages: some maps cross into the next table
)


def _lines(ops: list[tuple[str, str, int, int]]) -> list[str]:
    out = []
    last = (BASE + SPAN, 0x90000000)  # the last map's iova and pa
    for kind, dev, first, n in ops:
        pid = DEVICES.index(dev) + 10
        iova = BASE + (first // 8) * SPAN + (first % 8) * PAGE
        size = n * PAGE
        if kind == "below":  # top-down: just below the last map in both addresses
            iova, pa = last[0] - size, last[1] - size
            last = (iova, pa)
            out += [map_line(iova, pa, size, pid=pid), dma_map_line(dev, iova, size, pa, pid=pid)]
        elif kind == "block":  # 2 MiB aligned in both: the kernel maps one block
            iova, size = BASE + 4 * SPAN + (first % 2) * SPAN, SPAN
            pa = 0x100000000 + (first % 3) * SPAN
            out += [map_line(iova, pa, size, pid=pid), dma_map_line(dev, iova, size, pa, pid=pid)]
        elif kind == "map":
            pa = 0x80000000 + len(out) * 0x10000
            last = (iova, pa)
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


def _both(text: str, *, reallocate: bool = False) -> list[Replayer]:
    items = list(attribute(parse_text(text)))
    out = []
    for batch in (True, False):
        replayer = Replayer(boot(None, items), batch=batch, reallocate=reallocate)
        replayer.feed(items)
        replayer.finish()
        out.append(replayer)
    return out


def _assert_same(batched: Replayer, single: Replayer) -> None:
    a, b = batched.report, single.report
    assert a.problems == b.problems
    assert a.skipped == b.skipped
    assert a.events == b.events
    assert {d: s.to_dict() for d, s in a.devices.items()} == {
        d: s.to_dict() for d, s in b.devices.items()
    }
    for device in a.devices:
        mine = batched.system.device(device).ctx.low_table.snapshot()
        theirs = single.system.device(device).ctx.low_table.snapshot()
        assert mine == theirs, device
    assert a.table_calls <= b.table_calls


@settings(max_examples=60, deadline=None)
@given(st.lists(op, min_size=1, max_size=40), st.booleans())
def test_batched_tables_equal_one_call_per_change(
    ops: list[tuple[str, str, int, int]], reallocate: bool
) -> None:
    """As traced and under ``--reallocate`` (vcmm's IOVAs: no unmap waits)."""
    _assert_same(*_both(trace(*_lines(ops)), reallocate=reallocate))


def _streaming(buffers: int, seed: int) -> str:
    """Buffers of 1-4 pages at top-down IOVAs on three devices, eight in flight each,
    as a network driver maps them: most map/unmap pairs never reach the table."""
    rng = random.Random(seed)
    lines: list[str] = []
    top = dict.fromkeys(DEVICES, 0xFFF00000)
    live: dict[str, list[tuple[int, int]]] = {d: [] for d in DEVICES}
    for i in range(buffers):
        dev = rng.choice(DEVICES)
        pid = DEVICES.index(dev) + 10
        size = PAGE * rng.choice((1, 1, 2, 4))
        iova = top[dev] = top[dev] - size
        pa = 0x80000000 + rng.randrange(1 << 16) * PAGE
        lines += [map_line(iova, pa, size, pid=pid), dma_map_line(dev, iova, size, pa, pid=pid)]
        live[dev].append((iova, size))
        if len(live[dev]) > 8:
            old, old_size = live[dev].pop(rng.randrange(3))  # nearly in order
            lines += [unmap_line(old, old_size, pid=pid),
                      dma_unmap_line(dev, old, old_size, pid=pid)]  # fmt: skip
        if i % 97 == 0:
            lines.append(fault_line(dev, iova + 0x1000 * 9, 0, pid=pid))
    return trace(*lines)


def test_a_streaming_trace_is_the_same_with_far_fewer_calls() -> None:
    batched, single = _both(_streaming(1500, seed=3))
    _assert_same(batched, single)
    assert single.report.table_calls > 2000
    assert batched.report.table_calls * 10 < single.report.table_calls


def test_top_down_maps_across_a_last_level_table_boundary() -> None:
    """Two maps continuing each other downwards across a 2 MiB boundary: the kernel
    made the upper last-level table first, so the batch must too."""
    dev = DEVICES[0]
    ops = [("map", dev, 8, 1), ("below", dev, 0, 2), ("below", dev, 0, 1)]
    batched, single = _both(trace(*_lines(ops)))
    _assert_same(batched, single)
    assert batched.report.table_calls < single.report.table_calls  # one run, one call
