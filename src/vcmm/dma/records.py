"""What the DMA API remembers about each live mapping and coherent buffer.

A :class:`DmaMapping` is the DMA API's side of one ``map_page``/``map_sg`` (or the
device side of a coherent buffer): the handle and size the caller got, the direction,
the CPU bytes it covers (what sync maintains), the device-address to physical pieces
(what the debugging checker resolves device accesses with), the VCMM objects behind it
(torn down on unmap) and the call that made it.  It also carries the *ownership* the
DMA API's rules define: after a map or ``sync_for_device`` the device owns a
streaming buffer, after ``sync_for_cpu`` the CPU does.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

from vcmm.attrs import DmaDirection, MemType
from vcmm.core.interfaces import VcmmApi
from vcmm.dma.callsite import CallSite
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

if TYPE_CHECKING:
    from vcmm.core.objects import Association, PhysMem, Reservation, Vcm
    from vcmm.dma.domain import DmaDomain
    from vcmm.dma.sg import ScatterList
    from vcmm.dma.sglayout import Slot
    from vcmm.hw.bus import PhysicalDevice, SmmuDevice
    from vcmm.mm.chunk import Chunk
    from vcmm.proc.vma import Vma


#: A bus master the DMA API serves: behind an SMMU (dma-iommu ops) or physically
#: addressed (dma-direct ops); never the CPU.
DmaDevice: TypeAlias = "SmmuDevice | PhysicalDevice"


class MapKind(enum.Enum):
    """Which call made a mapping (dma-debug's "type": single page, sg, coherent)."""

    PAGE = "map_page"
    SG = "map_sg"
    COHERENT = "alloc_coherent"


class Owner(enum.Enum):
    """Who may touch a streaming buffer now."""

    DEVICE = "device"
    CPU = "cpu"


@dataclass(frozen=True, slots=True, init=False)
class DevPiece:
    """Device addresses ``[dev_addr, dev_addr+size)`` reach ``[pa, pa+size)``."""

    dev_addr: int
    pa: int
    size: int

    def __init__(self, dev_addr: int, pa: int, size: int) -> None:
        # Stores through the slots' own descriptors (the generated frozen __init__ goes
        # through object.__setattr__): a map_sg makes one per entry.
        _set_dev_addr(self, dev_addr)
        _set_pa(self, pa)
        _set_size(self, size)

    @property
    def dev_range(self) -> AddressRange:
        return AddressRange(self.dev_addr, self.size)


_set_dev_addr, _set_pa, _set_size = (
    DevPiece.__dict__[name].__set__ for name in ("dev_addr", "pa", "size")
)


@dataclass(eq=False)
class Teardown:
    """VCMM objects one mapping created, released in reverse on unmap.

    IOMMU mappings have a reservation in the domain VCM; direct mappings also a
    private one-to-one VCM and its association.  ``wrap`` is the ``vcm_phys_wrap`` of
    the caller's pages the reservation is backed with (forgotten after the unmap).
    """

    res: Reservation
    vcm: Vcm | None = None
    assoc: Association | None = None
    wrap: PhysMem | None = None
    #: Associations the mapping's domain programmed for it (its first mapping).
    activated: tuple[Association, ...] = ()
    #: The IOMMU domain the reservation is in (its invalidation mode applies).
    domain: DmaDomain | None = None
    #: Made by the lean path (:mod:`vcmm.dma.lean`): unbacked with
    #: ``vcm_unback_direct`` where that applies; the reference path never is.
    direct: bool = False

    def release(self, system: VcmmApi) -> None:
        # an IOMMU mapping whose unbacking is one store per page (vcm_unback_direct)
        if (
            self.direct
            and self.vcm is None
            and self.domain is not None
            and self.domain.invalidation.unmap_direct(self.res)
        ):
            system.vcm_unreserve(self.res)
            if self.wrap is not None:
                system.vcm_phys_free(self.wrap)
            return
        unmapping = (
            self.domain.invalidation.unmapping(self.res)
            if self.domain is not None
            else contextlib.nullcontext()
        )
        with unmapping:
            system.vcm_unback(self.res)
            system.vcm_unreserve(self.res)
        if self.vcm is not None:
            assert self.assoc is not None
            system.vcm_deactivate(self.assoc)
            system.vcm_deassoc(self.assoc)
            system.vcm_free(self.vcm)
        if self.wrap is not None:
            system.vcm_phys_free(self.wrap)


@dataclass(eq=False)
class DmaMapping:
    """One live mapping of the DMA API."""

    id: int
    kind: MapKind
    device: DmaDevice
    domain: DmaDomain | None
    dma_addr: int
    size: int
    direction: DmaDirection
    cpu_ranges: tuple[AddressRange, ...]
    dev_pieces: tuple[DevPiece, ...]
    dev_range: AddressRange
    teardown: list[Teardown]
    created_by: CallSite
    sgl: ScatterList | None = None
    nents: int = 0
    mapped_nents: int = 0
    owner: Owner = Owner.DEVICE
    #: Physical ranges a device wrote since the CPU last took the buffer back.
    device_wrote: list[AddressRange] = field(default_factory=list)
    unmapped_by: CallSite | None = None
    #: IOMMU layout of the entries (:class:`vcmm.dma.sglayout.Slot`), for merging.
    slots: tuple[Slot, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.kind.value}#{self.id}"

    def describe(self) -> str:
        whose = f" ({self.sgl.label})" if self.sgl is not None and self.sgl.label else ""
        return (
            f"{self.name} of {self.device.name}{whose} [device address={self.dma_addr:#x}] "
            f"[size={self.size} bytes] [{self.direction.name}] made by {self.created_by}"
        )

    def phys_for(self, dev: AddressRange) -> list[AddressRange]:
        """Physical ranges behind the device-address range ``dev`` (clipped)."""
        out: list[AddressRange] = []
        for p in self.dev_pieces:
            inside = p.dev_range & dev
            if inside is not None:
                out.append(AddressRange(p.pa + inside.start - p.dev_addr, inside.size))
        return out

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.id,
            self.kind,
            self.device.name,
            self.dma_addr,
            self.size,
            self.direction,
            self.cpu_ranges,
            self.owner,
            self.nents,
            self.mapped_nents,
        )

    def __repr__(self) -> str:
        return f"<DmaMapping {self.name} {self.device.name} {self.dma_addr:#x} {format_size(self.size)}>"


@dataclass(eq=False)
class CoherentBuffer:
    """A ``dma_alloc_coherent`` buffer: CPU alias, device handle, the pages behind them.

    It is also the :class:`~vcmm.proc.file.VmaOps` of its user mappings, so it knows
    how many exist and refuses to be freed while one does (seed 004: the memory must
    outlive the user mapping).
    """

    id: int
    device: DmaDevice
    size: int
    cpu_addr: int
    dma_handle: int
    memtype: MemType
    #: Physical pieces in buffer order (each a chunk of the allocation).
    chunks: tuple[AddressRange, ...]
    atomic: bool
    source: str
    mapping: DmaMapping
    created_by: CallSite
    #: How the CPU alias was made: a VMM reservation, or None (linear map / pool alias).
    cpu_res: Reservation | None = None
    #: What the buffer's mappings are backed with: its kernel-RAM allocation, or a view
    #: of the coherent or atomic pool (given back with vcm_phys_free either way).
    physmem: PhysMem | None = None
    #: Pool chunks to give back (the DMA API's own pools), if any.
    pool_chunks: list[Chunk] | None = None
    #: Start of the atomic-pool allocation to give back, if any.
    atomic_pa: int | None = None
    user_maps: int = 0
    vmas: list[Vma] = field(default_factory=list)
    freed_by: CallSite | None = None

    def open(self, vma: Vma) -> None:
        self.user_maps += 1
        self.vmas.append(vma)

    def close(self, vma: Vma) -> None:
        self.user_maps -= 1
        self.vmas.remove(vma)

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.id,
            self.device.name,
            self.size,
            self.cpu_addr,
            self.dma_handle,
            self.memtype,
            self.chunks,
            self.user_maps,
        )

    def __repr__(self) -> str:
        return (
            f"<CoherentBuffer {self.device.name} cpu={self.cpu_addr:#x} "
            f"dma={self.dma_handle:#x} {format_size(self.size)} {self.memtype.value}>"
        )
