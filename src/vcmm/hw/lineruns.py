"""Runs of consecutive cache lines, so that line data moves one slice per run.

The data cache (:mod:`vcmm.hw.cache`) works on arrays of line numbers and flags; memory
is written and read fastest in contiguous pieces.  These two helpers turn such arrays
into ``[a, b)`` index ranges, and :class:`LineAccess` is the state of one allocating
access as the cache advances it chunk by chunk.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

U8 = npt.NDArray[np.uint8]


class LineMode(enum.Enum):
    """What an allocating access does with its lines."""

    READ = "read"
    WRITE = "write"
    PREFETCH = "prefetch"


@dataclass(slots=True)
class LineAccess:
    """One allocating access over lines ``first .. first + n - 1``.

    ``off`` is the offset of the first byte inside the first line and ``length`` the
    byte count, so the access covers span bytes ``[off, off + length)`` where the span
    starts at the first line's address.
    """

    first: int
    n: int
    mode: LineMode
    off: int
    length: int
    base_tick: int
    src: U8 | None = None
    out: U8 | None = None
    filled: int = 0


def runs(numbers: npt.NDArray[np.int64]) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` of runs of consecutive values in an ascending array."""
    if numbers.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(numbers) != 1) + 1
    starts = [0, *breaks.tolist()]
    ends = [*breaks.tolist(), int(numbers.size)]
    return list(zip(starts, ends, strict=True))


def runs_of(flags: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Index ranges ``[a, b)`` where ``flags`` is True."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    return list(
        zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True)
    )
