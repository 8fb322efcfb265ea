"""The CPU: linear map bits, kernel and user mappings, ASID tagging, faults, maintenance."""

from __future__ import annotations

import numpy as np
import pytest

from vcmm.attrs import RO_WB, Access, FaultKind, MemType, PageAttrs
from vcmm.errors import (
    AlignmentError,
    AlreadyMappedError,
    InvalidArgumentError,
    NotFoundError,
    NotMappedError,
    SegmentationFault,
)
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import (
    KERNEL_NC,
    KERNEL_WB,
    KERNEL_WC,
    PAGE_OFFSET,
    VMALLOC_AREA,
    Cpu,
    KernelFault,
)
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import MAIR
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_64M

RAM = 0x8000_0000
VMALLOC = VMALLOC_AREA.start
USER_RW = PageAttrs(user=True)


def make_cpu(
    ram_base: int = RAM, ram_size: int = SZ_64M, **kwargs: object
) -> tuple[PhysicalMemory, Cpu]:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(ram_base, ram_size))])
    tables = TableMemory(memory, AddressRange(ram_base, SZ_4M))
    cpu = Cpu(
        memory,
        tables,
        cache=CacheConfig(32 * 1024, 4, 64),
        tlb=TLBConfig(64, 4),
        **kwargs,  # type: ignore[arg-type]
    )
    return memory, cpu


def kernel_block_fields(desc: int) -> dict[str, int]:
    """VMSAv8-64 block descriptor fields (ARM ARM D8.3)."""
    return {
        "type": desc & 0b11,
        "attrindx": (desc >> 2) & 0b111,
        "ap": (desc >> 6) & 0b11,
        "sh": (desc >> 8) & 0b11,
        "af": (desc >> 10) & 1,
        "ng": (desc >> 11) & 1,
        "pxn": (desc >> 53) & 1,
        "uxn": (desc >> 54) & 1,
    }


def next_table(memory: PhysicalMemory, table: int, index: int) -> int:
    desc = memory.read_u64(table + index * 8)
    assert desc & 0b11 == 0b11, f"entry {index} of {table:#x} is not a table descriptor"
    return desc & 0x0000_FFFF_FFFF_F000


class TestLinearMap:
    def test_one_gigabyte_block_where_aligned(self) -> None:
        memory, cpu = make_cpu(0x4000_0000, SZ_1G)
        assert [m.size for m in cpu.kernel_table.mappings()] == [SZ_1G]
        l1 = next_table(memory, cpu.kernel_table.root, 0)  # VA[47:39] of PAGE_OFFSET is 0
        desc = memory.read_u64(l1)
        fields = kernel_block_fields(desc)
        assert desc & 0x0000_FFFF_C000_0000 == 0x4000_0000
        assert fields["type"] == 0b01  # block
        assert (MAIR >> (8 * fields["attrindx"])) & 0xFF == 0xFF  # Normal WB RW-allocate
        assert fields["ap"] == 0b00  # EL1 read/write, no EL0 access
        assert fields["sh"] == 0b11  # inner shareable
        assert (fields["af"], fields["ng"], fields["pxn"], fields["uxn"]) == (1, 0, 1, 1)

    def test_two_megabyte_blocks_otherwise(self) -> None:
        memory, cpu = make_cpu()
        maps = list(cpu.kernel_table.mappings())
        assert [m.size for m in maps] == [SZ_2M] * (SZ_64M // SZ_2M)
        assert maps[0].pa == RAM and maps[0].va == 0  # the table sees VA[47:0]
        l1 = next_table(memory, cpu.kernel_table.root, 0)
        l2 = next_table(memory, l1, 0)
        desc = memory.read_u64(l2 + 5 * 8)
        assert desc & 0x0000_FFFF_FFE0_0000 == RAM + 5 * SZ_2M
        assert kernel_block_fields(desc)["type"] == 0b01

    def test_phys_virt_round_trip(self) -> None:
        _, cpu = make_cpu()
        assert cpu.phys_to_virt(RAM + 0x1234) == PAGE_OFFSET + 0x1234
        assert cpu.virt_to_phys(PAGE_OFFSET + 0x1234) == RAM + 0x1234
        with pytest.raises(NotMappedError):
            cpu.phys_to_virt(RAM + SZ_64M)
        with pytest.raises(NotMappedError):
            cpu.virt_to_phys(VMALLOC)

    def test_explicit_linear_map(self) -> None:
        _, cpu = make_cpu(linear_map=[(PAGE_OFFSET + SZ_1G, RAM + SZ_4M, SZ_4M)])
        assert cpu.phys_to_virt(RAM + SZ_4M + 8) == PAGE_OFFSET + SZ_1G + 8
        with pytest.raises(NotMappedError):
            cpu.phys_to_virt(RAM)

    @pytest.mark.parametrize(
        "linear",
        [
            [(0x1000, RAM, SZ_4K)],  # user half
            [(PAGE_OFFSET + 1, RAM, SZ_4K)],  # misaligned
            [(PAGE_OFFSET, 0x1000, SZ_4K)],  # not memory
            [(PAGE_OFFSET, RAM, SZ_1M), (PAGE_OFFSET + SZ_4K, RAM, SZ_1M)],  # overlap
            [(PAGE_OFFSET, RAM)],
        ],
    )
    def test_bad_linear_map(self, linear: object) -> None:
        with pytest.raises(InvalidArgumentError):
            make_cpu(linear_map=linear)


class TestKernelAccess:
    def test_write_back_stays_in_cache_until_cleaned(self) -> None:
        memory, cpu = make_cpu()
        va = cpu.phys_to_virt(RAM + SZ_4M + 0x100)
        cpu.write(va, b"dirty line")
        assert cpu.read(va, 10) == b"dirty line"
        assert memory.read(RAM + SZ_4M + 0x100, 10) == bytes(10)
        assert cpu.clean_range(va, 10) == 1
        assert memory.read(RAM + SZ_4M + 0x100, 10) == b"dirty line"

    def test_vmalloc_mapping_of_scattered_pages(self) -> None:
        memory, cpu = make_cpu()
        scattered = [RAM + 0x60_0000, RAM + 0x50_3000, RAM + 0x70_1000]
        for i, pa in enumerate(scattered):
            cpu.map_kernel(VMALLOC + i * SZ_4K, pa, SZ_4K, KERNEL_WB)
        data = np.random.default_rng(1).integers(0, 256, 3 * SZ_4K, dtype=np.uint8).tobytes()
        cpu.write(VMALLOC, data)
        cpu.flush_range(VMALLOC, len(data))
        for i, pa in enumerate(scattered):
            assert memory.read(pa, SZ_4K) == data[i * SZ_4K : (i + 1) * SZ_4K]
        # the same bytes through the linear map of the second page
        assert cpu.read(cpu.phys_to_virt(scattered[1]), 16) == data[SZ_4K : SZ_4K + 16]

    def test_uncached_alias_goes_straight_to_memory(self) -> None:
        memory, cpu = make_cpu()
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_4K, KERNEL_NC)
        cpu.write(VMALLOC + 8, b"uncached")
        assert memory.read(RAM + SZ_4M + 8, 8) == b"uncached"
        assert not cpu.cache.contains(RAM + SZ_4M)

    def test_write_combine_is_normal_non_cacheable(self) -> None:
        assert KERNEL_WC.memtype is MemType.NORMAL_NC == KERNEL_NC.memtype
        assert KERNEL_WB.memtype is MemType.NORMAL_WB_WA

    def test_unmap_invalidates_the_tlb(self) -> None:
        _, cpu = make_cpu()
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_4K, KERNEL_WB)
        cpu.read(VMALLOC, 4)  # cache the translation
        cpu.unmap_kernel(VMALLOC, SZ_4K)
        with pytest.raises(KernelFault) as info:
            cpu.read(VMALLOC, 4)
        assert info.value.kind is FaultKind.TRANSLATION
        assert hex(VMALLOC) in str(info.value) and "kernel" in str(info.value)

    def test_faulting_access_moves_nothing(self) -> None:
        memory, cpu = make_cpu()
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_4K, KERNEL_WB)
        before = (cpu.cache.snapshot(), memory.digest())
        with pytest.raises(KernelFault):
            cpu.write(VMALLOC + SZ_4K - 4, b"12345678")  # runs into an unmapped page
        assert (cpu.cache.snapshot(), memory.digest()) == before

    def test_kernel_mapping_misuse(self) -> None:
        memory, cpu = make_cpu()
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_2M, KERNEL_WB)
        before = (cpu.kernel_table.snapshot(), cpu.tlb.snapshot(), memory.digest())
        with pytest.raises(AlreadyMappedError):
            cpu.map_kernel(VMALLOC + SZ_1M, RAM, SZ_4K, KERNEL_WB)
        with pytest.raises(InvalidArgumentError, match="user"):
            cpu.map_kernel(VMALLOC + SZ_4M, RAM, SZ_4K, USER_RW)
        with pytest.raises(InvalidArgumentError, match="kernel half"):
            cpu.map_kernel(0x1000, RAM, SZ_4K, KERNEL_WB)
        with pytest.raises(AlignmentError):
            cpu.map_kernel(VMALLOC + SZ_4M + 8, RAM, SZ_4K, KERNEL_WB)
        with pytest.raises(InvalidArgumentError, match="linear map"):
            cpu.unmap_kernel(PAGE_OFFSET, SZ_4K)
        with pytest.raises(NotMappedError):
            cpu.unmap_kernel(VMALLOC + SZ_4M, SZ_4K)
        assert (cpu.kernel_table.snapshot(), cpu.tlb.snapshot(), memory.digest()) == before

    def test_mapping_of_a_hole_is_a_bus_fault_and_writes_nothing(self) -> None:
        memory, cpu = make_cpu()
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_4K, KERNEL_WB)
        cpu.map_kernel(VMALLOC + SZ_4K, 0x1000_0000, SZ_4K, KERNEL_NC)  # nothing there
        before = (cpu.cache.snapshot(), memory.digest())
        with pytest.raises(KernelFault, match="not memory") as info:
            cpu.write(VMALLOC + SZ_4K - 2, b"abcd")
        assert info.value.kind is FaultKind.BUS and info.value.address == VMALLOC + SZ_4K
        assert (cpu.cache.snapshot(), memory.digest()) == before

    def test_non_canonical_address_faults(self) -> None:
        _, cpu = make_cpu()
        with pytest.raises(KernelFault, match="translation"):
            cpu.read(0x0001_0000_0000_0000, 4)


class TestUserSpace:
    def test_user_mapping_and_permissions(self) -> None:
        _, cpu = make_cpu()
        cpu.create_address_space(5)
        cpu.map_user(5, 0x40_0000, RAM + SZ_4M, SZ_4K, USER_RW)
        cpu.map_user(5, 0x50_0000, RAM + SZ_4M + SZ_4K, SZ_4K, RO_WB)  # kernel-only
        cpu.write(0x40_0010, b"user data", asid=5, user=True)
        assert cpu.read(0x40_0010, 9, asid=5, user=True) == b"user data"
        with pytest.raises(SegmentationFault) as info:
            cpu.read(0x50_0000, 4, asid=5, user=True)
        assert info.value.kind is FaultKind.PERMISSION
        assert cpu.read(0x50_0000, 4, asid=5) == bytes(4)  # the kernel may read it
        with pytest.raises(SegmentationFault) as info:
            cpu.read(cpu.phys_to_virt(RAM), 4, asid=5, user=True)
        assert info.value.kind is FaultKind.PERMISSION
        with pytest.raises(SegmentationFault) as info:
            cpu.read(0x60_0000, 4, asid=5, user=True)
        assert info.value.kind is FaultKind.TRANSLATION and "0x600000" in str(info.value)

    def test_asids_isolate_and_kernel_entries_are_global(self) -> None:
        _, cpu = make_cpu()
        for asid, pa in ((5, RAM + SZ_4M), (6, RAM + SZ_4M + SZ_4K)):
            cpu.create_address_space(asid)
            cpu.map_user(asid, 0x40_0000, pa, SZ_4K, USER_RW)
            cpu.write(0x40_0000, f"asid{asid}".encode(), asid=asid, user=True)
        cpu.switch_to(5)
        assert cpu.read(0x40_0000, 5, user=True) == b"asid5"
        cpu.switch_to(6)
        assert cpu.read(0x40_0000, 5, user=True) == b"asid6"
        # user entries are tagged (nG) even though USER_RW says global
        assert all(not e.global_ for e in cpu.tlb.entries() if e.va_base < 1 << 48)
        linear = cpu.phys_to_virt(RAM + SZ_4M)
        cpu.read(linear, 4, asid=5)
        hits = cpu.tlb.stats.hits
        cpu.read(linear, 4, asid=6)  # the global linear-map entry serves ASID 6 too
        assert cpu.tlb.stats.hits == hits + 1

    def test_address_space_misuse(self) -> None:
        _, cpu = make_cpu()
        cpu.create_address_space(7)
        with pytest.raises(InvalidArgumentError):
            cpu.create_address_space(7)
        for bad in (0, 65536, -1, True):
            with pytest.raises(InvalidArgumentError):
                cpu.create_address_space(bad)
        with pytest.raises(NotFoundError):
            cpu.switch_to(8)
        with pytest.raises(NotFoundError):
            cpu.read(0x1000, 4, asid=8)
        cpu.map_user(7, 0, RAM + SZ_4M, SZ_4K, USER_RW)
        cpu.read(0, 4, asid=7, user=True)
        cpu.destroy_address_space(7)
        assert not [e for e in cpu.tlb.entries() if e.tag == 7]


class TestMaintenanceAndPrefetch:
    def test_invalidate_by_va_discards_dirty_data(self) -> None:
        memory, cpu = make_cpu()
        va = cpu.phys_to_virt(RAM + SZ_4M)
        cpu.write(va, b"lost")
        assert cpu.invalidate_range(va, 4) == 1
        assert cpu.read(va, 4) == bytes(4)
        assert memory.read(RAM + SZ_4M, 4) == bytes(4)

    def test_maintenance_by_pa(self) -> None:
        memory, cpu = make_cpu()
        va = cpu.phys_to_virt(RAM + SZ_4M)
        cpu.write(va, b"kept")
        assert cpu.clean_pa(RAM + SZ_4M, 64) == 1
        assert memory.read(RAM + SZ_4M, 4) == b"kept"
        assert cpu.flush_pa(RAM + SZ_4M, 64) == 1
        assert not cpu.cache.contains(RAM + SZ_4M)

    def test_maintenance_of_unmapped_va_faults(self) -> None:
        _, cpu = make_cpu()
        with pytest.raises(KernelFault):
            cpu.clean_range(VMALLOC, SZ_4K)

    def test_prefetcher_ticks_on_every_access_and_stays_in_cacheable_ranges(self) -> None:
        _, cpu = make_cpu(linear_map=[(PAGE_OFFSET, RAM + SZ_4M, SZ_4K)], prefetch_seed=3)
        cpu.map_kernel(VMALLOC, RAM + 2 * SZ_4M, SZ_4K, KERNEL_WB)
        cpu.map_kernel(VMALLOC + SZ_4K, RAM + 3 * SZ_4M, SZ_4K, KERNEL_NC)
        assert cpu.cacheable_ranges() == [
            AddressRange(RAM + SZ_4M, SZ_4K),
            AddressRange(RAM + 2 * SZ_4M, SZ_4K),
        ]
        assert cpu.prefetcher is not None
        for _ in range(50):
            cpu.read(VMALLOC + SZ_4K, 4)  # uncached: only the prefetcher fills lines
        assert cpu.prefetcher.counters.ticks == 50
        lines = [addr for addr, _ in cpu.cache.lines()]
        assert lines, "fifty ticks of four lines filled nothing"
        assert all(
            RAM + SZ_4M <= a < RAM + SZ_4M + SZ_4K or RAM + 2 * SZ_4M <= a < RAM + 2 * SZ_4M + SZ_4K
            for a in lines
        )

    def test_no_prefetcher_without_seed(self) -> None:
        _, cpu = make_cpu()
        assert cpu.prefetcher is None
        cpu.map_kernel(VMALLOC, RAM + SZ_4M, SZ_4K, KERNEL_NC)
        cpu.read(VMALLOC, 4)
        assert cpu.cache.lines() == []

    def test_read_counts_tlb_lookups_per_page(self) -> None:
        _, cpu = make_cpu()
        for i in range(3):
            cpu.map_kernel(VMALLOC + i * SZ_4K, RAM + SZ_4M + 2 * i * SZ_4K, SZ_4K, KERNEL_WB)
        lookups = cpu.tlb.stats.lookups
        cpu.read(VMALLOC + 100, 2 * SZ_4K)  # touches three pages
        assert cpu.tlb.stats.lookups == lookups + 3
        tr = cpu.translate(VMALLOC + SZ_4K + 5, Access.WRITE)
        assert tr.pa == RAM + SZ_4M + 2 * SZ_4K + 5
