"""Disjoint address intervals with a value each, for the replay's bookkeeping.

The replay asks the same questions of every map, unmap and fault: what is mapped in
``[a, b)``, which parts of it are holes, and which line last unmapped an address.
Sorted parallel lists and ``bisect`` answer each in O(log n) plus what was found;
inserts and removals move list tails (memmove), cheap at the sizes of a domain's
live mappings.  Values are opaque; a value that depends on the offset (a physical
address) is kept as the value at the interval's start and shifted by the caller.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence
from typing import Generic, TypeVar

V = TypeVar("V")


class IntervalMap(Generic[V]):
    """Disjoint ``[start, end)`` intervals, each with a value (see the module notes).

    One sorted list of starts (the only list an insert or removal shifts) and a dict
    from start to ``(end, value)``.
    """

    __slots__ = ("_of", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._of: dict[int, tuple[int, V]] = {}

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int, V]]:
        of = self._of
        return iter([(s, *of[s]) for s in self._starts])

    def _first(self, start: int) -> int:
        """Index of the first interval that ends after ``start``."""
        i = bisect_right(self._starts, start) - 1
        if i >= 0 and self._of[self._starts[i]][0] > start:
            return i
        return i + 1

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """The intervals meeting ``[start, end)``, whole, in address order."""
        starts, of = self._starts, self._of
        out = []
        i = self._first(start)
        n = len(starts)
        while i < n and starts[i] < end:
            s = starts[i]
            out.append((s, *of[s]))
            i += 1
        return out

    def first(self, start: int, end: int) -> tuple[int, int, V] | None:
        """The lowest interval meeting ``[start, end)``, if any (one bisect)."""
        i = self._first(start)
        if i < len(self._starts) and self._starts[i] < end:
            s = self._starts[i]
            return (s, *self._of[s])
        return None

    def at(self, addr: int) -> tuple[int, int, V] | None:
        """The interval holding ``addr``, if any."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0:
            s = self._starts[i]
            e, v = self._of[s]
            if e > addr:
                return s, e, v
        return None

    def insert(self, start: int, end: int, value: V) -> None:
        """Add ``[start, end)``, which the caller knows overlaps nothing."""
        self._starts.insert(bisect_left(self._starts, start), start)
        self._of[start] = (end, value)

    def remove(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """Cut ``[start, end)`` out; returns the removed pieces (clipped, original values).

        An interval cut at one side keeps its value; one cut in the middle becomes
        two.  Values must not depend on the position (store offsets, not addresses).
        """
        starts, of = self._starts, self._of
        i = self._first(start)
        j = i
        n = len(starts)
        while j < n and starts[j] < end:
            j += 1
        if i == j:
            return []
        removed = []
        keep: list[int] = []
        for k in range(i, j):
            s = starts[k]
            e, v = of.pop(s)
            removed.append((max(s, start), min(e, end), v))
            if s < start:
                keep.append(s)
                of[s] = (start, v)
            if e > end:
                keep.append(end)
                of[end] = (e, v)
        starts[i:j] = keep
        return removed

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
