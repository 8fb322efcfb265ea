"""Chrome / Perfetto trace-event JSON: one track per device.

The format is the Trace Event Format that ui.perfetto.dev and chrome://tracing open:
``{"traceEvents": [...], "displayTimeUnit": "ns"}`` with times in microseconds.
Each device is a process of its own (a ``process_name`` metadata event names it), so
it gets one track group: its mappings are async spans (``b``/``e`` with an id, as
mappings overlap without nesting), faults and IOTLB invalidations are instants
(``i``, thread scope) and mapped bytes a counter (``C``).  The replay and ``vcmm run
--perfetto`` write the same shapes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import NotRequired, TypedDict

#: What an event's ``args`` may hold: JSON scalars (the viewer shows them as given).
ArgValue = str | int | float | bool | None
Args = Mapping[str, ArgValue]


class TraceEvent(TypedDict):
    """One entry of ``traceEvents``; the optional keys are those of its phase ``ph``:
    ``cat``/``id`` for async spans, ``s`` (scope) for instants, ``tid`` for all but
    counters, ``ts`` for all but metadata."""

    ph: str
    name: str
    pid: int
    tid: NotRequired[int]
    ts: NotRequired[float]
    cat: NotRequired[str]
    id: NotRequired[int]
    s: NotRequired[str]
    args: NotRequired[Args]


class TraceFile(TypedDict):
    """The whole JSON document."""

    traceEvents: list[TraceEvent]
    displayTimeUnit: str


class Timeline:
    """Events collected for one trace-event JSON file."""

    def __init__(self) -> None:
        self._events: list[TraceEvent] = []
        self._pids: dict[str, int] = {}

    def _pid(self, track: str) -> int:
        pid = self._pids.get(track)
        if pid is None:
            pid = self._pids[track] = len(self._pids) + 1
            self._events.append(
                {"ph": "M", "name": "process_name", "pid": pid, "tid": pid, "args": {"name": track}}
            )
        return pid

    def _async(self, ph: str, track: str, ident: int, name: str, ts: float, cat: str) -> TraceEvent:
        pid = self._pid(track)
        event: TraceEvent = {
            "ph": ph, "cat": cat, "name": name, "id": ident, "pid": pid, "tid": pid, "ts": ts
        }  # fmt: skip
        self._events.append(event)
        return event

    def span_begin(
        self,
        track: str,
        ident: int,
        name: str,
        ts: float,
        args: Args,
        cat: str = "mapping",
    ) -> None:
        """Open the async span ``ident`` on ``track`` (``ts`` in microseconds)."""
        self._async("b", track, ident, name, ts, cat)["args"] = args

    def span_end(self, track: str, ident: int, name: str, ts: float, cat: str = "mapping") -> None:
        """Close the async span ``ident`` (same name and category as it opened with)."""
        self._async("e", track, ident, name, ts, cat)

    def instant(self, track: str, name: str, ts: float, args: Args) -> None:
        pid = self._pid(track)
        self._events.append(
            {"ph": "i", "s": "t", "name": name, "pid": pid, "tid": pid, "ts": ts, "args": args}
        )

    def counter(self, track: str, name: str, ts: float, value: int) -> None:
        pid = self._pid(track)
        self._events.append(
            {"ph": "C", "name": name, "pid": pid, "ts": ts, "args": {"bytes": value}}
        )

    def to_dict(self) -> TraceFile:
        return {"traceEvents": list(self._events), "displayTimeUnit": "ns"}

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON file (an OSError names the path)."""
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_dict(), handle, separators=(",", ":"))
