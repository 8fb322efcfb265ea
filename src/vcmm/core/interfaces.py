"""What the core hands the layers around it: device records, front-end slots, the API.

The front ends (the DMA API, the sharing layer, processes) work on a booted system
through the seed's calls plus a few facts about the machine.  Those facts used to
travel as attributes set on hardware objects (``device.dma``, ``device.bank``) and read
back with ``getattr``; here they are values with a type:

- :class:`DeviceRecord` (with :class:`DmaLimits`): what the platform says about one
  bus master that the hardware itself does not model (its context bank, IOMMU domain,
  DMA masks and segment limits).  ``system.device_record(name)`` hands it out.
- :class:`FrontEndSlots`: where a front end keeps its per-system state (the open DMA
  API, the sharing layer's state), one slot per front-end type, owned by the system
  and dying with it.
- :class:`VcmmApi`: the calls and facts a front end may use, as a Protocol, so a
  front end is typed against this contract rather than against the booted-system
  class (which lives in a layer below it).

The bus-master contract is :mod:`vcmm.hw.master`, the allocator contracts are
:mod:`vcmm.mm.interfaces`, the mapper contract is :class:`vcmm.core.mappers.Mapper`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.master import TranslationPath

if TYPE_CHECKING:
    from vcmm.attrs import DmaDirection
    from vcmm.core.graph import MappingGraph
    from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmKind
    from vcmm.core.ownership import Pin
    from vcmm.hw.cpu import Cpu
    from vcmm.hw.lock import MachineLock
    from vcmm.hw.master import AnyMaster
    from vcmm.hw.memory import PhysicalMemory
    from vcmm.hw.pgtable import PageTableFormat
    from vcmm.mm.interfaces import VcmAllocator
    from vcmm.mm.roles import MemoryRoles
    from vcmm.mm.target import MemoryTarget
    from vcmm.ranges import AddressRange

#: Linux's default DMA mask and segment boundary, ``DMA_BIT_MASK(32)``.
DMA_BIT_MASK_32 = (1 << 32) - 1
#: Linux's default ``dma_parms.max_segment_size`` (64 KiB).
DEFAULT_MAX_SEGMENT = 1 << 16

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class DmaLimits:
    """A device's DMA limits as Linux keeps them (``dev->dma_mask``,
    ``coherent_dma_mask``, ``dma_parms``); the kernel's defaults when the platform
    gives none."""

    mask: int = DMA_BIT_MASK_32
    coherent_mask: int = DMA_BIT_MASK_32
    max_segment_size: int = DEFAULT_MAX_SEGMENT
    segment_boundary_mask: int = DMA_BIT_MASK_32


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRecord:
    """The platform's facts about one bus master, beside the hardware object.

    ``path`` is how it translates; ``smmu``/``context``/``bank`` say where an IOMMU
    device's context sits (``bank`` None: any free bank); ``domain`` is the IOMMU
    domain it shares with others (None: its own); ``dma`` its DMA limits.
    """

    name: str
    path: TranslationPath
    coherent: bool = False
    smmu: str | None = None
    context: str | None = None
    bank: int | None = None
    domain: str | None = None
    dma: DmaLimits = field(default_factory=DmaLimits)
    #: The IOTLB invalidation mode of its DMA domain, if the platform sets one for it.
    invalidation: str | None = None
    #: The memory target of its own coherent memory (the first ``shared-dma-pool``
    #: region its ``memory-region`` names), if any (:mod:`vcmm.dma.regionpool`).
    coherent_region: str | None = None


class FrontEndSlots:
    """Per-system state of the front ends, one slot per type of state object.

    A front end asks for its own type (``slots.get(DmaApi)``), so two front ends
    cannot overwrite each other, and the state lives exactly as long as the system.
    The caller holds the machine lock around a check-then-put.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[type, object] = {}

    def get(self, kind: type[S]) -> S | None:
        """The state of type ``kind``, or None."""
        found = self._slots.get(kind)
        return found if isinstance(found, kind) else None

    def put(self, state: object) -> None:
        """Keep ``state`` in the slot of its type; refused while that slot is taken."""
        kind = type(state)
        if kind in self._slots:
            raise StateError(f"front-end slot {kind.__name__} already holds {self._slots[kind]!r}")
        self._slots[kind] = state

    def setdefault(self, kind: type[S], make: Callable[[], S]) -> S:
        """The state of type ``kind``, made by ``make()`` on first use."""
        found = self.get(kind)
        if found is None:
            found = make()
            if not isinstance(found, kind):
                raise InvalidArgumentError(
                    f"front-end slot {kind.__name__}: make() returned {found!r}"
                )
            self._slots[kind] = found
        return found

    def remove(self, state: object) -> None:
        """Empty the slot ``state`` is in (nothing if it is not there)."""
        if self._slots.get(type(state)) is state:
            del self._slots[type(state)]

    def __repr__(self) -> str:
        return f"<FrontEndSlots {sorted(k.__name__ for k in self._slots)}>"


class VcmmApi(Protocol):
    """What a front end may use of a booted system (``vcmm.System`` provides it).

    The seed's calls with the seed's names and argument order, the lookups, and the
    machine facts the DMA API, the sharing layer and processes need.  Everything else
    (the hardware's internals, the core's registries) is not part of the contract.
    A type, not a runtime check: :func:`front_ends_of` is the cheap runtime test.
    """

    @property
    def name(self) -> str: ...
    @property
    def lock(self) -> MachineLock: ...
    @property
    def cpu(self) -> Cpu: ...
    @property
    def memory(self) -> PhysicalMemory: ...
    @property
    def graph(self) -> MappingGraph: ...
    @property
    def memory_roles(self) -> MemoryRoles: ...
    @property
    def iommu_format(self) -> PageTableFormat: ...
    @property
    def iova_policy(self) -> str: ...
    @property
    def invalidation(self) -> str: ...
    @property
    def front_ends(self) -> FrontEndSlots: ...
    @property
    def devices(self) -> dict[str, AnyMaster]: ...
    @property
    def associations(self) -> list[Association]: ...
    @property
    def targets(self) -> dict[str, MemoryTarget]: ...
    @property
    def target_priority(self) -> tuple[str, ...]: ...
    def device(self, name: str) -> AnyMaster: ...
    def device_record(self, name: str) -> DeviceRecord: ...
    def device_records(self) -> tuple[DeviceRecord, ...]: ...
    def target(self, name: str) -> MemoryTarget: ...

    # -- address spaces
    def vcm_create(
        self,
        start_addr: int,
        len: int,
        *,
        kind: VcmKind | None = None,
        allocator: VcmAllocator | None = None,
        fmt: PageTableFormat | None = None,
    ) -> Vcm: ...
    def vcm_create_from_prebuilt(
        self, ext_vcm_id: int, *, label: str | None = None, window: AddressRange | None = None
    ) -> Vcm: ...
    def vcm_free(self, vcm: Vcm) -> None: ...
    def vcm_reserve(
        self,
        vcm: Vcm,
        len: int,
        attr: int = ...,
        *,
        align: int | None = None,
        addr: int | None = None,
    ) -> Reservation: ...
    def vcm_unreserve(self, res: Reservation) -> None: ...
    def vcm_split(
        self, res: Reservation, offset: int, physmem: PhysMem | None = None
    ) -> Reservation: ...
    def vcm_merge(self, left: Reservation, right: Reservation) -> None: ...

    # -- binding
    def vcm_assoc(
        self, vcm: Vcm, dev: object, attr: int = ..., *, holder: str | None = None
    ) -> Association: ...
    def vcm_deassoc(self, avcm: Association) -> None: ...
    def vcm_activate(self, avcm: Association) -> None: ...
    def vcm_deactivate(self, avcm: Association) -> None: ...

    # -- physical memory
    def vcm_phys_alloc(
        self,
        memtype: str | Sequence[str] | None,
        len: int,
        attr: object = ...,
        *,
        holder: str | None = None,
    ) -> PhysMem: ...
    def vcm_phys_free(self, physmem: PhysMem) -> None: ...
    def vcm_phys_view(
        self,
        physmem: PhysMem,
        offset: int | None = None,
        len: int | None = None,
        *,
        windows: Sequence[tuple[int, int]] | None = None,
    ) -> PhysMem: ...
    def vcm_phys_wrap(
        self, ranges: Sequence[AddressRange], *, owner: str, of: PhysMem | Sequence[PhysMem] = ()
    ) -> PhysMem: ...
    def vcm_phys_owners(self, ranges: Sequence[AddressRange]) -> tuple[PhysMem, ...]: ...
    def vcm_phys_wrap_owned(self, ranges: Sequence[AddressRange], *, owner: str) -> PhysMem: ...
    def vcm_phys_pin(self, physmem: PhysMem, *, holder: str) -> Pin: ...
    def vcm_phys_unpin(self, pin: Pin) -> None: ...

    # -- backing
    def vcm_back(self, res: Reservation, physmem: PhysMem) -> None: ...
    def vcm_unback(self, res: Reservation) -> None: ...
    def vcm_back_direct(self, res: Reservation, physmem: PhysMem) -> None: ...
    def vcm_unback_direct(self, res: Reservation) -> int | None: ...
    def vcm_sync_for_device(self, res: Reservation, direction: DmaDirection) -> bool: ...
    def vcm_sync_for_cpu(self, res: Reservation, direction: DmaDirection) -> bool: ...


def front_ends_of(call: str, system: object) -> FrontEndSlots:
    """The front-end slots of ``system``; refused unless it is a booted system (the
    cheap, declared test front ends use instead of probing for its methods)."""
    try:
        slots = system.front_ends  # type: ignore[attr-defined]
    except AttributeError:
        slots = None
    if not isinstance(slots, FrontEndSlots):
        raise InvalidArgumentError(f"{call}: {system!r} is not a booted vcmm.System")
    return slots


def records_by_name(records: Sequence[DeviceRecord]) -> Mapping[str, DeviceRecord]:
    """``records`` keyed by device name; refused when a name repeats."""
    out: dict[str, DeviceRecord] = {}
    for record in records:
        if not isinstance(record, DeviceRecord):
            raise InvalidArgumentError(f"{record!r} is not a DeviceRecord")
        if record.name in out:
            raise InvalidArgumentError(f"two device records are named {record.name!r}")
        out[record.name] = record
    return out
