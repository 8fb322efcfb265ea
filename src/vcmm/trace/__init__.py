"""Replay Linux ``iommu:*`` and ``dma:*`` ftrace traces into a simulated SoC.

``/sys/kernel/tracing/trace`` text is parsed into typed events
(:mod:`vcmm.trace.parser`), ``map``/``unmap`` are given their device through the
neighbouring ``dma_*`` event of the same task and CPU (:mod:`vcmm.trace.attribute`),
and the result is replayed into a :class:`~vcmm.system.System`'s real page tables
while the replay's own interval maps find what went wrong
(:mod:`vcmm.trace.replay`).  docs/TRACE.md describes the format, the attribution
rule and its limits.
"""

from vcmm.trace.attribute import Attribution, attribute
from vcmm.trace.errors import TraceError
from vcmm.trace.events import (
    DmaEvent,
    DmaRole,
    GroupEvent,
    IommuMap,
    IommuUnmap,
    IoPageFault,
    Skipped,
)
from vcmm.trace.parser import parse_line, parse_lines
from vcmm.trace.perfetto import Timeline
from vcmm.trace.replay import Replayer
from vcmm.trace.report import PROBLEM_KINDS, DeviceStats, Problem, ReplayReport, render_text
from vcmm.trace.scan import parse_text, read_trace
from vcmm.trace.session import boot, replay, replay_file, replay_text

__all__ = [
    "PROBLEM_KINDS",
    "Attribution",
    "DeviceStats",
    "DmaEvent",
    "DmaRole",
    "GroupEvent",
    "IoPageFault",
    "IommuMap",
    "IommuUnmap",
    "Problem",
    "ReplayReport",
    "Replayer",
    "Skipped",
    "Timeline",
    "TraceError",
    "attribute",
    "boot",
    "parse_line",
    "parse_lines",
    "parse_text",
    "read_trace",
    "render_text",
    "replay",
    "replay_file",
    "replay_text",
]
