"""Taking a CMA area's lent pages back for a ``cma`` allocation: migrate or refuse.

A :class:`~vcmm.mm.cma.CmaArea` lends its free pages to the system allocator
(:mod:`vcmm.mm.cma`).  When an allocation from the area finds no free window, Linux's
``alloc_contig_range`` migrates the borrowed pages out of a window and takes it; a
page it cannot migrate (pinned, with references it cannot move) fails that window,
and ``cma_alloc`` tries the next one, then fails with -EBUSY.  The core decides what
can move, because only it knows who reaches an allocation's pages:

- a borrowed allocation that nothing maps, views or pins is **movable**: its bytes
  are copied to pages its system target gives from its own memory (the CPU cache
  cleaned and invalidated over the old pages first, as migration flushes them), its
  handle keeps working with the new chunk (``physmem.chunks`` change, as a migrated
  page's PFN does), and the loan goes back to the area;
- one that backs a reservation, has views or is pinned counts as **pinned**: its
  physical address is in page tables, DMA records or a dma-buf, which vcmm does not
  rewrite under their owners, so a window holding it is not used;
- the lowest window that only free pages and movable loans fill is taken; with none,
  the allocation fails (``OutOfMemoryError``) naming the pinned borrowers.

All or nothing: every replacement and the window are taken before anything moves, so
running out of system memory for one gives the others back and changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from vcmm.core.flags import PhysAttr
from vcmm.core.objects import PhysMem
from vcmm.core.ownership import OwnerMap
from vcmm.errors import OutOfMemoryError
from vcmm.mm.chunk import Chunk
from vcmm.mm.cma import BorrowingSystemRam, CmaArea
from vcmm.sizes import align_up, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.hw.cache import DataCache
    from vcmm.hw.memory import PhysicalMemory
    from vcmm.mm.target import MemoryTarget


def movable(physmem: PhysMem) -> bool:
    """Whether nothing but its handle reaches ``physmem``'s pages."""
    return not (physmem.backing or physmem.views or physmem.pins or physmem.parent)


class CmaReclaimer:
    """Migrates borrowed pages out of a window of a CMA area for a ``cma`` allocation."""

    def __init__(
        self,
        targets: Mapping[str, MemoryTarget],
        owners: OwnerMap,
        memory: PhysicalMemory,
        cache: DataCache,
    ) -> None:
        self._targets = targets
        self._owners = owners
        self._memory = memory
        self._cache = cache

    def holder(self, loan: Chunk) -> PhysMem | None:
        """The live allocation holding the lent ``loan``."""
        held = {id(p): p for _, p in self._owners.allocations_in(loan.range)}
        return next(iter(held.values())) if len(held) == 1 else None

    def _can_move(self, loan: Chunk) -> bool:
        physmem = self.holder(loan)
        return physmem is not None and movable(physmem)

    def allocate(self, area: CmaArea, length: int, pattr: PhysAttr) -> list[Chunk]:
        """One chunk of ``area`` for ``length`` bytes, migrating movable loans out of
        the lowest window they and free pages fill; refused when none is."""
        unit = min(pattr.block_sizes) if pattr.block_sizes else area.granule
        size = align_up(length, max(unit, area.granule))
        found = area.reclaim_window(size, pattr.alignment, self._can_move)
        if found is None:
            pinned = sorted(
                {p.name for c in area.loans if (p := self.holder(c)) is not None and not movable(p)}
            )
            raise OutOfMemoryError(
                f"CMA area {area.name!r} has no {format_size(size)} window even with its "
                f"lent pages back ({format_size(area.free_bytes)} free, "
                f"{format_size(area.lent_bytes)} lent); the borrowers in the way are mapped, "
                f"viewed or pinned and cannot move: {', '.join(pinned) or 'none'}"
            )
        window, loans = found
        moves: list[tuple[Chunk, PhysMem, Chunk]] = []
        with Transaction("cma reclaim") as txn:
            for loan in loans:
                physmem = self.holder(loan)
                assert physmem is not None
                borrower = self._targets[physmem.target]
                assert isinstance(borrower, BorrowingSystemRam)  # only such targets lend
                new = borrower.replacement(loan.size)
                txn.on_undo(borrower.free, [new])
                moves.append((loan, physmem, new))
            chunks = area.take_window(window, loans)
        for loan, physmem, new in moves:  # nothing can fail from here on
            self._move(loan, physmem, new)
        return chunks

    def _move(self, loan: Chunk, physmem: PhysMem, new: Chunk) -> None:
        """Copy ``loan`` to ``new`` and make ``physmem`` hold ``new`` instead."""
        self._cache.clean_invalidate(loan.pa, loan.size)
        self._memory.copy(new.pa, loan.pa, loan.size)
        self._owners.remove(physmem)
        physmem.target_chunks = tuple(new if c == loan else c for c in physmem.target_chunks)
        physmem.chunk_ranges = tuple(
            new.range if r == loan.range else r for r in physmem.chunk_ranges
        )
        physmem.chunk_keys = physmem.chunk_ranges
        self._owners.add(physmem)
