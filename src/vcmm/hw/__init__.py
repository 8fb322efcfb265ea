"""The simulated hardware: usable on its own to study an IOMMU, knowing nothing of VCMs.

Physical memory holds real bytes; page tables are the ARM formats bit for bit, living
in that memory; TLBs are finite and shared; the CPU data cache goes stale; devices move
data through their translations and fault.  Every master reports its accesses to
observers (:mod:`vcmm.hw.observe`) and holds a machine lock (:mod:`vcmm.hw.lock`).  This package re-exports the pieces a
platform is built from, so ``from vcmm.hw import Smmu, Cpu, SmmuDevice`` is enough.
"""

from vcmm.hw.bus import (
    BatchCounts,
    BusMaster,
    DmaWindow,
    Interconnect,
    PhysicalDevice,
    SmmuDevice,
)
from vcmm.hw.cache import CacheConfig, CacheCounters, CacheSnapshot, DataCache
from vcmm.hw.cpu import (
    KERNEL_ASID,
    KERNEL_NC,
    KERNEL_WB,
    KERNEL_WC,
    LINEAR_MAP_ATTRS,
    PAGE_OFFSET,
    VMALLOC_AREA,
    Cpu,
    KernelFault,
)
from vcmm.hw.lock import MachineLock, held_machine_locks
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.observe import AccessEvent, Observer
from vcmm.hw.pgtable import (
    ARMV7_LPAE,
    ARMV7S,
    VMSAV8_4K,
    MapEntry,
    PageTable,
    PageTableFormat,
    walk_tables,
)
from vcmm.hw.prefetch import SpeculativePrefetcher
from vcmm.hw.smmu import (
    MAX_FAULT_RETRIES,
    BankRegisters,
    ContextStats,
    FaultHandler,
    Smmu,
    SmmuContext,
    SmmuFault,
    find_context,
)
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLB, TLBConfig, TLBEntry, TLBStats
from vcmm.hw.translate import BatchResult, Translation, TranslationFault, Translator
from vcmm.hw.walk import Walk

__all__ = [
    "ARMV7S",
    "ARMV7_LPAE",
    "KERNEL_ASID",
    "KERNEL_NC",
    "KERNEL_WB",
    "KERNEL_WC",
    "LINEAR_MAP_ATTRS",
    "MAX_FAULT_RETRIES",
    "PAGE_OFFSET",
    "TLB",
    "VMALLOC_AREA",
    "VMSAV8_4K",
    "AccessEvent",
    "BankRegisters",
    "BatchCounts",
    "BatchResult",
    "BusMaster",
    "CacheConfig",
    "CacheCounters",
    "CacheSnapshot",
    "ContextStats",
    "Cpu",
    "DataCache",
    "DmaWindow",
    "FaultHandler",
    "Interconnect",
    "KernelFault",
    "MachineLock",
    "MapEntry",
    "MemoryRegion",
    "Observer",
    "PageTable",
    "PageTableFormat",
    "PhysicalDevice",
    "PhysicalMemory",
    "Smmu",
    "SmmuContext",
    "SmmuDevice",
    "SmmuFault",
    "SpeculativePrefetcher",
    "TLBConfig",
    "TLBEntry",
    "TLBStats",
    "TableMemory",
    "Translation",
    "TranslationFault",
    "Translator",
    "Walk",
    "find_context",
    "held_machine_locks",
    "walk_tables",
]
