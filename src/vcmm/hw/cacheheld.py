"""What the CPU cache holds of given ranges: a query, kept apart from the cache's
operations so :mod:`vcmm.hw.cache` stays one job (its accesses and maintenance).

Why a query at all: maintenance by range does nothing to a range the cache holds no
line of, the usual case for a buffer handed to a device (the CPU wrote it long before,
or never), so :func:`vcmm.hw.cachesync.dma_sync` asks first and skips those ranges.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange

I64 = npt.NDArray[np.int64]
_INT64_MAX = (1 << 63) - 1


class HeldLines:
    """The queries of :class:`vcmm.hw.cache.DataCache` on its ``[set, way]`` arrays
    (tags, valid bits) and geometry, which the cache sets up."""

    _tags: I64
    _valid: npt.NDArray[np.bool_]
    _line_shift: int
    _tag_shift: int
    _set_mask: int
    #: Each set's index, shaped ``[set, 1]``.
    _set_index: I64

    def holds_any(self, r: AddressRange) -> bool:
        """Whether the cache holds any line overlapping ``r``: :meth:`held_lines` of
        one range, answered from the few sets the range maps to.

        Why: a streaming map of one page asks this once per call, and the whole-cache
        search of :meth:`held_lines` (every tag shifted, masked, sorted) costs more
        than the rest of the maintenance.  Lines ``first..first+n-1`` fall into
        consecutive sets (wrapping once at most when ``n <= sets``), the tag growing by
        one at the wrap, so two slices of the tag array hold every candidate way.
        """
        if type(r) is not AddressRange and not isinstance(r, AddressRange):
            raise InvalidArgumentError(f"cache holds_any: {r!r} is not an AddressRange")
        end = min(r.start + r.size, _INT64_MAX)  # above 63 bits no line lies
        if end <= r.start:
            return False
        shift = self._line_shift
        first = r.start >> shift
        n = ((end - 1) >> shift) - first + 1
        sets = self._set_mask + 1
        if n > sets:
            return bool(self.held_lines([r])[0])
        s0, tag = first & self._set_mask, first >> self._tag_shift
        stop = s0 + n
        tags, valid = self._tags, self._valid
        # the tags first: a way whose tag matches is rare, and then its valid bit decides
        if stop <= sets:
            match = tags[s0:stop] == tag
            return bool(match.any() and (valid[s0:stop] & match).any())
        low, high = tags[s0:] == tag, tags[: stop - sets] == tag + 1
        return bool(
            (low.any() and (valid[s0:] & low).any())
            or (high.any() and (valid[: stop - sets] & high).any())
        )

    def held_lines(self, ranges: Sequence[AddressRange]) -> I64:
        """How many cached lines overlap each of ``ranges``, in one pass: for a
        64-entry scatterlist one search of the cache's tags instead of 64 masks over
        the whole cache.  A query: it changes nothing, holes in the address map
        included."""
        for r in ranges:
            if type(r) is not AddressRange and not isinstance(r, AddressRange):
                raise InvalidArgumentError(f"cache held_lines: {r!r} is not an AddressRange")
        held = ((self._tags << self._tag_shift) | self._set_index)[self._valid]
        if not held.size or not ranges:
            return np.zeros(len(ranges), dtype=np.int64)
        held.sort()
        top = _INT64_MAX  # no line lies above (ARM physical addresses have at most 52 bits)
        starts = np.array([min(r.start, top) for r in ranges], dtype=np.int64)
        ends = np.array([min(r.start + r.size, top) for r in ranges], dtype=np.int64)
        shift = self._line_shift
        after = ((np.maximum(ends, starts + 1) - 1) >> shift) + 1
        counts: I64 = np.searchsorted(held, after) - np.searchsorted(held, starts >> shift)
        counts[ends == starts] = 0
        return counts
