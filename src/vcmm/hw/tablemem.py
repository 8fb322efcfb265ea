"""Table memory: the physical window page tables are carved from.

Page tables must live in simulated physical memory so that they cost memory, can be
dumped, and are what the walker reads.  This allocator hands out naturally aligned,
zeroed blocks of that window.  Blocks of 4 KiB and more come straight from a page
bitmap; smaller ones (ARMv7 1 KiB second-level tables, reduced first-level tables) are
carved out of whole 4 KiB pages, four 1 KiB tables per page, much as Linux's v7s
io-pgtable keeps a kmem_cache for its 1 KiB tables, so a sparse short-descriptor
table does not burn a page per megabyte.

Allocation is canonical (always the lowest address that fits) and a page used for
small blocks returns to the bitmap as soon as its last block is freed, so an
allocation followed by its free leaves the allocator exactly as it was: callers that
undo a half-done operation get back an identical :meth:`snapshot`.

Freed blocks are zeroed.  Hardware would not care, but a memory dump then never shows
a dead table whose stale descriptors look valid, and an alloc/free pair leaves the
memory digest unchanged.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from vcmm import inject
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, StateError
from vcmm.hw.memory import PhysicalMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size, is_power_of_two

#: Granule of the page bitmap; blocks below this size share pages.
TABLE_PAGE = 4096
#: Smallest block handed out (a 16-entry ARMv7 first level with TTBCR.N=7 is 128 B).
MIN_BLOCK = 64


@dataclass(frozen=True, slots=True)
class TableMemorySnapshot:
    """Everything that defines the allocator's state, comparable with ``==``."""

    blocks: tuple[tuple[int, int], ...]
    page_bitmap: bytes
    partial_pages: tuple[tuple[int, int, int], ...]


@dataclass(slots=True)
class _Block:
    size: int  # size the caller asked for (and must pass to free)
    slot: int  # bytes actually reserved (slot size, or whole pages)


class TableMemory:
    """Allocator of zeroed, aligned blocks from a window of physical memory."""

    def __init__(self, memory: PhysicalMemory, window: AddressRange) -> None:
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(
                f"TableMemory needs a PhysicalMemory, got {type(memory).__name__}"
            )
        if not isinstance(window, AddressRange):
            raise InvalidArgumentError(
                f"TableMemory window must be an AddressRange, got {window!r}"
            )
        if not window or window.start % TABLE_PAGE or window.size % TABLE_PAGE:
            raise InvalidArgumentError(
                f"table memory window {window} must be non-empty and 4 KiB aligned"
            )
        if not memory.is_backed(window.start, window.size):
            raise InvalidArgumentError(
                f"table memory window {window} is not entirely backed by physical memory"
            )
        self._memory = memory
        self._window = window
        self._pages_used = np.zeros(window.size // TABLE_PAGE, dtype=np.bool_)
        #: Lowest page index that is free (== len when none): keeps page allocs O(1)-ish.
        self._first_free = 0
        self._blocks: dict[int, _Block] = {}
        # Sub-page slots: slot size -> {page pa: bitmask of used slots}, plus the sorted
        # list of pages of that slot size that still have a free slot.
        self._slabs: dict[int, dict[int, int]] = {}
        self._partial: dict[int, list[int]] = {}

    # -- properties ------------------------------------------------------------------------

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def window(self) -> AddressRange:
        return self._window

    @property
    def used_bytes(self) -> int:
        """Bytes reserved by live blocks (slot sizes; what tables really consume)."""
        return sum(b.slot for b in self._blocks.values())

    @property
    def committed_bytes(self) -> int:
        """Bytes of the window taken from the page bitmap (includes part-used pages)."""
        return int(self._pages_used.sum()) * TABLE_PAGE

    @property
    def free_bytes(self) -> int:
        return self._window.size - self.committed_bytes

    def blocks(self) -> list[tuple[int, int]]:
        """Live blocks as sorted ``(pa, size)`` pairs."""
        return sorted((pa, b.size) for pa, b in self._blocks.items())

    # -- allocation --------------------------------------------------------------------------

    def alloc(self, size: int, align: int | None = None) -> int:
        """Reserve a zeroed block of ``size`` bytes aligned to ``align`` (default: size)."""
        if not isinstance(size, int) or isinstance(size, bool) or not is_power_of_two(size):
            raise InvalidArgumentError(f"table block size {size!r} must be a power of two")
        if size < MIN_BLOCK:
            raise InvalidArgumentError(f"table block size {size} is below the minimum {MIN_BLOCK}")
        if align is None:
            align = size
        if not isinstance(align, int) or isinstance(align, bool) or not is_power_of_two(align):
            raise InvalidArgumentError(f"table block alignment {align!r} must be a power of two")
        inject.check(inject.AllocSite.TABLE, self)
        if size > self._window.size:
            raise self._oom(size, align)
        slot = max(size, align)
        if slot < TABLE_PAGE:
            pa = self._alloc_slot(slot, size, align)
        else:
            pa = self._alloc_pages(-(-size // TABLE_PAGE), max(align, TABLE_PAGE), size, align)
        self._blocks[pa] = _Block(size, slot if slot < TABLE_PAGE else _round_page(size))
        self._memory.fill(pa, size, 0)
        return pa

    def _oom(self, size: int, align: int) -> OutOfMemoryError:
        return OutOfMemoryError(
            f"table memory window {self._window} has no free {format_size(size)} block "
            f"aligned to {format_size(align)} ({format_size(self.free_bytes)} of whole pages free)"
        )

    def _alloc_pages(self, count: int, align: int, size: int, req_align: int) -> int:
        used = self._pages_used
        base = self._window.start
        step = align // TABLE_PAGE
        if count == 1 and step == 1:
            # The common case (one 4 KiB table page): the lowest free page is known, and
            # only the search for the next one is left, which stops at the first free
            # page instead of sweeping a window of up to 100,000s of pages.
            index = self._first_free
            if index >= used.size:
                raise self._oom(size, req_align)
            used[index] = True
            self._first_free = self._next_free(index + 1)
            return base + index * TABLE_PAGE
        first = ((-base) % align) // TABLE_PAGE
        first = max(first, first + -(-(self._first_free - first) // step) * step)
        starts = np.arange(first, used.size - count + 1, step)
        if starts.size == 0:
            raise self._oom(size, req_align)
        if count == 1:
            free = ~used[starts]
        else:
            prefix = np.concatenate(([0], np.cumsum(used, dtype=np.int64)))
            free = prefix[starts + count] == prefix[starts]
        if not free.any():
            raise self._oom(size, req_align)
        index = int(starts[int(np.argmax(free))])
        used[index : index + count] = True
        if index <= self._first_free < index + count:
            self._first_free = self._next_free(index + count)
        return base + index * TABLE_PAGE

    def _next_free(self, start: int) -> int:
        """The lowest free page index from ``start`` on (the page count when none),
        looked for in growing slices: tables are allocated low first, so the next free
        page is usually close."""
        used = self._pages_used
        span = 64
        while start < used.size:
            piece = used[start : start + span]
            if not piece.all():
                return start + int(np.argmin(piece))
            start += piece.size
            span *= 8
        return int(used.size)

    def _alloc_slot(self, slot: int, size: int, align: int) -> int:
        pages = self._slabs.setdefault(slot, {})
        partial = self._partial.setdefault(slot, [])
        full = (1 << (TABLE_PAGE // slot)) - 1
        if partial:
            page = partial[0]
        else:
            page = self._alloc_pages(1, TABLE_PAGE, size, align)
            pages[page] = 0
            bisect.insort(partial, page)
        mask = pages[page]
        index = (~mask & (mask + 1)).bit_length() - 1  # lowest clear bit
        mask |= 1 << index
        pages[page] = mask
        if mask == full:
            partial.remove(page)
        return page + index * slot

    # -- release -----------------------------------------------------------------------------

    def free(self, pa: int, size: int) -> None:
        """Return a block; its bytes are zeroed.  Unknown or double frees raise StateError."""
        if not isinstance(pa, int) or not isinstance(size, int):
            raise InvalidArgumentError(f"free({pa!r}, {size!r}) needs integer pa and size")
        block = self._blocks.get(pa)
        if block is None:
            raise StateError(
                f"free of {pa:#x} ({size} bytes): no live table block starts there "
                "(double free or never allocated)"
            )
        if block.size != size:
            raise StateError(
                f"free of {pa:#x} with size {size}: the block was allocated with size {block.size}"
            )
        del self._blocks[pa]
        self._memory.fill(pa, size, 0)
        if block.slot < TABLE_PAGE:
            self._free_slot(pa, block.slot)
        else:
            self._free_pages(pa, block.slot // TABLE_PAGE)

    def _free_pages(self, pa: int, count: int) -> None:
        index = (pa - self._window.start) // TABLE_PAGE
        self._pages_used[index : index + count] = False
        self._first_free = min(self._first_free, index)

    def _free_slot(self, pa: int, slot: int) -> None:
        page = pa - (pa - self._window.start) % TABLE_PAGE
        pages = self._slabs[slot]
        partial = self._partial[slot]
        full = (1 << (TABLE_PAGE // slot)) - 1
        mask = pages[page]
        if mask == full:
            bisect.insort(partial, page)
        mask &= ~(1 << ((pa - page) // slot))
        if mask:
            pages[page] = mask
            return
        del pages[page]
        partial.remove(page)
        self._free_pages(page, 1)

    # -- inspection --------------------------------------------------------------------------

    def snapshot(self) -> TableMemorySnapshot:
        """The allocator state as a value: equal snapshots, identical allocator."""
        partial = tuple(
            sorted(
                (slot, page, mask)
                for slot, pages in self._slabs.items()
                for page, mask in pages.items()
            )
        )
        return TableMemorySnapshot(
            blocks=tuple(self.blocks()),
            page_bitmap=self._pages_used.tobytes(),
            partial_pages=partial,
        )

    def __repr__(self) -> str:
        return (
            f"TableMemory({self._window}, used={format_size(self.used_bytes)}, "
            f"blocks={len(self._blocks)})"
        )


def _round_page(size: int) -> int:
    return -(-size // TABLE_PAGE) * TABLE_PAGE
