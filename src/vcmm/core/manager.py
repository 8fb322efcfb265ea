"""The Virtual Contiguous Memory Manager: the seed's calls over one mapping graph.

Every call validates its arguments completely before it changes anything; the few
steps that can still fail part way (table memory running out while mapping) are
recorded in an undo log and rolled back before the error leaves.  So a failing call
leaves memory, tables, TLBs, allocators and the graph exactly as they were, and
raises a :class:`~vcmm.errors.VcmmError` subclass naming the values and the rule
(the seed's calls return 0 and leave the caller guessing).

====================================  =====================================================
call                                  refused (besides bad arguments and freed handles) when
====================================  =====================================================
``vcm_create(start, len)``            not 4 KiB aligned; IOMMU window beyond the input of
                                      its table format (32 bits, 48 for VMSAv8-64);
                                      one-to-one window not all physical memory
``vcm_create_from_prebuilt(id)``      id names no address space (0: the kernel's VMM;
                                      an ASID: a process's, which has one VCM at most)
``vcm_free(vcm)``                     it still has reservations or associations
``vcm_reserve(vcm, len, attr)``       len not a 4 KiB multiple or larger than the VCM;
                                      no free range (``OutOfAddressSpaceError``); a
                                      fixed ``addr`` taken (``StateError``)
``vcm_unreserve(res)``                it is backed
``vcm_split(res, offset, physmem)``   offset not inside; the VCM's allocator is not
                                      the core's; physmem not the rest of the backing
``vcm_merge(left, right)``            not neighbours of one VCM with one attr and
                                      continuing backings
``vcm_assoc(vcm, dev, attr)``         kind of VCM and bus master differ; split rules;
                                      the SMMU walks another format than the settled
                                      table's (:mod:`vcmm.core.tableformat`)
``vcm_deassoc(avcm)``                 it is active
``vcm_activate(avcm)``                the context already runs another VCM (same half);
                                      no bank can be had (:mod:`vcmm.core.banks`)
``vcm_phys_alloc(memtype, len, a)``   unknown target; no target can serve it
``vcm_phys_free(physmem)``            it backs a reservation; views of it live; it is
                                      pinned (an exported dma-buf, a wrap of its pages)
``vcm_phys_view(physmem, off, len)``  not whole pages inside it
``vcm_phys_wrap(ranges, owner=, of=)``  not whole pages of physical memory; pages of the
                                      page-table window, free in a target, or of a live
                                      allocation ``of`` does not name
                                      (``OwnershipError``)
``vcm_phys_owners(ranges)``           pages of the page-table window or free in a target
``vcm_phys_unpin(pin)``               the pin was already released
``vcm_register_target(target)``       name taken; regions not RAM nobody owns (another
                                      target, tables, reserved, linear map, mapped)
``vcm_unregister_target(name)``       a platform target; live allocations from it
``vcm_back(res, physmem)``            already backed; physmem too small; an alias with
                                      another memory type (``AttributeConflictError``);
                                      one-to-one backing discontiguous or outside the VCM
``vcm_unback(res)``                   it is not backed
``vcm_hook(dev, handler, data)``      the device has no IOMMU
``vcm_sync_for_device/cpu(res, d)``   it is not backed; direction NONE
====================================  =====================================================

:class:`Vcmm` is a small facade: it builds the shared :class:`~vcmm.core.state.CoreState`
and one part per concern, and each seed call (the one table in
:mod:`vcmm.core.seedcalls`, shared with ``vcmm.System``) takes the machine lock and
runs the part's method: :mod:`vcmm.core.spaces` (VCMs, reservations, split and merge),
:mod:`vcmm.core.binding` (associations, activation, fault hooks),
:mod:`vcmm.core.allocations` (``vcm_phys_*``), :mod:`vcmm.core.custom_targets`
(memory targets registered at run time) and :mod:`vcmm.core.backer` (backing,
unbacking, cache maintenance; its machinery in :mod:`vcmm.core.backing`, the hardware
side in :mod:`vcmm.core.mappers`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.core import export
from vcmm.core.allocations import Allocations
from vcmm.core.backer import Backer
from vcmm.core.binding import Binding
from vcmm.core.custom_targets import TargetRegistry
from vcmm.core.direct import DirectBacker
from vcmm.core.graph import MappingGraph
from vcmm.core.interfaces import DeviceRecord
from vcmm.core.mappers import Mapper
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm
from vcmm.core.seedcalls import Locked, VcmmCalls, seed_call
from vcmm.core.spaces import VMM_EXT_ID, AddressSpaces
from vcmm.core.state import CoreState, FaultHandler
from vcmm.errors import InvalidArgumentError
from vcmm.hw.cpu import Cpu
from vcmm.hw.master import AnyMaster
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.mm.interfaces import MemoryTarget, SplittingAllocator

if TYPE_CHECKING:
    import networkx

__all__ = ["VMM_EXT_ID", "FaultHandler", "Locked", "Vcmm", "seed_call"]


class Vcmm(VcmmCalls):
    """Owner of every VCM, reservation, association and physical allocation.

    Built over a :class:`~vcmm.core.state.CoreState`, which holds the hardware passed
    in already built (:mod:`vcmm.platform.build` boots a platform: the bus masters,
    the platform's records of them, the memory targets, the table factory, the range
    allocator factory) and every registry; the machine lock is the state's, which the
    hardware holds and every public call takes too (:mod:`vcmm.hw.lock`).
    """

    def __init__(self, state: CoreState) -> None:
        if not isinstance(state, CoreState):
            raise InvalidArgumentError(f"Vcmm needs a CoreState, got {type(state).__name__}")
        self.state = state
        #: The machine lock (the hardware's).
        self.lock = state.lock
        self.spaces = AddressSpaces(state)
        self.binding = Binding(state)
        self.allocations = Allocations(state)
        self.backer = Backer(state)
        self.direct = DirectBacker(state, self.backer)
        self.registry = TargetRegistry(state)

    # -- what it was built with ------------------------------------------------------------

    @property
    def memory(self) -> PhysicalMemory:
        return self.state.memory

    @property
    def cpu(self) -> Cpu:
        return self.state.cpu

    @property
    def table_memory(self) -> TableMemory:
        return self.state.table_memory

    @property
    def iommu_format(self) -> PageTableFormat:
        """The table format of IOMMU VCMs created without one (the first SMMU's)."""
        return self.state.iommu_format

    @property
    def iommu_formats(self) -> tuple[PageTableFormat, ...]:
        """Every table format the system's SMMUs walk, in device order."""
        return self.state.iommu_formats

    @property
    def target_priority(self) -> tuple[str, ...]:
        return self.state.target_priority

    @property
    def graph(self) -> MappingGraph:
        """The mapping graph: every mapping of every physical page."""
        return self.state.graph

    @property
    def vcms(self) -> list[Vcm]:
        """The live VCMs, oldest first (the core's own list: read, do not change)."""
        return self.state.vcms

    # -- lookups ---------------------------------------------------------------------------

    def device(self, name: str) -> AnyMaster:
        """A bus master by name (the CPU is ``"cpu"``)."""
        return self.state.device(name)

    @property
    def devices(self) -> dict[str, AnyMaster]:
        return dict(self.state.devices)

    def device_record(self, name: str) -> DeviceRecord:
        """The platform's facts about bus master ``name`` (bank, domain, DMA limits)."""
        return self.state.record(name)

    def device_records(self) -> tuple[DeviceRecord, ...]:
        """:meth:`device_record` of every bus master, the CPU first."""
        return tuple(self.state.record(name) for name in self.state.devices)

    def target(self, name: str) -> MemoryTarget:
        """A memory target by name (``"ebi"``, ``"blocks"``, ``"contig"``, ``"smi"``)."""
        return self.state.target(name)

    @property
    def targets(self) -> dict[str, MemoryTarget]:
        return dict(self.state.targets)

    @property
    def associations(self) -> list[Association]:
        """Every live association, in creation order of their VCMs."""
        with self.lock:
            return self.state.associations()

    @property
    def reservations(self) -> list[Reservation]:
        """Every live reservation, VCM by VCM."""
        with self.lock:
            return [r for v in self.state.vcms for r in v.reservations]

    @property
    def physmems(self) -> list[PhysMem]:
        """Every live physical allocation from a memory target, oldest first."""
        with self.lock:
            return [p for p in self.state.physmems.values() if p.parent is None and p.owner is None]

    @property
    def phys_views(self) -> list[PhysMem]:
        """Every live view (``vcm_phys_view``) and wrap (``vcm_phys_wrap``), oldest
        first: memory described for backing, not taken from a target."""
        with self.lock:
            return [p for p in self.state.physmems.values() if p.parent is not None or p.owner]

    @property
    def kernel_areas(self) -> SplittingAllocator:
        """The allocator of kernel virtual areas (the vmalloc window) VMM VCMs share."""
        return self.state.kernel_areas

    def mapper(self, vcm: Vcm) -> Mapper:
        """The hardware side of ``vcm``."""
        return self.state.mapper(vcm)

    # -- the seed's calls: :class:`~vcmm.core.seedcalls.SeedCalls`, each under the lock --

    # -- the graph as data -----------------------------------------------------------------

    def graph_data(self) -> export.GraphData:
        """The mapping graph as plain data: ``{"nodes": [...], "edges": [...]}``.

        Nodes: devices, VCMs, reservations, physical allocations, memory targets,
        chunks and the linear map; edges: associations (with ``active``),
        reservations of VCMs, backings, chunks of allocations and every mapping (with
        VA, memory type, shareability).  Only str/int/bool/None values, so
        ``json.dumps`` takes it as is.  See :mod:`vcmm.core.export`.
        """
        with self.lock:
            return export.graph_data(self)

    def to_networkx(self) -> networkx.MultiDiGraph:
        """:meth:`graph_data` as a ``networkx.MultiDiGraph``."""
        return export.to_networkx(self.graph_data())

    # -- state -----------------------------------------------------------------------------

    def snapshot(self) -> tuple[object, ...]:
        """Everything the manager owns, comparable: for all-or-nothing tests."""
        with self.lock:
            return self.state.snapshot()
