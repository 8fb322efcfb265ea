"""An interval index of physical memory: which edges cover each byte.

The mapping graph has to answer "every alias of these bytes" whatever pieces the
mappings were made of: a whole allocation chunk, a page inside it, a caller's buffer
straddling two chunks.  :class:`PhysIndex` keeps physical memory cut into *segments*:
maximal intervals over which the set of covering keys is constant and non-empty.
Every query is then a ``bisect`` plus a walk over the segments it overlaps, however
the mappings were cut, and the sharing rule can be evaluated per segment (the
finest granularity at which the set of address spaces mapping a byte can change).

The segments are kept canonical: neighbours with equal key sets are merged when a key
goes away, so adding and removing a key leaves the index exactly as it was.  Starts
live in one sorted list (insertion is a ``bisect`` plus a memmove, which for the
tens of thousands of segments a fragmented 64 MiB buffer makes is microseconds);
ends and key tuples live in dicts keyed by the start.  A bulk add of ranges that
touch nothing indexed (a fresh buffer's pieces) is checked with one sort and one
search and entered with dict updates, whatever the number of pieces.
"""

from __future__ import annotations

import bisect
import collections
import operator
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

#: What :meth:`PhysIndex.cover` reports for bytes no key covers.
EMPTY: tuple[Hashable, ...] = ()

#: Up to this many ranges, :meth:`PhysIndex.clear_of_spans` checks them one by one
#: (a bisect each; numpy converts every segment start per call: 64 pages among 2,700
#: segments take 4-17 us one by one, 64-77 us with numpy).
_FEW = 64

#: The keys covering one segment: a tuple (immutable, so segments cut from one share
#: it, and a tuple of plain keys costs the garbage collector nothing once seen).
Keys = tuple[Hashable, ...]


def _same(a: Keys, b: Keys) -> bool:
    """Whether two key tuples hold the same keys (in any order)."""
    return a == b or (len(a) == len(b) and set(a) == set(b))


class PhysIndex:
    """Segments of physical memory with the keys covering each (see the module notes).

    ``cover`` hands out the index's own key tuples (each key once, in no particular
    order).
    """

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._end: dict[int, int] = {}
        self._keys: dict[int, Keys] = {}

    def __len__(self) -> int:
        """Number of segments."""
        return len(self._starts)

    def segments(self) -> list[tuple[int, int, frozenset[Hashable]]]:
        """Every segment as ``(start, end, keys)``, by address."""
        return [(s, self._end[s], frozenset(self._keys[s])) for s in self._starts]

    def _split(self, at: int) -> None:
        """Cut the segment strictly containing ``at`` (if any) in two at ``at``."""
        starts = self._starts
        i = bisect.bisect_right(starts, at) - 1
        if i < 0:
            return
        s = starts[i]
        end = self._end[s]
        if s == at or end <= at:
            return
        self._end[s] = at
        self._end[at] = end
        self._keys[at] = self._keys[s]
        starts.insert(i + 1, at)

    def add(self, start: int, end: int, key: Hashable) -> None:
        """Record that ``key`` covers ``[start, end)``."""
        if end <= start:
            return
        self._split(start)
        self._split(end)
        starts, ends, keys = self._starts, self._end, self._keys
        i = bisect.bisect_left(starts, start)
        pos = start
        while pos < end:
            if i < len(starts) and starts[i] == pos:
                if key not in keys[pos]:
                    keys[pos] = (*keys[pos], key)
                pos = ends[pos]
            else:
                stop = min(starts[i], end) if i < len(starts) else end
                starts.insert(i, pos)
                ends[pos] = stop
                keys[pos] = (key,)
                pos = stop
            i += 1

    def touches(self, start: int, end: int) -> bool:
        """Whether some segment covers a byte of ``[start, end)``: the last segment
        starting before ``end`` reaches furthest of those."""
        starts = self._starts
        i = bisect.bisect_left(starts, end)
        return i > 0 and self._end[starts[i - 1]] > start

    def clear_of(self, ranges: list[tuple[int, int]]) -> bool:
        """Whether the ``(start, end)`` ranges overlap neither each other nor any
        segment (a quick test before work done in bulk)."""
        return self.clear_of_spans([s for s, _ in ranges], [e for _, e in ranges])

    def clear_of_spans(self, starts: npt.ArrayLike, ends: npt.ArrayLike) -> bool:
        """:meth:`clear_of` of the ranges ``[starts[i], ends[i])``, in any order, with
        one sort and one search for all of them (a backing checks 16384 pieces)."""
        if isinstance(starts, list) and len(starts) <= _FEW:
            return self._clear_of_few(starts, list(ends))  # type: ignore[arg-type]
        s, e = np.asarray(starts, dtype=np.uint64), np.asarray(ends, dtype=np.uint64)
        if not s.size:
            return True
        order = np.lexsort((e, s))  # as sorted (start, end) tuples
        s, e = s[order], e[order]
        if bool((e[:-1] > s[1:]).any()):
            return False
        if not self._starts:
            return True
        have = np.asarray(self._starts, dtype=np.uint64)
        at = np.searchsorted(have, s)  # bisect_left: the first segment at or after
        after = np.append(have, np.uint64(np.iinfo(np.uint64).max))[at]
        if bool((e > after).any()):
            return False
        gaps = np.unique(at)  # the segment before each is met once, whatever the count
        ends_before = np.array(
            [self._end[self._starts[i - 1]] if i else 0 for i in gaps.tolist()], dtype=np.uint64
        )
        return bool((ends_before[np.searchsorted(gaps, at)] <= s).all())

    def _clear_of_few(self, starts: list[int], ends: list[int]) -> bool:
        """:meth:`clear_of_spans` of a few ranges with bisect: numpy's fixed cost is
        tens of microseconds, the whole answer for one range a few."""
        spans = sorted(zip(starts, ends, strict=True))
        have, end_of = self._starts, self._end
        previous_end = None
        for start, end in spans:
            if previous_end is not None and previous_end > start:
                return False
            previous_end = end
            at = bisect.bisect_left(have, start)
            if at < len(have) and end > have[at]:
                return False
            if at and end_of[have[at - 1]] > start:
                return False
        return True

    def add_many(self, items: Sequence[tuple[int, int, Hashable]]) -> None:
        """:meth:`add` of every ``(start, end, key)``, each key new to the index."""
        self.add_spans([i[0] for i in items], [i[1] for i in items], [i[2] for i in items])

    def add_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> None:
        """:meth:`add` of every ``(starts[i], ends[i], keys[i])``, each key new to the
        index.

        Ranges that neither overlap each other nor anything indexed (a fresh buffer's
        pieces) become one segment each, entered with a few dict updates and one merge
        of the sorted starts; otherwise they are added one by one.  The result is the
        same either way.
        """
        if not all(map(operator.lt, starts, ends)):  # empty ranges add nothing
            kept = [i for i, (s, e) in enumerate(zip(starts, ends, strict=True)) if s < e]
            starts, ends = [starts[i] for i in kept], [ends[i] for i in kept]
            keys = [keys[i] for i in kept]
        if not self.clear_of_spans(starts, ends):
            items = sorted(zip(starts, ends, keys, strict=True), key=lambda it: (it[0], it[1]))
            for start, end, key in items:
                self.add(start, end, key)
            return
        self._end.update(zip(starts, ends, strict=True))
        self._keys.update(zip(starts, zip(keys), strict=True))
        self._starts += starts
        self._starts.sort()  # a sorted run and a nearly sorted one: a merge

    def sole(self, items: Iterable[tuple[int, int, Hashable]]) -> bool:
        """Whether each ``(start, end, key)`` is exactly one segment that ``key``
        alone covers (nothing else maps those bytes)."""
        starts, ends, keys = columns(items)
        return self.sole_spans(starts, ends, keys)

    def sole_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> bool:
        """:meth:`sole` of every ``(starts[i], ends[i], keys[i])``: the index's ends
        and key tuples at ``starts``, compared list against list (C loops: an
        unbacking checks 16384 pieces twice)."""
        ends = ends if type(ends) is list else list(ends)  # a tuple never equals a list
        return list(map(self._end.get, starts)) == ends and list(
            map(self._keys.get, starts)
        ) == list(zip(keys))

    def discard_many(self, items: list[tuple[int, int, Hashable]]) -> None:
        """:meth:`discard` of every ``(start, end, key)``.

        When each is a segment of its key alone (:meth:`sole`: a backing of memory
        nothing else maps), the segments go in one pass over the starts: a removed
        segment leaves a gap, so no neighbours become mergeable.  Otherwise they are
        discarded one by one.  The result is the same either way.
        """
        self.discard_spans(*columns(items))

    def discard_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> None:
        """:meth:`discard_many` of every ``(starts[i], ends[i], keys[i])``."""
        if not all(map(operator.lt, starts, ends)):  # empty ranges discard nothing
            kept = [i for i, (s, e) in enumerate(zip(starts, ends, strict=True)) if s < e]
            starts, ends = [starts[i] for i in kept], [ends[i] for i in kept]
            keys = [keys[i] for i in kept]
        if not self.sole_spans(starts, ends, keys):
            for start, end, key in zip(starts, ends, keys, strict=True):
                self.discard(start, end, key)
            return
        end_of = self._end
        collections.deque(map(end_of.__delitem__, starts), maxlen=0)  # a C loop
        collections.deque(map(self._keys.__delitem__, starts), maxlen=0)
        self._starts = [s for s in self._starts if s in end_of]

    def discard(self, start: int, end: int, key: Hashable) -> None:
        """Forget ``key`` over ``[start, end)`` (exactly the range it was added with)
        and merge segments that became equal, restoring the canonical form."""
        if end <= start:
            return
        starts, ends, keys = self._starts, self._end, self._keys
        i = bisect.bisect_left(starts, start)
        j = i
        while j < len(starts) and starts[j] < end:
            here = keys[starts[j]]
            if key in here:
                keys[starts[j]] = tuple(k for k in here if k != key)
            j += 1
        lo, hi = max(i - 1, 0), min(j + 1, len(starts))
        kept: list[int] = []
        for s in starts[lo:hi]:
            here = keys[s]
            if not here:
                del ends[s], keys[s]
                continue
            if kept and ends[kept[-1]] == s and _same(keys[kept[-1]], here):
                ends[kept[-1]] = ends[s]
                del ends[s], keys[s]
                continue
            kept.append(s)
        starts[lo:hi] = kept

    def rename(self, start: int, end: int, old: Hashable, new: Hashable) -> None:
        """Replace ``old`` by ``new`` over ``[start, end)`` (exactly ``old``'s range).

        ``new`` must be a key the index does not hold yet, so no segment becomes equal
        to a neighbour and the cut stays canonical without any merging.
        """
        starts, keys = self._starts, self._keys
        i = bisect.bisect_left(starts, start)
        while i < len(starts) and starts[i] < end:
            keys[starts[i]] = tuple(new if k == old else k for k in keys[starts[i]])
            i += 1

    def cover(self, start: int, end: int) -> list[tuple[int, int, Keys]]:
        """``[start, end)`` cut into ``(start, end, keys)`` pieces, gaps included (with
        :data:`EMPTY`), in address order."""
        out: list[tuple[int, int, Keys]] = []
        starts, ends, keys = self._starts, self._end, self._keys
        n = len(starts)
        i = max(bisect.bisect_right(starts, start) - 1, 0)
        pos = start
        while pos < end:
            if i >= n:
                out.append((pos, end, EMPTY))
                break
            s = starts[i]
            e = ends[s]
            if e <= pos:
                i += 1
                continue
            if s > pos:
                stop = s if s < end else end
                out.append((pos, stop, EMPTY))
                pos = stop
                continue
            stop = e if e < end else end
            out.append((pos, stop, keys[s]))
            pos = stop
            i += 1
        return out

    def keys_over_ranges(self, starts: Sequence[int], ends: Sequence[int]) -> set[Hashable]:
        """:meth:`keys_over` of every ``[starts[i], ends[i])`` at once: one bisect per
        range and a walk over the segments it overlaps, without the cover lists (a
        scatterlist's pages; most lie inside one segment)."""
        found: set[Hashable] = set()
        seg_starts, seg_ends, keys = self._starts, self._end, self._keys
        n = len(seg_starts)
        bisect_right = bisect.bisect_right
        for start, end in zip(starts, ends, strict=True):
            if end <= start:
                continue
            i = bisect_right(seg_starts, start) - 1
            if i >= 0:
                s = seg_starts[i]
                if seg_ends[s] >= end:  # inside one segment (the next starts after it)
                    found.update(keys[s])
                    continue
            else:
                i = 0
            while i < n:
                s = seg_starts[i]
                if s >= end:
                    break
                if seg_ends[s] > start:
                    found.update(keys[s])
                i += 1
        return found

    def keys_over(self, start: int, end: int) -> set[Hashable]:
        """Every key covering some byte of ``[start, end)``."""
        found: set[Hashable] = set()
        for _, _, keys in self.cover(start, end):
            found.update(keys)
        return found


def columns(
    items: Iterable[tuple[int, int, Hashable]],
) -> tuple[list[int], list[int], list[Hashable]]:
    """``(start, end, key)`` items as three lists."""
    rows = list(items)
    return [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
