"""Maps and unmaps get their device from the dma_* event of the same task and CPU."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.trace import (
    Attribution,
    DmaEvent,
    DmaRole,
    IommuMap,
    IommuUnmap,
    Skipped,
    attribute,
    parse_text,
)
from vcmm.trace.events import Event

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


# -- against a whole-trace reference of the rule, on random traces --------------------

_TASKS = ({"pid": 7, "cpu": 0}, {"pid": 7, "cpu": 1}, {"pid": 9, "cpu": 0})
_KINDS = ("map", "unmap", "dma_map", "dma_unmap", "sync", "unmap_sg", "free", "fault", "junk")


def _line(kind: str, page: int, task: dict[str, int], dev: str) -> str:
    iova, pa = 0x10000 + page * 0x1000, 0x80000000 + page * 0x1000
    return {
        "map": lambda: map_line(iova, pa, 0x1000, **task),
        "unmap": lambda: unmap_line(iova, 0x1000, **task),
        "dma_map": lambda: dma_map_line(dev, iova, 0x1000, pa, **task),
        "dma_unmap": lambda: dma_unmap_line(dev, iova, 0x1000, **task),
        "sync": lambda: dma_unmap_line(dev, iova, 0x1000, event="dma_sync_single_for_cpu", **task),
        "unmap_sg": lambda: dma_unmap_sg_line(dev, [pa], **task),
        "free": lambda: dma_free_line(dev, iova, 0x2000, **task),
        "fault": lambda: fault_line(dev, iova, 1, **task),
        "junk": lambda: "not a trace line",
    }[kind]()


@dataclass
class _Waiting:
    maps: list[int] = field(default_factory=list)
    unmaps: list[int] = field(default_factory=list)
    window: DmaEvent | None = None


def _inside(window: DmaEvent, ev: IommuUnmap) -> bool:
    """A dma_free's freed range, in whole pages; a dma_unmap_sg names no range."""
    if window.dma_addr is None or window.size is None:
        return True
    low, high = window.dma_addr // 0x1000, -(-(window.dma_addr + window.size) // 0x1000)
    return low * 0x1000 <= ev.iova and ev.iova + ev.size <= high * 0x1000


def _reference(items: list[Event | Skipped]) -> list[tuple[str, int, str]]:
    """The rule of the module notes applied to the whole trace at once, by index: every
    map and unmap resolved to a device or a reason, the output in trace order."""
    out = [
        (type(i).__name__, i.line, i.reason if isinstance(i, Skipped) else i.device or "")
        for i in items
    ]
    tasks: dict[tuple[int, int], _Waiting] = {}

    def drop(waiting: list[int], why: str) -> None:
        for k in waiting:
            ev = items[k]
            assert isinstance(ev, IommuMap | IommuUnmap)
            kind = "map" if isinstance(ev, IommuMap) else "unmap"
            out[k] = ("Skipped", ev.line, f"{kind} of iova {ev.iova:#x} by {ev.comm}-{ev.pid} "
                      f"on CPU {ev.cpu} has no device: {why}")  # fmt: skip
        waiting.clear()

    for k, item in enumerate(items):
        if not isinstance(item, IommuMap | IommuUnmap | DmaEvent):
            continue
        t = tasks.setdefault((item.pid, item.cpu), _Waiting())
        if isinstance(item, IommuMap):
            t.window = None
            t.maps.append(k)
        elif isinstance(item, IommuUnmap):
            if t.window is not None and _inside(t.window, item):
                out[k] = ("IommuUnmap", item.line, t.window.device)
            else:
                t.unmaps.append(k)
        else:
            role = item.role
            why = f"the next dma event of the task, line {item.line}, is {item.name}"
            t.window = item if role is DmaRole.OPENS_UNMAPS else None
            for waiting, claims, kind in ((t.maps, DmaRole.CLAIMS_MAPS, "IommuMap"),
                                          (t.unmaps, DmaRole.CLAIMS_UNMAPS, "IommuUnmap")):  # fmt: skip
                if role in (claims, DmaRole.CLAIMS_BOTH):
                    for j in waiting:
                        out[j] = (kind, out[j][1], item.device)
                    waiting.clear()
                else:
                    drop(waiting, why)
    for t in tasks.values():
        drop(t.maps, "no dma_map/dma_alloc event of the task followed it")
        drop(t.unmaps, "no dma_unmap/dma_free event of the task came with it")
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 3), st.integers(0, 2),
                          st.sampled_from((A, B))), max_size=40))  # fmt: skip
def test_random_traces_attribute_as_the_whole_trace_reference(
    ops: list[tuple[str, int, int, str]],
) -> None:
    text = trace(*(_line(kind, page, _TASKS[t], dev) for kind, page, t, dev in ops))
    got = [
        (type(i).__name__, i.line, i.reason if isinstance(i, Skipped) else i.device or "")
        for i in attribute(parse_text(text))
    ]
    want = _reference(parse_text(text))
    assert got == want
