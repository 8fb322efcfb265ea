"""The lean streaming path: ``map_page``/``unmap_page``/``map_sg``/``unmap_sg`` for
IOMMU devices in the common case, in fewer steps than :mod:`vcmm.dma.streaming`.

Why: a streaming map/unmap pair is the DMA API's hot path (a network or block driver
makes one per packet or request), and the reference path spends its own share of a
pair on generality the common case does not need: three nested transactions, a scan
of the domain's members for contexts to program, an IOVA-tree search to find the
record an unmap names, the request object :meth:`DmaState.lookup` ranks candidates
with.  Here:

- a device named by its name, attached behind an IOMMU, is the fast case (a device
  object, a direct device, a name not attached: the reference path, which raises
  exactly as before);
- a map runs the same VCMM calls in the same order as the reference (the IOVA from
  the domain's allocator through ``vcm_reserve``, a wrap of the caller's pages,
  ``vcm_back``; the domain programs its devices only when a member still lacks its
  context), recorded in one boundary :class:`~vcmm.undo.Transaction` holding the
  same undo steps, so a failure is taken back exactly as there;
- a ``map_sg`` whose layout needs padding (a segment boundary) goes the reference way
  (the padding page is made there);
- an unmap finds its record with one dictionary look-up (the IOVA range starts at
  the handle's granule); anything but the exact match (another device's handle, a
  wrong size, direction, function or entry count, a double unmap) goes the reference
  way, which reports it.

The mappings it makes are the reference's, byte for byte: the same reservations in
the mapping graph, the same table entries, the same IOTLB maintenance, the same
records; ``DmaApi(lean=False)`` runs the reference path only, and
``tests/dma/test_lean_path.py`` drives both with the same random operations.
"""

from __future__ import annotations

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int
from vcmm.core.objects import Association
from vcmm.dma import streaming
from vcmm.dma.attrs import (
    DMA_MAPPING_ERROR,
    check_attrs,
    check_direction,
    reservation_attr,
)
from vcmm.dma.callsite import CallSite, capture
from vcmm.dma.domain import DmaDomain
from vcmm.dma.records import DevPiece, DmaMapping, MapKind, Teardown
from vcmm.dma.sg import ScatterList
from vcmm.dma.sglayout import Slot, layout
from vcmm.dma.state import DeviceEntry, DmaState
from vcmm.errors import InvalidArgumentError, OwnershipError, VcmmError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K
from vcmm.undo import Transaction


def _iommu_entry(state: DmaState, dev: object) -> tuple[DeviceEntry, DmaDomain] | None:
    """The attached IOMMU device named ``dev`` and its domain, or None (the reference
    path's case)."""
    if type(dev) is not str:
        return None
    entry = state.entries.get(dev)
    if entry is None or entry.domain is None:
        return None
    return entry, entry.domain


def _map_slots(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    domain: DmaDomain,
    slots: list[Slot],
    total: int,
    direction: DmaDirection,
    kind: MapKind,
    site: CallSite,
    cpu: tuple[AddressRange, ...],
) -> DmaMapping:
    """Map the CPU ranges ``cpu`` laid out as ``slots`` (no padding) at one fresh IOVA
    range: the reference's VCMM calls and undo steps, in one boundary
    transaction.  The wrap of the caller's pages pins their owners in one core call
    (``vcm_phys_wrap_owned``, the reference's ``vcm_phys_owners`` and
    ``vcm_phys_wrap`` in one pass)."""
    system = state.system
    # the pages of each entry: the entry's own range when it is whole granules
    data = [
        c if offset == 0 and size == c.size else AddressRange(c.start - offset, size)
        for c, (_, offset, _, size, _) in zip(cpu, slots, strict=True)
    ]
    with Transaction(call, boundary=True) as txn:
        attr = reservation_attr(direction, state.streaming_memtype(call, entry, data))
        wrap = system.vcm_phys_wrap_owned(data, owner=f"{call} for {entry.name}")
        txn.on_undo(system.vcm_phys_free, wrap)
        with domain.allocator.limited(entry.params.mask):
            res = system.vcm_reserve(domain.vcm, total, attr)
        txn.on_undo(system.vcm_unreserve, res)
        system.vcm_back_direct(res, wrap)
        txn.on_undo(system.vcm_unback, res)
        activated: tuple[Association, ...] = ()
        if len(domain.associations) != len(domain.members):
            activated = domain.activate(system)
    base = res.dev_addr
    found = domain.allocator.find(base)
    assert found is not None
    rec = DmaMapping(
        state.new_id(),
        kind,
        entry.device,
        domain,
        base + slots[0].offset,
        0,
        direction,
        cpu,
        tuple(
            [
                DevPiece(base + start, d.start, size)
                for d, (start, _, _, size, _) in zip(data, slots, strict=True)
            ]
        ),
        found,
        [Teardown(res, wrap=wrap, activated=activated, domain=domain, direct=True)],
        site,
    )
    rec.slots = tuple(slots)
    return rec


def _try_map_slots(
    state: DmaState,
    call: str,
    entry: DeviceEntry,
    domain: DmaDomain,
    slots: list[Slot],
    total: int,
    direction: DmaDirection,
    kind: MapKind,
    site: CallSite,
    cpu: tuple[AddressRange, ...],
) -> DmaMapping | None:
    """:func:`_map_slots` with the DMA API's error convention: memory the caller does
    not own is misuse (raised, as the reference raises it); any other refusal is the
    driver-visible mapping error (None, the reason kept in ``last_error``)."""
    try:
        return _map_slots(state, call, entry, domain, slots, total, direction, kind, site, cpu)
    except OwnershipError as exc:
        raise streaming.not_yours(call, exc) from None
    except VcmmError as exc:
        state.last_error = exc
        return None


def map_page(
    state: DmaState,
    dev: object,
    page: int,
    offset: int,
    size: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> int:
    """:func:`vcmm.dma.streaming.map_page`, leanly for an IOMMU device."""
    found = _iommu_entry(state, dev)
    if found is None:
        return streaming.map_page(state, dev, page, offset, size, direction, attrs)
    entry, domain = found
    call = "map_page"
    state.check_usable(call, entry)
    page = check_int(call, "page", page)
    if page % SZ_4K:
        raise InvalidArgumentError(f"{call}: page {page:#x} is not a 4 KiB page address")
    offset = check_int(call, "offset", offset)
    size = check_int(call, "size", size, minimum=1)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    phys = page + offset
    streaming.check_ram(state, call, phys, size)
    site = capture(
        call,
        "{}, page={:#x}, offset={:#x}, size={:#x}, {.name}",
        entry.name,
        page,
        offset,
        size,
        direction,
    )
    cpu = (AddressRange(phys, size),)
    streaming.check_map_discard(state, entry, list(cpu), direction, flags, site)
    ranges = [(phys, size)]
    slots, total = layout(ranges, domain.granule, entry.params.segment_boundary_mask)
    rec = _try_map_slots(
        state, call, entry, domain, slots, total, direction, MapKind.PAGE, site, cpu
    )
    if rec is None:
        return DMA_MAPPING_ERROR
    rec.size = size
    state.add(rec)
    streaming.sync_for_device(state, entry, rec, flags)
    return rec.dma_addr


def unmap_page(
    state: DmaState, dev: object, handle: int, size: int, direction: DmaDirection, attrs: int = 0
) -> None:
    """:func:`vcmm.dma.streaming.unmap_page`, leanly for the exact match of a live
    ``map_page`` of an IOMMU device."""
    found = _iommu_entry(state, dev)
    rec = None
    if found is not None and type(handle) is int and type(size) is int:
        entry, domain = found
        rec = domain.records.get(handle - handle % domain.granule)
    if (
        rec is None
        or rec.dma_addr != handle
        or rec.device is not entry.device
        or rec.kind is not MapKind.PAGE
        or rec.size != size
        or rec.direction is not direction
    ):
        streaming.unmap_page(state, dev, handle, size, direction, attrs)
        return
    call = "unmap_page"
    flags = check_attrs(call, attrs)
    site = capture(call, "{}, {:#x}, size={:#x}, {.name}", entry.name, handle, size, direction)
    streaming.unmap_for_cpu(state, entry, rec, list(rec.cpu_ranges), direction, flags, site)


def map_sg(
    state: DmaState,
    dev: object,
    sgl: ScatterList,
    nents: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> int:
    """:func:`vcmm.dma.streaming.map_sg`, leanly for an IOMMU device and a list laid
    out without padding."""
    found = _iommu_entry(state, dev)
    if found is None or not isinstance(sgl, ScatterList) or type(nents) is not int:
        return streaming.map_sg(state, dev, sgl, nents, direction, attrs)
    entry, domain = found
    n = nents
    entries = sgl[:n] if 1 <= n <= len(sgl) else []
    ranges = [(e.phys, e.length) for e in entries]
    slots, total = layout(ranges, domain.granule, entry.params.segment_boundary_mask)
    if not entries or any(s.pad for s in slots):  # padded: the reference's way
        return streaming.map_sg(state, dev, sgl, nents, direction, attrs)
    call = "map_sg"
    state.check_usable(call, entry)
    direction = check_direction(call, direction)
    flags = check_attrs(call, attrs)
    for phys, length in ranges:
        streaming.check_ram(state, call, phys, length)
    size = sum([length for _, length in ranges])
    site = capture(call, "{}, {} entries ({:#x} bytes), {.name}", entry.name, n, size, direction)
    cpu = tuple([AddressRange(phys, length) for phys, length in ranges])
    streaming.check_map_discard(state, entry, list(cpu), direction, flags, site, sgl.labelled)
    rec = _try_map_slots(state, call, entry, domain, slots, total, direction, MapKind.SG, site, cpu)
    if rec is None:
        return 0
    return streaming.finish_sg(state, entry, rec, sgl, n, [], flags)


def unmap_sg(
    state: DmaState,
    dev: object,
    sgl: ScatterList,
    nents: int,
    direction: DmaDirection,
    attrs: int = 0,
) -> None:
    """:func:`vcmm.dma.streaming.unmap_sg`, leanly for the exact match of a live
    ``map_sg`` of an IOMMU device."""
    found = _iommu_entry(state, dev)
    rec = None
    if found is not None and isinstance(sgl, ScatterList) and len(sgl):
        entry, domain = found
        handle = sgl[0].dma_address
        rec = domain.records.get(handle - handle % domain.granule)
    if (
        rec is None
        or rec.sgl is not sgl
        or rec.device is not entry.device
        or rec.kind is not MapKind.SG
        or rec.nents != nents
        or type(nents) is not int
        or rec.direction is not direction
    ):
        streaming.unmap_sg(state, dev, sgl, nents, direction, attrs)
        return
    call = "unmap_sg"
    flags = check_attrs(call, attrs)
    site = capture(call, "{}, nents={}, {.name}", entry.name, nents, direction)
    ranges = [AddressRange(e.phys, e.length) for e in sgl[:nents]]
    streaming.unmap_for_cpu(state, entry, rec, ranges, direction, flags, site)
