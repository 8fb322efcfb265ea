"""A physically contiguous piece of memory handed out by a memory target.

The VCMM separates physical allocation from virtual reservation (seed 000, L255-260):
an allocation is a list of chunks, each physically contiguous, which a backing later
maps into one or many address spaces.  Block pools hand out one chunk per block (a
1 MiB block is mapped with one 1 MiB entry), so chunks are kept as handed out and only
merged on request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange, join_runs
from vcmm.sizes import format_size


@dataclass(frozen=True, order=True, slots=True)
class Chunk:
    """``size`` bytes of physical memory starting at physical address ``pa``."""

    pa: int
    size: int

    def __post_init__(self) -> None:
        if isinstance(self.pa, bool) or isinstance(self.size, bool):
            raise InvalidArgumentError(f"Chunk({self.pa!r}, {self.size!r}): bools are not sizes")
        if not isinstance(self.pa, int) or not isinstance(self.size, int):
            raise InvalidArgumentError(
                f"Chunk needs integer pa and size, got {self.pa!r}, {self.size!r}"
            )
        if self.pa < 0 or self.size <= 0:
            raise InvalidArgumentError(
                f"Chunk pa {self.pa:#x} must be >= 0 and size {self.size:#x} must be > 0"
            )

    @property
    def end(self) -> int:
        """First physical address after the chunk."""
        return self.pa + self.size

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.pa, self.size)

    def contains(self, pa: int) -> bool:
        return self.pa <= pa < self.end

    def is_aligned(self, alignment: int) -> bool:
        """Whether ``pa`` is a multiple of ``alignment`` (what a block mapping needs)."""
        return self.pa % alignment == 0

    def __str__(self) -> str:
        return f"{format_size(self.size)}@{self.pa:#x}"


def total_size(chunks: Iterable[Chunk]) -> int:
    """Bytes covered by ``chunks``."""
    return sum(chunk.size for chunk in chunks)


def find_overlap(chunks: Iterable[Chunk]) -> tuple[Chunk, Chunk] | None:
    """The first pair of overlapping chunks, or ``None`` when they are disjoint."""
    ordered = sorted(chunks)
    for left, right in pairwise(ordered):
        if right.pa < left.end:
            return left, right
    return None


def coalesce(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Merge physically adjacent chunks, keeping the caller's order of first appearance.

    Why: a scatterlist, a dump or a one-to-one mapping wants as few contiguous runs as
    possible, while the allocation itself keeps one chunk per block.  Only neighbours
    in the given order are merged, so the byte order of the buffer is preserved.
    """
    return [Chunk(pa, size) for pa, size in join_runs((c.pa, c.size) for c in chunks)]


def describe(chunks: Iterable[Chunk]) -> str:
    """A compact rendering such as ``12x1M`` or ``1M+64K+4K`` for messages and reports."""
    counts: dict[int, int] = {}
    for chunk in chunks:
        counts[chunk.size] = counts.get(chunk.size, 0) + 1
    if not counts:
        return "nothing"
    parts = []
    for size in sorted(counts, reverse=True):
        n = counts[size]
        parts.append(format_size(size) if n == 1 else f"{n}x{format_size(size)}")
    return "+".join(parts)
