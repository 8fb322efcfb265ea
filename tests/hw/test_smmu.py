"""The SMMU: seed map rules, byte-exact descriptors, shared TLB, split tables, faults."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from vcmm.attrs import RO_WB, RW_WB, Access, FaultKind
from vcmm.errors import (
    AlignmentError,
    AlreadyMappedError,
    BusyError,
    DeviceFaultError,
    InvalidArgumentError,
    NotFoundError,
    NotMappedError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.hw.bus import Interconnect, SmmuDevice
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, VMSAV8_4K, PageTable
from vcmm.hw.smmu import MAX_FAULT_RETRIES, Smmu, SmmuContext, SmmuFault, find_context
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_16M, SZ_64K, SZ_256M

RAM = 0x8000_0000
#: Page-aligned physical buffers well away from the table window.
PA = RAM + 0x0400_0000


@dataclass
class Platform:
    memory: PhysicalMemory
    tables: TableMemory
    smmu0: Smmu
    smmu1: Smmu
    interconnect: Interconnect


def make_platform(tlb: TLBConfig | None = None) -> Platform:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    tlb = tlb or TLBConfig(32, 4)
    return Platform(
        memory,
        tables,
        Smmu("smmu0", memory, tables, context_banks=3, tlb=tlb),
        Smmu("smmu1", memory, tables, context_banks=1, tlb=tlb),
        Interconnect(memory),
    )


@pytest.fixture
def plat() -> Platform:
    return make_platform()


def active(smmu: Smmu, name: str, *, split: bool = False) -> SmmuContext:
    ctx = smmu.context_init(name, split=split)
    ctx.bind(smmu)
    ctx.activate()
    return ctx


def map_one(ctx: SmmuContext, pa: int, va: int, size: int, attrs=RW_WB) -> None:
    ctx.update_start()
    ctx.map(pa, va, size, attrs)
    ctx.update_done()


def state(p: Platform, ctx: SmmuContext) -> tuple[object, ...]:
    """Everything a failing call must leave alone."""
    table = ctx.low_table
    return (
        table.snapshot() if table is not None else None,
        p.smmu0.snapshot(),
        p.tables.snapshot(),
        p.memory.digest(),
    )


def u32(p: Platform, pa: int) -> int:
    return p.memory.read_u32(pa)


# ARMv7 short-descriptor fields, written out from the ARM ARM (B3.5.1) for RW_WB:
# Normal write-back write-allocate is TEX=001 C=1 B=1; privileged RW, user none is
# AP[2:0]=001; not executable sets XN.
SECTION_RW_WB = (0b01 << 10) | (0b001 << 12) | (1 << 3) | (1 << 2) | (1 << 4) | 0b10
SUPERSECTION_RW_WB = SECTION_RW_WB | (1 << 18)
SMALL_RW_WB = (0b01 << 4) | (0b001 << 6) | (1 << 3) | (1 << 2) | 0b10 | 1
LARGE_RW_WB = (0b01 << 4) | (0b001 << 12) | (1 << 3) | (1 << 2) | (1 << 15) | 0b01


class TestSeedMapRule:
    def test_section_descriptor_bytes(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA + SZ_1M, 0x0030_0000, SZ_1M)
        assert u32(plat, ctx.ttbr0 + 3 * 4) == (PA + SZ_1M) | SECTION_RW_WB
        assert ctx.translate(0x0030_1234) == PA + SZ_1M + 0x1234

    def test_supersection_is_sixteen_identical_entries(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA, 0x0100_0000, SZ_16M)
        words = plat.memory.read_words(ctx.ttbr0 + 0x10 * 4, 18, 4).tolist()
        assert words[:16] == [PA | SUPERSECTION_RW_WB] * 16
        assert words[16:] == [0, 0]
        assert ctx.translate(0x01AB_CDEF) == PA + 0xAB_CDEF

    def test_small_page_goes_through_a_second_level_table(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA + 0x7000, 0x0020_5000, SZ_4K)
        l1 = u32(plat, ctx.ttbr0 + 2 * 4)
        assert l1 & 0b11 == 0b01  # page-table descriptor, domain 0, NS 0
        assert l1 & 0x3FC == 0
        l2_base = l1 & ~0x3FF
        assert u32(plat, l2_base + 5 * 4) == (PA + 0x7000) | SMALL_RW_WB
        assert ctx.translate(0x0020_5ABC) == PA + 0x7ABC

    def test_large_page_is_sixteen_second_level_entries(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA + 3 * SZ_64K, 0x0040_0000 + 2 * SZ_64K, SZ_64K)
        l2_base = u32(plat, ctx.ttbr0 + 4 * 4) & ~0x3FF
        words = plat.memory.read_words(l2_base + 32 * 4, 16, 4).tolist()
        assert words == [(PA + 3 * SZ_64K) | LARGE_RW_WB] * 16
        assert ctx.translate(0x0042_FFFF) == PA + 3 * SZ_64K + 0xFFFF

    def test_map_range_uses_largest_sizes_that_fit(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        size = SZ_16M + SZ_1M + SZ_64K + SZ_4K
        ctx.update_start()
        ctx.map_range(SZ_16M, PA, size, RW_WB)
        ctx.update_done()
        assert [m.size for m in ctx.low_table.mappings()] == [SZ_16M, SZ_1M, SZ_64K, SZ_4K]

    def test_map_range_with_forced_page_size(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        ctx.update_start()
        ctx.map_range(SZ_1M, PA, SZ_1M, RW_WB, page_size=SZ_64K)
        ctx.update_done()
        assert [m.size for m in ctx.low_table.mappings()] == [SZ_64K] * 16


class TestMisuseLeavesStateAlone:
    @pytest.mark.parametrize(
        ("pa", "va", "length", "error"),
        [
            (PA, 0x10_0000, 8192, UnsupportedSizeError),  # not one of 4K/64K/1M/16M
            (PA, 0x20_0000, 2 * SZ_1M, UnsupportedSizeError),
            (PA, 0x10_1000, SZ_64K, AlignmentError),  # VA not 64K aligned
            (PA + SZ_4K, 0x10_0000, SZ_1M, AlignmentError),  # PA not 1M aligned
            (PA, 0x0080_0000, SZ_16M, AlignmentError),  # VA not 16M aligned
            (PA, 0x10_0000, 0, InvalidArgumentError),
            (PA, -4096, SZ_4K, InvalidArgumentError),
            (PA, 0xFFFF_F000 + SZ_4K, SZ_4K, InvalidArgumentError),  # beyond 32-bit input
        ],
    )
    def test_bad_map_refused(
        self, plat: Platform, pa: int, va: int, length: int, error: type
    ) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA + SZ_16M, 0x0050_0000, SZ_4K)
        ctx.update_start()
        before = state(plat, ctx)
        with pytest.raises(error) as info:
            ctx.map(pa, va, length, RW_WB)
        assert state(plat, ctx) == before
        assert "ctx0" in str(info.value)

    def test_overlap_refused(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA, 0x0030_0000, SZ_1M)
        # warm the TLB so the snapshot has contents to protect
        ctx.translate_access(0x0030_0000, Access.READ)
        ctx.update_start()
        before = state(plat, ctx)
        with pytest.raises(AlreadyMappedError):
            ctx.map(PA + SZ_16M, 0x0030_4000, SZ_4K, RW_WB)
        with pytest.raises(AlreadyMappedError):
            ctx.map(PA + SZ_16M, 0, SZ_16M, RW_WB)
        assert state(plat, ctx) == before

    def test_unmap_of_unmapped_range_refused(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA, 0x0030_0000, SZ_1M)
        ctx.update_start()
        before = state(plat, ctx)
        with pytest.raises(NotMappedError):
            ctx.unmap(0x0040_0000, SZ_4K)
        with pytest.raises(NotMappedError):  # partly mapped
            ctx.unmap(0x0030_0000, 2 * SZ_1M)
        assert state(plat, ctx) == before

    def test_changes_outside_the_update_bracket_refused(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA, 0x0030_0000, SZ_1M)
        before = state(plat, ctx)
        with pytest.raises(StateError, match="update_start"):
            ctx.map(PA + SZ_1M, 0x0040_0000, SZ_1M, RW_WB)
        with pytest.raises(StateError, match="update_start"):
            ctx.map_range(0x0040_0000, PA + SZ_1M, SZ_1M, RW_WB)
        with pytest.raises(StateError, match="update_start"):
            ctx.unmap(0x0030_0000, SZ_1M)
        with pytest.raises(StateError):
            ctx.update_done()
        assert state(plat, ctx) == before
        ctx.update_start()
        with pytest.raises(StateError):
            ctx.update_start()

    @pytest.mark.parametrize("bank", [3, -1, True, "0", 1.0])
    def test_bad_bank_numbers(self, plat: Platform, bank: object) -> None:
        ctx = plat.smmu0.context_init("ctx0")
        before = plat.smmu0.snapshot()
        with pytest.raises(InvalidArgumentError):
            ctx.bind(plat.smmu0, bank)  # type: ignore[arg-type]
        assert plat.smmu0.snapshot() == before
        assert not ctx.is_bound

    def test_busy_bank_and_foreign_smmu_refused(self, plat: Platform) -> None:
        a = plat.smmu0.context_init("ctx0")
        b = plat.smmu0.context_init("ctx1")
        assert a.bind(plat.smmu0, 1) == 1
        a.activate()
        before = plat.smmu0.snapshot()
        with pytest.raises(BusyError, match=r"bank 1 is active for context 'ctx0'.*'ctx1'"):
            b.bind(plat.smmu0, 1)
        with pytest.raises(InvalidArgumentError, match="smmu0"):
            b.bind(plat.smmu1)
        with pytest.raises(StateError):
            a.bind(plat.smmu0, 2)
        assert plat.smmu0.snapshot() == before
        # with bank=None the lowest free bank is chosen
        assert b.bind(plat.smmu0) == 0
        c = plat.smmu0.context_init("ctx2")
        assert c.bind(plat.smmu0) == 2

    def test_lifecycle_misuse(self, plat: Platform) -> None:
        ctx = plat.smmu0.context_init("ctx0")
        ctx.activate()  # an unbound context binds a free bank first
        assert ctx.bank == 0 and ctx.is_active
        with pytest.raises(StateError):
            ctx.activate()
        with pytest.raises(BusyError):
            ctx.unbind()  # still active
        with pytest.raises(BusyError):
            ctx.deinit()
        ctx.deactivate()
        with pytest.raises(StateError):
            ctx.deactivate()
        ctx.unbind()
        with pytest.raises(StateError):
            ctx.unbind()
        ctx.deinit()
        with pytest.raises(NotFoundError):
            plat.smmu0.context("ctx0")
        with pytest.raises(StateError):
            ctx.bind(plat.smmu0)
        with pytest.raises(StateError):
            ctx.activate()
        with pytest.raises(InvalidArgumentError):
            plat.smmu0.context_init("")

    def test_duplicate_context_name_refused(self, plat: Platform) -> None:
        plat.smmu0.context_init("ctx0")
        with pytest.raises(InvalidArgumentError, match="ctx0"):
            plat.smmu0.context_init("ctx0")


class TestTopology:
    def test_seed_tree_and_lookup_by_name(self, plat: Platform) -> None:
        ctxs = [plat.smmu0.context_init(f"ctx{i}") for i in range(3)]
        ctx3 = plat.smmu1.context_init("ctx3")
        assert find_context([plat.smmu0, plat.smmu1], "ctx1") is ctxs[1]
        assert find_context([plat.smmu0, plat.smmu1], "ctx3") is ctx3
        assert plat.smmu0.context("ctx2") is ctxs[2]
        with pytest.raises(NotFoundError, match="vcodec"):
            find_context([plat.smmu0, plat.smmu1], "vcodec_a_mm1")
        with pytest.raises(NotFoundError):
            plat.smmu1.context("ctx0")

    def test_activation_programs_bank_registers(self, plat: Platform) -> None:
        ctx = plat.smmu0.context_init("ctx0")
        ctx.bind(plat.smmu0, 2)
        assert not plat.smmu0.bank_registers(2).enabled
        ctx.activate()
        regs = plat.smmu0.bank_registers(2)
        assert regs.enabled and regs.ttbr0 == ctx.ttbr0 and regs.ttbcr == 0
        assert ctx.is_active
        ctx.deactivate()
        assert not plat.smmu0.bank_registers(2).enabled
        assert not ctx.is_active

    def test_context_switch_on_one_bank(self, plat: Platform) -> None:
        """Muxing two virtual contexts on bank 0: the second sees none of the first."""
        a = plat.smmu0.context_init("a")
        b = plat.smmu0.context_init("b")
        a.bind(plat.smmu0, 0)
        a.activate()
        map_one(a, PA, 0x0010_0000, SZ_1M)
        assert a.translate_access(0x0010_0000, Access.READ).pa == PA
        a.deactivate()
        a.unbind()
        b.bind(plat.smmu0, 0)
        b.activate()
        assert plat.smmu0.bank_registers(0).ttbr0 == b.ttbr0 != a.ttbr0
        with pytest.raises(DeviceFaultError):
            b.translate_access(0x0010_0000, Access.READ)  # a's cached entry is gone
        assert b.stats().faults == 1


class TestSharedTlb:
    def _sweep(self, ctx: SmmuContext, base: int) -> None:
        for i in range(4):
            ctx.translate_access(base + i * SZ_4K, Access.READ)

    def _setup(self, p: Platform, ctx: SmmuContext, va: int, pa: int) -> None:
        ctx.update_start()
        ctx.map_range(va, pa, 4 * SZ_4K, RW_WB, page_size=SZ_4K)
        ctx.update_done()

    def test_contexts_of_one_smmu_evict_each_other(self) -> None:
        p = make_platform(TLBConfig(4, 4))  # 4 entries, fully associative, LRU
        a, b = active(p.smmu0, "a"), active(p.smmu0, "b")
        self._setup(p, a, 0x0010_0000, PA)
        self._setup(p, b, 0x0010_0000, PA + SZ_1M)
        self._sweep(a, 0x0010_0000)
        self._sweep(b, 0x0010_0000)  # fills the 4 entries, evicting all of a's
        self._sweep(a, 0x0010_0000)
        stats = a.stats().tlb
        assert (stats.lookups, stats.misses, stats.hits) == (8, 8, 0)
        assert p.smmu0.stats().evictions == 8
        assert p.smmu0.tlb.stats_for(a.bank).evictions == 4

    def test_contexts_of_different_smmus_do_not(self) -> None:
        p = make_platform(TLBConfig(4, 4))
        a, c = active(p.smmu0, "a"), active(p.smmu1, "ctx3")
        self._setup(p, a, 0x0010_0000, PA)
        self._setup(p, c, 0x0010_0000, PA + SZ_1M)
        self._sweep(a, 0x0010_0000)
        self._sweep(c, 0x0010_0000)
        self._sweep(a, 0x0010_0000)
        stats = a.stats().tlb
        assert (stats.lookups, stats.misses, stats.hits) == (8, 4, 4)
        assert p.smmu0.stats().evictions == 0


class TestSplitTables:
    def test_va31_selects_ttbr1(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0", split=True)
        ctx.update_start()
        ctx.map(PA, 0x0010_0000, SZ_1M, RW_WB)
        ctx.map(PA + SZ_16M, 0x8010_0000, SZ_1M, RW_WB)
        ctx.update_done()
        regs = plat.smmu0.bank_registers(ctx.bank)
        assert regs.ttbcr_n == 1 and regs.ttbr0 == ctx.ttbr0 and regs.ttbr1 == ctx.ttbr1
        # TTBCR.N=1: the TTBR0 first level is 2048 entries (8 KiB), 8 KiB aligned.
        assert ctx.low_table.table_pages() == [(ctx.ttbr0, 8192)]
        assert ctx.ttbr0 % 8192 == 0
        # The low table holds entry 1 (VA[30:20]); the TTBR1 table indexes VA[31:20].
        assert u32(plat, ctx.ttbr0 + 1 * 4) == PA | SECTION_RW_WB
        assert u32(plat, ctx.ttbr1 + 0x801 * 4) == (PA + SZ_16M) | SECTION_RW_WB
        assert u32(plat, ctx.ttbr1 + 1 * 4) == 0
        assert not plat.memory.read_array(ctx.ttbr0 + 8, 8192 - 8).any()
        # the hardware path follows the registers to the right table
        assert ctx.translate_access(0x0010_0040, Access.READ).pa == PA + 0x40
        assert ctx.translate_access(0x8010_0040, Access.READ).pa == PA + SZ_16M + 0x40
        assert ctx.translate(0x8010_0004) == PA + SZ_16M + 4

    def test_map_range_across_the_split_lands_in_both_tables(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0", split=True)
        ctx.update_start()
        ctx.map_range(0x8000_0000 - SZ_1M, PA, 2 * SZ_1M, RW_WB)
        ctx.update_done()
        assert [(m.va, m.pa) for m in ctx.low_table.mappings()] == [(0x7FF0_0000, PA)]
        assert [(m.va, m.pa) for m in ctx.high_table.mappings()] == [(0x8000_0000, PA + SZ_1M)]
        ctx.update_start()
        ctx.unmap(0x8000_0000 - SZ_1M, 2 * SZ_1M)
        ctx.update_done()
        assert not list(ctx.high_table.mappings()) and not list(ctx.low_table.mappings())

    def test_external_tables_and_disabled_half(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        low = PageTable(ARMV7S, plat.memory, plat.tables, va_bits=31)
        low.map(0x0010_0000, PA, SZ_1M, RW_WB)
        ctx.set_tables(low, None, split=True)
        regs = plat.smmu0.bank_registers(ctx.bank)
        assert (regs.ttbr0, regs.ttbcr_n, regs.pd0, regs.pd1) == (low.root, 1, False, True)
        assert ctx.translate_access(0x0010_0000, Access.READ).pa == PA
        with pytest.raises(DeviceFaultError, match="translation"):
            ctx.translate_access(0x8010_0000, Access.READ)

    def test_full_table_serves_as_the_split_low_half(self, plat: Platform) -> None:
        # With TTBCR.N=1 TTBR0 is indexed by VA[30:20]; for VA < 2 GiB that is the same
        # slot as VA[31:20] in a full 16 KiB table, so a full table works unchanged.
        ctx = active(plat.smmu0, "ctx0")
        full = PageTable(ARMV7S, plat.memory, plat.tables)
        high = PageTable(ARMV7S, plat.memory, plat.tables)
        full.map(0x7FF0_0000, PA, SZ_1M, RW_WB)  # the last slot below 2 GiB
        high.map(0x8000_0000, PA + SZ_1M, SZ_1M, RW_WB)
        ctx.set_tables(full, high, split=True)
        regs = plat.smmu0.bank_registers(ctx.bank)
        assert (regs.ttbr0, regs.ttbr1, regs.ttbcr_n) == (full.root, high.root, 1)
        assert ctx.translate_access(0x7FF0_0010, Access.READ).pa == PA + 0x10
        assert ctx.translate_access(0x8000_0010, Access.READ).pa == PA + SZ_1M + 0x10

    def test_set_tables_validates(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        full = PageTable(ARMV7S, plat.memory, plat.tables)
        v8 = PageTable(VMSAV8_4K, plat.memory, plat.tables)
        before = plat.smmu0.snapshot()
        reduced = PageTable(ARMV7S, plat.memory, plat.tables, va_bits=31)
        with pytest.raises(InvalidArgumentError, match="31"):
            ctx.set_tables(full, reduced)  # TTBR1 always walks a full first level
        with pytest.raises(InvalidArgumentError, match="31"):
            ctx.set_tables(reduced, None, split=False)  # whole-space mode needs 32 bits
        with pytest.raises(InvalidArgumentError):
            ctx.set_tables(v8)
        with pytest.raises(InvalidArgumentError):
            ctx.set_tables(None, None)
        assert plat.smmu0.snapshot() == before

    def test_v8_smmu_maps_its_own_sizes(self, plat: Platform) -> None:
        smmu = Smmu(
            "v8", plat.memory, plat.tables, fmt=VMSAV8_4K, context_banks=1, tlb=TLBConfig(8, 2)
        )
        ctx = active(smmu, "c")
        map_one(ctx, PA, 0x1_0020_0000, 2 * SZ_1M)  # a 2M block above 4 GiB of input
        assert ctx.translate_access(0x1_0030_0004, Access.READ).pa == PA + SZ_1M + 4
        ctx.update_start()
        with pytest.raises(UnsupportedSizeError, match="2M"):
            ctx.map(PA, 0, SZ_1M, RW_WB)  # 1M is a v7 size only

    def test_set_split_reshapes_own_tables(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        old_root = ctx.ttbr0
        ctx.set_split(True)
        regs = plat.smmu0.bank_registers(ctx.bank)
        assert (regs.ttbcr_n, regs.ttbr0, regs.ttbr1) == (1, ctx.ttbr0, ctx.ttbr1)
        assert ctx.low_table.table_pages() == [(ctx.ttbr0, 8192)]
        assert ctx.high_table.table_pages() == [(ctx.ttbr1, 16384)]
        assert old_root not in (ctx.ttbr0, ctx.ttbr1)  # new tables before the old are freed
        map_one(ctx, PA, 0x8000_0000, SZ_1M)
        before = (plat.smmu0.snapshot(), plat.tables.snapshot())
        with pytest.raises(BusyError, match="mappings"):
            ctx.set_split(False)
        assert (plat.smmu0.snapshot(), plat.tables.snapshot()) == before

    def test_shared_external_table_needs_invalidation_per_bank(self, plat: Platform) -> None:
        """One table (a VCM's) behind two contexts: each bank caches on its own."""
        a, b = active(plat.smmu0, "a"), active(plat.smmu0, "b")
        shared = PageTable(ARMV7S, plat.memory, plat.tables)
        shared.map(0x0010_0000, PA, SZ_4K, RW_WB)
        a.set_tables(shared)
        b.set_tables(shared)
        assert a.ttbr0 == b.ttbr0 == shared.root
        for ctx in (a, b):
            assert ctx.translate_access(0x0010_0000, Access.READ).pa == PA
        shared.unmap(0x0010_0000, SZ_4K)
        shared.map(0x0010_0000, PA + SZ_1M, SZ_4K, RW_WB)
        assert a.invalidate_tlb(0x0010_0000, SZ_4K) == 1
        assert a.translate_access(0x0010_0000, Access.READ).pa == PA + SZ_1M
        assert b.translate_access(0x0010_0000, Access.READ).pa == PA  # b not invalidated
        b.use_own_tables()
        assert b.ttbr0 != shared.root and plat.smmu0.bank_registers(b.bank).ttbr0 == b.ttbr0

    def test_own_table_passed_back_is_kept_and_freed_later(self, plat: Platform) -> None:
        """The VCMM pattern: keep the context's TTBR0 half, hand it a VCM's TTBR1 table."""
        ctx = active(plat.smmu0, "ctx0", split=True)
        own_low = ctx.low_table
        vcm = PageTable(ARMV7S, plat.memory, plat.tables)
        used = plat.tables.used_bytes
        ctx.set_tables(own_low, vcm, split=True)
        assert (ctx.low_table, ctx.high_table) == (own_low, vcm)
        assert plat.tables.used_bytes == used - 16384  # only the unused TTBR1 table freed
        assert own_low.walk(0).fault is FaultKind.TRANSLATION  # still alive and walkable
        map_one(ctx, PA, 0x0010_0000, SZ_1M)  # lands in the kept own TTBR0 table
        before = (plat.smmu0.snapshot(), plat.tables.snapshot())
        with pytest.raises(BusyError, match="mappings"):
            ctx.use_own_tables()
        assert (plat.smmu0.snapshot(), plat.tables.snapshot()) == before
        ctx.update_start()
        ctx.unmap(0x0010_0000, SZ_1M)
        ctx.update_done()
        ctx.use_own_tables()
        assert not ctx.split and ctx.low_table not in (own_low, vcm)
        assert plat.tables.used_bytes == used - 16384 - 8192 + 16384

    def test_split_refused_for_v8_smmu(self, plat: Platform) -> None:
        smmu = Smmu(
            "v8", plat.memory, plat.tables, fmt=VMSAV8_4K, context_banks=1, tlb=TLBConfig(8, 2)
        )
        with pytest.raises(InvalidArgumentError, match="TTBCR"):
            smmu.context_init("c", split=True)


class TestInvalidation:
    def test_change_invisible_until_update_done(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        dev = SmmuDevice("dev", ctx, plat.interconnect)
        plat.memory.write(PA, b"old page")
        plat.memory.write(PA + SZ_1M, b"new page")
        map_one(ctx, PA, 0x0010_0000, SZ_4K)
        assert dev.read(0x0010_0000, 8) == b"old page"  # translation now cached
        ctx.update_start()
        ctx.unmap(0x0010_0000, SZ_4K)
        ctx.map(PA + SZ_1M, 0x0010_0000, SZ_4K, RW_WB)
        assert ctx.translate(0x0010_0000) == PA + SZ_1M  # the table says new...
        assert dev.read(0x0010_0000, 8) == b"old page"  # ...the device still uses old
        assert ctx.update_done() == 1
        assert dev.read(0x0010_0000, 8) == b"new page"

    def test_partial_unmap_of_a_section_splits_it(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        map_one(ctx, PA, 0x0010_0000, SZ_1M)
        ctx.translate_access(0x0010_8000, Access.READ)
        ctx.update_start()
        ctx.unmap(0x0010_8000, SZ_4K)
        assert ctx.translate_access(0x0010_8000, Access.READ).pa == PA + 0x8000  # stale
        ctx.update_done()
        with pytest.raises(DeviceFaultError):
            ctx.translate_access(0x0010_8000, Access.READ)
        assert ctx.translate_access(0x0010_9000, Access.READ).pa == PA + 0x9000

    def test_update_done_invalidates_only_changed_ranges(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        ctx.update_start()
        ctx.map_range(0x0010_0000, PA, 4 * SZ_4K, RW_WB, page_size=SZ_4K)
        ctx.update_done()
        for i in range(4):
            ctx.translate_access(0x0010_0000 + i * SZ_4K, Access.READ)
        ctx.update_start()
        ctx.map(PA + SZ_1M, 0x0020_0000, SZ_4K, RW_WB)
        assert ctx.update_done() == 0  # nothing cached overlapped the new mapping
        assert len(plat.smmu0.tlb) == 4


class TestFaults:
    def test_handler_maps_on_demand_and_retries(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        dev = SmmuDevice("vcodec", ctx, plat.interconnect)
        plat.memory.write(PA + 0x3000, b"demand paged")
        seen: list[tuple[SmmuFault, object]] = []

        def handler(fault: SmmuFault, data: object) -> int:
            seen.append((fault, data))
            ctx.update_start()
            ctx.map(PA + 0x3000, fault.va & ~0xFFF, SZ_4K, RW_WB)
            ctx.update_done()
            return 1

        ctx.hook_interrupt(handler, "cookie")
        assert dev.read(0x0070_0000, 12) == b"demand paged"
        ((fault, data),) = seen
        assert data == "cookie"
        assert (fault.smmu, fault.context, fault.bank, fault.va) == ("smmu0", "ctx0", 0, 0x70_0000)
        assert (fault.access, fault.kind, fault.device) == (
            Access.READ,
            FaultKind.TRANSLATION,
            "vcodec",
        )
        stats = ctx.stats()
        assert (stats.faults, stats.retries, stats.terminated) == (1, 1, 0)

    def test_retry_replays_after_invalidating_the_entry(self, plat: Platform) -> None:
        """The handler fixes permissions in the table without any TLB maintenance; the
        retry must drop the stale read-only entry or the write would fault forever."""
        ctx = active(plat.smmu0, "ctx0")
        dev = SmmuDevice("dev", ctx, plat.interconnect)
        map_one(ctx, PA, 0x0010_0000, SZ_4K, RO_WB)
        kinds: list[FaultKind] = []

        def handler(fault: SmmuFault, data: object) -> int:
            kinds.append(fault.kind)
            ctx.low_table.set_attrs(0x0010_0000, SZ_4K, RW_WB)
            return 1

        ctx.hook_interrupt(handler)
        dev.write(0x0010_0010, b"ok")
        assert kinds == [FaultKind.PERMISSION]
        assert plat.memory.read(PA + 0x10, 2) == b"ok"

    def test_handler_terminates(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        dev = SmmuDevice("gpu", ctx, plat.interconnect)
        map_one(ctx, PA, 0x0010_0000, SZ_4K)
        ctx.hook_interrupt(lambda fault, data: 0)
        digest = plat.memory.digest()
        with pytest.raises(DeviceFaultError) as info:
            dev.write(0x0010_0800, bytes(SZ_4K))  # second page is unmapped
        err = info.value
        assert "gpu" in str(err) and "0x101000" in str(err) and "translation" in str(err)
        assert (err.device, err.address, err.kind) == ("gpu", 0x10_1000, FaultKind.TRANSLATION)
        assert plat.memory.digest() == digest  # the first half was not written either
        assert dev.faults == 1 and ctx.stats().terminated == 1

    def test_handler_that_always_retries_is_cut_off(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        calls = []
        ctx.hook_interrupt(lambda fault, data: calls.append(fault) or 1)
        with pytest.raises(DeviceFaultError, match="kept asking for retries"):
            ctx.translate_access(0x0010_0000, Access.WRITE, device="dsp")
        assert len(calls) == MAX_FAULT_RETRIES + 1
        assert ctx.stats().retries == MAX_FAULT_RETRIES

    def test_handler_with_bad_return_value_terminates(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        ctx.hook_interrupt(lambda fault, data: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(DeviceFaultError, match="returned None"):
            ctx.translate_access(0x0010_0000, Access.READ)

    def test_no_handler_warns_and_terminates(
        self, plat: Platform, caplog: pytest.LogCaptureFixture
    ) -> None:
        ctx = active(plat.smmu0, "ctx_stream")
        dev = SmmuDevice("vcodec_stream", ctx, plat.interconnect)
        with (
            caplog.at_level(logging.WARNING, logger="vcmm.hw.smmu"),
            pytest.raises(DeviceFaultError, match="vcodec_stream"),
        ):
            dev.read(0x0012_3400, 16)
        (record,) = caplog.records
        assert record.levelno == logging.WARNING
        message = record.getMessage()
        assert "ctx_stream" in message and "0x123400" in message and "translation" in message

    def test_hook_refuses_non_callable(self, plat: Platform) -> None:
        ctx = active(plat.smmu0, "ctx0")
        with pytest.raises(InvalidArgumentError):
            ctx.hook_interrupt(42)  # type: ignore[arg-type]

    def test_inactive_context_raises_state_error(self, plat: Platform) -> None:
        ctx = plat.smmu0.context_init("ctx0")
        dev = SmmuDevice("dev", ctx, plat.interconnect)
        with pytest.raises(StateError, match="not active"):
            dev.read(0, 4)
        ctx.bind(plat.smmu0)
        with pytest.raises(StateError, match="not active"):
            dev.write(0, b"x")
        assert dev.transactions == 0


class TestTranslate:
    def test_software_translate_works_without_activation(self, plat: Platform) -> None:
        ctx = plat.smmu0.context_init("ctx0")
        ctx.update_start()
        ctx.map(PA, 0x0100_0000, SZ_16M, RW_WB)
        ctx.update_done()
        assert ctx.translate(0x01FF_FFFF) == PA + SZ_16M - 1
        with pytest.raises(NotMappedError, match="0x2000000"):
            ctx.translate(0x0200_0000)
        assert len(plat.smmu0.tlb) == 0  # a software query never fills the TLB

    def test_batch_translation_matches_per_access(self) -> None:
        def run(batch: bool) -> tuple[object, ...]:
            p = make_platform(TLBConfig(8, 2))
            ctx = active(p.smmu0, "ctx0")
            ctx.update_start()
            ctx.map_range(0, PA, SZ_1M, RW_WB, page_size=SZ_4K)
            ctx.map(PA + SZ_16M, SZ_16M, SZ_1M, RW_WB)
            ctx.update_done()

            def handler(fault: SmmuFault, data: object) -> int:
                ctx.update_start()
                ctx.map(PA + SZ_16M * 2, fault.va & ~0xFFFFF, SZ_1M, RW_WB)
                ctx.update_done()
                return 1

            ctx.hook_interrupt(handler)
            rng = np.random.default_rng(7)
            vas = np.concatenate(
                [
                    rng.integers(0, SZ_1M, 300),
                    SZ_16M + rng.integers(0, SZ_1M, 100),
                    np.array([3 * SZ_16M + 5]),
                    rng.integers(0, SZ_1M, 100),
                ]
            ).astype(np.uint64)
            if batch:
                pas = ctx.translate_batch(vas, Access.READ).tolist()
            else:
                pas = [ctx.translate_access(int(v), Access.READ).pa for v in vas]
            return pas, p.smmu0.tlb.snapshot(), ctx.stats()

        assert run(batch=True) == run(batch=False)


def iter_banks(smmu: Smmu) -> Iterator[int]:
    yield from range(smmu.context_banks)


def test_counters_per_context_and_per_smmu(plat: Platform) -> None:
    a, b = active(plat.smmu0, "a"), active(plat.smmu0, "b")
    map_one(a, PA, 0, SZ_1M)
    map_one(b, PA + SZ_1M, 0, SZ_1M)
    da, db = SmmuDevice("da", a, plat.interconnect), SmmuDevice("db", b, plat.interconnect)
    da.write(0, bytes(100))
    db.read(0, 300)
    db.read(0x1000, 20)
    assert (a.stats().bytes_written, a.stats().bytes_read) == (100, 0)
    assert (b.stats().bytes_written, b.stats().bytes_read) == (0, 320)
    assert (a.stats().tlb.lookups, b.stats().tlb.lookups) == (1, 2)
    total = plat.smmu0.stats()
    assert total.lookups == sum(plat.smmu0.tlb.stats_for(i).lookups for i in iter_banks(plat.smmu0))
    assert total.lookups == 3
