"""Replay a trace end to end: parse, attribute, boot the platform, replay, report.

The platform is a :class:`~vcmm.platform.PlatformSpec`, a platform file (TOML or a
Linux devicetree), or None for the generic platform made from the trace's device
names (:mod:`vcmm.trace.platform`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from vcmm.platform import PlatformSpec, load_platform
from vcmm.system import System
from vcmm.trace.attribute import attribute
from vcmm.trace.collector import collector_paused
from vcmm.trace.errors import TraceError
from vcmm.trace.events import DmaEvent, GroupEvent, IommuMap, IommuUnmap, IoPageFault, Skipped
from vcmm.trace.perfetto import Timeline
from vcmm.trace.platform import generic_platform
from vcmm.trace.replay import Item, Replayer
from vcmm.trace.report import ReplayReport
from vcmm.trace.scan import parse_text, read_trace

PlatformArg = PlatformSpec | str | os.PathLike[str] | None

#: The event classes naming an IOVA range, and those naming only a device (tuples: a
#: ``X | Y`` in the loop would build a union object per event).
_RANGED = (IommuMap, IommuUnmap)
_NAMED = (DmaEvent, GroupEvent)


def traced_devices(items: Iterable[Item]) -> dict[str, int]:
    """Every device the items name, with the end of its highest traced IOVA range."""
    out: dict[str, int] = {}
    highest = out.get
    for item in items:
        if isinstance(item, _RANGED):
            device, end = item.device, item.iova + item.size
            if device is not None and end > highest(device, -1):
                out[device] = end
        elif isinstance(item, IoPageFault):
            out[item.device] = max(out.get(item.device, 0), item.iova + 1)
        elif isinstance(item, _NAMED):
            out.setdefault(item.device, 0)
    return out


def traced_groups(items: Iterable[Item]) -> dict[str, int]:
    """The IOMMU group of each device, from the trace's first ``add_device_to_group``
    event of it (a device removed and added again keeps its first group)."""
    out: dict[str, int] = {}
    for item in items:
        if not isinstance(item, GroupEvent) or item.group is None:
            continue
        if item.name == "add_device_to_group":
            out.setdefault(item.device, item.group)
    return out


def boot(platform: PlatformArg, items: list[Item]) -> System:
    """The System to replay ``items`` on (see the module notes)."""
    if platform is None:
        return System(generic_platform(traced_devices(items), traced_groups(items)))
    if isinstance(platform, PlatformSpec):
        return System(platform)
    return System(load_platform(platform))


def replay(
    items: Iterable[IommuMap | IommuUnmap | IoPageFault | GroupEvent | DmaEvent | Skipped],
    *,
    platform: PlatformArg = None,
    reallocate: bool = False,
    tables: bool = True,
    batch: bool = True,
    strict: bool = False,
    timeline: Timeline | None = None,
) -> ReplayReport:
    """Attribute and replay parsed ``items``; with ``strict`` any skipped line is a
    :class:`TraceError` naming the first one; ``tables=False`` finds the problems
    without writing page tables (``table_bytes_peak`` is then None); ``batch=False``
    makes one page-table call per map and unmap (the reference for the batched
    writes, same report but for ``table_calls``)."""
    if isinstance(items, str | bytes):
        raise TraceError("replay takes parsed events; give text to replay_text()")
    with collector_paused():
        attributed: list[Item] = list(attribute(items))
        replayer = Replayer(
            boot(platform, attributed),
            reallocate=reallocate,
            tables=tables,
            batch=batch,
            timeline=timeline,
        )
        replayer.feed(attributed)
        report = replayer.finish()
        # Freed before the collector is back, its first pass walks only what survives.
        del replayer, attributed
    if strict and report.skipped:
        first = report.skipped[0]
        raise TraceError(
            f"line {first.line}: {first.reason} (--strict: {len(report.skipped)} line(s) "
            "could not be used)"
        )
    return report


def replay_text(text: str | bytes, **options: object) -> ReplayReport:
    """Parse and replay a trace given as text (options as :func:`replay`)."""
    return replay(parse_text(text), **options)  # type: ignore[arg-type]


def replay_file(path: str | os.PathLike[str], **options: object) -> ReplayReport:
    """Parse and replay the trace file at ``path`` (options as :func:`replay`)."""
    return replay(read_trace(path), **options)  # type: ignore[arg-type]
