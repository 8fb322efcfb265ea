"""The whole-text reader (``scan_text``) against the line-by-line reference.

``parse_line`` is the reference parser; ``parse_text`` reads a whole text with one
expression for the frequent lines and hands every other line to ``parse_line``.
They must give the same events (every field, ``extra`` included) and the same
skipped lines, numbers and reasons, for every documented variant of the format,
for lines cut short anywhere, for damaged lines, and for comments and blanks.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.trace import parse_lines, parse_text

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
    unmap_line,
)

DEV = "0000:00:02.0"
HEADERS = [
    {"comm": c, "pid": 812, "cpu": 3, "ts": 5.25, "flags": f, "tgid": t}
    for c in ("kworker/u16:2", "my (odd) task-name", "a b/c-d", "<idle>", "x-12 [0] y")
    for f in ("d..1", "dNh1.", "d..2.1.", None)
    for t in (None, "1234", "-------")
]


def variants(h: dict[str, object]) -> list[str]:
    """One line of every documented event and shape, with header ``h``."""
    return [
        map_line(0xFFFFF000, 0x81234000, 4096, **h),
        map_line(0x1000_0000_0000, 0x9000_0000, 0x3000, end=False, **h),
        unmap_line(0xFFFFF000, 0x2000, 0x1000, **h),
        unmap_line(0xFFFFF000, 0x2000, end=False, **h),
        header(**h) + fault_line(DEV, 0xDEAD000, 1).split(": ", 1)[1],  # type: ignore[arg-type]
        header(**h) + fault_line(DEV, 0xDEAD000, 0, driver="").split(": ", 1)[1],  # type: ignore[arg-type]
        header(**h) + f"add_device_to_group: IOMMU: groupID=7 device={DEV}",  # type: ignore[arg-type]
        header(**h) + f"attach_device_to_domain: IOMMU: device={DEV}",  # type: ignore[arg-type]
        *(
            dma_map_line(DEV, 0xFFFFF010, 100, 0x81234010, event=e, attrs="WEAK_ORDERING", **h)
            for e in ("dma_map_page", "dma_map_phys", "dma_map_resource")
        ),
        *(
            dma_unmap_line(DEV, 0xFFFFF000, 4096, event=e, **h)
            for e in (
                "dma_unmap_page",
                "dma_unmap_phys",
                "dma_sync_single_for_cpu",
                "dma_sync_single_for_device",
            )
        ),
        dma_map_sg_line(
            DEV,
            [0xFFF00000, 0xFFF10000],
            [0x2000, 0x1000],
            [0x81000000, 0x82000000, 0x83000000],
            **h,
        ),
        dma_map_sg_line(DEV, [0xFFF00000], [0x2000], [0x81000000], counts=True, **h),
        dma_map_sg_line(DEV, [0xFFF00000, 0x1000], [0x2000], [0x81000000], **h),  # bad
        dma_unmap_sg_line(DEV, [0x81000000, 0x82000000], **h),
        dma_alloc_line(DEV, 0xFFFF0000, 8192, **h),
        dma_alloc_line(DEV, 0xFFFF0000, 8192, direction=True, **h),
        dma_free_line(DEV, 0xFFFF0000, 8192, **h),
        header(**h) + "map: IOMMU: iova=0x1000 - 0x9000 paddr=0x80000000 size=4096",  # type: ignore[arg-type]
        header(**h) + f"dma_map_page: {DEV} dir=TO_DEVICE dma_addr=1000 size=4096 attrs=",  # type: ignore[arg-type]
        header(**h) + "unmap: IOMMU: iova=0x1000 paddr=0x80000000 size=4096",  # type: ignore[arg-type]
        header(**h) + "sched_switch: prev_comm=a",  # type: ignore[arg-type]
    ]


ALL = [line for h in HEADERS for line in variants(h)]


def _same(text: str) -> None:
    assert parse_text(text) == list(parse_lines(text.split("\n")))


def test_every_documented_variant_reads_as_the_reference_reads_it() -> None:
    text = "# tracer: nop\n#\n" + "\n".join(ALL) + "\n"
    items = parse_text(text)
    assert items == list(parse_lines(text.split("\n")))
    assert len(items) == len(ALL)  # each line an event or a skip, none lost


def test_comments_blanks_and_line_ends() -> None:
    event = map_line(0x1000, 0x80000000, 4096)
    for text in ("#" + event, "   #" + event.lstrip(), "\t# tracer: nop", "", "   ", "\r",
                 event + "\r", event + "  \t", "\n\n" + event, event + "\n\n", event,
                 "CPU:2 [LOST 1234 EVENTS]\n" + event, "random garbage\n" + event,
                 event.replace("map:", "map:  "), event.replace("map: ", "map:")):  # fmt: skip
        _same(text)
        _same(text + "\n" + text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(ALL) - 1), st.integers(0, 400),
                          st.sampled_from(["cut", "drop", "dup", "swap", "keep"])),
                max_size=12),
       st.booleans())  # fmt: skip
def test_damaged_lines_read_as_the_reference_reads_them(
    picks: list[tuple[int, int, str]], crlf: bool
) -> None:
    """Lines cut short anywhere, a character dropped or doubled, neighbours swapped."""
    lines = []
    for index, at, how in picks:
        line = ALL[index]
        at %= len(line) + 1
        if how == "cut":
            line = line[:at]
        elif how == "drop":
            line = line[:at] + line[at + 1 :]
        elif how == "dup":
            line = line[:at] + line[at : at + 1] + line[at:]
        elif how == "swap":
            line = line[:at] + line[at + 1 : at + 2] + line[at : at + 1] + line[at + 2 :]
        lines.append(line + ("\r" if crlf else ""))
    _same("\n".join(lines))
    _same("\n".join(lines) + "\n")


def test_random_text_reads_as_the_reference_reads_it() -> None:
    rng = random.Random(5)
    alphabet = "map: IOMMU:iova=0x- []()#\t\r\n0123456789abcdef.dma_sg{},/\x85\u2028\xa0"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(200)))
        _same(text)
        _same(rng.choice(ALL) + "\n" + text + "\n" + rng.choice(ALL))


def test_the_frequent_lines_never_reach_the_reference(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Not a vacuous comparison: maps, unmaps, single dma lines and 6.12 scatterlist
    lines are read by the whole-text expression, the rest by ``parse_line``."""
    import vcmm.trace.scan as scan

    seen: list[str] = []
    reference = scan.parse_line

    def counting(number: int, line: str):  # type: ignore[no-untyped-def]
        seen.append(line)
        return reference(number, line)

    monkeypatch.setattr(scan, "parse_line", counting)
    fast = [map_line(0x1000, 0x80000000, 4096), unmap_line(0x1000, 4096),
            dma_map_line(DEV, 0x1000, 4096, 0x80000000), dma_unmap_line(DEV, 0x1000, 4096),
            dma_map_sg_line(DEV, [0x1000], [0x1000], [0x80000000]),
            dma_unmap_sg_line(DEV, [0x80000000])]  # fmt: skip
    slow = [fault_line(DEV, 0x1000, 1), dma_free_line(DEV, 0x1000, 4096), "junk"]
    items = parse_text("\n".join(fast + slow))
    assert len(items) == len(fast) + len(slow)
    assert seen == slow
