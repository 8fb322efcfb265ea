"""The physical index with lazy adds: a streaming mapping's edge never enters it.

A streaming DMA mapping lives for microseconds.  Entering each of its edges into the
segments of :class:`~vcmm.core.physindex.PhysIndex` (splitting the linear map's
segment around the page) and taking it out again (merging the pieces back) was a
large part of what the mapping graph cost a map/unmap pair.  :class:`LazyIndex`
queues the adds instead and cancels a queued add when its key is discarded, and
answers every query exactly as the plain index would after the same calls.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import numpy.typing as npt

from vcmm.core.physindex import Keys, PhysIndex, columns

#: Queued adds :class:`LazyIndex` holds before it settles them all.
PENDING_LIMIT = 1024
#: Bulk adds of more keys than this go to the index at once (a backing's pieces are
#: long-lived, and entered in bulk cheaply when they touch nothing else).
BATCH_LIMIT = 128
#: log2 of the bytes one bucket of queued adds stands for (a page: a page's query
#: looks in one bucket, mostly empty).
BUCKET_SHIFT = 12
#: A queued add over more buckets than this is kept in a short list that every query
#: checks, instead of in each bucket.
WIDE_BUCKETS = 64
#: Wide queued adds held before the index settles.
WIDE_LIMIT = 8


class LazyIndex:
    """A :class:`PhysIndex` whose adds wait until they are needed.

    An add only enters a queue (a dict in add order, and buckets by
    address to find it); a discard of a key still queued cancels the add, so a
    short-lived edge never touches the segments.  Discards of settled keys go to the
    index at once, renames settle the queue first.  When the queue outgrows
    :data:`PENDING_LIMIT` it is settled in bulk, oldest first.

    Every answer equals :class:`PhysIndex`'s after the same calls, because the
    index's state is a function of the keys it holds and the order they came in (a
    segment's keys are in add order, segments are maximal) and settled keys are all
    older than queued ones: a query over bytes no queued add touches gets the
    index's own answer, one over queued adds the index's answer with the queued keys
    appended where they cover (:meth:`cover`).  The contract is the graph's use of
    :class:`PhysIndex`: a key is added once while held and discarded or renamed with
    exactly the range it was added with.
    """

    def __init__(
        self,
        *,
        limit: int = PENDING_LIMIT,
        shift: int = BUCKET_SHIFT,
        wide: int = WIDE_BUCKETS,
    ) -> None:
        #: The segments of every key but the queued ones.
        self.settled = PhysIndex()
        self._limit = limit
        self._shift = shift
        self._wide_buckets = wide
        #: Queued adds in add order: key -> (start, end, sequence number).
        self._added: dict[Hashable, tuple[int, int, int]] = {}
        #: Bucket number -> queued keys touching it (adds over up to ``wide`` buckets).
        self._buckets: dict[int, list[Hashable]] = {}
        #: Queued keys over more than ``wide`` buckets.
        self._wide: list[Hashable] = []
        self._seq = 0

    # -- the queue -------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Number of queued adds."""
        return len(self._added)

    def settle(self) -> None:
        """Enter every queued add into the index, oldest first (one bulk merge when
        they touch nothing indexed and not each other)."""
        if not self._added:
            return
        items = [(s, e, k) for k, (s, e, _) in self._added.items()]
        self._added, self._buckets, self._wide = {}, {}, []
        starts, ends, keys = columns(items)
        index = self.settled
        if index.clear_of_spans(starts, ends):
            index.add_spans(starts, ends, keys)  # no overlaps: the order does not matter
            return
        for start, end, key in items:  # (add_spans would add them by address)
            index.add(start, end, key)

    def _bucket_span(self, start: int, end: int) -> range | None:
        """The buckets ``[start, end)`` touches, None for a wide range."""
        first, last = start >> self._shift, (end - 1) >> self._shift
        return None if last - first >= self._wide_buckets else range(first, last + 1)

    def _queue(self, start: int, end: int, key: Hashable) -> None:
        self._added[key] = (start, end, self._seq)
        self._seq += 1
        span = self._bucket_span(start, end)
        if span is None:
            self._wide.append(key)
            return
        buckets = self._buckets
        for b in span:
            here = buckets.get(b)
            if here is None:
                buckets[b] = [key]
            else:
                here.append(key)

    def _cancel(self, key: Hashable) -> None:
        start, end, _ = self._added.pop(key)
        span = self._bucket_span(start, end)
        if span is None:
            self._wide.remove(key)
            return
        buckets = self._buckets
        for b in span:
            here = buckets[b]
            if len(here) == 1:
                del buckets[b]
            else:
                here.remove(key)

    def _settle_if_full(self) -> None:
        if len(self._added) > self._limit or len(self._wide) > WIDE_LIMIT:
            self.settle()

    def _one_bucket(self, start: int, end: int) -> list[Hashable] | None:
        """The queued keys in the one bucket ``[start, end)`` (``end > start``) lies
        in when that holds one key or none and no wide add is queued; else None."""
        first = start >> self._shift
        if first != (end - 1) >> self._shift or self._wide:
            return None
        here = self._buckets.get(first)
        if here is None:
            return []
        return here if len(here) == 1 else None

    def _adds_over(self, start: int, end: int) -> list[tuple[int, int, Hashable]]:
        """Queued adds overlapping ``[start, end)`` (``end > start``), oldest first."""
        added = self._added
        first, last = start >> self._shift, (end - 1) >> self._shift
        candidates: Iterable[Hashable]
        if first == last:
            candidates = self._buckets.get(first, ())
            if self._wide:
                candidates = [*candidates, *self._wide]
            elif not candidates:
                return []
        elif last - first < len(added):
            found: set[Hashable] = set(self._wide)
            buckets = self._buckets
            for b in range(first, last + 1):
                found.update(buckets.get(b, ()))
            candidates = found
        else:
            candidates = added
        hits = [
            (seq, s, e, k) for k in candidates for s, e, seq in (added[k],) if s < end and e > start
        ]
        if len(hits) > 1:
            hits.sort(key=operator.itemgetter(0))
        return [(s, e, k) for _, s, e, k in hits]

    def _touched(self, starts: list[int], ends: list[int]) -> bool:
        """Whether a queued add overlaps some ``[starts[i], ends[i])`` (all non-empty):
        a look in the buckets per range, or for many ranges one bisect per queued add
        into the ranges sorted by start with the furthest end reached so far."""
        if len(starts) <= 2 * len(self._added):
            return any(self._adds_over(s, e) for s, e in zip(starts, ends, strict=True))
        order = sorted(range(len(starts)), key=starts.__getitem__)
        first = [starts[i] for i in order]
        reach = list(itertools.accumulate((ends[i] for i in order), max))
        for s, e, _ in self._added.values():
            i = bisect.bisect_left(first, e)  # the ranges starting before the add ends
            if i and reach[i - 1] > s:
                return True
        return False

    # -- updates ---------------------------------------------------------------------------

    def add(self, start: int, end: int, key: Hashable) -> None:
        """:meth:`PhysIndex.add`, queued."""
        if end <= start:
            return
        self._queue(start, end, key)
        self._settle_if_full()

    def add_many(self, items: Sequence[tuple[int, int, Hashable]]) -> None:
        """:meth:`PhysIndex.add_many`, queued."""
        self.add_spans(*columns(items))

    def add_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> None:
        """:meth:`PhysIndex.add_spans`: queued in the order its one-by-one path adds
        them (by address); entered at once after the queue when they would
        overflow it or number more than :data:`BATCH_LIMIT` (a backing)."""
        if len(starts) > BATCH_LIMIT or len(starts) + len(self._added) > self._limit:
            self.settle()
            self.settled.add_spans(starts, ends, keys)
            return
        items = sorted(zip(starts, ends, keys, strict=True), key=operator.itemgetter(0, 1))
        for start, end, key in items:
            if start < end:
                self._queue(start, end, key)
        self._settle_if_full()

    def discard(self, start: int, end: int, key: Hashable) -> None:
        """:meth:`PhysIndex.discard`: a queued add is cancelled, a settled key leaves
        the index at once (it is older than every queued key, so the two orders of
        its discard and their adds leave the same segments)."""
        queued = self._added.get(key)
        if queued is None or end <= start:
            self.settled.discard(start, end, key)
        elif queued[0] == start and queued[1] == end:
            self._cancel(key)
        else:  # not the range it was added with (outside the contract)
            self.settle()
            self.settled.discard(start, end, key)

    def discard_many(self, items: list[tuple[int, int, Hashable]]) -> None:
        """:meth:`PhysIndex.discard_many`."""
        self.discard_spans(*columns(items))

    def discard_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> None:
        """:meth:`PhysIndex.discard_spans`: queued adds cancelled, the others
        discarded from the index together."""
        if not self._added:
            self.settled.discard_spans(starts, ends, keys)
            return
        rest = []
        for item in zip(starts, ends, keys, strict=True):
            start, end, key = item
            queued = self._added.get(key)
            if queued is not None and start < end:
                if queued[0] == start and queued[1] == end:
                    self._cancel(key)
                    continue
                self.settle()  # named with another range (outside the contract)
            rest.append(item)
        if rest:
            self.settled.discard_spans(*columns(rest))

    def rename(self, start: int, end: int, old: Hashable, new: Hashable) -> None:
        """:meth:`PhysIndex.rename` (rare: reservations split or joined), settled first."""
        self.settle()
        self.settled.rename(start, end, old, new)

    # -- queries ---------------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of segments."""
        self.settle()
        return len(self.settled)

    def segments(self) -> list[tuple[int, int, frozenset[Hashable]]]:
        """:meth:`PhysIndex.segments`."""
        self.settle()
        return self.settled.segments()

    def cover(self, start: int, end: int) -> list[tuple[int, int, Keys]]:
        """:meth:`PhysIndex.cover`: the index's pieces, cut where queued adds start or
        end inside them, with the queued keys covering each appended (they are the
        newest).  No two pieces need merging: the set changes where a queued key ends."""
        base = self.settled.cover(start, end)
        if not self._added or end <= start:
            return base
        one = self._one_bucket(start, end)
        if one is not None:  # a page's query (the common case), at most one candidate
            if not one:
                return base
            s, e, _ = self._added[one[0]]
            if s <= start and e >= end:  # over all of it (an edge's own range)
                return [(lo, hi, (*keys, one[0])) for lo, hi, keys in base]
        adds = self._adds_over(start, end)
        if not adds:
            return base
        cuts = sorted({p for s, e, _ in adds for p in (s, e)})
        out: list[tuple[int, int, Keys]] = []
        for s, e, keys in base:
            i = bisect.bisect_right(cuts, s)
            points = [s]
            while i < len(cuts) and cuts[i] < e:
                points.append(cuts[i])
                i += 1
            points.append(e)
            for lo, hi in itertools.pairwise(points):
                out.append((lo, hi, keys + tuple(k for a, b, k in adds if a < hi and b > lo)))
        return out

    def keys_over(self, start: int, end: int) -> set[Hashable]:
        """:meth:`PhysIndex.keys_over`."""
        found = self.settled.keys_over(start, end)
        if self._added and end > start:
            found.update(k for _, _, k in self._adds_over(start, end))
        return found

    def keys_over_ranges(self, starts: Sequence[int], ends: Sequence[int]) -> set[Hashable]:
        """:meth:`PhysIndex.keys_over_ranges`."""
        found = self.settled.keys_over_ranges(starts, ends)
        if self._added:
            for start, end in zip(starts, ends, strict=True):
                if end > start and self._one_bucket(start, end) != []:
                    found.update(k for _, _, k in self._adds_over(start, end))
        return found

    def clear_of(self, ranges: list[tuple[int, int]]) -> bool:
        """:meth:`PhysIndex.clear_of`."""
        return self.clear_of_spans([s for s, _ in ranges], [e for _, e in ranges])

    def clear_of_spans(self, starts: npt.ArrayLike, ends: npt.ArrayLike) -> bool:
        """:meth:`PhysIndex.clear_of_spans`: the index's answer, and no queued add
        over any range.  An empty range is judged by where segments are cut, which
        queued adds change: then the queue is settled first."""
        if not self._added:
            return self.settled.clear_of_spans(starts, ends)
        s = starts if isinstance(starts, list) else np.asarray(starts).tolist()
        e = ends if isinstance(ends, list) else np.asarray(ends).tolist()
        if not all(map(operator.lt, s, e)):
            self.settle()
            return self.settled.clear_of_spans(starts, ends)
        return self.settled.clear_of_spans(s, e) and not self._touched(s, e)

    def sole(self, items: Iterable[tuple[int, int, Hashable]]) -> bool:
        """:meth:`PhysIndex.sole`."""
        return self.sole_spans(*columns(items))

    def sole_spans(self, starts: list[int], ends: list[int], keys: Sequence[Hashable]) -> bool:
        """:meth:`PhysIndex.sole_spans`: a settled key's segment as the index has it,
        no queued add over it; a queued key's range clear of the index and of every
        other queued add (nothing else covers it, so it is one segment).  Empty
        ranges, or a queued key named with another range, settle the queue first."""
        ends = ends if type(ends) is list else list(ends)
        added = self._added
        if added and starts and self._first_shared(starts[0], ends[0], keys[0]):
            return False
        if added and len(starts) == len(ends) == len(keys) and all(map(operator.lt, starts, ends)):
            items = list(zip(starts, ends, keys, strict=True))
            queued = list(map(added.get, keys))
            pairs = list(zip(items, queued, strict=True))
            if all(q is None or (q[0] == s and q[1] == e) for (s, e, _), q in pairs):
                return self._sole(
                    [item for item, q in pairs if q is None],
                    list(dict.fromkeys(item for item, q in pairs if q is not None)),
                )
        self.settle()
        return self.settled.sole_spans(starts, ends, keys)

    def _first_shared(self, start: int, end: int, key: Hashable) -> bool:
        """Whether ``key`` is queued over exactly ``[start, end)`` and the index
        covers some of it: then that item is not alone, whatever the others (the
        linear map under a streaming page: the usual unmap, answered at once)."""
        queued = self._added.get(key)
        return (
            queued is not None
            and queued[0] == start
            and queued[1] == end
            and start < end
            and self.settled.touches(start, end)
        )

    def _sole(
        self, old: list[tuple[int, int, Hashable]], new: list[tuple[int, int, Hashable]]
    ) -> bool:
        """:meth:`sole_spans` of settled items ``old`` and queued items ``new`` (each
        with the range it was added with), cheapest test first (the linear map under
        a streaming page fails the first)."""
        settled = self.settled
        return (
            not any(settled.touches(s, e) for s, e, _ in new)
            and settled.sole_spans(*columns(old))
            and all([k for _, _, k in self._adds_over(s, e)] == [key] for s, e, key in new)
            and not any(self._adds_over(s, e) for s, e, _ in old)
        )
