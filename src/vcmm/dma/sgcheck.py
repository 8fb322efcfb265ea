"""What every scatterlist call checks first: the list and its count, then the mapping.

``map_sg``, ``unmap_sg`` and ``dma_sync_sg_for_cpu/for_device`` all take a
:class:`~vcmm.dma.sg.ScatterList` and the ``nents`` the driver passed to ``map_sg``;
the unmap and the syncs then find the mapping ``map_sg`` made of the list by its
first DMA segment, as dma-debug does (``check_unmap``/``check_sync`` look the entry up
by its device address and compare the list).  The streaming calls and the sync calls
share these checks here, so the reports they raise are worded alike.
"""

from __future__ import annotations

from collections.abc import Callable

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int
from vcmm.dma.attrs import DMA_MAPPING_ERROR
from vcmm.dma.callsite import CallSite
from vcmm.dma.debug import ReportKind
from vcmm.dma.records import DmaMapping, MapKind
from vcmm.dma.sg import ScatterList
from vcmm.dma.state import DeviceEntry, DmaState, Wanted
from vcmm.errors import InvalidArgumentError

__all__ = ["UnmapFinder", "check_sgl", "sg_mapping"]

#: How an unmap finds the mapping of a handle, or raises the report that says why it
#: cannot (double unmap, never mapped, another device's): ``streaming``'s finder.
UnmapFinder = Callable[[DmaState, str, DeviceEntry, int, CallSite, Wanted], DmaMapping]


def check_sgl(call: str, sgl: object, nents: object) -> tuple[ScatterList, int]:
    """``sgl`` as a scatterlist and ``nents`` as a count from 1 to its length."""
    if not isinstance(sgl, ScatterList):
        raise InvalidArgumentError(f"{call}: {sgl!r} is not a ScatterList")
    n = check_int(call, "nents", nents, minimum=1)
    if n > len(sgl):
        raise InvalidArgumentError(f"{call}: nents {n} is more than the list's {len(sgl)} entries")
    return sgl, n


def sg_mapping(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    sgl: ScatterList,
    direction: DmaDirection,
    site: CallSite,
    *,
    find_for_unmap: UnmapFinder | None = None,
) -> DmaMapping:
    """The mapping ``map_sg`` made of ``sgl`` (found by its first segment, and among
    mappings there by the list itself), or the report.  An unmap passes its finder
    (``find_for_unmap``), which tells a double unmap from a wrong handle; a sync
    without one reports a handle that is not mapped as a sync of unmapped memory."""
    handle = sgl[0].dma_address
    want = Wanted(MapKind.SG, None, direction, sgl)
    if handle == DMA_MAPPING_ERROR:
        old = next((r for r in reversed(state.history) if r.sgl is sgl), None)
        kind = ReportKind.DOUBLE_UNMAP if old is not None else ReportKind.UNMAP_NOT_MAPPED
        raise state.fatal(
            kind,
            entry,
            f"{call}: the scatterlist holds no DMA segment (never mapped)",
            rec=old,
            call=site,
        )
    if find_for_unmap is not None:
        rec = find_for_unmap(state, call, entry, handle, site, want)
    else:
        found = state.lookup(entry, handle, want)
        if found is None:
            raise state.fatal(
                ReportKind.SYNC_NOT_MAPPED,
                entry,
                f"{call} of {handle:#x}: device driver syncs DMA memory it has not mapped",
                dma_addr=handle,
                call=site,
            )
        rec = found
    if rec.sgl is not sgl:
        raise state.fatal(
            ReportKind.UNMAP_WRONG_FUNCTION
            if rec.kind is not MapKind.SG
            else ReportKind.UNMAP_NOT_MAPPED,
            entry,
            f"{call}: the scatterlist's first segment {handle:#x} belongs to {rec.describe()}, "
            "not to this list",
            dma_addr=handle,
            rec=rec,
            call=site,
        )
    return rec
