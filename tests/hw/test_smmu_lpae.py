"""An SMMU given the ARMv7 LPAE format, as SMMUv1 (MMU-400/401 on Arm's Juno) walks.

Descriptors are written out from the ARM ARM (DDI 0406C B3.6, long-descriptor formats
and attributes) for RW_WB: AttrIndx 4 (MAIR byte 0xff, bits 4:2), AF bit 10, AP[2:1]=00,
SH 00, not executable sets XN (bit 54) and PXN (bit 53); type bits 01 for a block, 11
for a page or a table.  The TTBCR written on activation is the long-descriptor one
(B4.1, TTBCR with EAE=1): EAE bit 31, T0SZ 0 so TTBR0 translates all 32 input bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vcmm.attrs import RW_WB, Access, FaultKind
from vcmm.errors import DeviceFaultError, InvalidArgumentError, UnsupportedSizeError
from vcmm.hw.bus import Interconnect, SmmuDevice
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable
from vcmm.hw.smmu import Smmu, SmmuContext, SmmuFault
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16M, SZ_256M

RAM = 0x8000_0000
#: A bank of RAM above 4 GiB: only a 40-bit output address reaches it.
HIGH = 0x8_8000_0000
PA = RAM + 0x0400_0000

BLOCK_RW_WB = (1 << 54) | (1 << 53) | (1 << 10) | (4 << 2) | 0b01
PAGE_RW_WB = (1 << 54) | (1 << 53) | (1 << 10) | (4 << 2) | 0b11
OA_MASK = 0x0000_00FF_FFFF_F000


@dataclass
class Board:
    memory: PhysicalMemory
    tables: TableMemory
    smmu: Smmu
    interconnect: Interconnect


def make_board(tlb: TLBConfig | None = None) -> Board:
    memory = PhysicalMemory(
        [
            MemoryRegion("ddr", AddressRange(RAM, SZ_256M)),
            MemoryRegion("ddr-high", AddressRange(HIGH, SZ_16M)),
        ]
    )
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu(
        "mmu401", memory, tables, fmt=ARMV7_LPAE, context_banks=2, tlb=tlb or TLBConfig(16, 4)
    )
    return Board(memory, tables, smmu, Interconnect(memory))


@pytest.fixture
def board() -> Board:
    return make_board()


def active(smmu: Smmu, name: str) -> SmmuContext:
    ctx = smmu.context_init(name)
    ctx.bind(smmu)
    ctx.activate()
    return ctx


def map_one(ctx: SmmuContext, pa: int, va: int, size: int) -> None:
    ctx.update_start()
    ctx.map(pa, va, size, RW_WB)
    ctx.update_done()


def test_activation_programs_a_long_descriptor_ttbcr(board: Board) -> None:
    ctx = board.smmu.context_init("ctx0")
    ctx.bind(board.smmu, 1)
    ctx.activate()
    regs = board.smmu.bank_registers(1)
    assert regs.enabled and regs.eae and regs.ttbr0 == ctx.ttbr0
    assert regs.ttbcr == 0x8000_0000  # EAE, T0SZ=T1SZ=0, EPD0=EPD1=0
    assert ctx.low_table is not None and ctx.low_table.geometry.levels[0].entries == 4
    ctx.deactivate()
    assert board.smmu.bank_registers(1).ttbcr == 0 and not board.smmu.bank_registers(1).enabled


def test_blocks_and_pages_in_memory_and_a_device_moving_bytes(board: Board) -> None:
    ctx = active(board.smmu, "ctx0")
    map_one(ctx, RAM, 0x4000_0000, SZ_1G)  # first level, slot 1
    map_one(ctx, HIGH, 0x0020_0000, SZ_2M)  # above 4 GiB of output
    map_one(ctx, PA + 0x7000, 0x0000_3000, SZ_4K)
    mem = board.memory
    assert mem.read_u64(ctx.ttbr0 + 1 * 8) == RAM | BLOCK_RW_WB
    l2 = mem.read_u64(ctx.ttbr0) & OA_MASK
    assert mem.read_u64(ctx.ttbr0) == l2 | 0b11
    assert mem.read_u64(l2 + 1 * 8) == HIGH | BLOCK_RW_WB
    l3 = mem.read_u64(l2) & OA_MASK
    assert mem.read_u64(l3 + 3 * 8) == (PA + 0x7000) | PAGE_RW_WB

    dev = SmmuDevice("hdlcd0", ctx, board.interconnect)
    dev.write(0x0020_0010, b"40-bit output")
    assert mem.read(HIGH + 0x10, 13) == b"40-bit output"
    mem.write(RAM + 0x0123_4560, b"1G block")
    assert dev.read(0x4123_4560, 8) == b"1G block"
    sizes = [ctx.translate_access(va, Access.READ).page_size for va in (0x4000_0000, 0x20_0000)]
    assert sizes == [SZ_1G, SZ_2M]
    assert ctx.translate_access(0x3ABC, Access.READ).pa == PA + 0x7ABC


def test_one_tlb_entry_covers_a_1g_block(board: Board) -> None:
    ctx = active(board.smmu, "ctx0")
    map_one(ctx, RAM, 0x4000_0000, SZ_1G)
    first = ctx.translate_access(0x4000_0000, Access.READ)
    last = ctx.translate_access(0x7FFF_FFFF, Access.READ)
    assert (first.hit, last.hit, last.pa) == (False, True, RAM + SZ_1G - 1)
    assert ctx.stats().tlb.misses == 1


def test_short_descriptor_sizes_are_refused(board: Board) -> None:
    ctx = active(board.smmu, "ctx0")
    before = (board.smmu.snapshot(), board.tables.snapshot(), board.memory.digest())
    ctx.update_start()
    for size in (SZ_1M, SZ_16M):
        with pytest.raises(UnsupportedSizeError, match="4K, 2M, 1G"):
            ctx.map(PA, 0, size, RW_WB)
    ctx.update_done()
    assert (board.smmu.snapshot(), board.tables.snapshot(), board.memory.digest()) == before


def test_split_and_foreign_tables_are_refused(board: Board) -> None:
    with pytest.raises(InvalidArgumentError, match="TTBCR"):
        board.smmu.context_init("split", split=True)
    ctx = active(board.smmu, "ctx0")
    before = board.smmu.snapshot()
    for fmt in (ARMV7S, VMSAV8_4K):
        table = PageTable(fmt, board.memory, board.tables)
        with pytest.raises(InvalidArgumentError, match="LPAE"):
            ctx.set_tables(table)
    assert board.smmu.snapshot() == before
    lpae = PageTable(ARMV7_LPAE, board.memory, board.tables)
    ctx.set_tables(lpae)
    assert board.smmu.bank_registers(ctx.bank).ttbr0 == lpae.root


def test_output_bits_above_40_are_an_address_size_fault_for_the_handler(board: Board) -> None:
    ctx = active(board.smmu, "ctx0")
    map_one(ctx, PA, 0x5000, SZ_4K)
    l3 = board.memory.read_u64(board.memory.read_u64(ctx.ttbr0) & OA_MASK) & OA_MASK
    good = board.memory.read_u64(l3 + 5 * 8)
    board.memory.write_u64(l3 + 5 * 8, good | 1 << 41)
    seen: list[SmmuFault] = []

    def handler(fault: SmmuFault, data: object) -> int:
        seen.append(fault)
        board.memory.write_u64(l3 + 5 * 8, good)  # repair the descriptor, then retry
        return 1

    ctx.hook_interrupt(handler)
    assert ctx.translate_access(0x5008, Access.READ).pa == PA + 8
    assert [(f.kind, f.level, f.va) for f in seen] == [(FaultKind.ADDRESS_SIZE, 3, 0x5008)]


def test_partial_unmap_of_a_2m_block_is_invisible_until_update_done(board: Board) -> None:
    ctx = active(board.smmu, "ctx0")
    map_one(ctx, HIGH, SZ_2M, SZ_2M)
    assert ctx.translate_access(SZ_2M + 5 * SZ_4K, Access.READ).pa == HIGH + 5 * SZ_4K
    ctx.update_start()
    ctx.unmap(SZ_2M + 5 * SZ_4K, SZ_4K)  # splits the block into a level-3 table
    assert ctx.translate_access(SZ_2M + 5 * SZ_4K, Access.READ).hit  # stale 2M entry
    ctx.update_done()
    with pytest.raises(DeviceFaultError, match="translation"):
        ctx.translate_access(SZ_2M + 5 * SZ_4K, Access.READ)
    assert ctx.translate_access(SZ_2M + 6 * SZ_4K, Access.READ).page_size == SZ_4K


def test_batch_translation_matches_per_access() -> None:
    def run(batch: bool) -> tuple[object, ...]:
        b = make_board(TLBConfig(8, 2))
        ctx = active(b.smmu, "ctx0")
        ctx.update_start()
        ctx.map_range(0, PA, SZ_2M, RW_WB, page_size=SZ_4K)
        ctx.map(HIGH, SZ_1G, SZ_2M, RW_WB)
        ctx.update_done()

        def handler(fault: SmmuFault, data: object) -> int:
            ctx.update_start()
            ctx.map(HIGH + SZ_2M, fault.va & ~(SZ_2M - 1), SZ_2M, RW_WB)
            ctx.update_done()
            return 1

        ctx.hook_interrupt(handler)
        rng = np.random.default_rng(11)
        vas = np.concatenate(
            [
                rng.integers(0, SZ_2M, 300),
                SZ_1G + rng.integers(0, SZ_2M, 100),
                np.array([3 * SZ_1G + 5]),
                rng.integers(0, SZ_2M, 100),
            ]
        ).astype(np.uint64)
        if batch:
            pas = ctx.translate_batch(vas, Access.READ).tolist()
        else:
            pas = [ctx.translate_access(int(v), Access.READ).pa for v in vas]
        return pas, b.smmu.tlb.snapshot(), ctx.stats()

    batch, single = run(batch=True), run(batch=False)
    assert batch == single
    pas = batch[0]
    assert isinstance(pas, list) and pas[400] == HIGH + SZ_2M + 5  # the on-demand block
