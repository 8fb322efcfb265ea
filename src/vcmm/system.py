"""Booting a platform: the simulated SoC plus the VCMM, ready for the seed's calls.

``System`` is the object users hold.  It builds the hardware a :class:`PlatformSpec`
describes (memory, table window, CPU, SMMUs, bus masters), the memory targets, and the
:class:`~vcmm.core.manager.Vcmm` over them, and it *is* that manager, so every seed
call (``system.vcm_create(...)``) is a method of it.

The system owns the machine lock (``system.lock``, :mod:`vcmm.hw.lock`): one
re-entrant lock handed to the CPU, every SMMU and every bus master it builds, and
taken by every public VCMM call.  So each device access, CPU access, table change and
VCMM call is atomic against the others from any thread, with no lock in user code;
code that reaches below them (``system.memory``, ``cpu.cache``, the graph) from
several threads takes ``with system.lock:`` itself.
"""

from __future__ import annotations

import os
from typing import Any

from vcmm.core.manager import Vcmm
from vcmm.core.tableformat import default_format
from vcmm.errors import InvalidArgumentError
from vcmm.hw.bus import BusMaster, Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import Cpu
from vcmm.hw.lock import MachineLock
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.cma import BorrowingSystemRam, CmaArea
from vcmm.mm.genalloc import RangeAllocator
from vcmm.mm.pools import BlockPool, ContiguousPool, OnChipPool, SystemRamTarget
from vcmm.mm.roles import MemoryRoles
from vcmm.platform import PlatformSpec, load_default, load_platform
from vcmm.platform.schema import TargetSpec, TlbSpec
from vcmm.sizes import SZ_4K

FORMATS: dict[str, PageTableFormat] = {"armv7s": ARMV7S, "vmsav8": VMSAV8_4K, "lpae": ARMV7_LPAE}


def _tlb(spec: TlbSpec) -> TLBConfig:
    return TLBConfig(entries=spec.entries, ways=spec.ways, replacement=spec.replacement)


def _target(spec: TargetSpec, lenders: tuple[CmaArea, ...]) -> Any:
    if spec.kind == "system":
        buddy = BuddyAllocator(spec.range, page=SZ_4K, max_order=spec.max_order or 10)
        if lenders:
            return BorrowingSystemRam(buddy, lenders, name=spec.name)
        return SystemRamTarget(buddy, name=spec.name)
    if spec.kind == "blocks":
        return BlockPool(spec.name, {pool.block_size: pool.range for pool in spec.blocks})
    if spec.kind == "contiguous":
        return ContiguousPool(spec.name, spec.range)
    return OnChipPool(spec.name, spec.range)


def _targets(spec: PlatformSpec) -> dict[str, Any]:
    """The memory targets; each ``cma`` area lends its free pages to the kernel's
    system RAM target (:mod:`vcmm.mm.cma`)."""
    areas = {t.name: CmaArea(t.name, t.range) for t in spec.targets if t.kind == "cma"}
    kernel = spec.memory_roles().kernel
    out: dict[str, Any] = {}
    for t in spec.targets:
        lenders = tuple(areas.values()) if t.name == kernel else ()
        out[t.name] = areas.get(t.name) or _target(t, lenders)
    return out


class System(Vcmm):
    """A booted platform: hardware, memory targets and the VCMM in one object."""

    def __init__(self, spec: PlatformSpec) -> None:
        if not isinstance(spec, PlatformSpec):
            raise InvalidArgumentError(f"System needs a PlatformSpec, got {type(spec).__name__}")
        self.spec = spec
        #: Which targets the kernel's DMA layers use (the platform's ``[dma]`` table).
        self.memory_roles: MemoryRoles = spec.memory_roles()
        lock = MachineLock(f"system {spec.name}")
        memory = PhysicalMemory(spec.memory)
        table_memory = TableMemory(memory, spec.page_tables)
        linear = [(spec.cpu.linear_va(w.start), w.start, w.size) for w in spec.cpu.linear_map]
        cpu = Cpu(
            memory,
            table_memory,
            cache=CacheConfig(spec.cpu.cache.size, spec.cpu.cache.ways, spec.cpu.cache.line),
            tlb=_tlb(spec.cpu.tlb),
            linear_map=linear,
            prefetch_seed=spec.cpu.prefetch_seed,
            lock=lock,
        )
        cpu.name = "cpu"
        self.interconnect = Interconnect(memory, cpu.cache)
        self.smmus: dict[str, Smmu] = {}
        for s in spec.smmus:
            smmu = Smmu(
                s.name,
                memory,
                table_memory,
                fmt=FORMATS[s.format],
                context_banks=s.context_banks,
                tlb=_tlb(s.tlb),
                lock=lock,
            )
            for ctx in s.contexts:
                smmu.context_init(ctx.name)
            self.smmus[s.name] = smmu
        devices: dict[str, Any] = {"cpu": cpu}
        for d in spec.devices:
            device: BusMaster
            if d.kind == "smmu":
                assert d.smmu is not None and d.context is not None
                smmu = self.smmus[d.smmu]
                device = SmmuDevice(
                    d.name,
                    smmu.context(d.context),
                    self.interconnect,
                    coherent=d.coherent,
                    lock=lock,
                )
                device.bank = spec.smmu(d.smmu).context(d.context).bank
            else:
                ranges = [(r.bus, r.phys, r.size) for r in d.dma_ranges] or None
                device = PhysicalDevice(
                    d.name, self.interconnect, coherent=d.coherent, dma_ranges=ranges, lock=lock
                )
            device.dma = d.dma
            devices[d.name] = device
        formats = tuple(dict.fromkeys(smmu.fmt for smmu in self.smmus.values()))
        super().__init__(
            memory=memory,
            cpu=cpu,
            devices=devices,
            targets=_targets(spec),
            target_priority=spec.target_priority,
            table_memory=table_memory,
            iommu_format=default_format(formats),
            vmalloc=spec.cpu.vmalloc,
            linear_map=linear,
            page_table_factory=lambda fmt: PageTable(fmt, memory, table_memory),
            range_allocator=RangeAllocator,
            lock=lock,
        )

    @classmethod
    def default(cls) -> System:
        """Boot the embedded default platform (the seed's MSM-class SoC)."""
        return cls(load_default())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, ram: int | str | None = None) -> System:
        """Boot a platform described in a TOML file or a Linux devicetree (``.dtb``,
        ``.dts``; ``ram`` sizes banks the bootloader would fill in), docs/PLATFORM.md."""
        return cls(load_platform(path, ram=ram))

    def snapshot(self) -> tuple[object, ...]:
        """Every piece of state, hardware included: equal snapshots, equal systems."""
        with self.lock:
            return self._snapshot()

    def _snapshot(self) -> tuple[object, ...]:
        return (
            super().snapshot(),
            self.memory.digest(),
            self.table_memory.snapshot(),
            self.cpu.tlb.snapshot(),
            self.cpu.cache.snapshot(),
            self.cpu.kernel_table.snapshot(),
            tuple(smmu.snapshot() for smmu in self.smmus.values()),
        )
