"""Mapping physical pieces into a device's address space, through the VCMM core.

Every mapping the DMA API makes is a VCMM reservation backed by physical memory, so
it is an edge of the mapping graph and obeys its attribute rules:

- IOMMU devices: a reservation in the domain's VCM (its allocator is the IOVA
  allocator, limited to the device's mask for this call) backed by the pieces laid
  end to end: one contiguous IOVA range, however scattered the pages;
- direct devices: a private one-to-one VCM over the piece, associated with the
  device, and a reservation in it; the DMA address is the physical address seen
  through the device's bus window (``phys_to_bus``).  A private VCM per mapping lets
  two mappings share a page (two small buffers in one page), which one-to-one
  reservations of a single VCM could not.

Pages the caller owns (``map_page``, ``map_sg``) are described to the core with
``vcm_phys_wrap`` ``of`` the allocations they lie in, which pins those until the unmap
(the driver vouches for them, as Linux trusts the pages a driver passes); memory the
DMA API owns (coherent buffers) comes as an allocation or a view of a pool.  The
core's graph finds every alias of those bytes, whatever chunk they lie in, so the
memory type and the shareable bit are its business.

Both run as a :class:`~vcmm.undo.Transaction`: each step that succeeded records how
to take itself back, so a later failure undoes them newest first; an IOVA allocated
for a mapping that then failed is taken back exactly (the allocator frees exactly
while a roll back runs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vcmm.core.flags import Attr
from vcmm.core.objects import PhysMem, VcmKind
from vcmm.dma.domain import DmaDomain
from vcmm.dma.records import DmaDevice, Teardown
from vcmm.errors import NotMappedError, OutOfAddressSpaceError, StateError
from vcmm.hw.bus import PhysicalDevice
from vcmm.ranges import AddressRange
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi


def _wrap(system: VcmmApi, pieces: list[AddressRange], owner: str) -> PhysMem:
    """A wrap of the caller's ``pieces`` that pins the allocations they lie in (so they
    cannot be freed and handed out again under the device)."""
    return system.vcm_phys_wrap(pieces, owner=owner, of=system.vcm_phys_owners(pieces))


def map_iommu(
    system: VcmmApi,
    domain: DmaDomain,
    pieces: Sequence[AddressRange],
    attr: Attr,
    limit: int,
    owner: str,
    physmem: PhysMem | None = None,
) -> tuple[int, Teardown]:
    """Map ``pieces`` contiguously at a fresh IOVA at or below ``limit`` (backed by
    ``physmem`` if given, else by a wrap of the caller's ``pieces``)."""
    total = sum(p.size for p in pieces)
    with Transaction("map_iommu") as txn:
        wrap = None
        if physmem is None:
            wrap = physmem = _wrap(system, list(pieces), owner)
            txn.on_undo(system.vcm_phys_free, wrap)
        with domain.allocator.limited(limit):
            res = system.vcm_reserve(domain.vcm, total, attr)
        txn.on_undo(system.vcm_unreserve, res)  # a roll back frees the IOVA exactly
        system.vcm_back(res, physmem)
        txn.on_undo(system.vcm_unback, res)
        activated = domain.activate(system)  # the domain's first mapping programs its devices
    return res.dev_addr, Teardown(res, wrap=wrap, activated=activated, domain=domain)


def bus_address(device: PhysicalDevice, piece: AddressRange, mask: int) -> int:
    """The bus address of ``piece`` for a direct device, checked against ``mask``."""
    try:
        first = device.phys_to_bus(piece.start)
        last = device.phys_to_bus(piece.last)
    except NotMappedError as exc:
        raise NotMappedError(f"{device.name} cannot reach {piece}: {exc}") from None
    if last - first != piece.size - 1:
        raise NotMappedError(
            f"{device.name} sees {piece} through more than one dma-ranges window; its bus "
            "addresses would not be contiguous"
        )
    if last > mask:
        raise OutOfAddressSpaceError(
            f"{device.name}: {piece} is at bus addresses up to {last:#x}, above its DMA mask "
            f"{mask:#x} (no bounce buffers in this model)"
        )
    return int(first)


def map_direct(
    system: VcmmApi,
    device: DmaDevice,
    piece: AddressRange,
    attr: Attr,
    mask: int,
    owner: str,
    physmem: PhysMem | None = None,
) -> tuple[int, Teardown]:
    """Map one physically contiguous ``piece`` for a direct device; returns its bus
    address."""
    if not isinstance(device, PhysicalDevice):
        raise StateError(f"map_direct: {device.name} is behind an IOMMU: map it in its domain")
    bus = bus_address(device, piece, mask)
    with Transaction("map_direct") as txn:
        vcm = system.vcm_create(piece.start, piece.size, kind=VcmKind.ONE_TO_ONE)
        txn.on_undo(system.vcm_free, vcm)
        assoc = system.vcm_assoc(vcm, device)
        txn.on_undo(system.vcm_deassoc, assoc)
        system.vcm_activate(assoc)
        txn.on_undo(system.vcm_deactivate, assoc)
        res = system.vcm_reserve(vcm, piece.size, attr)
        txn.on_undo(system.vcm_unreserve, res)
        wrap = None
        if physmem is None:
            wrap = physmem = _wrap(system, [piece], owner)
            txn.on_undo(system.vcm_phys_free, wrap)
        system.vcm_back(res, physmem)
        txn.on_undo(system.vcm_unback, res)
    return bus, Teardown(res, vcm, assoc, wrap)
