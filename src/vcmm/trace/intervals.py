"""Disjoint address intervals with a value each, for the replay's bookkeeping.

The replay asks the same questions of every map, unmap and fault: what is mapped in
``[a, b)``, which parts of it are holes, and which line last unmapped an address.
The starts are kept sorted in chunks of a bounded length (with each chunk's first
start in a list of its own), so a question is two ``bisect`` calls plus what was
found, and an insert or removal moves at most one chunk's tail: a domain's record
of unmapped ranges grows with the trace (hundreds of thousands of pieces), and one
flat sorted list would make every insert a copy of all of it.  Values are opaque; a
value that depends on the offset (a physical address) is kept as the value at the
interval's start and shifted by the caller.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

from vcmm.trace.errors import TraceError

V = TypeVar("V")

#: Starts per chunk before it is split in two (a copy of this many ints is cheap).
CHUNK = 512


class IntervalMap(Generic[V]):
    """Disjoint ``[start, end)`` intervals, each with a value (see the module notes).

    Sorted chunks of starts (``_chunks``, each chunk's first start in ``_mins``) and
    a dict from start to ``(end, value)``.
    """

    __slots__ = ("_chunk", "_chunks", "_mins", "_of")

    def __init__(self, *, chunk: int = CHUNK) -> None:
        if not isinstance(chunk, int) or chunk < 2:
            raise TraceError(f"IntervalMap chunk must be an int >= 2, got {chunk!r}")
        self._chunk = chunk
        self._chunks: list[list[int]] = []
        self._mins: list[int] = []
        self._of: dict[int, tuple[int, V]] = {}

    def __len__(self) -> int:
        return len(self._of)

    def __iter__(self) -> Iterator[tuple[int, int, V]]:
        of = self._of
        return iter([(s, *of[s]) for chunk in self._chunks for s in chunk])

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """The intervals meeting ``[start, end)``, whole, in address order."""
        chunks, of = self._chunks, self._of
        ci = bisect_right(self._mins, start) - 1
        i = 0
        if ci < 0:
            ci = 0
        else:
            chunk = chunks[ci]
            i = bisect_right(chunk, start) - 1
            if of[chunk[i]][0] <= start:
                i += 1
        out = []
        while ci < len(chunks):
            chunk = chunks[ci]
            j = bisect_left(chunk, end, i)  # the chunk's starts before ``end``
            out += [(s, *of[s]) for s in chunk[i:j]]
            if j < len(chunk):
                break
            ci += 1
            i = 0
        return out

    def first(self, start: int, end: int) -> tuple[int, int, V] | None:
        """The lowest interval meeting ``[start, end)``, if any (two bisects)."""
        mins, of = self._mins, self._of
        ci = bisect_right(mins, start) - 1
        if ci < 0:
            if not mins:
                return None
            s = mins[0]
        else:
            chunk = self._chunks[ci]
            i = bisect_right(chunk, start) - 1
            s = chunk[i]
            e, v = of[s]
            if e > start:
                return s, e, v
            if i + 1 < len(chunk):
                s = chunk[i + 1]
            elif ci + 1 < len(mins):
                s = mins[ci + 1]
            else:
                return None
        if s < end:
            e, v = of[s]
            return s, e, v
        return None

    def at(self, addr: int) -> tuple[int, int, V] | None:
        """The interval holding ``addr``, if any."""
        ci = bisect_right(self._mins, addr) - 1
        if ci >= 0:
            chunk = self._chunks[ci]
            s = chunk[bisect_right(chunk, addr) - 1]
            e, v = self._of[s]
            if e > addr:
                return s, e, v
        return None

    def insert(self, start: int, end: int, value: V) -> None:
        """Add ``[start, end)``, which the caller knows overlaps nothing."""
        self._of[start] = (end, value)
        chunks, mins = self._chunks, self._mins
        if not chunks:
            chunks.append([start])
            mins.append(start)
            return
        ci = max(bisect_right(mins, start) - 1, 0)
        chunk = chunks[ci]
        insort(chunk, start)
        mins[ci] = chunk[0]
        if len(chunk) > 2 * self._chunk:
            half = chunk[self._chunk :]
            del chunk[self._chunk :]
            chunks.insert(ci + 1, half)
            mins.insert(ci + 1, half[0])

    def remove(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """Cut ``[start, end)`` out; returns the removed pieces (clipped, original values).

        An interval cut at one side keeps its value; one cut in the middle becomes
        two.  Values must not depend on the position (store offsets, not addresses).
        """
        found = self.overlapping(start, end)
        if not found:
            return found
        of = self._of
        removed = found  # only the end pieces can stick out of [start, end)
        if found[0][0] < start or found[-1][1] > end:
            removed = [(max(s, start), min(e, end), v) for s, e, v in found]
        drop = [s for s, _, _ in found]
        s0, _, v0 = found[0]
        if s0 < start:
            of[s0] = (start, v0)  # keeps its start: the chunks stay as they are
            del drop[0]
        for s in drop:
            del of[s]
        self._drop_run(drop)
        _, e1, v1 = found[-1]
        if e1 > end:
            self.insert(end, e1, v1)
        return removed

    def _drop_run(self, starts: list[int]) -> None:
        """Take sorted starts that follow each other in the map out of the chunks, a
        slice of a chunk at a time."""
        chunks, mins = self._chunks, self._mins
        at = 0
        while at < len(starts):
            ci = bisect_right(mins, starts[at]) - 1
            chunk = chunks[ci]
            i = bisect_left(chunk, starts[at])
            j = min(i + len(starts) - at, len(chunk))
            del chunk[i:j]
            at += j - i
            if not chunk:
                del chunks[ci]
                del mins[ci]
            elif i == 0:
                mins[ci] = chunk[0]

    def insert_run(self, items: Sequence[tuple[int, int, V]]) -> None:
        """Add sorted, disjoint intervals that the caller knows overlap nothing: one
        splice of the starts when no interval lies between them, else one insert each."""
        self.insert_sorted([s for s, _, _ in items], [(e, v) for _, e, v in items])

    def insert_sorted(self, starts: list[int], entries: list[tuple[int, V]]) -> None:
        """:meth:`insert_run` given as columns: the sorted ``starts`` and each one's
        ``(end, value)``.  Callers that build the columns as they go save a pass."""
        if len(starts) < 2:
            for s, (e, v) in zip(starts, entries, strict=True):
                self.insert(s, e, v)
            return
        first, last = starts[0], starts[-1]
        chunks, mins = self._chunks, self._mins
        if not chunks:
            chunks.append([])
            mins.append(first)
        ci = max(bisect_right(mins, first) - 1, 0)
        chunk = chunks[ci]
        i = bisect_right(chunk, first)
        after = chunk[i] if i < len(chunk) else mins[ci + 1] if ci + 1 < len(mins) else None
        if after is not None and after < last:
            for s, (e, v) in zip(starts, entries, strict=True):
                self.insert(s, e, v)
            return
        self._of.update(zip(starts, entries, strict=True))
        chunk[i:i] = starts
        mins[ci] = chunk[0]
        size = self._chunk
        while len(chunk) > 2 * size:
            half = chunk[size:]
            del chunk[size:]
            ci += 1
            chunks.insert(ci, half)
            mins.insert(ci, half[0])
            chunk = half

    def assign(self, start: int, end: int, value: V) -> None:
        """Make ``[start, end)`` one interval of ``value``, replacing what was there."""
        self.remove(start, end)
        self.insert(start, end, value)


def holes(start: int, end: int, pieces: Sequence[tuple[int, int, object]]) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that no piece (sorted, disjoint) covers."""
    out = []
    at = start
    for s, e, _ in pieces:
        if s > at:
            out.append((at, min(s, end)))
        at = max(at, e)
    if at < end:
        out.append((at, end))
    return out
