"""Free blocks of one size kept as runs: what a buddy allocator's top order needs.

At boot every page of a system RAM target is free, and nearly all of it sits in blocks
of the largest order: a 1 TiB target with 4 MiB top blocks has 262144 of them.  A
list with one entry per block would make boot, memory and every snapshot cost in
proportion to the RAM (and list insertion made boot quadratic).  Free top blocks are
instead kept as sorted, maximal runs ``[start, end)`` of adjacent blocks: boot is one
run per window, an allocation shortens a run, a free extends or joins runs, so the
cost follows the number of holes the software made, not the size of the RAM.

The runs are canonical (adjacent runs always merged), so equal sets of free blocks
give equal :meth:`BlockRuns.runs` and a failed allocation that gives its blocks back
restores the exact previous value.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, StateError


class BlockRuns:
    """A set of free, ``block``-aligned blocks of ``block`` bytes, stored as runs."""

    def __init__(self, block: int) -> None:
        if not is_int(block) or block <= 0:
            raise InvalidArgumentError(f"block size {block!r} must be a positive integer")
        self._block = block
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0

    @classmethod
    def from_blocks(cls, block: int, addresses: Iterable[int]) -> BlockRuns:
        """The set holding exactly ``addresses`` (any order)."""
        runs = cls(block)
        for pa in sorted(addresses):
            if runs._ends and runs._ends[-1] == pa:
                runs._ends[-1] += block
                runs._count += 1
            else:
                runs.add_run(pa, pa + block)
        return runs

    def __len__(self) -> int:
        """Number of free blocks."""
        return self._count

    def __bool__(self) -> bool:
        return self._count > 0

    def add_run(self, start: int, end: int) -> None:
        """Add the blocks of ``[start, end)``, which lies above every run held."""
        if start % self._block or end % self._block or end <= start:
            raise InvalidArgumentError(
                f"run [{start:#x}, {end:#x}) is not whole blocks of {self._block:#x} bytes"
            )
        if self._ends and start < self._ends[-1]:
            raise InvalidArgumentError(
                f"run [{start:#x}, {end:#x}) does not lie above the last run, ending "
                f"{self._ends[-1]:#x}"
            )
        if self._ends and self._ends[-1] == start:
            self._ends[-1] = end
        else:
            self._starts.append(start)
            self._ends.append(end)
        self._count += (end - start) // self._block

    def pop_lowest(self) -> int:
        """Take the lowest free block (callers check the set is not empty)."""
        pa = self._starts[0]
        if pa + self._block == self._ends[0]:
            del self._starts[0], self._ends[0]
        else:
            self._starts[0] = pa + self._block
        self._count -= 1
        return pa

    def add(self, pa: int) -> None:
        """Give the block at ``pa`` back, joining the runs on either side."""
        block = self._block
        i = bisect.bisect_right(self._starts, pa)
        if i and pa < self._ends[i - 1]:
            raise StateError(f"block {pa:#x} is already free")
        joins_prev = i > 0 and self._ends[i - 1] == pa
        joins_next = i < len(self._starts) and self._starts[i] == pa + block
        if joins_prev and joins_next:
            self._ends[i - 1] = self._ends[i]
            del self._starts[i], self._ends[i]
        elif joins_prev:
            self._ends[i - 1] = pa + block
        elif joins_next:
            self._starts[i] = pa
        else:
            self._starts.insert(i, pa)
            self._ends.insert(i, pa + block)
        self._count += 1

    def blocks(self) -> Iterator[int]:
        """Every free block's address, lowest first."""
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end, self._block)

    def runs(self) -> tuple[tuple[int, int], ...]:
        """The runs as ``(start, end)`` pairs, lowest first."""
        return tuple(zip(self._starts, self._ends, strict=True))
