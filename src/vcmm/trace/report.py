"""What a replay found: per-device counts, problems, skipped lines; as JSON and text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcmm.sizes import format_size
from vcmm.trace.events import Skipped

#: The problem kinds, in the order the text summary lists them.
PROBLEM_KINDS: Final = (
    "overlapping-map",
    "double-unmap",
    "unmap-unmapped",
    "fault-after-unmap",
    "fault-unmapped",
    "leak",
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing the trace did wrong, at a 1-based ``line``."""

    kind: str
    line: int
    device: str
    iova: int
    detail: str

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "line": self.line,
            "device": self.device,
            "iova": self.iova,
            "detail": self.detail,
        }


@dataclass(slots=True)
class DeviceStats:
    """Counts of one device over the replay."""

    map: int = 0
    unmap: int = 0
    faults: int = 0
    mapped_bytes: int = 0
    mapped_bytes_peak: int = 0
    live_at_end: int = 0
    #: None when the replay left the tables alone (``--no-tables``).
    table_bytes_peak: int | None = 0

    def to_dict(self) -> dict[str, int | None]:
        return {
            "map": self.map,
            "unmap": self.unmap,
            "faults": self.faults,
            "mapped_bytes_peak": self.mapped_bytes_peak,
            "live_at_end": self.live_at_end,
            "table_bytes_peak": self.table_bytes_peak,
        }


@dataclass(slots=True)
class Placement:
    """Where ``--reallocate`` put a device's mappings, against the trace."""

    maps: int = 0
    same_iova: int = 0
    trace_low: int | None = None
    trace_high: int = 0
    vcmm_low: int | None = None
    vcmm_high: int = 0

    def note(self, traced: int, ours: int, size: int) -> None:
        self.maps += 1
        self.same_iova += traced == ours
        self.trace_low = traced if self.trace_low is None else min(self.trace_low, traced)
        self.vcmm_low = ours if self.vcmm_low is None else min(self.vcmm_low, ours)
        self.trace_high = max(self.trace_high, traced + size)
        self.vcmm_high = max(self.vcmm_high, ours + size)

    def to_dict(self) -> dict[str, object]:
        return {
            "maps": self.maps,
            "same_iova": self.same_iova,
            "trace_range": [self.trace_low, self.trace_high] if self.maps else None,
            "vcmm_range": [self.vcmm_low, self.vcmm_high] if self.maps else None,
        }


@dataclass(slots=True)
class ReplayReport:
    """The outcome of a replay (``vcmm replay --json`` prints :meth:`to_dict`)."""

    platform: str
    mode: str
    events: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    devices: dict[str, DeviceStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    placements: dict[str, Placement] = field(default_factory=dict)
    #: Table calls made after batching (map_range and unmap), for the benchmark.
    table_calls: int = 0

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "platform": self.platform,
            "mode": self.mode,
            "events": self.events,
            "skipped": [s.to_dict() for s in self.skipped],
            "devices": {name: st.to_dict() for name, st in sorted(self.devices.items())},
            "problems": [p.to_dict() for p in self.problems],
        }
        if self.placements:
            out["placements"] = {n: p.to_dict() for n, p in sorted(self.placements.items())}
        return out

    def counts(self) -> dict[str, int]:
        """Problems per kind (kinds with none left out)."""
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out


def _hex(value: int | None) -> str:
    return "-" if value is None else f"{value:#x}"


def render_text(report: ReplayReport, *, limit: int = 20) -> str:
    """A readable summary: devices, problems by kind (first ``limit`` each), skips."""
    lines = [
        f"replay on platform {report.platform} ({report.mode}): {report.events} events used, "
        f"{len(report.skipped)} lines skipped, {len(report.problems)} problems"
    ]
    if report.devices:
        lines.append("")
        head = ("device", "map", "unmap", "faults", "mapped peak", "live at end", "table peak")
        rows = [
            (
                name,
                str(st.map),
                str(st.unmap),
                str(st.faults),
                format_size(st.mapped_bytes_peak) if st.mapped_bytes_peak else "0",
                str(st.live_at_end),
                "-" if st.table_bytes_peak is None else format_size(st.table_bytes_peak),
            )
            for name, st in sorted(report.devices.items())
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        for row in [head, tuple("-" * w for w in widths), *rows]:
            right = [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
            cells = [row[0].ljust(widths[0]), *right]
            lines.append("  " + "  ".join(cells).rstrip())
    if report.placements:
        lines.append("")
        lines.append("placements (--reallocate: vcmm's IOVA allocator against the trace's):")
        for name, place in sorted(report.placements.items()):
            lines.append(
                f"  {name}: {place.maps} maps, {place.same_iova} at the traced IOVA; traced "
                f"[{_hex(place.trace_low)}, {_hex(place.trace_high)}), vcmm "
                f"[{_hex(place.vcmm_low)}, {_hex(place.vcmm_high)})"
            )
    for kind in PROBLEM_KINDS:
        found = [p for p in report.problems if p.kind == kind]
        if not found:
            continue
        lines.append("")
        lines.append(f"{kind}: {len(found)}")
        for p in found[:limit]:
            lines.append(f"  line {p.line}: {p.device} iova {p.iova:#x}: {p.detail}")
        if len(found) > limit:
            lines.append(f"  ... {len(found) - limit} more (--json lists all)")
    if report.skipped:
        lines.append("")
        lines.append(f"skipped lines: {len(report.skipped)}")
        for s in report.skipped[:limit]:
            lines.append(f"  line {s.line}: {s.reason}")
        if len(report.skipped) > limit:
            lines.append(f"  ... {len(report.skipped) - limit} more (--json lists all)")
    return "\n".join(lines)
