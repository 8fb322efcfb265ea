"""Booting a platform description: the machine, the device records, the VCMM over them.

A :class:`~vcmm.platform.schema.PlatformSpec` says what the SoC is; this module turns
it into objects, in the order hardware comes up: physical memory and the page-table
window, the CPU with its linear map, the interconnect, the SMMUs with their contexts,
the bus masters (:func:`build_machine`); then the memory targets and the
:class:`~vcmm.core.manager.Vcmm` over the machine (:func:`build_vcmm`).  What the
platform says about a device that the hardware does not model (its context bank, its
IOMMU domain, its DMA limits) becomes a :class:`~vcmm.core.interfaces.DeviceRecord`
(:func:`device_records`), which the VCMM and the front ends read, instead of
attributes set on the hardware objects.
"""

from __future__ import annotations

from typing import Final

from vcmm.core.interfaces import DeviceRecord, DmaLimits, records_by_name
from vcmm.core.manager import Vcmm
from vcmm.core.state import CoreState
from vcmm.core.tableformat import default_format
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import Cpu
from vcmm.hw.lock import MachineLock
from vcmm.hw.machine import Machine
from vcmm.hw.master import AnyMaster, TranslationPath
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.cma import BorrowingSystemRam, CmaArea
from vcmm.mm.genalloc import RangeAllocator
from vcmm.mm.pools import BlockPool, ContiguousPool, OnChipPool, SystemRamTarget
from vcmm.mm.target import MemoryTarget
from vcmm.platform.devices import DeviceSpec
from vcmm.platform.schema import PlatformSpec, TargetSpec, TlbSpec
from vcmm.sizes import SZ_4K

#: The table format each ``[[smmu]] format`` names.
FORMATS: Final[dict[str, PageTableFormat]] = {
    "armv7s": ARMV7S,
    "vmsav8": VMSAV8_4K,
    "lpae": ARMV7_LPAE,
}


def _tlb(spec: TlbSpec) -> TLBConfig:
    return TLBConfig(entries=spec.entries, ways=spec.ways, replacement=spec.replacement)


def build_target(spec: TargetSpec, lenders: tuple[CmaArea, ...] = ()) -> MemoryTarget:
    """The memory target a ``[[target]]`` describes; a system target borrows from
    ``lenders`` (CMA areas) for movable requests."""
    if spec.kind == "system":
        buddy = BuddyAllocator(spec.range, page=SZ_4K, max_order=spec.max_order or 10)
        if lenders:
            return BorrowingSystemRam(buddy, lenders, name=spec.name)
        return SystemRamTarget(buddy, name=spec.name)
    if spec.kind == "blocks":
        return BlockPool(spec.name, {pool.block_size: pool.range for pool in spec.blocks})
    if spec.kind == "cma":
        return CmaArea(spec.name, spec.range)
    if spec.kind == "contiguous":
        return ContiguousPool(spec.name, spec.range)
    return OnChipPool(spec.name, spec.range)


def build_targets(spec: PlatformSpec) -> dict[str, MemoryTarget]:
    """The memory targets; each ``cma`` area lends its free pages to the kernel's
    system RAM target (:mod:`vcmm.mm.cma`)."""
    areas = {t.name: CmaArea(t.name, t.range) for t in spec.targets if t.kind == "cma"}
    kernel = spec.memory_roles().kernel
    out: dict[str, MemoryTarget] = {}
    for t in spec.targets:
        lenders = tuple(areas.values()) if t.name == kernel else ()
        out[t.name] = areas.get(t.name) or build_target(t, lenders)
    return out


def linear_windows(spec: PlatformSpec) -> list[tuple[int, int, int]]:
    """The CPU's linear map as ``(kernel_va, pa, size)`` windows."""
    return [(spec.cpu.linear_va(w.start), w.start, w.size) for w in spec.cpu.linear_map]


def _smmus(
    spec: PlatformSpec, memory: PhysicalMemory, tables: TableMemory, lock: MachineLock
) -> dict[str, Smmu]:
    smmus: dict[str, Smmu] = {}
    for s in spec.smmus:
        smmu = Smmu(
            s.name,
            memory,
            tables,
            fmt=FORMATS[s.format],
            context_banks=s.context_banks,
            tlb=_tlb(s.tlb),
            lock=lock,
            invalidation=s.invalidation.cost(),
            register_base=spec.register_base(s.name),
        )
        for ctx in s.contexts:
            smmu.context_init(ctx.name)
        smmus[s.name] = smmu
    return smmus


def _device(
    d: DeviceSpec, smmus: dict[str, Smmu], interconnect: Interconnect, lock: MachineLock
) -> SmmuDevice | PhysicalDevice:
    if d.kind == "smmu":
        assert d.smmu is not None and d.context is not None  # the schema checked
        return SmmuDevice(
            d.name, smmus[d.smmu].context(d.context), interconnect, coherent=d.coherent, lock=lock
        )
    ranges = [(r.bus, r.phys, r.size) for r in d.dma_ranges] or None
    return PhysicalDevice(d.name, interconnect, coherent=d.coherent, dma_ranges=ranges, lock=lock)


def build_machine(spec: PlatformSpec) -> Machine:
    """The hardware ``spec`` describes, every part holding one new machine lock."""
    lock = MachineLock(f"system {spec.name}")
    memory = PhysicalMemory(spec.memory)
    tables = TableMemory(memory, spec.page_tables)
    cache = spec.cpu.cache
    cpu = Cpu(
        memory,
        tables,
        cache=CacheConfig(cache.size, cache.ways, cache.line),
        tlb=_tlb(spec.cpu.tlb),
        linear_map=linear_windows(spec),
        prefetch_seed=spec.cpu.prefetch_seed,
        lock=lock,
    )
    interconnect = Interconnect(memory, cpu.cache)
    smmus = _smmus(spec, memory, tables, lock)
    devices: dict[str, AnyMaster] = {cpu.name: cpu}
    for d in spec.devices:
        devices[d.name] = _device(d, smmus, interconnect, lock)
    return Machine(spec.name, memory, tables, cpu, interconnect, smmus, devices, lock)


def _coherent_region(spec: PlatformSpec, device: DeviceSpec) -> str | None:
    """The target of the first ``shared-dma-pool`` region ``device`` names."""
    for region in device.memory_regions:
        reserved = spec.reserved_region(region)
        if reserved.target is not None and reserved.is_pool:
            return str(reserved.target)
    return None


def device_records(spec: PlatformSpec, machine: Machine) -> tuple[DeviceRecord, ...]:
    """What ``spec`` says about each bus master of ``machine`` (the CPU first)."""
    records = [DeviceRecord(name=machine.cpu.name, path=TranslationPath.CPU, coherent=True)]
    for d in spec.devices:
        bank = None
        if d.smmu is not None and d.context is not None:
            bank = spec.smmu(d.smmu).context(d.context).bank
        limits = DmaLimits(
            d.dma.mask, d.dma.coherent_mask, d.dma.max_segment_size, d.dma.segment_boundary_mask
        )
        records.append(
            DeviceRecord(
                name=d.name,
                path=machine.devices[d.name].path,
                coherent=d.coherent,
                smmu=d.smmu,
                context=d.context,
                bank=bank,
                domain=d.domain,
                dma=limits,
                invalidation=d.invalidation,
                coherent_region=_coherent_region(spec, d),
            )
        )
    return tuple(records)


def iommu_format(machine: Machine) -> PageTableFormat:
    """The table format of IOMMU VCMs created without one (:mod:`vcmm.core.tableformat`)."""
    return default_format(tuple(dict.fromkeys(smmu.fmt for smmu in machine.smmus.values())))


def build_vcmm(spec: PlatformSpec, machine: Machine) -> Vcmm:
    """The VCMM over ``machine`` with the targets and choices of ``spec``."""
    memory, tables = machine.memory, machine.table_memory
    state = CoreState(
        memory=memory,
        cpu=machine.cpu,
        devices=machine.devices,
        records=records_by_name(device_records(spec, machine)),
        targets=build_targets(spec),
        target_priority=spec.target_priority,
        table_memory=tables,
        iommu_format=iommu_format(machine),
        vmalloc=spec.cpu.vmalloc,
        linear_map=linear_windows(spec),
        page_table_factory=lambda fmt: PageTable(fmt, memory, tables),
        range_allocator=RangeAllocator,
        lock=machine.lock,
        reserved=[(r.name, r.range) for r in spec.reserved],
    )
    return Vcmm(state)
