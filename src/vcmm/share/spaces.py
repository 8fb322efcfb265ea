"""Where an importer sees a shared buffer: mappings made through the VCMM core.

A dma-buf importer must get addresses *in its own address space* (001: the
attachment's scatterlist).  This module makes those mappings with the seed's calls,
so the mapping graph sees every one of them and applies its aliasing rules:

- a device behind an SMMU sees the buffer through the VCM active on its context:
  whichever VCM is already running there (the DMA API's, a driver's), or one this
  module creates over :data:`IOVA_WINDOW` and activates while the device is attached
  to something (and frees again afterwards, so the context is free for a DMA API set
  up later).  Each mapping is a reservation of its own backed by the buffer's physical
  allocation: no byte is copied;
- a physically addressed device (camera, DSP) sees it through a one-to-one VCM made for
  that one mapping, so its address is the physical one seen through the device's
  dma-ranges window (the DSP's bus offset).  One-to-one backing needs physically
  contiguous memory, as such a device does;
- the kernel sees it through a reservation in a VMM VCM (``vmap``).

Every function undoes what it did if a later step fails, so a refused mapping leaves
the core exactly as it was.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

from vcmm.attrs import DmaDirection
from vcmm.core.flags import Attr
from vcmm.core.manager import VMM_EXT_ID
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmKind
from vcmm.errors import AttributeConflictError, InvalidArgumentError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G

#: Device-address window of the IOMMU VCMs this layer creates for devices that run none.
IOVA_WINDOW = AddressRange(0x4000_0000, SZ_1G)

#: One lock serialises the sharing layer's use of the simulated hardware and core (which
#: are not thread-safe) between the caller's thread and job-runner threads.  Nothing ever
#: waits for a fence while holding it, so it cannot take part in a deadlock.
SHARE_LOCK = threading.RLock()


@dataclass(frozen=True, slots=True)
class SgEntry:
    """One segment of a scatter list: ``length`` bytes at ``dma_address`` in the
    device's address space, backed by physical memory at ``phys``."""

    dma_address: int
    length: int
    phys: int


@dataclass
class DeviceMapping:
    """A buffer mapped for one device: the reservation and what to tear down."""

    device: Any
    direction: DmaDirection
    res: Reservation
    entries: tuple[SgEntry, ...]
    #: One-to-one mappings own their VCM and association.
    own_vcm: Vcm | None = None
    own_assoc: Association | None = None
    undone: bool = field(default=False)


def path_of(system: Any, device: Any) -> str:
    """``iommu``, ``physical`` or ``cpu``: how a bus master reaches memory."""
    if device is system.cpu:
        return "cpu"
    return "iommu" if hasattr(device, "ctx") else "physical"


class DeviceSpaces:
    """The importer address spaces of one booted system (see :func:`spaces_of`)."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self._vmm: Vcm | None = None
        #: IOMMU VCMs this layer created (by VCM id), with their association, and how
        #: many holders (attachments, open /dev nodes) keep each running.  A created VCM
        #: is freed when it has neither holders nor reservations, so the context is free
        #: for others (a DMA API set up later).
        self._created: dict[int, Association] = {}
        self._holders: dict[int, int] = {}

    def resolve(self, call: str, device: object) -> Any:
        """A device (bus master) of this system, by name or object; not the CPU."""
        system = self.system
        if isinstance(device, str):
            dev = system.device(device)
        elif any(device is d for d in system.devices.values()):
            dev = device
        else:
            raise InvalidArgumentError(f"{call}: {device!r} is not a device of this system")
        if dev is system.cpu:
            raise InvalidArgumentError(
                f"{call}: the CPU is not an importer; use mmap (user) or vmap (kernel)"
            )
        return dev

    # -- devices -------------------------------------------------------------------------

    def _running_vcm(self, device: Any) -> Vcm | None:
        for assoc in self.system.associations:
            if assoc.active and getattr(assoc.device, "ctx", None) is device.ctx:
                return assoc.vcm
        return None

    def iommu_vcm(self, device: Any) -> Vcm:
        """The VCM running on ``device``'s SMMU context, created and activated if none."""
        system = self.system
        running = self._running_vcm(device)
        if running is not None:
            return running
        vcm = system.vcm_create(IOVA_WINDOW.start, IOVA_WINDOW.size, kind=VcmKind.IOMMU)
        assoc = None
        try:
            assoc = system.vcm_assoc(vcm, device)
            system.vcm_activate(assoc)
        except BaseException:
            if assoc is not None:
                system.vcm_deassoc(assoc)
            system.vcm_free(vcm)
            raise
        self._created[vcm.id] = assoc
        return vcm

    def hold(self, device: Any) -> None:
        """Keep ``device``'s context running a VCM while the caller needs it (an
        attachment exists): an unmapped buffer then faults in its tables."""
        if path_of(self.system, device) != "iommu":
            return
        vcm = self.iommu_vcm(device)
        if vcm.id in self._created:
            self._holders[vcm.id] = self._holders.get(vcm.id, 0) + 1

    def unhold(self, device: Any) -> None:
        """Undo :meth:`hold`."""
        if path_of(self.system, device) != "iommu":
            return
        vcm = self._running_vcm(device)
        if vcm is None or vcm.id not in self._created:
            return
        self._holders[vcm.id] -= 1
        self._drop_idle(vcm)

    def _drop_idle(self, vcm: Vcm) -> None:
        assoc = self._created.get(vcm.id)
        if assoc is None or vcm.reservations or self._holders.get(vcm.id, 0) > 0:
            return
        if len(vcm.associations) != 1:
            return
        del self._created[vcm.id]
        self._holders.pop(vcm.id, None)
        self._drop_own(vcm, assoc)

    def check_user_aliases(self, call: str, physmem: PhysMem, space: str | None) -> None:
        """Refuse a new mapping (in ``space``; ``None``: a space not yet created) that
        would change the shareable bit of a user mapping of ``physmem``.

        The core rewrites the bit of its own mappings when the number of address
        spaces mapping a chunk changes, but not that of user mappings (the process
        model enters them itself); refusing keeps every alias in agreement.
        """
        graph = self.system.graph
        if not graph.check_attributes:
            return
        for chunk in physmem.chunk_ranges:
            spaces = graph.spaces(chunk) | {space or "<new>"}
            want = graph.shareable(chunk, spaces)
            for m in graph.of_chunk(chunk):
                if m.res_id is None and m.attrs.shareable != want:
                    raise AttributeConflictError(
                        f"{call}: mapping {physmem.name} for another address space makes "
                        f"chunk {chunk} shareable, but {m.describe()} is a user mapping the "
                        "core cannot rewrite; map the devices before the processes"
                    )

    def map_device(
        self, device: Any, physmem: PhysMem, length: int, attr: Attr, direction: DmaDirection
    ) -> DeviceMapping:
        """Map the first ``length`` bytes of ``physmem`` for ``device`` and hand them to
        it (cache maintenance for ``direction`` on a non-coherent device)."""
        system = self.system
        iommu = path_of(system, device) == "iommu"
        running = self._running_vcm(device) if iommu else None
        self.check_user_aliases(
            f"map {physmem.name} for {device.name}",
            physmem,
            running.space if running is not None else None,
        )
        own_vcm: Vcm | None = None
        own_assoc: Association | None = None
        vcm: Vcm | None = None
        res: Reservation | None = None
        try:
            if iommu:
                vcm = self.iommu_vcm(device)
            else:
                start = physmem.chunk_ranges[0].start
                own_vcm = vcm = system.vcm_create(start, length, kind=VcmKind.ONE_TO_ONE)
                own_assoc = system.vcm_assoc(vcm, device)
                system.vcm_activate(own_assoc)
            res = system.vcm_reserve(vcm, length, attr)
            system.vcm_back(res, physmem)
        except BaseException:
            if res is not None:
                system.vcm_unreserve(res)
            if iommu and vcm is not None:
                self._drop_idle(vcm)
            self._drop_own(own_vcm, own_assoc)
            raise
        system.vcm_sync_for_device(res, direction)
        base = res.dev_addr_for(device)
        entries = []
        offset = 0
        for chunk in physmem.chunk_ranges:
            if offset >= length:
                break
            n = min(chunk.size, length - offset)
            entries.append(SgEntry(base + offset, n, chunk.start))
            offset += n
        return DeviceMapping(device, direction, res, tuple(entries), own_vcm, own_assoc)

    def unmap_device(self, mapping: DeviceMapping) -> None:
        """Hand the buffer back to the CPU and remove the device's mapping (its TLB
        entries go with it: a later access by the device faults)."""
        system = self.system
        system.vcm_sync_for_cpu(mapping.res, mapping.direction)
        system.vcm_unback(mapping.res)
        system.vcm_unreserve(mapping.res)
        self._drop_own(mapping.own_vcm, mapping.own_assoc)
        self._drop_idle(mapping.res.vcm)
        mapping.undone = True

    def _drop_own(self, vcm: Vcm | None, assoc: Association | None) -> None:
        system = self.system
        if assoc is not None:
            if assoc.active:
                system.vcm_deactivate(assoc)
            system.vcm_deassoc(assoc)
        if vcm is not None:
            system.vcm_free(vcm)

    # -- the kernel --------------------------------------------------------------------------

    def map_kernel(self, physmem: PhysMem, length: int, attr: Attr) -> Reservation:
        """A kernel virtual mapping of the buffer (``vmap``) in a VMM VCM."""
        system = self.system
        self.check_user_aliases(f"vmap {physmem.name}", physmem, "cpu")
        if self._vmm is None or self._vmm.freed:
            self._vmm = system.vcm_create_from_prebuilt(VMM_EXT_ID)
        res = system.vcm_reserve(self._vmm, length, attr)
        try:
            system.vcm_back(res, physmem)
        except BaseException:
            system.vcm_unreserve(res)
            raise
        return res

    def unmap_kernel(self, res: Reservation) -> None:
        self.system.vcm_unback(res)
        self.system.vcm_unreserve(res)


_spaces: weakref.WeakKeyDictionary[Any, DeviceSpaces] = weakref.WeakKeyDictionary()


def spaces_of(system: Any) -> DeviceSpaces:
    """The one :class:`DeviceSpaces` of ``system`` (created on first use)."""
    found = _spaces.get(system)
    if found is None:
        found = _spaces[system] = DeviceSpaces(system)
    return found
