"""Bodies of the ``iommu:*`` and ``dma:*`` events, as the kernel's TP_printk writes them.

Each parser takes the header fields and the body text and returns an event, or raises
``ValueError`` with the reason the line cannot be used (the caller turns it into a
:class:`~vcmm.trace.events.Skipped`).  Formats, from include/trace/events/iommu.h and
dma.h:

- ``map``: ``IOMMU: iova=0x%016llx - 0x%016llx paddr=0x%016llx size=%zu`` (kernels
  before 2021 print no ``- end`` part);
- ``unmap``: ``IOMMU: iova=0x%016llx - 0x%016llx size=%zu unmapped_size=%zu``;
- ``io_page_fault``: ``IOMMU:%s %s iova=0x%016llx flags=0x%04x`` (driver, device);
- group events: ``IOMMU: groupID=%d device=%s`` and ``IOMMU: device=%s``;
- ``dma_*``: the device name first, then ``key=value`` fields; addresses printed
  with ``%llx`` carry no ``0x``; arrays are ``__print_array``'s ``{0x..,0x..}``;
  counts of newest mainline read ``nents=a/b``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from vcmm.trace.events import (
    DMA_ROLES,
    GROUP_EVENTS,
    DmaEvent,
    DmaRole,
    Event,
    GroupEvent,
    IommuMap,
    IommuUnmap,
    IoPageFault,
)

BodyParser = Callable[[int, str, int, int, float, str, str], Event]

#: Spaces after the commas of an array: ``{0x1, 0x2}`` reads as ``{0x1,0x2}``.
_ARRAY_SPACES = re.compile(r",\s+(?=[^{}]*\})")


def _fields(body: str) -> tuple[list[str], dict[str, str]]:
    """The bare words and the ``key=value`` fields of a body."""
    if "{" in body:
        body = _ARRAY_SPACES.sub(",", body)
    words: list[str] = []
    kv: dict[str, str] = {}
    for token in body.split():
        key, eq, value = token.partition("=")
        if eq:
            kv[key] = value
        else:
            words.append(token)
    return words, kv


def _hex(kv: dict[str, str], key: str) -> int:
    try:
        text = kv[key]
    except KeyError:
        raise ValueError(f"no {key}= field (a truncated line?)") from None
    try:
        value = int(text, 16)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a hexadecimal number") from None
    if value < 0:
        raise ValueError(f"{key}={text!r} is negative")
    return value


def _dec(kv: dict[str, str], key: str) -> int:
    try:
        text = kv[key]
    except KeyError:
        raise ValueError(f"no {key}= field (a truncated line?)") from None
    if not text.isdigit():
        raise ValueError(f"{key}={text!r} is not a decimal number")
    return int(text)


def _iommu_prefix(words: list[str], event: str) -> None:
    if not words or words[0] != "IOMMU:":
        raise ValueError(f"{event} body does not start with 'IOMMU:'")


def _end(words: list[str], event: str, start: int, size: int) -> None:
    """Check the ``- 0xEND`` part newer kernels print (``end = iova + size``)."""
    if len(words) < 2:
        return
    if words[1] != "-" or len(words) != 3:
        raise ValueError(f"{event}: unexpected words {' '.join(words[1:])!r}")
    try:
        end = int(words[2], 16)
    except ValueError:
        raise ValueError(f"{event}: end {words[2]!r} is not a hexadecimal number") from None
    if end != start + size:
        raise ValueError(f"{event}: end {end:#x} is not iova {start:#x} + size {size:#x}")


#: A body field's reader: its value, or ValueError naming the field and the rule.
FieldReader = Callable[[dict[str, str], str], int]

_MAP_FIELDS: tuple[tuple[str, FieldReader], ...] = (("iova", _hex), ("paddr", _hex), ("size", _dec))
_UNMAP_FIELDS: tuple[tuple[str, FieldReader], ...] = (
    ("iova", _hex), ("size", _dec), ("unmapped_size", _dec)
)  # fmt: skip


def _iommu_range(event: str, body: str, fields: tuple[tuple[str, FieldReader], ...]) -> list[int]:
    """The values of ``fields`` (read in that order: the first bad one is the reason) of
    a ``map``/``unmap`` body, its ``- end`` checked against ``iova`` + ``size``."""
    words, kv = _fields(body)
    _iommu_prefix(words, event)
    values = [read(kv, key) for key, read in fields]
    found = dict(zip((key for key, _ in fields), values, strict=True))
    _end(words, event, found["iova"], found["size"])
    return values


def parse_map(line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str) -> Event:
    iova, paddr, size = _iommu_range(event, body, _MAP_FIELDS)
    return IommuMap(line, comm, pid, cpu, ts, iova, paddr, size)


def parse_unmap(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event:
    iova, size, unmapped = _iommu_range(event, body, _UNMAP_FIELDS)
    return IommuUnmap(line, comm, pid, cpu, ts, iova, size, unmapped)


def parse_fault(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event:
    words, kv = _fields(body)
    if not words or not words[0].startswith("IOMMU:") or len(words) != 2:
        raise ValueError("io_page_fault body is not 'IOMMU:<driver> <device> iova=.. flags=..'")
    return IoPageFault(
        line, comm, pid, cpu, ts, words[0][6:], words[1], _hex(kv, "iova"), _hex(kv, "flags")
    )


def parse_group(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event:
    words, kv = _fields(body)
    _iommu_prefix(words, event)
    device = kv.get("device")
    if not device:
        raise ValueError(f"{event}: no device= field")
    group = None
    if "groupID" in kv:
        text = kv["groupID"]
        if not text.lstrip("-").isdigit():
            raise ValueError(f"{event}: groupID={text!r} is not a number")
        group = int(text)
    return GroupEvent(line, comm, pid, cpu, ts, event, device, group)


def _array(kv: dict[str, str], key: str) -> tuple[int, ...]:
    text = kv.get(key)
    if text is None:
        return ()
    if not (text.startswith("{") and text.endswith("}")):
        raise ValueError(f"{key}={text!r} is not a {{...}} array (truncated line?)")
    try:
        return tuple(int(x, 16) for x in text[1:-1].split(",") if x)
    except ValueError:
        raise ValueError(f"{key}={text!r} holds a value that is not hexadecimal") from None


def _count(kv: dict[str, str], key: str) -> tuple[int, int] | None:
    text = kv.get(key)
    if text is None:
        return None
    shown, _, total = text.partition("/")
    if not shown.isdigit() or (total and not total.isdigit()):
        raise ValueError(f"{key}={text!r} is not a count or 'shown/total'")
    return int(shown), int(total or shown)


def parse_dma(line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str) -> Event:
    words, kv = _fields(body)
    if not words:
        raise ValueError(f"{event}: no device name")
    device = words[0]
    if "=" in device or device.startswith("{"):
        raise ValueError(f"{event}: no device name before the fields")
    ev = DmaEvent(line, comm, pid, cpu, ts, event, device, DMA_ROLES[event])
    ev.direction = kv.pop("dir", "")
    if "dma_addr" in kv:
        ev.dma_addr = _hex(kv, "dma_addr")
        del kv["dma_addr"]
    if "size" in kv:
        ev.size = _dec(kv, "size")
        del kv["size"]
    if "phys_addr" in kv:
        ev.phys = _hex(kv, "phys_addr")
        del kv["phys_addr"]
    ev.dma_addrs = _array(kv, "dma_addrs")
    ev.sizes = _array(kv, "sizes")
    ev.phys_addrs = _array(kv, "phys_addrs")
    ev.nents = _count(kv, "nents")
    ev.ents = _count(kv, "ents")
    ev.truncated = "[TRUNCATED]" in words
    for key in ("dma_addrs", "sizes", "phys_addrs", "nents", "ents"):
        kv.pop(key, None)
    if ev.dma_addrs and ev.sizes and len(ev.dma_addrs) != len(ev.sizes):
        raise ValueError(
            f"{event}: {len(ev.dma_addrs)} dma_addrs but {len(ev.sizes)} sizes (truncated line?)"
        )
    ev.extra = kv
    return ev


def body_parser(event: str) -> BodyParser | None:
    """The parser of ``event``'s body, or None for an event the replay does not use."""
    if event == "map":
        return parse_map
    if event == "unmap":
        return parse_unmap
    if event == "io_page_fault":
        return parse_fault
    if event in GROUP_EVENTS:
        return parse_group
    if event in DMA_ROLES:
        return parse_dma
    return None


# -- fast paths: one compiled expression per frequent body; None falls back -------------

_X = r"(?:0x)?([0-9a-fA-F]+)"
_IOVA = r"IOMMU: iova=0x(?P<iova>[0-9a-fA-F]+)(?: - 0x(?P<end>[0-9a-fA-F]+))?"
_MAP = re.compile(rf"{_IOVA} paddr=0x(?P<paddr>[0-9a-fA-F]+) size=(?P<size>\d+)$")
_UNMAP = re.compile(rf"{_IOVA} size=(?P<size>\d+) unmapped_size=(?P<unmapped>\d+)$")
_DMA_MAP = re.compile(rf"(\S+) dir=(\w+) dma_addr={_X} size=(\d+) phys_addr={_X} attrs=\S*$")
_DMA_SINGLE = re.compile(rf"(\S+) dir=(\w+) dma_addr={_X} size=(\d+)(?: attrs=\S*)?$")


def _span(m: re.Match[str]) -> tuple[int, int] | None:
    """(iova, size) of a map/unmap match whose ``- end`` (if printed) is iova + size."""
    start, length = int(m["iova"], 16), int(m["size"])
    if m["end"] is not None and int(m["end"], 16) != start + length:
        return None
    return start, length


def _fast_map(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event | None:
    m = _MAP.match(body)
    span = None if m is None else _span(m)
    if m is None or span is None:
        return None
    return IommuMap(line, comm, pid, cpu, ts, span[0], int(m["paddr"], 16), span[1])


def _fast_unmap(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event | None:
    m = _UNMAP.match(body)
    span = None if m is None else _span(m)
    if m is None or span is None:
        return None
    return IommuUnmap(line, comm, pid, cpu, ts, span[0], span[1], int(m["unmapped"]))


def _fast_dma(
    line: int, comm: str, pid: int, cpu: int, ts: float, event: str, body: str
) -> Event | None:
    """A single dma map (with ``phys_addr``), unmap or sync."""
    m = (_DMA_MAP if DMA_ROLES[event] is DmaRole.CLAIMS_MAPS else _DMA_SINGLE).match(body)
    if m is None:
        return None
    device, direction, addr, size, *phys = m.groups()
    return DmaEvent(
        line, comm, pid, cpu, ts, event, device, DMA_ROLES[event], direction,
        int(addr, 16), int(size), int(phys[0], 16) if phys else None,
    )  # fmt: skip


FastParser = Callable[[int, str, int, int, float, str, str], Event | None]

#: Events with a fast path (anything it does not match goes to the full parser).
FAST: dict[str, FastParser] = {
    "map": _fast_map,
    "unmap": _fast_unmap,
    "dma_map_page": _fast_dma,
    "dma_map_phys": _fast_dma,
    "dma_map_resource": _fast_dma,
    "dma_unmap_page": _fast_dma,
    "dma_unmap_phys": _fast_dma,
    "dma_unmap_resource": _fast_dma,
    "dma_sync_single_for_cpu": _fast_dma,
    "dma_sync_single_for_device": _fast_dma,
}

#: Events the fast path reads as one dma mapping (printed with ``phys_addr``), and as
#: one dma unmap or sync: what a whole-text reader may take by the same shapes.
FAST_DMA_MAPS: Final = frozenset(
    n for n, f in FAST.items() if f is _fast_dma and DMA_ROLES[n] is DmaRole.CLAIMS_MAPS
)
FAST_DMA_SINGLES: Final = frozenset(
    n for n, f in FAST.items() if f is _fast_dma and DMA_ROLES[n] is not DmaRole.CLAIMS_MAPS
)
