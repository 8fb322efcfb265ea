"""Streaming mappings: ``map_page``/``unmap_page`` and ``map_sg``/``unmap_sg``.

IOMMU devices (seed 002's ``iommu_dma_map_page``/``iommu_dma_map_sg``): the pages are
mapped at one fresh IOVA range from the domain's IOVA allocator, top-down from the
device's ``dma_mask``; a buffer that does not start on a granule keeps its offset
(the handle is the IOVA plus the offset); a scatterlist is laid out slot after slot
and merged into DMA segments (:mod:`vcmm.dma.sglayout`).  Direct devices: each entry
is mapped where it is and its DMA address is the physical address seen through the
bus window; entries are not merged (dma-direct does not merge either).

Unmap takes the size from the allocator, never from the caller: a wrong size or
direction is a *report* (the unmap still does the right thing), a handle that is not
mapped (never, or any more: a double unmap) is an error that changes nothing.  The
cache maintenance of the direction runs after a successful map and before the unmap
unless ``DmaAttr.SKIP_CPU_SYNC`` is given or the device is coherent.
"""

from __future__ import annotations

from collections.abc import Sequence

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int
from vcmm.dma.attrs import (
    DMA_MAPPING_ERROR,
    DmaAttr,
    check_attrs,
    check_direction,
    reservation_attr,
)
from vcmm.dma.backend import map_direct, map_iommu
from vcmm.dma.callsite import CallSite, capture
from vcmm.dma.debug import ReportKind
from vcmm.dma.domain import DmaDomain
from vcmm.dma.records import DevPiece, DmaMapping, MapKind, Teardown
from vcmm.dma.sg import ScatterList
from vcmm.dma.sgcheck import check_sgl, sg_mapping
from vcmm.dma.sglayout import finalise, layout
from vcmm.dma.state import DeviceEntry, DmaState, Wanted
from vcmm.errors import InvalidArgumentError, OwnershipError, VcmmError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, align_up
from vcmm.undo import Transaction


def check_ram(state: DmaState, call: str, phys: int, size: int) -> None:
    if not state.system.memory.is_backed(phys, size):
        raise InvalidArgumentError(
            f"{call}: [{phys:#x}, +{size:#x}) is not physical memory; only RAM can be mapped"
        )


def not_yours(call: str, exc: OwnershipError) -> OwnershipError:
    """The core refused the caller's pages (free in a target, page-table pages): a
    misuse, raised rather than returned as a mapping failure; nothing was mapped."""
    return OwnershipError(f"{call}: {str(exc).split(': ', 1)[-1]}")


# -- building a mapping ---------------------------------------------------------------------


def _map_ranges(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    ranges: Sequence[tuple[int, int]],
    direction: DmaDirection,
    kind: MapKind,
    site: CallSite,
) -> tuple[DmaMapping, list[tuple[int, int]]]:
    """Map the CPU ranges ``(phys, length)``; returns the record and each range's DMA
    address and length (before any merging).

    One transaction, a boundary: a failure takes every step back; a success leaves
    nothing in a caller's transaction but what :meth:`DmaState.add` records there (the
    caller takes the mapping back with the unmap call)."""
    with Transaction(call, boundary=True):
        if entry.domain is not None:
            return _map_iommu_ranges(
                state, call, entry, entry.domain, ranges, direction, kind, site
            )
        return _map_direct_ranges(state, call, entry, ranges, direction, kind, site)


def _map_iommu_ranges(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    domain: DmaDomain,
    ranges: Sequence[tuple[int, int]],
    direction: DmaDirection,
    kind: MapKind,
    site: CallSite,
) -> tuple[DmaMapping, list[tuple[int, int]]]:
    """One IOVA range for all ``ranges``, slot after slot; padding to a segment
    boundary maps the domain's own padding page (made here on first use, and given
    back if the mapping fails).  Runs inside :func:`_map_ranges`'s transaction."""
    slots, _total = layout(ranges, domain.granule, entry.params.segment_boundary_mask)
    data = [
        AddressRange(phys - s.offset, s.size) for (phys, _), s in zip(ranges, slots, strict=True)
    ]
    memtype = state.streaming_memtype(call, entry, data)
    new_page = None
    pad: list[AddressRange] = []
    with Transaction(f"{call} in {domain.name}") as txn:
        if any(s.pad for s in slots):
            page, made = state.padding_page(domain, memtype)
            if made:
                new_page = page
                txn.on_undo(state.drop_padding, domain, memtype)
            pad = [AddressRange(page.start, domain.granule)]
        pieces: list[AddressRange] = []
        for piece, slot in zip(data, slots, strict=True):
            pieces.append(piece)
            pieces.extend(pad * (slot.pad // domain.granule))
        attr = reservation_attr(direction, memtype)
        owner = f"{site.call} for {entry.name}"
        base, teardown = map_iommu(state.system, domain, pieces, attr, entry.params.mask, owner)
    if new_page is not None:
        state.zero_padding(new_page)
    dev_pieces = tuple(
        DevPiece(base + s.start, piece.start, s.size) for piece, s in zip(data, slots, strict=True)
    )
    found = domain.allocator.find(base)
    assert found is not None
    placed = [(base + s.start + s.offset, s.length) for s in slots]
    rec = DmaMapping(
        state.new_id(),
        kind,
        entry.device,
        domain,
        placed[0][0],
        0,
        direction,
        tuple(AddressRange(p, n) for p, n in ranges),
        dev_pieces,
        found,
        [teardown],
        site,
    )
    rec.slots = tuple(slots)
    return rec, placed


def _map_direct_ranges(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    ranges: Sequence[tuple[int, int]],
    direction: DmaDirection,
    kind: MapKind,
    site: CallSite,
) -> tuple[DmaMapping, list[tuple[int, int]]]:
    """Each range where it is, seen through the device's bus window (no merging).
    Runs inside :func:`_map_ranges`'s transaction, which takes the ranges already
    mapped back if a later one fails."""
    system = state.system
    device = entry.device
    owner = f"{site.call} for {device.name}"
    teardowns: list[Teardown] = []
    dev_list: list[DevPiece] = []
    placed = []
    for phys, length in ranges:
        offset = phys % SZ_4K
        piece = AddressRange(phys - offset, align_up(offset + length, SZ_4K))
        memtype = state.streaming_memtype(call, entry, [piece])
        attr = reservation_attr(direction, memtype)
        bus, teardown = map_direct(system, device, piece, attr, entry.params.mask, owner)
        teardowns.append(teardown)
        dev_list.append(DevPiece(bus, piece.start, piece.size))
        placed.append((bus + offset, length))
    first = dev_list[0]
    rec = DmaMapping(
        state.new_id(),
        kind,
        device,
        None,
        placed[0][0],
        0,
        direction,
        tuple(AddressRange(p, n) for p, n in ranges),
        tuple(dev_list),
        AddressRange(first.dev_addr, first.size),
        teardowns,
        site,
    )
    return rec, placed


def sync_for_device(state: DmaState, entry: DeviceEntry, rec: DmaMapping, attrs: DmaAttr) -> None:
    if not attrs & DmaAttr.SKIP_CPU_SYNC and not entry.params.coherent:
        state.maintain(rec.cpu_ranges, rec.direction, for_cpu=False)


def check_map_discard(
    state: DmaState,
    entry: DeviceEntry,
    ranges: list[AddressRange],
    direction: DmaDirection,
    attrs: DmaAttr,
    site: CallSite,
    label: str = "",
) -> None:
    """Before a map: its hand-over to the device must not discard what the CPU wrote
    for another mapping of the same bytes (see :meth:`DmaState.check_discard`)."""
    if state.checker is not None and not attrs & DmaAttr.SKIP_CPU_SYNC:
        what = f"this {site.call} of {entry.name} ({direction.name}{label})"
        state.check_discard(entry, ranges, direction, for_cpu=False, what=what, site=site)


def unmap_for_cpu(
    state: DmaState,
    entry: DeviceEntry,
    rec: DmaMapping,
    ranges: list[AddressRange],
    direction: DmaDirection,
    attrs: DmaAttr,
    site: CallSite,
) -> None:
    """The unmap's hand-over to the CPU, then the teardown.  Skipped maintenance
    (``DMA_ATTR_SKIP_CPU_SYNC``) leaves what the device wrote readable stale: the
    checker remembers it until a sync invalidates those bytes."""
    skip = bool(attrs & DmaAttr.SKIP_CPU_SYNC) or entry.params.coherent
    if not skip:
        state.check_discard(entry, ranges, direction, for_cpu=True, what=rec, keep=[rec], site=site)
        state.maintain(ranges, direction, for_cpu=True)
    _release(state, rec, site)
    if skip and not entry.params.coherent and rec.device_wrote:
        state.unsynced.append(rec)


# -- map_page ---------------------------------------------------------------------------------


def map_page(
    state: DmaState,
    dev: object,
    page: int,
    offset: int,
    size: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> int:
    """Map ``size`` bytes at ``page + offset``; the DMA handle, or
    ``DMA_MAPPING_ERROR`` with the reason in ``last_error``."""
    call = "map_page"
    entry = state.entry(call, dev)
    state.check_usable(call, entry)
    page = check_int(call, "page", page)
    if page % SZ_4K:
        raise InvalidArgumentError(f"{call}: page {page:#x} is not a 4 KiB page address")
    offset = check_int(call, "offset", offset)
    size = check_int(call, "size", size, minimum=1)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    check_ram(state, call, page + offset, size)
    site = capture(
        call,
        "{}, page={:#x}, offset={:#x}, size={:#x}, {.name}",
        entry.name,
        page,
        offset,
        size,
        direction,
    )
    data = [AddressRange(page + offset, size)]
    check_map_discard(state, entry, data, direction, flags, site)
    try:
        rec, placed = _map_ranges(
            state, call, entry, [(page + offset, size)], direction, MapKind.PAGE, site
        )
    except OwnershipError as exc:
        raise not_yours(call, exc) from None
    except VcmmError as exc:
        state.last_error = exc
        return DMA_MAPPING_ERROR
    rec.size = size
    state.add(rec)
    sync_for_device(state, entry, rec, flags)
    return placed[0][0]


def _find_for_unmap(
    state: DmaState, call: str, entry: DeviceEntry, handle: int, site: CallSite, want: Wanted
) -> DmaMapping:
    """The mapping ``handle`` and ``want`` name, or the error (double unmap, never
    mapped...)."""
    rec = state.lookup(entry, handle, want)
    if rec is not None and rec.dma_addr == handle and rec.device is entry.device:
        return rec
    if rec is not None and rec.device is not entry.device:
        raise state.fatal(
            ReportKind.UNMAP_WRONG_DEVICE,
            entry,
            f"{call} of {handle:#x}: that address belongs to {rec.describe()}, not to {entry.name}",
            dma_addr=handle,
            rec=rec,
            call=site,
        )
    if rec is not None:
        raise state.fatal(
            ReportKind.UNMAP_NOT_MAPPED,
            entry,
            f"{call} of {handle:#x}: the address lies inside {rec.describe()} but is not "
            f"its handle {rec.dma_addr:#x}",
            dma_addr=handle,
            rec=rec,
            call=site,
        )
    old = state.unmapped(entry, AddressRange(handle, 1))
    if old is not None and old.dma_addr == handle:
        raise state.fatal(
            ReportKind.DOUBLE_UNMAP,
            entry,
            f"{call} of {handle:#x}: double unmap; {old.describe()} was already unmapped "
            f"by {old.unmapped_by}",
            dma_addr=handle,
            rec=old,
            call=site,
        )
    raise state.fatal(
        ReportKind.UNMAP_NOT_MAPPED,
        entry,
        f"{call} of {handle:#x}: device driver tries to unmap DMA memory it has not mapped",
        dma_addr=handle,
        call=site,
    )


def _release(state: DmaState, rec: DmaMapping, site: CallSite) -> None:
    # The record goes first: when an undo takes back a domain's last mapping, its
    # contexts are given back before the tables are unmapped, the inverse of a map
    # that backed the reservation and then activated the domain (each idle context
    # then gets back the very table page the activation freed).
    state.remove(rec, site)
    for teardown in reversed(rec.teardown):
        teardown.release(state.system)


def unmap_page(
    state: DmaState, dev: object, handle: int, size: int, direction: DmaDirection, attrs: int = 0
) -> None:
    """Unmap what ``map_page`` returned ``handle`` for."""
    call = "unmap_page"
    entry = state.entry(call, dev)
    handle = check_int(call, "handle", handle)
    size = check_int(call, "size", size, minimum=1)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    site = capture(call, "{}, {:#x}, size={:#x}, {.name}", entry.name, handle, size, direction)
    rec = _find_for_unmap(state, call, entry, handle, site, Wanted(MapKind.PAGE, size, direction))
    if rec.kind is MapKind.COHERENT:
        raise state.fatal(
            ReportKind.UNMAP_WRONG_FUNCTION,
            entry,
            f"{call} of {handle:#x}: it is a coherent buffer ({rec.describe()}); free it with "
            "free_coherent",
            dma_addr=handle,
            rec=rec,
            call=site,
        )
    if rec.kind is not MapKind.PAGE:
        state.misuse(
            ReportKind.UNMAP_WRONG_FUNCTION,
            entry,
            f"{call} of {handle:#x}: it was mapped by {rec.kind.value}, unmap it with unmap_sg",
            dma_addr=handle,
            rec=rec,
            call=site,
        )
    check_size_direction(state, call, entry, rec, size, direction, site)
    unmap_for_cpu(state, entry, rec, list(rec.cpu_ranges), direction, flags, site)


def check_size_direction(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    rec: DmaMapping,
    size: int,
    direction: DmaDirection,
    site: CallSite,
) -> None:
    if size != rec.size:
        state.misuse(
            ReportKind.UNMAP_WRONG_SIZE,
            entry,
            f"{call} of {rec.dma_addr:#x}: device driver frees DMA memory with different size "
            f"[map size={rec.size} bytes] [unmap size={size} bytes]",
            dma_addr=rec.dma_addr,
            size=size,
            rec=rec,
            call=site,
        )
    check_unmap_direction(state, call, entry, rec, direction, site, size=size)


def check_unmap_direction(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    rec: DmaMapping,
    direction: DmaDirection,
    site: CallSite,
    *,
    size: int | None = None,
) -> None:
    """Report an unmap whose direction is not the one the mapping was made with."""
    if direction is not rec.direction:
        state.misuse(
            ReportKind.UNMAP_WRONG_DIRECTION,
            entry,
            f"{call} of {rec.dma_addr:#x}: device driver frees DMA memory with different "
            f"direction [mapped with {rec.direction.name}] [unmapped with {direction.name}]",
            dma_addr=rec.dma_addr,
            size=size,
            rec=rec,
            call=site,
        )


# -- map_sg -----------------------------------------------------------------------------------


def map_sg(
    state: DmaState,
    dev: object,
    sgl: ScatterList,
    nents: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> int:
    """Map the first ``nents`` entries; returns the number of DMA segments written
    into the list, or 0 (list untouched, reason in ``last_error``) on failure."""
    call = "map_sg"
    entry = state.entry(call, dev)
    state.check_usable(call, entry)
    sgl, n = check_sgl(call, sgl, nents)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    entries = list(sgl[:n])
    for e in entries:
        check_ram(state, call, e.phys, e.length)
    site = capture(
        call,
        "{}, {} entries ({:#x} bytes), {.name}",
        entry.name,
        n,
        sum(e.length for e in entries),
        direction,
    )
    ranges = [(e.phys, e.length) for e in entries]
    data = [e.range for e in entries]
    check_map_discard(state, entry, data, direction, flags, site, sgl.labelled)
    try:
        rec, placed = _map_ranges(state, call, entry, ranges, direction, MapKind.SG, site)
    except OwnershipError as exc:
        raise not_yours(call, exc) from None
    except VcmmError as exc:
        state.last_error = exc
        return 0
    return finish_sg(state, entry, rec, sgl, n, placed, flags)


def finish_sg(
    state: DmaState,
    entry: DeviceEntry,
    rec: DmaMapping,
    sgl: ScatterList,
    n: int,
    placed: list[tuple[int, int]],
    flags: DmaAttr,
) -> int:
    """After a successful map of ``sgl``'s first ``n`` entries: write the merged DMA
    segments into the list, record the mapping and hand it to the device; the
    segment count."""
    entries = sgl[:n]
    if entry.domain is not None:
        params = entry.params
        segments = [
            (a, length)
            for a, length, _ in finalise(
                rec.slots,
                rec.dev_range.start,
                params.segment_boundary_mask,
                params.max_segment_size,
            )
        ]
    else:
        segments = placed
    for i, e in enumerate(entries):
        if i < len(segments):
            e.dma_address, e.dma_length = segments[i]
        else:
            e.dma_address, e.dma_length = DMA_MAPPING_ERROR, 0
    rec.size = sum(e.length for e in entries)
    rec.sgl, rec.nents, rec.mapped_nents = sgl, n, len(segments)
    rec.dma_addr = segments[0][0]
    state.add(rec)
    sync_for_device(state, entry, rec, flags)
    return len(segments)


def unmap_sg(
    state: DmaState,
    dev: object,
    sgl: ScatterList,
    nents: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> None:
    """Unmap a scatterlist; ``nents`` must be what was passed to ``map_sg`` (not the
    segment count it returned)."""
    call = "unmap_sg"
    entry = state.entry(call, dev)
    sgl, n = check_sgl(call, sgl, nents)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    site = capture(call, "{}, nents={}, {.name}", entry.name, n, direction)
    rec = sg_mapping(state, call, entry, sgl, direction, site, find_for_unmap=_find_for_unmap)
    if n != rec.nents:
        state.misuse(
            ReportKind.UNMAP_WRONG_NENTS,
            entry,
            f"{call}: device driver frees DMA sg list with different entry count "
            f"[map count={rec.nents}] [unmap count={n}] (pass the nents given to map_sg, "
            f"not the {rec.mapped_nents} segments it returned)",
            dma_addr=rec.dma_addr,
            rec=rec,
            call=site,
        )
    check_unmap_direction(state, call, entry, rec, direction, site)
    unmap_for_cpu(state, entry, rec, [e.range for e in sgl[:n]], direction, flags, site)


def mapping_error(handle: int) -> bool:
    return handle == DMA_MAPPING_ERROR
