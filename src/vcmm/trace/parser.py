"""Read the text of ``/sys/kernel/tracing/trace`` into typed events.

A line is ``<comm>-<pid> [(tgid)] [<cpu>] <flags> <secs.usecs>: <event>: <body>``:
``comm`` may hold spaces, dashes, parentheses and slashes; the ``(tgid)`` column is
there when ``record-tgid`` is set (``(-------)`` when unknown); flags are 4, 5 or 7
characters (or absent with ``irq-info`` off).  A line starting ``#`` is a comment
before any regular expression runs; blank and indented comment lines are told apart
only when the header does not match (or matches a task name starting ``#``), so an
event line pays for no such test.  The header is one compiled expression (the task's
name matched lazily up to the first ``-<pid> [<cpu>]``), and the bodies of the frequent events (``map``, ``unmap``,
single ``dma_*`` mappings and syncs) one more each, with the field-by-field parser of
:mod:`vcmm.trace.body` as the fallback that names what is wrong.  Every line that
does not become an event is reported as :class:`~vcmm.trace.events.Skipped` with its
1-based number and the reason, never an exception.

This line-by-line reader is the reference; whole files and texts are read by
:mod:`vcmm.trace.scan`, which gives the same items faster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from vcmm.trace.body import FAST, BodyParser, body_parser
from vcmm.trace.events import Event, Skipped

_HEADER = re.compile(
    r"\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S{1,7}\s+)?(?P<ts>\d+(?:\.\d+)?):\s+(?P<event>\w+):\s?"
)
_NOT_EVENT = "not an ftrace event line ('<task>-<pid> [<cpu>] <flags> <time>: <event>: ...')"
_PARSERS: dict[str, BodyParser | None] = {}


def _parser_of(event: str) -> BodyParser | None:
    try:
        return _PARSERS[event]
    except KeyError:
        found = _PARSERS[event] = body_parser(event)
        return found


def parse_line(number: int, line: str) -> Event | Skipped | None:
    """One line: an event, a skip with its reason, or None for comments and blanks."""
    if line[:1] == "#":
        return None
    m = _HEADER.match(line)
    if m is None:
        if not line.strip() or line.lstrip().startswith("#"):
            return None
        if line.startswith("CPU:") and "[LOST" in line:
            return Skipped(
                number,
                f"the ring buffer lost events here ({line.strip()}): maps or unmaps may be missing",
            )
        return Skipped(number, _NOT_EVENT)
    comm, pid, cpu, ts, event = m.groups()
    comm = comm.strip()
    if comm[:1] == "#":  # an indented comment that looks like an event
        return None
    body = line[m.end() :].rstrip()
    quick = FAST.get(event)
    if quick is not None:
        found = quick(number, comm, int(pid), int(cpu), float(ts), event, body)
        if found is not None:
            return found
    parse = _parser_of(event)
    if parse is None:
        return Skipped(number, f"event {event!r} is not an iommu or dma event the replay uses")
    try:
        return parse(number, comm, int(pid), int(cpu), float(ts), event, body)
    except ValueError as err:
        text = str(err)
        return Skipped(number, text if text.startswith(event) else f"{event}: {text}")


def parse_lines(lines: Iterable[str], *, first: int = 1) -> Iterator[Event | Skipped]:
    """Events and skips of ``lines`` in order; line numbers start at ``first``."""
    for number, line in enumerate(lines, first):
        item = parse_line(number, line)
        if item is not None:
            yield item
