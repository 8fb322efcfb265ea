"""A DMA domain: one IOMMU VCM with an IOVA allocator, shared by its devices.

Linux gives each IOMMU group a default DMA domain; devices in one group share one
page table and one IOVA space (seed 002's review: "a single default domain per IOMMU
... assembling big bits of virtually-contiguous memory that are visible to all the
devices that need to share them").  Here a domain is a VCM covering the IOMMU's whole
input space (the aperture: 32 bits for ARMv7 short descriptors) whose allocator is
an :class:`~vcmm.mm.iova.IovaDomain` with the smallest page size as granule; every
device of the domain is associated with that VCM and activated on it, so a mapping
made for one is visible to all.  The platform file says which devices share a domain
(``domain = "..."``); a device without one gets a domain of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vcmm.attrs import MemType
from vcmm.core.objects import Association, Vcm, VcmKind
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.mm.iova import IovaDomain
from vcmm.ranges import AddressRange

if TYPE_CHECKING:
    from vcmm.dma.records import DmaMapping

#: Input space of the IOMMU VCMs (the core's IOMMU_VA_LIMIT: 32-bit short descriptors).
APERTURE = AddressRange(0, 1 << 32)


class DmaDomain:
    """The VCM, IOVA allocator, attached devices and live mappings of one domain."""

    def __init__(self, system: Any, name: str, *, rcache: bool = True) -> None:
        sizes = system.iommu_format.geometry(None).sizes
        granule = min(sizes)
        self.name = name
        self.iova = IovaDomain(granule, APERTURE, rcache=rcache)
        self.allocator = IovaVcmAllocator(self.iova)
        self.vcm: Vcm = system.vcm_create(
            APERTURE.start, APERTURE.size, kind=VcmKind.IOMMU, allocator=self.allocator
        )
        self.granule = granule
        self.associations: dict[str, Association] = {}
        #: Live mappings by the start of their IOVA range.
        self.records: dict[int, DmaMapping] = {}
        #: The domain's own zeroed page per memory type that ``map_sg`` padding maps
        #: (made on first use), and how to give each back.
        self.padding: dict[MemType, tuple[AddressRange, Callable[[], None]]] = {}

    def attach(self, system: Any, device: Any) -> None:
        """Associate ``device`` with the domain's VCM and switch its context to it."""
        assoc = system.vcm_assoc(self.vcm, device)
        try:
            system.vcm_activate(assoc)
        except BaseException:
            system.vcm_deassoc(assoc)
            raise
        self.associations[device.name] = assoc

    def detach(self, system: Any, device: Any) -> None:
        assoc = self.associations.pop(device.name)
        system.vcm_deactivate(assoc)
        system.vcm_deassoc(assoc)

    def destroy(self, system: Any) -> None:
        system.vcm_free(self.vcm)
        while self.padding:
            _, (_page, give_back) = self.padding.popitem()
            give_back()

    def record_at(self, addr: int) -> DmaMapping | None:
        """The live mapping whose IOVA range contains ``addr``."""
        found = self.allocator.find(addr)
        return None if found is None else self.records.get(found.start)

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.name,
            tuple(sorted(self.associations)),
            tuple(sorted(self.records)),
            tuple(sorted((m.value, page.start) for m, (page, _) in self.padding.items())),
        )

    def __repr__(self) -> str:
        return f"<DmaDomain {self.name} {self.vcm.name} devices={sorted(self.associations)}>"
