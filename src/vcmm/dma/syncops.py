"""``dma_sync_single_for_cpu/for_device`` and the scatterlist variants.

They move ownership of a streaming buffer between the CPU and the device and do the
cache maintenance that hand-over needs on a non-coherent device (nothing on a coherent
one).  A single sync may cover part of a mapping (an offset from the handle and a
length inside it); the maintenance then touches only the physical bytes behind that
part.  Scatterlist syncs maintain the *CPU* side of every entry, which is why the
caller must pass the ``nents`` it gave ``map_sg`` and not the number of merged DMA
segments ``map_sg`` returned (seed 002, the arm/arm64 discussion): with fewer entries
part of the buffer would go unmaintained.  A different count is reported.
"""

from __future__ import annotations

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int
from vcmm.dma.attrs import check_direction
from vcmm.dma.callsite import CallSite, capture
from vcmm.dma.debug import ReportKind
from vcmm.dma.records import DmaMapping, MapKind, Owner
from vcmm.dma.sg import ScatterList
from vcmm.dma.sgcheck import check_sgl, sg_mapping
from vcmm.dma.state import DeviceEntry, DmaState, Wanted
from vcmm.ranges import AddressRange, subtract


def _hand_over(
    state: DmaState,
    entry: DeviceEntry,
    rec: DmaMapping,
    phys: list[AddressRange],
    direction: DmaDirection,
    for_cpu: bool,
    site: CallSite,
    twins: list[DmaMapping] | None = None,
) -> None:
    """Hand ``phys`` of ``rec`` (and its ``twins``) over; the invalidation must not
    discard what the CPU wrote for another mapping (reported before anything changes)."""
    keep = [rec, *(twins or [])]
    state.check_discard(entry, phys, direction, for_cpu=for_cpu, what=rec, keep=keep, site=site)
    if not entry.params.coherent:
        state.maintain(phys, direction, for_cpu=for_cpu)
    _take_over(rec, phys, for_cpu)


def _take_over(rec: DmaMapping, phys: list[AddressRange], for_cpu: bool) -> None:
    """Ownership of ``rec`` after a sync of ``phys`` (the CPU has synced what the
    device wrote there)."""
    if for_cpu:
        rec.owner = Owner.CPU
        rec.device_wrote = subtract(rec.device_wrote, phys)
    else:
        rec.owner = Owner.DEVICE


def _check_direction_matches(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    rec: DmaMapping,
    direction: DmaDirection,
    site: CallSite,
) -> None:
    if rec.direction is not DmaDirection.BIDIRECTIONAL and direction is not rec.direction:
        state.misuse(
            ReportKind.SYNC_WRONG_DIRECTION,
            entry,
            f"{call} of {rec.dma_addr:#x}: device driver syncs DMA memory with different "
            f"direction [mapped with {rec.direction.name}] [synced with {direction.name}]",
            dma_addr=rec.dma_addr,
            rec=rec,
            call=site,
        )


def sync_single(
    state: DmaState,
    dev: object,
    handle: int,
    size: int,
    direction: DmaDirection,
    *,
    for_cpu: bool,
) -> None:
    """Hand ``[handle, handle+size)`` of a ``map_page`` mapping to the CPU or device."""
    call = f"sync_single_for_{'cpu' if for_cpu else 'device'}"
    entry = state.entry(call, dev)
    handle = check_int(call, "handle", handle)
    size = check_int(call, "size", size, minimum=1)
    direction = check_direction(call, direction)
    site = capture(call, "{}, {:#x}, size={:#x}, {.name}", entry.name, handle, size, direction)
    rec = state.lookup(entry, handle, Wanted(MapKind.PAGE, size, direction))
    if rec is None or rec.kind is MapKind.COHERENT:
        what = "a coherent buffer, which needs no sync" if rec else "not mapped"
        raise state.fatal(
            ReportKind.SYNC_NOT_MAPPED,
            entry,
            f"{call} of {handle:#x}: device driver syncs DMA memory that is {what}",
            dma_addr=handle,
            size=size,
            rec=rec,
            call=site,
        )
    wanted = AddressRange(handle, size)
    data = AddressRange(rec.dma_addr, rec.size)
    if rec.kind is MapKind.PAGE and wanted not in data:
        raise state.fatal(
            ReportKind.SYNC_OUT_OF_RANGE,
            entry,
            f"{call}: device driver syncs DMA memory outside the mapping [{wanted}] is not "
            f"inside {data} of {rec.describe()}",
            dma_addr=handle,
            size=size,
            rec=rec,
            call=site,
        )
    _check_direction_matches(state, call, entry, rec, direction, site)
    phys = rec.phys_for(wanted)
    if rec.kind is MapKind.PAGE:
        phys = [p for r in phys for p in [r & rec.cpu_ranges[0]] if p is not None]
    twins = _twins(state, entry, rec, wanted)
    _hand_over(state, entry, rec, phys, direction, for_cpu, site, twins)
    # What the device wrote into a twin is synced only if this sync invalidated.
    invalidated = entry.params.coherent or direction is not DmaDirection.TO_DEVICE
    for twin in twins:
        _take_over(twin, phys if invalidated else [], for_cpu)


def _twins(
    state: DmaState, entry: DeviceEntry, rec: DmaMapping, wanted: AddressRange
) -> list[DmaMapping]:
    """Other live streaming mappings of the device reaching the same bytes at the same
    device addresses (a physically addressed device that mapped a buffer twice: two
    dma-buf attachments).  A sync names device addresses, so it hands over all of them."""
    same = rec.phys_for(wanted)
    return [
        r
        for r in state.candidates(entry, wanted.start)
        if r is not rec
        and r.device is entry.device
        and r.kind is not MapKind.COHERENT
        and r.phys_for(wanted) == same
    ]


def sync_sg(
    state: DmaState,
    dev: object,
    sgl: ScatterList,
    nents: int,
    direction: DmaDirection,
    *,
    for_cpu: bool,
) -> None:
    """Hand the CPU side of the first ``nents`` entries to the CPU or the device."""
    call = f"sync_sg_for_{'cpu' if for_cpu else 'device'}"
    entry = state.entry(call, dev)
    sgl, n = check_sgl(call, sgl, nents)
    direction = check_direction(call, direction)
    site = capture(call, "{}, nents={}, {.name}", entry.name, n, direction)
    rec = sg_mapping(state, call, entry, sgl, direction, site)
    if n != rec.nents:
        state.misuse(
            ReportKind.SYNC_WRONG_NENTS,
            entry,
            f"{call}: device driver syncs DMA sg list with different entry count "
            f"[map count={rec.nents}] [sync count={n}]; pass the nents given to map_sg "
            f"(not the {rec.mapped_nents} segments it returned) or part of the buffer is "
            "not maintained",
            dma_addr=rec.dma_addr,
            rec=rec,
            call=site,
        )
    _check_direction_matches(state, call, entry, rec, direction, site)
    _hand_over(state, entry, rec, [e.range for e in sgl[:n]], direction, for_cpu, site)
