"""Small allocation policies written for the tests, independent of vcmm.mm.

:class:`BottomUpCarveout` is a first-fit allocator over one carve-out that keeps a
plain sorted list of taken ``(start, size)`` pairs: lowest fitting address first, one
chunk per allocation.  It is the reference the tests compare placements against, and
the policy a platform would register for its own carve-out (seed 000 L4053).
:class:`LyingPolicy` answers with whatever chunks a test scripts, to show that the
core refuses a policy that breaks the target contract.
"""

from __future__ import annotations

from collections.abc import Iterable

from vcmm.errors import OutOfMemoryError, StateError
from vcmm.mm.chunk import Chunk
from vcmm.ranges import AddressRange

PAGE = 4096


class BottomUpCarveout:
    """First fit from the bottom of ``region``; every request is one chunk."""

    linear_mapped = False
    special = False

    def __init__(self, name: str, region: AddressRange) -> None:
        self.name = name
        self.regions = (region,)
        self.taken: list[tuple[int, int]] = []
        self.calls = 0

    @property
    def total_bytes(self) -> int:
        return self.regions[0].size

    @property
    def free_bytes(self) -> int:
        return self.total_bytes - sum(size for _, size in self.taken)

    def _fit(self, size: int, align: int) -> int | None:
        region = self.regions[0]
        cursor = region.start
        for start, used in sorted(self.taken):
            cursor = -(-cursor // align) * align
            if cursor + size <= start:
                return cursor
            cursor = max(cursor, start + used)
        cursor = -(-cursor // align) * align
        return cursor if cursor + size <= region.end else None

    def allocate(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> list[Chunk]:
        self.calls += 1
        unit = max(PAGE, min(block_sizes) if block_sizes else PAGE)
        size = -(-length // unit) * unit
        pa = self._fit(size, max(PAGE, alignment))
        if pa is None:
            raise OutOfMemoryError(f"{self.name}: no hole of {size:#x}")
        self.taken.append((pa, size))
        return [Chunk(pa, size)]

    def free(self, chunks: Iterable[Chunk]) -> None:
        items = list(chunks)
        for chunk in items:
            if (chunk.pa, chunk.size) not in self.taken:
                raise StateError(f"{self.name}: {chunk} is not allocated")
        for chunk in items:
            self.taken.remove((chunk.pa, chunk.size))

    def can_satisfy(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> bool:
        return self._fit(-(-length // PAGE) * PAGE, max(PAGE, alignment)) is not None

    def snapshot(self) -> object:
        return tuple(sorted(self.taken))


class LyingPolicy(BottomUpCarveout):
    """Answers ``allocate`` with ``self.answer`` (recorded as taken, so ``free`` of it
    works and the state comes back), or raises ``self.crash``."""

    def __init__(self, name: str, region: AddressRange) -> None:
        super().__init__(name, region)
        self.answer: list[Chunk] | None = None
        self.crash: Exception | None = None

    def allocate(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> list[Chunk]:
        if self.crash is not None:
            raise self.crash
        if self.answer is None:
            return super().allocate(
                length, block_sizes=block_sizes, alignment=alignment, contiguous=contiguous
            )
        if not isinstance(self.answer, list):
            return self.answer  # not even a list: nothing to record
        self.taken.extend((c.pa, c.size) for c in self.answer)
        return list(self.answer)
