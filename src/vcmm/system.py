"""Booting a platform: the simulated SoC plus the VCMM, ready for the seed's calls.

``System`` is the object users hold.  It is composed, not inherited: a
:class:`~vcmm.hw.machine.Machine` (the hardware a :class:`PlatformSpec` describes,
built by :mod:`vcmm.platform.build`), the :class:`~vcmm.core.manager.Vcmm` over it,
the device records (what the platform says about each bus master beyond the
hardware: banks, domains, DMA limits) and the slots where front ends keep their
per-system state (:class:`~vcmm.core.interfaces.FrontEndSlots`).  Every seed call
(``system.vcm_create(...)``) keeps the seed's name and argument order and is the
VCMM's; the front ends see the system through :class:`~vcmm.core.interfaces.VcmmApi`.

The machine owns the machine lock (``system.lock``, :mod:`vcmm.hw.lock`): one
re-entrant lock held by the CPU, every SMMU and every bus master, and taken by every
public VCMM call.  So each device access, CPU access, table change and VCMM call is
atomic against the others from any thread, with no lock in user code; code that
reaches below them (``system.memory``, ``cpu.cache``, the graph) from several threads
takes ``with system.lock:`` itself.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vcmm.core.allocations import Allocations
from vcmm.core.backer import Backer
from vcmm.core.binding import Binding
from vcmm.core.custom_targets import TargetRegistry
from vcmm.core.direct import DirectBacker
from vcmm.core.interfaces import DeviceRecord, FrontEndSlots
from vcmm.core.manager import Vcmm
from vcmm.core.mappers import Mapper
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm
from vcmm.core.seedcalls import VcmmCalls
from vcmm.core.spaces import AddressSpaces
from vcmm.errors import InvalidArgumentError
from vcmm.hw.bus import Interconnect
from vcmm.hw.cpu import Cpu
from vcmm.hw.lock import MachineLock
from vcmm.hw.machine import Machine
from vcmm.hw.master import AnyMaster
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import PageTableFormat
from vcmm.hw.smmu import Smmu, SmmuContext, find_context
from vcmm.hw.tablemem import TableMemory
from vcmm.mm.interfaces import MemoryTarget, SplittingAllocator
from vcmm.mm.roles import MemoryRoles
from vcmm.platform import PlatformSpec, load_default, load_platform
from vcmm.platform.build import build_machine, build_vcmm

if TYPE_CHECKING:
    import networkx

    from vcmm.core.export import GraphData
    from vcmm.core.graph import MappingGraph


class System(VcmmCalls):
    """A booted platform: the machine, the VCMM over it and the front ends' slots."""

    def __init__(self, spec: PlatformSpec) -> None:
        if not isinstance(spec, PlatformSpec):
            raise InvalidArgumentError(f"System needs a PlatformSpec, got {type(spec).__name__}")
        #: The platform description this system was booted from.
        self.spec = spec
        #: Which targets the kernel's DMA layers use (the platform's ``[dma]`` table).
        self.memory_roles: MemoryRoles = spec.memory_roles()
        #: The hardware.
        self.machine: Machine = build_machine(spec)
        #: The machine lock every part of the hardware and every VCMM call holds.
        self.lock: MachineLock = self.machine.lock
        #: The Virtual Contiguous Memory Manager over the machine.
        self.vcmm: Vcmm = build_vcmm(spec, self.machine)
        # The VCMM's parts, which the seed calls (:class:`SeedCalls`) run in: plain
        # attributes, so a seed call reaches its part without a property call.
        #: VCMs and reservations.
        self.spaces: AddressSpaces = self.vcmm.spaces
        #: Associations, activation and fault hooks.
        self.binding: Binding = self.vcmm.binding
        #: ``vcm_phys_*`` allocations, views and wraps.
        self.allocations: Allocations = self.vcmm.allocations
        #: Backing, unbacking and cache maintenance.
        self.backer: Backer = self.vcmm.backer
        #: Memory targets registered at run time.
        self.registry: TargetRegistry = self.vcmm.registry
        #: The common case of backing an IOMMU reservation, store by store.
        self.direct: DirectBacker = self.vcmm.direct
        #: Per-system state of the front ends (the open DMA API, sharing state).
        self.front_ends = FrontEndSlots()

    @classmethod
    def default(cls) -> System:
        """Boot the embedded default platform (the seed's MSM-class SoC)."""
        return cls(load_default())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, ram: int | str | None = None) -> System:
        """Boot a platform described in a TOML file or a Linux devicetree (``.dtb``,
        ``.dts``; ``ram`` sizes banks the bootloader would fill in), docs/PLATFORM.md."""
        return cls(load_platform(path, ram=ram))

    @property
    def name(self) -> str:
        """The platform's name."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<System {self.spec.name!r}: {len(self.machine.devices)} bus masters>"

    # -- the hardware ----------------------------------------------------------------------

    @property
    def memory(self) -> PhysicalMemory:
        return self.machine.memory

    @property
    def table_memory(self) -> TableMemory:
        return self.machine.table_memory

    @property
    def cpu(self) -> Cpu:
        return self.machine.cpu

    @property
    def interconnect(self) -> Interconnect:
        return self.machine.interconnect

    @property
    def smmus(self) -> dict[str, Smmu]:
        return dict(self.machine.smmus)

    @property
    def iova_policy(self) -> str:
        """How the DMA API places IOVAs unless told otherwise (the platform's choice)."""
        return self.spec.iova_policy

    @property
    def invalidation(self) -> str:
        """How the DMA API invalidates IOTLBs on unmap unless told otherwise (the
        platform's choice; a device's record may override it for its domain)."""
        return self.spec.invalidation

    # -- lookups (the VCMM's) --------------------------------------------------------------

    def device(self, name: str) -> AnyMaster:
        """A bus master by name (the CPU is ``"cpu"``)."""
        return self.vcmm.device(name)

    @property
    def devices(self) -> dict[str, AnyMaster]:
        return self.vcmm.devices

    def device_record(self, name: str) -> DeviceRecord:
        """What the platform says about bus master ``name``: its context bank, IOMMU
        domain and DMA limits (:class:`~vcmm.core.interfaces.DeviceRecord`)."""
        return self.vcmm.device_record(name)

    def device_records(self) -> tuple[DeviceRecord, ...]:
        """:meth:`device_record` of every bus master, the CPU first."""
        return self.vcmm.device_records()

    def target(self, name: str) -> MemoryTarget:
        """A memory target by name (``"ebi"``, ``"blocks"``, ``"contig"``, ``"smi"``)."""
        return self.vcmm.target(name)

    @property
    def targets(self) -> dict[str, MemoryTarget]:
        return self.vcmm.targets

    @property
    def target_priority(self) -> tuple[str, ...]:
        return self.vcmm.target_priority

    @property
    def iommu_format(self) -> PageTableFormat:
        return self.vcmm.iommu_format

    @property
    def iommu_formats(self) -> tuple[PageTableFormat, ...]:
        return self.vcmm.iommu_formats

    @property
    def graph(self) -> MappingGraph:
        return self.vcmm.graph

    @property
    def vcms(self) -> list[Vcm]:
        return self.vcmm.vcms

    @property
    def associations(self) -> list[Association]:
        return self.vcmm.associations

    @property
    def reservations(self) -> list[Reservation]:
        return self.vcmm.reservations

    @property
    def physmems(self) -> list[PhysMem]:
        return self.vcmm.physmems

    @property
    def phys_views(self) -> list[PhysMem]:
        return self.vcmm.phys_views

    @property
    def kernel_areas(self) -> SplittingAllocator:
        return self.vcmm.kernel_areas

    def mapper(self, vcm: Vcm) -> Mapper:
        """The hardware side of ``vcm``."""
        return self.vcmm.mapper(vcm)

    # -- the graph and state ---------------------------------------------------------------

    def graph_data(self) -> GraphData:
        """The mapping graph as plain data (:meth:`Vcmm.graph_data`)."""
        return self.vcmm.graph_data()

    def to_networkx(self) -> networkx.MultiDiGraph:
        """:meth:`graph_data` as a ``networkx.MultiDiGraph``."""
        return self.vcmm.to_networkx()

    def smmu_get_base_addr(self, ctx: SmmuContext | str) -> int:
        """The seed's ``smmu_get_base_addr(dev)``: the physical address of the register
        window of the SMMU that context ``ctx`` (the context or its name) belongs to.

        The platform's ``base`` of that SMMU, else the default layout (docs/PLATFORM.md);
        a driver finds the bank's registers from there (``smmu.bank_base(n)``)."""
        if isinstance(ctx, str):
            return find_context(self.smmus.values(), ctx).smmu.register_base
        if not isinstance(ctx, SmmuContext):
            raise InvalidArgumentError(
                f"smmu_get_base_addr: {ctx!r} is neither an SMMU context nor a context name"
            )
        if all(ctx.smmu is not smmu for smmu in self.smmus.values()):
            raise InvalidArgumentError(
                f"smmu_get_base_addr: context {ctx.name!r} belongs to SMMU "
                f"{ctx.smmu.name!r}, which is not one of this system's "
                f"({', '.join(self.smmus) or 'none'})"
            )
        return ctx.smmu.register_base

    def snapshot(self) -> tuple[object, ...]:
        """Every piece of state, hardware included: equal snapshots, equal systems."""
        with self.lock:
            return (self.vcmm.snapshot(), *self.machine.snapshot())
