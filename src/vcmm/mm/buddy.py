"""The kernel's page allocator: a binary buddy system over one physical range.

System RAM is handed out by the kernel in power-of-two blocks of pages (``order``),
each aligned to its own size, and freed blocks merge with their free buddy.  Seed 002
allocates DMA buffers from it largest order first, falling back to smaller orders
because "higher-order allocations are a convenience rather than a necessity"
(``__iommu_dma_alloc_pages``); seed 000 explains why a device wants the large blocks
(fewer IOMMU TLB entries) and why a busy system cannot promise them, so a
:meth:`BuddyAllocator.fragment` helper reproduces that state on purpose.

Free blocks below the top order are kept per order in sorted lists of *negated*
addresses, so the lowest address (handed out first, which makes every run
deterministic) pops off the end in O(1) even when fragmentation leaves hundreds of
thousands of order-0 blocks.  Free blocks of the top order, which at boot are nearly
all of the RAM, are kept as runs (:class:`~vcmm.mm.blockruns.BlockRuns`), so a 1 TiB
target boots with one run instead of 262144 list entries and its state costs what the
software split, not what the RAM is.  With full merging the free lists are a function
of the set of free pages alone (maximal aligned blocks), so a failed multi-block
allocation that gives everything back restores the exact previous state.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm import inject
from vcmm.checks import check_int
from vcmm.errors import (
    InvalidArgumentError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.mm.blockruns import BlockRuns
from vcmm.mm.chunk import Chunk, describe
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size, is_power_of_two

#: Largest max_order accepted (2**30 pages is far beyond any simulated SoC).
MAX_SUPPORTED_ORDER = 30


@dataclass(frozen=True, slots=True)
class BuddySnapshot:
    """Free lists per order below the top, the top order's free runs ``(start, end)``
    and live allocations (pa -> pages), comparable with ``==``."""

    free: tuple[tuple[int, ...], ...]
    top: tuple[tuple[int, int], ...]
    allocated: tuple[tuple[int, int], ...]


class BuddyAllocator:
    """Binary buddy allocator of ``page``-sized pages, orders ``0..max_order`` inclusive."""

    def __init__(self, range: AddressRange, *, page: int = 4096, max_order: int = 10) -> None:
        if not isinstance(range, AddressRange):
            raise InvalidArgumentError(f"range {range!r} is not an AddressRange")
        page = check_int("", "page", page, minimum=None)
        max_order = check_int("", "max_order", max_order, minimum=None)
        if not is_power_of_two(page):
            raise InvalidArgumentError(f"page size {page:#x} is not a power of two")
        if not 0 <= max_order <= MAX_SUPPORTED_ORDER:
            raise InvalidArgumentError(f"max_order {max_order} is outside 0..{MAX_SUPPORTED_ORDER}")
        if range.size == 0 or not range.is_aligned(page):
            raise InvalidArgumentError(
                f"range {range} must be non-empty and aligned to the page size {page:#x}"
            )
        self._range = range
        self._page = page
        self._max_order = max_order
        # per order below the top: sorted negated addresses (lowest address last)
        self._free: list[list[int]] = [[] for _ in [None] * max_order]
        self._top = BlockRuns(page << max_order)
        self._allocated: dict[int, int] = {}
        self._free_pages = 0
        top = page << max_order
        body_start = min(-(-range.start // top) * top, range.end)
        body_end = max(range.end // top * top, body_start)
        for pa, order in self._aligned_blocks(range.start, body_start):
            self._free[order].insert(0, -pa)
        if body_end > body_start:
            self._top.add_run(body_start, body_end)
        for pa, order in self._aligned_blocks(body_end, range.end):
            self._free[order].insert(0, -pa)
        self._free_pages = range.size // page

    # -- properties --------------------------------------------------------------

    @property
    def range(self) -> AddressRange:
        return self._range

    @property
    def page(self) -> int:
        return self._page

    @property
    def max_order(self) -> int:
        return self._max_order

    @property
    def free_bytes(self) -> int:
        return self._free_pages * self._page

    @property
    def total_bytes(self) -> int:
        return self._range.size

    def block_size(self, order: int) -> int:
        """Bytes in a block of ``order``."""
        return self._page << self._check_order(order)

    # -- helpers -----------------------------------------------------------------

    def _check_order(self, order: object, name: str = "order") -> int:
        order = check_int("", name, order, minimum=None)
        if not 0 <= order <= self._max_order:
            raise UnsupportedSizeError(f"{name} {order} is outside 0..{self._max_order}")
        return order

    def _aligned_blocks(self, start: int, end: int) -> list[tuple[int, int]]:
        """Split ``[start, end)`` into the largest blocks aligned to their own size."""
        blocks = []
        pa = start
        while pa < end:
            order = self._max_order
            while pa % (self._page << order) or pa + (self._page << order) > end:
                order -= 1
            blocks.append((pa, order))
            pa += self._page << order
        return blocks

    def _has_free(self, order: int) -> bool:
        return bool(self._top) if order == self._max_order else bool(self._free[order])

    def _count_free(self, order: int) -> int:
        return len(self._top) if order == self._max_order else len(self._free[order])

    def _push_free(self, pa: int, order: int) -> None:
        if order == self._max_order:
            self._top.add(pa)
        else:
            bisect.insort(self._free[order], -pa)

    def _try_alloc(self, order: int) -> int | None:
        for found in range(order, self._max_order + 1):
            if self._has_free(found):
                break
        else:
            return None
        pa = self._top.pop_lowest() if found == self._max_order else -self._free[found].pop()
        while found > order:
            found -= 1
            bisect.insort(self._free[found], -(pa + (self._page << found)))
        self._allocated[pa] = 1 << order
        self._free_pages -= 1 << order
        return pa

    def _free_block(self, pa: int, order: int) -> None:
        self._free_pages += 1 << order
        while order < self._max_order:
            buddy = pa ^ (self._page << order)
            peers = self._free[order]
            j = bisect.bisect_left(peers, -buddy)
            if j == len(peers) or peers[j] != -buddy:
                break
            del peers[j]
            pa = min(pa, buddy)
            order += 1
        self._push_free(pa, order)

    def _buddyinfo(self) -> str:
        return " ".join(str(self._count_free(o)) for o in range(self._max_order + 1))

    # -- allocation --------------------------------------------------------------

    def alloc_pages(self, order: int) -> int:
        """One block of ``2**order`` pages, aligned to its size (``alloc_pages``)."""
        order = self._check_order(order)
        inject.check(inject.AllocSite.PHYS, self)
        return self._alloc_order(order)

    def _alloc_order(self, order: int) -> int:
        pa = self._try_alloc(order)
        if pa is None:
            raise OutOfMemoryError(
                f"buddy allocator {self._range}: no free block of order {order} "
                f"({format_size(self._page << order)}); free blocks per order: {self._buddyinfo()}"
            )
        return pa

    def alloc_pages_exact(self, size: int, *, align_order: int = 0) -> int:
        """``size`` bytes (rounded up to pages) physically contiguous, the unused tail
        of the power-of-two block given back at once (``alloc_pages_exact``).

        The block is aligned to at least ``2**align_order`` pages.
        """
        size = check_int("", "size", size, minimum=None)
        align_order = self._check_order(align_order, "align_order")
        if size <= 0:
            raise InvalidArgumentError(f"allocation size {size:#x} must be > 0")
        npages = -(-size // self._page)
        order = max((npages - 1).bit_length(), align_order)
        if order > self._max_order:
            raise UnsupportedSizeError(
                f"contiguous allocation of {format_size(size)} needs order {order}, above the "
                f"largest buddy block (order {self._max_order}, "
                f"{format_size(self._page << self._max_order)})"
            )
        inject.check(inject.AllocSite.PHYS, self)
        pa = self._alloc_order(order)
        self._allocated[pa] = npages
        for block, block_order in self._aligned_blocks(
            pa + npages * self._page, pa + (self._page << order)
        ):
            self._free_block(block, block_order)
        return pa

    def alloc_pages_largest_first(
        self,
        size: int,
        max_order: int | None = None,
        min_order: int = 0,
        *,
        orders: Iterable[int] | None = None,
    ) -> list[Chunk]:
        """``size`` bytes as blocks, each time the largest order that fits what remains,
        falling back to smaller orders when none is free (``__iommu_dma_alloc_pages``).

        The allowed orders are ``min_order..max_order`` or exactly ``orders``; ``size``
        is rounded up to the smallest allowed block.  All or nothing: on failure every
        block taken is given back and :class:`OutOfMemoryError` says what was missing.
        """
        size = check_int("", "size", size, minimum=None)
        if size <= 0:
            raise InvalidArgumentError(f"allocation size {size:#x} must be > 0")
        if orders is not None:
            allowed = sorted({self._check_order(o) for o in orders})
            if not allowed:
                raise InvalidArgumentError("orders is empty: no block size to allocate with")
        else:
            top = (
                self._max_order if max_order is None else self._check_order(max_order, "max_order")
            )
            bottom = self._check_order(min_order, "min_order")
            if bottom > top:
                raise InvalidArgumentError(f"min_order {bottom} is above max_order {top}")
            allowed = list(range(bottom, top + 1))
        inject.check(inject.AllocSite.PHYS, self)
        unit = 1 << allowed[0]
        count = -(-size // (self._page * unit)) * unit
        wanted = count
        taken: list[tuple[int, int]] = []
        while count:
            limit = count.bit_length() - 1
            pa = None
            for order in reversed(allowed):
                if order <= limit:
                    pa = self._try_alloc(order)
                    if pa is not None:
                        break
            if pa is None:
                chunks = [Chunk(p, self._page << o) for p, o in taken]
                info = self._buddyinfo()
                for p, o in taken:
                    del self._allocated[p]
                    self._free_block(p, o)
                raise OutOfMemoryError(
                    f"buddy allocator {self._range}: cannot allocate "
                    f"{format_size(wanted * self._page)} in blocks of orders {allowed}: "
                    f"{format_size(count * self._page)} short after {describe(chunks)} "
                    f"(free blocks per order then: {info})"
                )
            taken.append((pa, order))
            count -= 1 << order
        return [Chunk(p, self._page << o) for p, o in taken]

    def free_pages(self, pa: int) -> int:
        """Free the allocation starting at ``pa``, merging buddies; returns its size."""
        pa = check_int("", "address", pa, minimum=None)
        npages = self._allocated.get(pa)
        if npages is None:
            raise StateError(
                f"free_pages({pa:#x}): no allocation starts there in {self._range} "
                "(never allocated, or already freed)"
            )
        del self._allocated[pa]
        for block, order in self._aligned_blocks(pa, pa + npages * self._page):
            self._free_block(block, order)
        return npages * self._page

    def allocation_size(self, pa: int) -> int | None:
        """Bytes of the live allocation starting at ``pa``, or ``None``."""
        npages = self._allocated.get(pa)
        return None if npages is None else npages * self._page

    # -- fragmentation -----------------------------------------------------------

    def fragment(
        self, pattern: str = "alternate", *, seed: int = 0, keep_fraction: float = 0.5
    ) -> list[int]:
        """Fragment the free memory on purpose; returns the pages now held (order 0).

        Every free page is taken, then some are given back: ``"alternate"`` gives back
        the odd page frames, so no two free pages are buddies and no block above order 0
        exists; ``"random"`` keeps each page with probability ``keep_fraction`` (seeded).
        The held pages are ordinary order-0 allocations for :meth:`free_pages`.
        """
        if pattern not in ("alternate", "random"):
            raise InvalidArgumentError(
                f"fragment pattern {pattern!r} is not 'alternate' or 'random'"
            )
        if not isinstance(keep_fraction, float | int) or not 0.0 <= keep_fraction <= 1.0:
            raise InvalidArgumentError(f"keep_fraction {keep_fraction!r} is outside [0, 1]")
        seed = check_int("", "seed", seed, minimum=None)
        base = self._range.start // self._page
        free_mask = self._free_mask()
        free_idx = np.flatnonzero(free_mask)
        pfns = free_idx + base
        if pattern == "alternate":
            keep = pfns % 2 == 0
        else:
            keep = np.random.default_rng(seed).random(len(pfns)) < keep_fraction
        free_mask[free_idx[keep]] = False
        held = (pfns[keep] * self._page).tolist()
        lists = self._canonical_blocks(free_mask)
        self._free = lists[:-1]
        self._top = BlockRuns.from_blocks(self._page << self._max_order, (-n for n in lists[-1]))
        self._free_pages = int(free_mask.sum())
        self._allocated.update(dict.fromkeys(held, 1))
        return held

    def _free_mask(self) -> npt.NDArray[np.bool_]:
        base = self._range.start // self._page
        mask = np.zeros(self._range.size // self._page, dtype=np.bool_)
        for order, blocks in enumerate(self._free):
            for neg in blocks:
                first = -neg // self._page - base
                mask[first : first + (1 << order)] = True
        for start, end in self._top.runs():
            mask[start // self._page - base : end // self._page - base] = True
        return mask

    def _canonical_blocks(self, free_mask: npt.NDArray[np.bool_]) -> list[list[int]]:
        """Free lists for a page mask: maximal free blocks aligned to their size."""
        n = len(free_mask)
        base = self._range.start // self._page
        prefix = np.concatenate(([0], np.cumsum(free_mask, dtype=np.int64)))
        covered = np.zeros(n + 1, dtype=np.int64)  # difference array of larger blocks
        result: list[list[int]] = [[] for _ in range(self._max_order + 1)]
        for order in range(self._max_order, -1, -1):
            span = 1 << order
            first = -(-base // span) * span
            starts = np.arange(first - base, n - span + 1, span, dtype=np.int64)
            if len(starts) == 0:
                continue
            inside = np.cumsum(covered)[starts] > 0
            full = (prefix[starts + span] - prefix[starts]) == span
            chosen = starts[full & ~inside]
            np.add.at(covered, chosen, 1)
            np.add.at(covered, chosen + span, -1)
            result[order] = (-(chosen + base) * self._page)[::-1].tolist()
        return result

    # -- queries -----------------------------------------------------------------

    def free_blocks_by_order(self) -> dict[int, int]:
        """Number of free blocks of each order (the kernel's /proc/buddyinfo line)."""
        return {order: self._count_free(order) for order in range(self._max_order + 1)}

    def free_blocks(self) -> list[Chunk]:
        """Every free block, lowest address first."""
        top = self._page << self._max_order
        return sorted(
            [
                Chunk(-neg, self._page << order)
                for order, blocks in enumerate(self._free)
                for neg in blocks
            ]
            + [Chunk(pa, top) for pa in self._top.blocks()]
        )

    def allocated(self) -> list[Chunk]:
        """Every live allocation, lowest address first."""
        return [Chunk(pa, n * self._page) for pa, n in sorted(self._allocated.items())]

    def largest_free_order(self) -> int | None:
        for order in range(self._max_order, -1, -1):
            if self._has_free(order):
                return order
        return None

    def snapshot(self) -> BuddySnapshot:
        return BuddySnapshot(
            free=tuple(tuple(-neg for neg in reversed(blocks)) for blocks in self._free),
            top=self._top.runs(),
            allocated=tuple(sorted(self._allocated.items())),
        )

    def __repr__(self) -> str:
        return (
            f"BuddyAllocator({self._range}, page={self._page:#x}, max_order={self._max_order}, "
            f"{format_size(self.free_bytes)} free)"
        )
