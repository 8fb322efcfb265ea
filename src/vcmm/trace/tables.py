"""Putting a trace's maps and unmaps into a device's real page table, in batches.

The replay writes each device's SMMU context table (``ctx.low_table``, the table the
context's bank walks) with the page table's own ``map``/``unmap``, the lowest public
layer that still writes real descriptors, inside the context's
``update_start``/``update_done`` bracket, reporting every changed range to the
context's ``tlb_gather`` as the VCMM core does for the tables it owns.  So a walk
after the replay (or a fault's check during it) reads true descriptors, the IOTLB is
invalidated as the hardware needs, and the table's pages are what
``table_bytes_peak`` counts.

Table calls are the replay's cost (each one plans runs, checks and logs its edits),
so consecutive changes of one context are batched: a map that continues the previous
one in both IOVA and physical address (upwards, or downwards as Linux's top-down
IOVA allocator hands them out) extends it, and so does an unmap continuing an unmap;
the run is written when something else comes.  Only maps that would get small pages
on their own are merged, and their run is written with small pages forced, so the
descriptors are those the kernel's separate calls made (a merged run reaching a
block's alignment would otherwise become a block); a map that may use a block is
written alone.  The changes between two syncs (a
fault's walk, the end of the replay) share one update bracket, so the IOTLB is
invalidated once per batch, as io-pgtable's gather does.  Runs are written in trace
order, each followed by a count of the table's pages, so ``table_bytes_peak`` is
the true peak (a table page that lives only between two changes included).
"""

from __future__ import annotations

from vcmm.attrs import PageAttrs
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu import SmmuContext


class TableWriter:
    """The batched table changes of one SMMU context (see the module notes)."""

    __slots__ = (
        "_blocks",
        "_granule",
        "_op",
        "_open",
        "_pa",
        "_size",
        "_va",
        "attrs",
        "calls",
        "ctx",
        "enabled",
        "table",
        "table_bytes",
        "table_bytes_peak",
    )

    def __init__(
        self, ctx: SmmuContext, table: PageTable, attrs: PageAttrs, *, enabled: bool = True
    ) -> None:
        self.ctx = ctx
        #: False for a replay that only looks for problems (``--no-tables``).
        self.enabled = enabled
        self.table = table
        self.attrs = attrs
        self._op = ""
        self._va = self._pa = self._size = 0
        self._open = False
        sizes = sorted(table.fmt.sizes)
        self._granule = sizes[0]
        self._blocks = sizes[1:]
        #: Table calls made (map_range and unmap), after batching.
        self.calls = 0
        self.table_bytes = self._measure()
        self.table_bytes_peak = self.table_bytes

    def _measure(self) -> int:
        return sum(size for _, size in self.table.table_pages())

    def _small_pages_only(self, va: int, pa: int, size: int) -> bool:
        """Whether a call of its own would map ``[va, va+size)`` with granule pages only
        (no block size ``B`` to which va and pa align alike has a whole ``B`` inside)."""
        for block in self._blocks:
            if (va - pa) % block == 0 and -(-va // block) * block + block <= va + size:
                return False
        return True

    def map(self, va: int, pa: int, size: int) -> None:
        if not self.enabled:
            return
        if not self._small_pages_only(va, pa, size):
            self.write()
            self._op, self._va, self._pa, self._size = "block-map", va, pa, size
            self.write()
            return
        if self._op == "map":
            if va == self._va + self._size and pa == self._pa + self._size:
                self._size += size
                return
            if va + size == self._va and pa + size == self._pa:
                self._va, self._pa, self._size = va, pa, self._size + size
                return
        self.write()
        self._op, self._va, self._pa, self._size = "map", va, pa, size

    def unmap(self, va: int, size: int) -> None:
        if not self.enabled:
            return
        if self._op == "unmap":
            if va == self._va + self._size:
                self._size += size
                return
            if va + size == self._va:
                self._va, self._size = va, self._size + size
                return
        self.write()
        self._op, self._va, self._size = "unmap", va, size

    def write(self) -> None:
        """Write the pending run into the table (inside the open update bracket)."""
        op = self._op
        if not op:
            return
        if not self._open:
            self.ctx.update_start()
            self._open = True
        self._op = ""
        self.calls += 1
        if op != "unmap":
            # A run of small-page maps keeps small pages, as the kernel's separate
            # calls made them; only a map of its own may use the blocks it aligns to.
            forced = self._granule if op == "map" else None
            self.table.map(self._va, self._pa, self._size, self.attrs, page_size=forced)
            self.table_bytes = self._measure()
            if self.table_bytes > self.table_bytes_peak:
                self.table_bytes_peak = self.table_bytes
        else:
            self.table.unmap(self._va, self._size)  # tables only shrink: no new peak
        self.ctx.tlb_gather.add_range(self._va, self._size)

    def sync(self) -> None:
        """Write what is pending and close the bracket (the IOTLB invalidation)."""
        self.write()
        if self._open:
            self.ctx.update_done()
            self._open = False
