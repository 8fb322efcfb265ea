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
    """Disjoint ``[start, end)`` intervals, each with a value (see the module notes)."""

    __slots__ = ("_ends", "_starts", "_values")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._values: list[V] = []

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[tuple[int, int, V]]:
        return iter(zip(self._starts, self._ends, self._values, strict=True))

    def _first(self, start: int) -> int:
        """Index of the first interval that ends after ``start``."""
        i = bisect_right(self._starts, start) - 1
        if i >= 0 and self._ends[i] > start:
            return i
        return i + 1

    def overlapping(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """The intervals meeting ``[start, end)``, whole, in address order."""
        starts, ends, values = self._starts, self._ends, self._values
        out = []
        i = self._first(start)
        while i < len(starts) and starts[i] < end:
            out.append((starts[i], ends[i], values[i]))
            i += 1
        return out

    def at(self, addr: int) -> tuple[int, int, V] | None:
        """The interval holding ``addr``, if any."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and self._ends[i] > addr:
            return self._starts[i], self._ends[i], self._values[i]
        return None

    def insert(self, start: int, end: int, value: V) -> None:
        """Add ``[start, end)``, which the caller knows overlaps nothing."""
        i = bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._ends.insert(i, end)
        self._values.insert(i, value)

    def remove(self, start: int, end: int) -> list[tuple[int, int, V]]:
        """Cut ``[start, end)`` out; returns the removed pieces (clipped, original values).

        An interval cut at one side keeps its value (the caller shifts offset-dependent
        values by ``piece_start - interval_start``); one cut in the middle becomes two.
        """
        starts, ends, values = self._starts, self._ends, self._values
        i = self._first(start)
        j = i
        while j < len(starts) and starts[j] < end:
            j += 1
        if i == j:
            return []
        removed = [(max(starts[k], start), min(ends[k], end), values[k]) for k in range(i, j)]
        keep_s: list[int] = []
        keep_e: list[int] = []
        keep_v: list[V] = []
        if starts[i] < start:
            keep_s.append(starts[i])
            keep_e.append(start)
            keep_v.append(values[i])
        if ends[j - 1] > end:
            keep_s.append(end)
            keep_e.append(ends[j - 1])
            keep_v.append(values[j - 1])
        starts[i:j] = keep_s
        ends[i:j] = keep_e
        values[i:j] = keep_v
        return removed

    def assign(self, start: int, end: int, value: V) -> None:
        """Make ``[start, end)`` one interval of ``value``, replacing what was there."""
        self.remove(start, end)
        self.insert(start, end, value)

    def start_of(self, addr: int) -> int | None:
        """Start of the interval holding ``addr`` (None if none does)."""
        found = self.at(addr)
        return None if found is None else found[0]


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
