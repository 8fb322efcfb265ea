"""A scenario run (``vcmm run``) as the same Perfetto tracks a replay writes.

A run has no wall clock worth showing, so the timeline is logical: one microsecond
per burst, the steps of each frame one after the other.  Each device's mappings of
the run's buffers are spans over the whole run, every step a span of its frame,
a faulted step an instant, and the device's mapped bytes a counter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.trace.perfetto import Args, Timeline

if TYPE_CHECKING:
    from vcmm.workload.runner import ScenarioResult


def scenario_timeline(result: ScenarioResult) -> Timeline:
    """The run's timeline (see the module notes)."""
    timeline = Timeline()
    frames = max((len(s.frames) for s in result.steps), default=0)
    clock = 0.0
    for frame in range(frames):
        for step in result.steps:
            if frame >= len(step.frames):
                continue
            length = float(max(step.bursts_per_frame, 1))
            ident = 1_000_000 + frame * len(result.steps) + step.index
            name = f"frame {frame}: {step.access} {step.buffer} ({step.pattern})"
            args: Args = {
                "misses": step.frames[frame].misses,
                "bursts": step.bursts_per_frame,
            }
            timeline.span_begin(step.device, ident, name, clock, args, cat="step")
            if step.fault is not None:
                timeline.instant(step.device, "fault", clock, {"fault": step.fault})
            clock += length
            timeline.span_end(step.device, ident, name, clock, cat="step")
    ident = 0
    for buffer in result.buffers:
        for mapping in buffer.mappings:
            ident += 1
            name = f"{buffer.name} at {mapping.dev_addr:#x}"
            args = {"vcm": mapping.vcm, "kind": mapping.kind, "size": mapping.length}
            timeline.span_begin(mapping.device, ident, name, 0.0, args)
            timeline.span_end(mapping.device, ident, name, clock)
    mapped: dict[str, int] = {}
    for buffer in result.buffers:
        for mapping in buffer.mappings:
            mapped[mapping.device] = mapped.get(mapping.device, 0) + mapping.length
    for device, total in sorted(mapped.items()):
        timeline.counter(device, "mapped bytes", 0.0, total)
        timeline.counter(device, "mapped bytes", clock, total)
    return timeline
