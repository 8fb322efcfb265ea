"""CMA: a contiguous area whose free pages the system allocator borrows meanwhile.

Linux's Contiguous Memory Allocator (mm/cma.c) keeps a ``reusable`` reserved region
for large contiguous allocations without wasting it: while a page of the area is not
allocated by ``cma_alloc`` it sits in the buddy allocator's free lists
(MIGRATE_CMA pageblocks) and movable allocations may take it.  When ``cma_alloc``
needs a range, ``alloc_contig_range`` migrates the borrowed pages in it elsewhere
and takes the range; a page it cannot migrate (pinned) makes it fail for that range,
and ``cma_alloc`` tries the next one, then gives up (-EBUSY).  vcmm models it so:

- :class:`CmaArea` is the area (a ``cma`` target): a contiguous pool whose free space
  is *lent* (:meth:`CmaArea.lend`) to a system allocator, one chunk per borrowing
  allocation, from the top of the largest hole down, while ``cma`` allocations go
  first fit from the bottom, so the two meet as late as possible.  A lent chunk comes
  back (:meth:`CmaArea.repay`) when its allocation is freed.
- :class:`BorrowingSystemRam` is the system RAM target that borrows: it serves a
  request from its own buddy allocator, and only when that cannot (its own free
  memory is exhausted, as Linux falls back to MIGRATE_CMA pageblocks) and the request
  is movable (not ``contiguous``: Linux serves only movable allocations from CMA, and
  kernel contiguous allocations never are) it borrows one chunk from a lender.
- Taking borrowed pages back is the core's job (:mod:`vcmm.core.cmareclaim`): only
  the core knows whether an allocation holding a lent chunk can move.
  :meth:`CmaArea.reclaim_window` finds the lowest window a request could use if the
  given movable loans went back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, StateError
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.chunk import Chunk
from vcmm.mm.pools import ContiguousPool, SystemRamTarget
from vcmm.mm.target import AllocRequest
from vcmm.ranges import AddressRange, union
from vcmm.sizes import SZ_4K, align_down, align_up, format_size, is_power_of_two


class CmaArea(ContiguousPool):
    """A ``cma`` target: contiguous allocations, free space lent out meanwhile."""

    def __init__(self, name: str, range: AddressRange, *, granule: int = SZ_4K) -> None:
        super().__init__(name, range, granule=granule)
        #: Chunks lent to a system allocator, by start address.
        self._loans: dict[int, Chunk] = {}

    @property
    def loans(self) -> tuple[Chunk, ...]:
        """The chunks lent out now, lowest first."""
        return tuple(self._loans[pa] for pa in sorted(self._loans))

    @property
    def lent_bytes(self) -> int:
        return sum(c.size for c in self._loans.values())

    def lend(self, size: int) -> Chunk:
        """``size`` contiguous bytes for a borrower, from the top of the highest hole
        that holds them; ``OutOfMemoryError`` when none does."""
        size = align_up(check_int("lend", "size", size, minimum=1), self.granule)
        holes = [h for h in self._space.free_ranges() if h.size >= size]
        if not holes:
            raise OutOfMemoryError(
                f"CMA area {self.name!r} cannot lend {format_size(size)}: largest free hole "
                f"{format_size(self.largest_free())}"
            )
        hole = holes[-1]
        pa = align_down(hole.end - size, self.granule)
        self._space.alloc_at(pa, size)
        chunk = Chunk(pa, size)
        self._loans[pa] = chunk
        return chunk

    def is_loan(self, chunk: Chunk) -> bool:
        return self._loans.get(chunk.pa) == chunk

    def repay(self, chunk: Chunk) -> None:
        """A borrower gives ``chunk`` back."""
        if not self.is_loan(chunk):
            raise StateError(f"chunk {chunk} was not lent by CMA area {self.name!r}")
        del self._loans[chunk.pa]
        self._space.free(chunk.pa)

    def _owns(self, chunk: Chunk) -> bool:
        return not self.is_loan(chunk) and super()._owns(chunk)

    def reclaim_window(
        self, size: int, alignment: int, movable: Callable[[Chunk], bool]
    ) -> tuple[AddressRange, tuple[Chunk, ...]] | None:
        """The lowest window of ``size`` bytes aligned to ``alignment`` that is free
        but for loans ``movable`` accepts, and those loans; ``None`` when no window is
        (every candidate holds a loan that cannot move, or a ``cma`` allocation)."""
        size = align_up(check_int("reclaim_window", "size", size, minimum=1), self.granule)
        alignment = check_int("reclaim_window", "alignment", alignment, minimum=1)
        if not is_power_of_two(alignment):
            raise InvalidArgumentError(
                f"reclaim_window: alignment {alignment:#x} is not a power of two"
            )
        align = max(alignment, self.granule)
        movable_loans = [c for c in self.loans if movable(c)]
        usable = union([*self._space.free_ranges(), *(c.range for c in movable_loans)])
        for run in usable:
            start = align_up(run.start, align)
            if start + size <= run.end:
                window = AddressRange(start, size)
                inside = tuple(c for c in movable_loans if c.range.overlaps(window))
                return window, inside
        return None

    def take_window(self, window: AddressRange, loans: Sequence[Chunk]) -> list[Chunk]:
        """Take ``window`` for a ``cma`` allocation, ``loans`` (the ones inside it)
        called back; all or nothing.  The caller moves the borrowers' contents."""
        if not isinstance(window, AddressRange) or any(
            not self.is_loan(c) or not c.range.overlaps(window) for c in loans
        ):
            raise InvalidArgumentError(
                f"take_window: {window!r} and {list(loans)!r} must be a window and loans "
                f"of CMA area {self.name!r} inside it"
            )
        for loan in loans:
            self.repay(loan)
        try:
            self._space.alloc_at(window.start, window.size)
        except BaseException:
            for loan in loans:  # back exactly where they were: the space is first fit
                self._space.alloc_at(loan.pa, loan.size)
                self._loans[loan.pa] = loan
            raise
        return [Chunk(window.start, window.size)]

    def snapshot(self) -> tuple[object, ...]:  # type: ignore[override]
        return (super().snapshot(), self.loans)

    def __repr__(self) -> str:
        return (
            f"CmaArea({self.name!r}, {self._space.range}, {format_size(self.free_bytes)} "
            f"free, {format_size(self.lent_bytes)} lent)"
        )


class BorrowingSystemRam(SystemRamTarget):
    """System RAM that borrows from CMA areas when its own memory runs out."""

    def __init__(
        self, buddy: BuddyAllocator, lenders: Sequence[CmaArea], *, name: str = "system"
    ) -> None:
        super().__init__(buddy, name=name)
        if not all(isinstance(a, CmaArea) for a in lenders):
            raise InvalidArgumentError(f"lenders {lenders!r} must be CmaArea targets")
        self.lenders = tuple(lenders)

    @property
    def borrowed(self) -> tuple[Chunk, ...]:
        """The chunks this target holds on loan now."""
        return tuple(c for area in self.lenders for c in area.loans)

    def _allocate(self, request: AllocRequest) -> list[Chunk]:
        try:
            return super()._allocate(request)
        except OutOfMemoryError as own:
            if request.contiguous or request.block_sizes is not None or request.alignment > SZ_4K:
                raise  # not movable: Linux never serves it from CMA pageblocks
            for area in self.lenders:
                try:
                    return [area.lend(request.length)]
                except OutOfMemoryError:
                    continue
            raise OutOfMemoryError(
                f"{own}; and no CMA area ({', '.join(a.name for a in self.lenders)}) has "
                f"{format_size(align_up(request.length, SZ_4K))} free to lend"
            ) from None

    def replacement(self, size: int) -> Chunk:
        """``size`` contiguous bytes of this target's own memory (never borrowed): where
        a borrowed chunk's contents go when its area takes it back."""
        size = check_int("replacement", "size", size, minimum=1)
        try:
            pa = self.buddy.alloc_pages_exact(size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"memory target {self.name!r} has no {format_size(size)} of its own to move "
                f"a borrowed chunk to: {exc}"
            ) from None
        return Chunk(pa, size)

    def _owns(self, chunk: Chunk) -> bool:
        return any(a.is_loan(chunk) for a in self.lenders) or super()._owns(chunk)

    def _release(self, chunk: Chunk) -> None:
        for area in self.lenders:
            if area.is_loan(chunk):
                area.repay(chunk)
                return
        super()._release(chunk)

    def __repr__(self) -> str:
        lent = sum(c.size for c in self.borrowed)
        return f"BorrowingSystemRam({self.name!r}, {self.buddy!r}, {format_size(lent)} borrowed)"
