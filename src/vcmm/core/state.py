"""The core's registries and the handle checks every part of the VCMM shares.

The VCMM is split by concern (:mod:`~vcmm.core.spaces`, :mod:`~vcmm.core.binding`,
:mod:`~vcmm.core.allocations`, :mod:`~vcmm.core.backer`); what they all read and
write (the hardware they were given, the id counter, the VCMs, the live allocations,
the reservations by id, the mapping graph, the mappers and the fault hooks) is one
:class:`CoreState`, so each part keeps only its own logic and no part owns another's
data.  The facade (:class:`vcmm.core.manager.Vcmm`) builds the state and the parts and
takes the machine lock around each call.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from vcmm.core import tableformat
from vcmm.core.cmareclaim import CmaReclaimer
from vcmm.core.graph import KERNEL_SPACE, MappingGraph
from vcmm.core.graph import Mapping as Edge
from vcmm.core.interfaces import DeviceRecord
from vcmm.core.mappers import (
    ContextBrackets,
    IommuMapper,
    Mapper,
    OneToOneMapper,
    UserMapper,
    VmmMapper,
)
from vcmm.core.objects import Association, Handle, PhysMem, Reservation, Vcm, VcmKind
from vcmm.core.ownership import OwnerMap
from vcmm.errors import InvalidArgumentError, NotFoundError
from vcmm.hw.cpu import LINEAR_MAP_ATTRS, Cpu
from vcmm.hw.lock import MachineLock, check_lock
from vcmm.hw.master import AnyMaster
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.mm.interfaces import AllocatorFactory, MemoryTarget, SplittingAllocator
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K

if TYPE_CHECKING:
    from vcmm.core.objects import VcmFault

H = TypeVar("H", bound=Handle)
T = TypeVar("T")

#: ``handler(fault, data) -> 1 (replay the transaction) or 0 (terminate it)``.
FaultHandler = Callable[["VcmFault", Any], int]


def check_handle(call: str, name: str, value: object, kind: type[H]) -> H:
    """``value`` if it is a live ``kind`` handle; else the error naming what it is."""
    if not isinstance(value, kind):
        raise InvalidArgumentError(
            f"{call}: {name} is a {type(value).__name__}, not a {kind.__name__}"
        )
    value.check_alive(call)
    return value


def check_holder(call: str, holder: object) -> None:
    """A ``holder`` label is a non-empty string or None."""
    if holder is not None and (not isinstance(holder, str) or not holder):
        raise InvalidArgumentError(f"{call}: holder {holder!r} must be a non-empty str or None")


def by_name(table: Mapping[str, T], name: str, what: str) -> T:
    """``table[name]``, or a NotFoundError that lists the names there are."""
    try:
        return table[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(table))
        raise NotFoundError(f"no {what} named {name!r} (known: {known})") from None


class CoreState:
    """Everything the VCMM owns, shared by its parts (see the module notes).

    ``devices`` maps names to bus masters and includes the CPU; ``records`` the
    platform's facts about them (a device without one gets the defaults);
    ``targets`` maps memory-target names to targets; ``linear_map`` lists the CPU's
    ``(kernel_va, pa, size)`` windows, which the mapping graph treats as permanent
    cacheable aliases; ``page_table_factory(fmt)`` builds device page tables and
    ``range_allocator(window, granule=...)`` address-space allocators; ``lock`` is the
    machine lock the hardware holds (a private one if None); ``reserved`` names the
    platform's reserved-memory regions, which no target registered at run time may take.
    """

    def __init__(
        self,
        *,
        memory: PhysicalMemory,
        cpu: Cpu,
        devices: Mapping[str, AnyMaster],
        records: Mapping[str, DeviceRecord],
        targets: Mapping[str, MemoryTarget],
        target_priority: Sequence[str],
        table_memory: TableMemory,
        iommu_format: PageTableFormat,
        vmalloc: AddressRange,
        linear_map: Iterable[tuple[int, int, int]],
        page_table_factory: Callable[[PageTableFormat], PageTable],
        range_allocator: AllocatorFactory,
        lock: MachineLock | None = None,
        reserved: Iterable[tuple[str, AddressRange]] = (),
    ) -> None:
        self.lock = check_lock("CoreState", lock)
        self.memory = memory
        self.cpu = cpu
        self.devices: dict[str, AnyMaster] = dict(devices)
        self.records: dict[str, DeviceRecord] = dict(records)
        self.targets: dict[str, MemoryTarget] = dict(targets)
        self.target_priority = tuple(target_priority)
        #: The platform's reserved-memory regions by name (firmware's, a driver's).
        self.reserved: tuple[tuple[str, AddressRange], ...] = tuple(reserved)
        self.table_memory = table_memory
        #: The table format of IOMMU VCMs created without one (:mod:`.tableformat`).
        self.iommu_format = iommu_format
        #: Every format the system's SMMUs walk, in device order.
        self.iommu_formats = tableformat.system_formats(self.devices.values())
        self.page_table = page_table_factory
        self.range_allocator = range_allocator
        self.kernel_areas: SplittingAllocator = range_allocator(vmalloc, granule=SZ_4K)
        self.graph = MappingGraph(
            linear_map=tuple(
                Edge(
                    KERNEL_SPACE,
                    "the kernel linear map",
                    AddressRange(pa, size),
                    va,
                    LINEAR_MAP_ATTRS,
                )
                for va, pa, size in linear_map
            )
        )
        self.vcms: list[Vcm] = []
        self.physmems: dict[int, PhysMem] = {}
        #: Who owns each physical page (table window, free lists, live allocations).
        self.owners = OwnerMap(table_memory.window, self.targets)
        #: Takes lent pages back for a CMA area's own allocations (:mod:`.cmareclaim`).
        self.cma = CmaReclaimer(self.targets, self.owners, memory, cpu.cache)
        self.res_by_id: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        self.mappers: dict[int, IommuMapper | UserMapper] = {}
        self.brackets = ContextBrackets()
        self.one_to_one = OneToOneMapper()
        self.vmm = VmmMapper(cpu)
        self.hooks: dict[str, tuple[FaultHandler, Any]] = {}

    def new_id(self) -> int:
        """The next handle id (one sequence for every kind of handle, as the seed's)."""
        return next(self._ids)

    def device(self, name: str) -> AnyMaster:
        return by_name(self.devices, name, "device")

    def record(self, name: str) -> DeviceRecord:
        """The platform's facts about device ``name`` (defaults if it gave none)."""
        device = self.device(name)
        found = self.records.get(name)
        if found is None:
            found = DeviceRecord(name=name, path=device.path)
        return found

    def target(self, name: str) -> MemoryTarget:
        return by_name(self.targets, name, "memory target")

    def resolve_device(self, call: str, dev: object) -> AnyMaster:
        """A device of this system from a name or the object itself."""
        if isinstance(dev, str):
            return self.device(dev)
        for device in self.devices.values():
            if dev is device:
                return device
        raise InvalidArgumentError(
            f"{call}: {dev!r} is not a device of this system (pass a name or system.device(name))"
        )

    def mapper(self, vcm: Vcm) -> Mapper:
        """The hardware side of ``vcm``."""
        if vcm.kind is VcmKind.VMM:
            return self.vmm
        if vcm.kind is VcmKind.ONE_TO_ONE:
            return self.one_to_one
        return self.mappers[vcm.id]

    def reservation(self, res_id: int) -> Reservation:
        return self.res_by_id[res_id]

    def associations(self) -> list[Association]:
        """Every live association, in creation order of their VCMs."""
        return [a for v in self.vcms for a in v.associations]

    def snapshot(self) -> tuple[object, ...]:
        """Everything the core owns, comparable: for all-or-nothing tests."""
        vcms = tuple(
            (
                v.id,
                v.kind,
                v.range,
                v.allocator.snapshot(),
                tuple(
                    (r.id, r.addr, r.len, int(r.attr), r.physmem.id if r.physmem else None)
                    for r in v.reservations
                ),
                tuple((a.id, a.device.name, int(a.attr), a.active) for a in v.associations),
                v.table.snapshot() if v.table is not None else None,
            )
            for v in self.vcms
        )
        phys = tuple(
            (
                p.id,
                p.target,
                p.len,
                p.chunk_ranges,
                tuple(r.id for r in p.backing),
                p.parent.id if p.parent is not None else None,
                tuple(v.id for v in p.views),
                tuple(pin.holder for pin in p.pins),
            )
            for p in self.physmems.values()
        )
        targets = tuple((n, t.snapshot()) for n, t in sorted(self.targets.items()))
        return (
            vcms,
            phys,
            targets,
            self.graph.snapshot(),
            self.kernel_areas.snapshot(),
            tuple(sorted(self.hooks)),
        )
