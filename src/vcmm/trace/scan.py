"""Read a whole trace text at once: the frequent lines by one regular expression.

:func:`~vcmm.trace.parser.parse_line` is the reference: one line, its header, then its
body, in Python, line by line (about 4 us a line).  Most lines of a real trace are a
few shapes (``map``, ``unmap``, the single ``dma_*`` mappings and syncs, and the
6.12-era scatterlist events), so one compiled expression runs over the whole text
(``re.finditer``, line-anchored) and picks those lines out with their fields; Python
then only converts the fields and builds the event.  Every line the expression does
not take, and every taken line a check turns down (an ``- end`` that is not
``iova + size``, a scatterlist shape under a name the reference reads otherwise, a
task name starting ``#``), goes to ``parse_line`` with its number: so comments,
garbage, truncated lines, faults and group events get exactly the reference's events
and reasons, and a line the expression takes gives the event ``parse_line`` would
(tests compare the two on every documented variant and on random damage).

Why it is the same: the header part is the reference's header expression inside an
atomic group (``(?>...)``, Python 3.11), so it is the reference's first match and
is never re-split to suit the body; ``\\s`` there is ``[^\\S\\n]``, the same inside
a line; each body branch is the reference's fast body expression for the event
names it names (so a name is read by its own shape only, as ``FAST`` dispatches it),
followed by trailing blanks (the reference strips them first, and no body shape
ends in one).

Why it is fast (about 1.1 us of ``re`` and 1.5 us of Python a line): the branch that
took a line is ``Match.lastindex`` (each branch ends in a group that always
matches), and only that branch's groups are read; the header columns before the
time (task, pid, tgid, CPU, flags) are one group whose text repeats line after line,
so each distinct one is split into task, pid and CPU once per text (the atomic group
makes the split a function of that text alone).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from itertools import repeat

from vcmm.trace.body import FAST_DMA_MAPS, FAST_DMA_SINGLES
from vcmm.trace.collector import collector_paused
from vcmm.trace.errors import TraceError
from vcmm.trace.events import DMA_ROLES, DmaEvent, Event, IommuMap, IommuUnmap, Skipped
from vcmm.trace.parser import parse_line

_S = r"[^\S\n]"  # \s within one line
_H = r"[0-9a-fA-F]+"
_X = rf"(?:0x)?({_H})"
_LIST = rf"\{{(0x{_H}(?:,0x{_H})*)\}}"


def _names(events: frozenset[str]) -> str:
    return "|".join(sorted(events))


# Group 1 is the whole header before the time (the task, pid, tgid, CPU and flags
# columns: the same text always splits the same way, so it is read once per text);
# 2-4 the task, pid and CPU in it; 5 the time.
_HEAD = (
    rf"^(?!#)(?>({_S}*(.*?)-(\d+){_S}+(?:\({_S}*[-\d]+\){_S}+)?\[(\d+)\]{_S}+"
    rf"(?:\S{{1,7}}{_S}+)?)(\d+(?:\.\d+)?):{_S}+)"
)
_IOVA = rf"IOMMU: iova=0x({_H})(?: - 0x({_H}))?"
#: One branch per body shape, each keyed by its event names where the reference's
#: fast path reads that shape for those names only; the branch's last group is
#: always matched, so ``Match.lastindex`` says which branch took the line.
_BODIES = (
    # 6-9 map: iova, end, paddr, size
    rf"map:{_S}?{_IOVA} paddr=0x({_H}) size=(\d+)",
    # 10-13 unmap: iova, end, size, unmapped_size
    rf"unmap:{_S}?{_IOVA} size=(\d+) unmapped_size=(\d+)",
    # 14-19 single dma map: event, device, dir, dma_addr, size, phys_addr
    rf"({_names(FAST_DMA_MAPS)}):{_S}?(\S+) dir=(\w+) dma_addr={_X} size=(\d+) "
    rf"phys_addr={_X} attrs=\S*",
    # 20-24 single dma unmap or sync: event, device, dir, dma_addr, size
    rf"({_names(FAST_DMA_SINGLES)}):{_S}?(\S+) dir=(\w+) dma_addr={_X} size=(\d+)"
    rf"(?: attrs=\S*)?",
    # 25-31 6.12 scatterlist map: event, device, dir, dma_addrs, sizes, phys_addrs, attrs
    rf"(\w+):{_S}?([^\s={{][^\s=]*) dir=(\w+) dma_addrs={_LIST} sizes={_LIST} "
    rf"phys_addrs={_LIST} attrs=(\S*)",
    # 32-36 6.12 scatterlist unmap or sync: event, device, dir, phys_addrs, attrs
    rf"(\w+):{_S}?([^\s={{][^\s=]*) dir=(\w+) phys_addrs={_LIST} attrs=(\S*)",
)
_LINE = re.compile(
    _HEAD + "(?:" + "|".join(f"(?:{b})" for b in _BODIES) + rf"){_S}*$", re.MULTILINE
)
_MAP, _UNMAP, _DMA_MAP, _DMA_SINGLE, _SG_MAP = 9, 13, 19, 24, 31  # each branch's last group

#: How much of a file is looked at to tell a text trace from a binary one.
_SNIFF = 1 << 16

#: A header's task, pid and CPU; None for a task name starting ``#`` (a comment).
Head = tuple[str, int, int] | None


def _hexes(text: str) -> tuple[int, ...]:
    return tuple(map(int, text.split(","), repeat(16)))


def scan_text(text: str) -> list[Event | Skipped]:
    """The events and skips of a whole trace text, as ``parse_line`` line by line.

    Lines end at ``"\\n"`` only (``str.splitlines()`` would also cut at ``\\x1c``-``\\x1e``,
    ``\\x85`` and ``\\u2028``, and the line numbers would no longer be the file's)."""
    out: list[Event | Skipped] = []
    append = out.append
    heads: dict[str, Head] = {}  # header text -> what it says (a trace has few tasks)
    pos = 0  # where the next line not yet read starts
    number = 1  # its number
    for m in _LINE.finditer(text):
        start = m.start()
        if start != pos:
            _slow(text[pos : start - 1], number, append)
            number += text.count("\n", pos, start)
        item = _event(number, m, heads)
        if item is not None:
            append(item)
        else:
            _slow(m.group(), number, append)
        pos = m.end() + 1
        number += 1
    if pos <= len(text):
        _slow(text[pos:], number, append)
    return out


def _slow(lines: str, number: int, append: Callable[[Event | Skipped], None]) -> None:
    """Lines the expression did not take, read by the reference."""
    for line in lines.split("\n"):
        item = parse_line(number, line)
        if item is not None:
            append(item)
        number += 1


def _head(m: re.Match[str]) -> Head:
    comm, pid, cpu = m.group(2, 3, 4)
    comm = comm.strip()
    return None if comm[:1] == "#" else (comm, int(pid), int(cpu))


def _event(number: int, m: re.Match[str], heads: dict[str, Head]) -> Event | None:
    """The event of a line the expression took, or None to ask the reference."""
    text = m.group(1)
    if text in heads:
        head = heads[text]
    else:
        head = heads[text] = _head(m)
    if head is None:
        return None
    comm, pid, cpu = head
    branch = m.lastindex
    if branch == _MAP:
        ts, iova_, end, paddr, size_ = m.group(5, 6, 7, 8, 9)
        iova, size = int(iova_, 16), int(size_)
        if end is not None and int(end, 16) != iova + size:
            return None
        return IommuMap(number, comm, pid, cpu, float(ts), iova, int(paddr, 16), size)
    if branch == _UNMAP:
        ts, iova_, end, size_, unmapped = m.group(5, 10, 11, 12, 13)
        iova, size = int(iova_, 16), int(size_)
        if end is not None and int(end, 16) != iova + size:
            return None
        return IommuUnmap(number, comm, pid, cpu, float(ts), iova, size, int(unmapped))
    if branch == _DMA_MAP:
        ts, event, dev, way, addr, size_, phys = m.group(5, 14, 15, 16, 17, 18, 19)
        return DmaEvent(
            number, comm, pid, cpu, float(ts), event, dev, DMA_ROLES[event], way,
            int(addr, 16), int(size_), int(phys, 16),
        )  # fmt: skip
    if branch == _DMA_SINGLE:
        ts, event, dev, way, addr, size_ = m.group(5, 20, 21, 22, 23, 24)
        return DmaEvent(
            number, comm, pid, cpu, float(ts), event, dev, DMA_ROLES[event], way,
            int(addr, 16), int(size_),
        )  # fmt: skip
    return _sg_event(number, comm, pid, cpu, m)


def _sg_event(number: int, comm: str, pid: int, cpu: int, m: re.Match[str]) -> Event | None:
    """A 6.12 scatterlist line, as the reference's field-by-field dma parser reads it."""
    if m.lastindex == _SG_MAP:
        ts, event, dev, way, addrs_, sizes_, phys_, attrs = m.group(5, *range(25, 32))
        addrs, sizes = _hexes(addrs_), _hexes(sizes_)
        if len(addrs) != len(sizes):
            return None
    else:
        ts, event, dev, way, phys_, attrs = m.group(5, *range(32, 37))
        addrs = sizes = ()
    role = DMA_ROLES.get(event)
    if role is None or event in FAST_DMA_MAPS or event in FAST_DMA_SINGLES:
        return None  # not a dma event, or one the reference reads by its own shape first
    return DmaEvent(
        number, comm, pid, cpu, float(ts), event, dev, role, way, None, None, None,
        addrs, sizes, _hexes(phys_), None, None, False, {"attrs": attrs},
    )  # fmt: skip


def _refuse_binary(raw: bytes, source: str) -> None:
    head = raw[:_SNIFF]
    if b"\0" in head:
        raise TraceError(f"{source}: not a text trace (it holds NUL bytes: a binary file?)")
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 4:  # not just a character cut at the sniff boundary
            raise TraceError(
                f"{source}: not a text trace (byte {err.start} is not UTF-8: a binary file?)"
            ) from None


def read_trace(path: str | os.PathLike[str]) -> list[Event | Skipped]:
    """Parse the trace file at ``path``; a binary file is refused with a TraceError."""
    if not isinstance(path, str | os.PathLike):
        raise TraceError(f"trace path must be a str or path, got {path!r}")
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise TraceError(f"{source}: cannot read the trace: {err.strerror or err}") from None
    return parse_text(raw, source=source)


def parse_text(text: str | bytes, *, source: str = "<trace>") -> list[Event | Skipped]:
    """Parse a whole trace given as text (or bytes, checked not to be binary)."""
    if isinstance(text, bytes):
        _refuse_binary(text, source)
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise TraceError(f"{source}: a trace is text, got {type(text).__name__}")
    if "\0" in text[:_SNIFF]:
        raise TraceError(f"{source}: not a text trace (it holds NUL characters)")
    with collector_paused():
        return scan_text(text)
