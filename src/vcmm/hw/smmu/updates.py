"""The seed's map API of a context: the update bracket, map, map_range, unmap.

Every table change sits inside ``update_start``/``update_done`` (seed 000 L442-531).
Each changed range is reported to the context's TLB-maintenance gather
(:class:`~vcmm.hw.tlbgather.TlbGather`, flushing the bound bank's entries), and
``update_done`` syncs it: until then a device keeps using what it has cached, exactly
as the seed's bracket implies.  An upper layer that edits the context's external table
itself reports its ranges to the same gather inside the same bracket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.attrs import PageAttrs
from vcmm.checks import check_int
from vcmm.errors import (
    AlignmentError,
    InvalidArgumentError,
    NotMappedError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu.tables import ContextTables
from vcmm.hw.tlbgather import TlbGather
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

if TYPE_CHECKING:
    from vcmm.hw.smmu.instance import Smmu


class ContextUpdates:
    """The update bracket and the map/unmap calls of one context."""

    def __init__(self, smmu: Smmu, name: str, tables: ContextTables, gather: TlbGather) -> None:
        self._smmu = smmu
        self._name = name
        self._tables = tables
        self.gather = gather
        self.updating = False

    # -- the bracket ------------------------------------------------------------------------

    def start(self) -> None:
        if self.updating:
            raise StateError(f"context {self._name!r}: update_start called twice")
        self.updating = True

    def done(self) -> int:
        """Close the bracket: invalidate what changed; entries removed."""
        if not self.updating:
            raise StateError(f"context {self._name!r}: update_done without update_start")
        removed = self.gather.sync()
        self.updating = False
        return removed

    def _require_update(self, op: str) -> None:
        if not self.updating:
            raise StateError(
                f"context {self._name!r}: {op} outside update_start()/update_done(); the seed "
                "requires the bracket around every table change"
            )

    # -- checks -----------------------------------------------------------------------------

    def _check_range(self, op: str, va: object, pa: object, length: object) -> tuple[int, int, int]:
        who = f"{self._name}.{op}"
        v = check_int(who, "va", va)
        p = check_int(who, "pa", pa)
        n = check_int(who, "length", length)
        if n == 0:
            raise InvalidArgumentError(f"{who}: length must be > 0")
        limit = self._smmu.input_limit
        if v + n > limit:
            raise InvalidArgumentError(
                f"{who}: VA range {AddressRange(v, n)} runs past the SMMU's input space "
                f"({limit:#x})"
            )
        return v, p, n

    def _check_size(self, who: str, size: object, shown: str) -> int:
        """``size`` if it is one of the format's page sizes (``shown`` names it)."""
        sizes = self._smmu.fmt.sizes
        if not isinstance(size, int) or size not in sizes:
            allowed = ", ".join(format_size(s) for s in sorted(sizes))
            raise UnsupportedSizeError(f"{who}: {shown} is not one of the page sizes {allowed}")
        return size

    # -- changes ----------------------------------------------------------------------------

    def map(self, pa: object, va: object, length: object, attrs: object) -> None:
        """One page or block of exactly one of the format's sizes (``smmu_map``)."""
        who = f"{self._name}.map"
        v, p, n = self._check_range("map", va, pa, length)
        self._check_size(who, n, f"length {format_size(n)} ({n:#x})")
        if v % n or p % n:
            raise AlignmentError(
                f"{who}: va {v:#x} and pa {p:#x} must both be aligned to the "
                f"{format_size(n)} page size"
            )
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"{who}: attrs {attrs!r} is not a PageAttrs")
        self._require_update("map")
        self._tables.table_for(v, who).map(v, p, n, attrs, page_size=n, entries=False)
        self.gather.add_range(v, n)

    def map_range(
        self, va: object, pa: object, length: object, attrs: object, page_size: object
    ) -> None:
        """A 4K-aligned range with the largest sizes that fit, or ``page_size`` forced."""
        who = f"{self._name}.map_range"
        v, p, n = self._check_range("map_range", va, pa, length)
        granule = self._smmu.fmt.min_page
        if v % granule or p % granule or n % granule:
            raise AlignmentError(
                f"{who}: va {v:#x}, pa {p:#x} and length {n:#x} must be multiples of "
                f"{format_size(granule)}"
            )
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"{who}: attrs {attrs!r} is not a PageAttrs")
        forced = None
        if page_size is not None:
            forced = self._check_size(who, page_size, f"page_size {page_size!r}")
            if v % forced or p % forced or n % forced:
                raise AlignmentError(
                    f"{who}: va {v:#x}, pa {p:#x} and length {n:#x} must be aligned to the "
                    f"forced {format_size(forced)} page size"
                )
        self._require_update("map_range")
        pieces = self._tables.pieces(v, n)
        tables = [self._tables.table_for(pv, who) for pv, _ in pieces]
        done: list[tuple[PageTable, int, int]] = []
        try:
            for (pv, pn), table in zip(pieces, tables, strict=True):
                table.map(pv, p + (pv - v), pn, attrs, page_size=forced, entries=False)
                done.append((table, pv, pn))
        except BaseException:
            for table, pv, pn in reversed(done):
                table.unmap(pv, pn)
            raise
        self.gather.add_range(v, n)

    def unmap(self, va: object, length: object) -> None:
        """Remove the mappings of ``[va, va+length)``, all of which must be mapped."""
        who = f"{self._name}.unmap"
        v, _, n = self._check_range("unmap", va, 0, length)
        granule = self._smmu.fmt.min_page
        if v % granule or n % granule:
            raise AlignmentError(
                f"{who}: va {v:#x} and length {n:#x} must be multiples of {format_size(granule)}"
            )
        self._require_update("unmap")
        pieces = self._tables.pieces(v, n)
        tables = [self._tables.table_for(pv, who) for pv, _ in pieces]
        if len(pieces) > 1:  # both halves must be unmappable before either changes
            for (pv, pn), table in zip(pieces, tables, strict=True):
                hole = table.find(pv, pn, mapped=False)
                if hole is not None:
                    raise NotMappedError(
                        f"{who}: {hole:#x} inside {AddressRange(pv, pn)} is not mapped; "
                        "nothing was unmapped"
                    )
        for (pv, pn), table in zip(pieces, tables, strict=True):
            table.unmap(pv, pn)
        self.gather.add_range(v, n)
