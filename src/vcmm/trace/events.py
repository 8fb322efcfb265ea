"""The typed events of a Linux ``iommu:*`` / ``dma:*`` ftrace, one per usable line.

Every event carries where it came from: its 1-based ``line`` in the trace, the task
(``comm``, ``pid``) and the ``cpu`` that emitted it, and the timestamp in seconds.
The task and CPU matter: ``map`` and ``unmap`` name no device, and the attribution
(:mod:`vcmm.trace.attribute`) pairs them with the ``dma_*`` event of the same task on
the same CPU.  Events are plain slotted records (cheap to build by the hundred
thousand); ``device`` of a map or unmap is filled in by the attribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final


class DmaRole(Enum):
    """What a ``dma_*`` event says about the ``map``/``unmap`` events around it.

    The kernel's order (kernel/dma/mapping.c, drivers/iommu/dma-iommu.c): the
    IOMMU maps first and the ``dma_map_*``/``dma_alloc*`` event follows
    (``CLAIMS_MAPS``); ``dma_unmap_page``/``_phys``/``_resource`` are traced after
    the IOMMU unmapped (``CLAIMS_UNMAPS``); ``dma_unmap_sg`` and ``dma_free*`` are
    traced before the unmap they cause (``OPENS_UNMAPS``); ``dma_map_sg_err`` ends a
    failed mapping whose maps and unmaps came before it (``CLAIMS_BOTH``); syncs
    neither map nor unmap (``NEUTRAL``).
    """

    CLAIMS_MAPS = "claims-maps"
    CLAIMS_UNMAPS = "claims-unmaps"
    OPENS_UNMAPS = "opens-unmaps"
    CLAIMS_BOTH = "claims-both"
    NEUTRAL = "neutral"


#: The dma events of 6.12-era kernels and of newest mainline (``_phys`` names).
DMA_ROLES: Final[dict[str, DmaRole]] = {
    "dma_map_page": DmaRole.CLAIMS_MAPS,
    "dma_map_phys": DmaRole.CLAIMS_MAPS,
    "dma_map_resource": DmaRole.CLAIMS_MAPS,
    "dma_map_sg": DmaRole.CLAIMS_MAPS,
    "dma_alloc": DmaRole.CLAIMS_MAPS,
    "dma_alloc_pages": DmaRole.CLAIMS_MAPS,
    "dma_alloc_sgt": DmaRole.CLAIMS_MAPS,
    "dma_unmap_page": DmaRole.CLAIMS_UNMAPS,
    "dma_unmap_phys": DmaRole.CLAIMS_UNMAPS,
    "dma_unmap_resource": DmaRole.CLAIMS_UNMAPS,
    "dma_unmap_sg": DmaRole.OPENS_UNMAPS,
    "dma_free": DmaRole.OPENS_UNMAPS,
    "dma_free_pages": DmaRole.OPENS_UNMAPS,
    "dma_free_sgt": DmaRole.OPENS_UNMAPS,
    "dma_map_sg_err": DmaRole.CLAIMS_BOTH,
    "dma_alloc_sgt_err": DmaRole.CLAIMS_BOTH,
    "dma_sync_single_for_cpu": DmaRole.NEUTRAL,
    "dma_sync_single_for_device": DmaRole.NEUTRAL,
    "dma_sync_sg_for_cpu": DmaRole.NEUTRAL,
    "dma_sync_sg_for_device": DmaRole.NEUTRAL,
}

#: The ``iommu:*`` events that name a device and change group or domain membership.
GROUP_EVENTS: Final = frozenset(
    {
        "add_device_to_group",
        "remove_device_from_group",
        "attach_device_to_domain",
        "detach_device_from_domain",
    }
)


@dataclass(slots=True)
class Traced:
    """Where an event came from: its line, task, CPU and time (seconds)."""

    line: int
    comm: str
    pid: int
    cpu: int
    ts: float


@dataclass(slots=True)
class IommuMap(Traced):
    """``iommu:map``: ``[iova, iova+size)`` now translates to ``paddr``."""

    iova: int
    paddr: int
    size: int
    #: The device the attribution found (None until then).
    device: str | None = None


@dataclass(slots=True)
class IommuUnmap(Traced):
    """``iommu:unmap``: ``[iova, iova+size)`` asked, ``unmapped`` bytes removed."""

    iova: int
    size: int
    unmapped: int
    device: str | None = None


@dataclass(slots=True)
class IoPageFault(Traced):
    """``iommu:io_page_fault``: ``device`` (bound to ``driver``) faulted at ``iova``."""

    driver: str
    device: str
    iova: int
    flags: int

    @property
    def write(self) -> bool:
        """Bit 0 of the flags is IOMMU_FAULT_WRITE (include/linux/iommu.h)."""
        return bool(self.flags & 1)


@dataclass(slots=True)
class GroupEvent(Traced):
    """``add_device_to_group`` and friends: ``group`` is None for the domain events."""

    name: str
    device: str
    group: int | None = None


@dataclass(slots=True)
class DmaEvent(Traced):
    """A ``dma:*`` event: the device and whatever addresses its kind prints.

    Single mappings fill ``dma_addr``/``size``/``phys``; scatterlists fill the
    arrays (``dma_addrs``, ``sizes``, ``phys_addrs``); ``nents``/``ents`` keep the
    ``a/b`` counts of newest mainline (``b`` entries, ``a`` of them printed).
    """

    name: str
    device: str
    role: DmaRole
    direction: str = ""
    dma_addr: int | None = None
    size: int | None = None
    phys: int | None = None
    dma_addrs: tuple[int, ...] = ()
    sizes: tuple[int, ...] = ()
    phys_addrs: tuple[int, ...] = ()
    nents: tuple[int, int] | None = None
    ents: tuple[int, int] | None = None
    truncated: bool = False
    extra: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """A line the replay cannot use: its 1-based number and why."""

    line: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"line": self.line, "reason": self.reason}


Event = IommuMap | IommuUnmap | IoPageFault | GroupEvent | DmaEvent
