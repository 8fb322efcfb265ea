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
written alone.  An unmap that frees no table page (the replay knows from its own
account that every last-level table it touches keeps a small-page mapping) may wait
while later maps of other addresses are written, to merge with the next unmap: the
table's pages are the same with it done or not, so every peak measured meanwhile is
exact; any other unmap is written at once, after the maps before it.  The changes between two syncs (a
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
        "_map",
        "_open",
        "_unmap",
        "attrs",
        "calls",
        "ctx",
        "enabled",
        "leaf_span",
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
        #: The pending map run ``[va, pa, size]`` (size 0: none).
        self._map = [0, 0, 0]
        #: The pending (deferred) unmap run ``[va, size]`` (size 0: none).
        self._unmap = [0, 0]
        self._open = False
        sizes = sorted(table.fmt.sizes)
        self._granule = sizes[0]
        self._blocks = sizes[1:]
        last = table.geometry.levels[-1]
        #: What one last-level table translates (2 MiB for 4 KiB VMSAv8, 1 MiB ARMv7).
        self.leaf_span = 1 << (last.shift + last.index_bits)
        #: Table calls made (map and unmap of the page table), after batching.
        self.calls = 0
        self.table_bytes = self._measure()
        self.table_bytes_peak = self.table_bytes

    def _measure(self) -> int:
        return sum(size for _, size in self.table.table_pages())

    def small_pages_only(self, va: int, pa: int, size: int) -> bool:
        """Whether a call of its own would map ``[va, va+size)`` with granule pages only
        (no block size ``B`` to which va and pa align alike has a whole ``B`` inside)."""
        for block in self._blocks:
            if (va - pa) % block == 0 and -(-va // block) * block + block <= va + size:
                return False
        return True

    def _bracket(self) -> None:
        if not self._open:
            self.ctx.update_start()
            self._open = True

    def map(self, va: int, pa: int, size: int) -> None:
        """Map ``[va, va+size)`` to ``pa`` (now or as part of a run)."""
        if not self.enabled:
            return
        u_va, u_size = self._unmap
        if u_size and va < u_va + u_size and u_va < va + size:
            self.write_unmaps()  # the address is reused: its unmap goes first
        if not self.small_pages_only(va, pa, size):
            self.write_maps()
            self._write_map(va, pa, size, None)
            return
        run = self._map
        m_va, m_pa, m_size = run
        if m_size:
            if va == m_va + m_size and pa == m_pa + m_size:
                run[2] += size
                return
            if va + size == m_va and pa + size == m_pa:
                run[:] = [va, pa, m_size + size]
                return
            self.write_maps()
        run[:] = [va, pa, size]

    def unmap(self, va: int, size: int, *, deferrable: bool = False) -> None:
        """Unmap ``[va, va+size)``.  ``deferrable``: the caller knows the unmap frees
        no table page (every last-level table it touches keeps a small-page mapping),
        so it may wait for the next unmaps and merge with them: the table's pages, and
        so every peak measured meanwhile, are the same with it done or not."""
        if not self.enabled:
            return
        m_va, _, m_size = self._map
        if m_size and va < m_va + m_size and m_va < va + size:
            self.write_maps()
        run = self._unmap
        u_va, u_size = run
        if u_size and va == u_va + u_size:
            run[1] += size
        elif u_size and va + size == u_va:
            run[:] = [va, u_size + size]
        else:
            self.write_unmaps()
            run[:] = [va, size]
        if not deferrable:
            self.write_maps()  # measured before the unmap, as the trace has them
            self.write_unmaps()

    def _write_map(self, va: int, pa: int, size: int, forced: int | None) -> None:
        self._bracket()
        self.calls += 1
        self.table.map(va, pa, size, self.attrs, page_size=forced)
        self.ctx.tlb_gather.add_range(va, size)
        self.table_bytes = self._measure()
        if self.table_bytes > self.table_bytes_peak:
            self.table_bytes_peak = self.table_bytes

    def write_maps(self) -> None:
        """Write the pending map run, small pages forced: a run of small-page maps keeps
        the small pages the kernel's separate calls made."""
        va, pa, size = self._map
        if size:
            self._map[2] = 0
            self._write_map(va, pa, size, self._granule)

    def write_unmaps(self) -> None:
        """Write the pending unmap run (tables only shrink: no new peak)."""
        va, size = self._unmap
        if size:
            self._unmap[1] = 0
            self._bracket()
            self.calls += 1
            self.table.unmap(va, size)
            self.ctx.tlb_gather.add_range(va, size)

    def sync(self) -> None:
        """Write what is pending and close the bracket (the IOTLB invalidation)."""
        self.write_maps()
        self.write_unmaps()
        if self._open:
            self.ctx.update_done()
            self._open = False
