"""One IOMMU domain during a replay: what is mapped, what was unmapped, its table.

The replay keeps its own account of every domain (a device's SMMU context, shared by
the devices of one IOMMU group) in two interval maps, keyed by the trace's IOVAs:
``live`` (what is mapped, by which line and device) and ``gone`` (which line last
unmapped an address).  Problems are found there, independently of the page table;
the table gets the same changes (at vcmm's own IOVAs under ``--reallocate``) and
answers the faults' walks, so the two accounts check each other.
"""

from __future__ import annotations

from typing import NamedTuple

from vcmm.hw.pgtable import Role
from vcmm.hw.smmu import SmmuContext
from vcmm.mm import LinuxIovaDomain
from vcmm.ranges import AddressRange
from vcmm.trace.intervals import IntervalMap
from vcmm.trace.tables import TableWriter

#: The replay's granule: the smallest page of every table format vcmm has.
GRANULE = 0x1000


class Live(NamedTuple):
    """A live mapping's value: offsets, not addresses, so a split keeps them true."""

    #: Physical address minus trace IOVA.
    pa_delta: int
    #: The line that mapped it.
    line: int
    device: str
    #: vcmm's IOVA minus the trace's (0 as traced).
    va_delta: int
    #: Start of vcmm's IOVA allocation holding it (-1 as traced).
    alloc: int
    #: Whether the table holds it in small pages only (no block to split on unmap).
    small: bool


class Domain:
    """The replay's state of one SMMU context (see the module notes)."""

    def __init__(
        self, name: str, ctx: SmmuContext, writer: TableWriter, *, mask: int, reallocate: bool
    ) -> None:
        self.name = name
        self.ctx = ctx
        self.writer = writer
        self.live: IntervalMap[Live] = IntervalMap()
        self.gone: IntervalMap[int] = IntervalMap()
        fmt = writer.table.fmt
        #: First IOVA the context's table cannot translate.
        self.input_limit: int = ctx.smmu.input_limit
        #: First physical address its smallest pages cannot reach.
        self.output_limit = min(
            k.oa_limit for k in fmt.kinds if k.role is Role.LEAF and k.size == GRANULE
        )
        self.mask = min(mask, self.input_limit - 1)
        #: Whether the table keeps the tables an unmap empties (Linux's io-pgtable
        #: does): then an unmap of small pages never releases a table page.
        self.kept_tables = writer.table.keep_tables
        self.iova: LinuxIovaDomain | None = None
        #: Bytes still mapped of each vcmm IOVA allocation (``--reallocate``).
        self.alloc_left: dict[int, int] = {}
        if reallocate:
            self.iova = LinuxIovaDomain(GRANULE, AddressRange(0, self.mask + 1))

    def check(self, iova: int, size: int, paddr: int | None) -> str | None:
        """Why ``[iova, iova+size)`` (to ``paddr``) cannot go in this table, or None."""
        if size <= 0:
            return f"size {size} maps nothing"
        if iova % GRANULE or size % GRANULE or (paddr is not None and paddr % GRANULE):
            what = f"iova {iova:#x}, size {size:#x}" + (
                "" if paddr is None else f", paddr {paddr:#x}"
            )
            return f"{what} not all multiples of the 4 KiB granule"
        if iova + size > self.input_limit:
            bits = (self.input_limit - 1).bit_length()
            return (
                f"iova range [{iova:#x}, {iova + size:#x}) runs past the {bits}-bit input "
                f"range of {self.ctx.smmu.name}'s context {self.name!r}"
            )
        if paddr is not None and paddr + size > self.output_limit:
            return (
                f"paddr range [{paddr:#x}, {paddr + size:#x}) runs past what "
                f"{self.writer.table.fmt.name} pages can address ({self.output_limit:#x})"
            )
        return None

    def unmap_frees_no_table(self, start: int, end: int) -> bool:
        """Whether unmapping small pages of ``[start, end)`` (already out of ``live``)
        releases no table page: never, where the table keeps emptied tables; else
        when every last-level table it touches still holds a live mapping."""
        return self.kept_tables or self.keeps_tables(start, end)

    def keeps_tables(self, start: int, end: int) -> bool:
        """Whether every last-level table span ``[start, end)`` touches holds a live
        mapping.  Asked after an unmapped range left ``live``: unmapping it then frees
        no table page; asked before a new range enters: mapping it allocates none."""
        span = self.writer.leaf_span
        at = start - start % span
        while at < end:
            if self.live.first(at, at + span) is None:
                return False
            at += span
        return True
