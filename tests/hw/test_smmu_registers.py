"""SMMU registers (issue 17 item 3): the register window and the fault registers.

Bit positions and offsets are written out here from the ARM SMMUv2 architecture
specification (IHI 0062D): the address space (8.1: SMMU_CBn_BASE = SMMU_BASE +
(NUMPAGE + n) * PAGESIZE), SMMU_IDR1 (PAGESIZE bit 31, NUMPAGENDXB [30:28], NUMCB
[7:0]), SMMU_CBn_SCTLR (M 0, CFRE 5, CFIE 6, CFCFG 7), SMMU_CBn_FSR at 0x58 (TF 1, AFF
2, PF 3, EF 4, ASF 7, Format [10:9], SS 30, MULTI 31; write 1 to clear), SMMU_CBn_FAR
at 0x60 (64 bits) and SMMU_CBn_FSYNR0 at 0x68 (PLVL [1:0], WNR 4, PNU 5, IND 6, PTWF
10).  The module's own constants are deliberately not imported.
"""

from __future__ import annotations

import pytest

from vcmm.attrs import RO_WB, RW_WB, Access, FaultKind
from vcmm.errors import DeviceFaultError, InvalidArgumentError, StateError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTableFormat
from vcmm.hw.smmu import Smmu, SmmuContext, SmmuFault
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_64K, SZ_256M

RAM = 0x8000_0000
PA = RAM + 0x0400_0000
#: Arm Juno's PCIe MMU-401 (its devicetree: reg = <0x0 0x2b500000 0x0 0x10000>).
JUNO_BASE, JUNO_SIZE = 0x2B50_0000, 0x1_0000

FSR, FAR, FSYNR0, SCTLR, TTBR0, TCR = 0x58, 0x60, 0x68, 0x00, 0x20, 0x30
TF, AFF, PF, EF, ASF = 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 7
SS, MULTI = 1 << 30, 1 << 31
WNR, PNU, IND, PTWF = 1 << 4, 1 << 5, 1 << 6, 1 << 10


def make_smmu(fmt: PageTableFormat = ARMV7S, banks: int = 3, **kw: object) -> Smmu:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    return Smmu("smmu0", memory, tables, fmt=fmt, context_banks=banks, tlb=TLBConfig(16, 4), **kw)


def active(smmu: Smmu, name: str = "ctx", bank: int | None = None) -> SmmuContext:
    ctx = smmu.context_init(name)
    ctx.bind(smmu, bank)
    ctx.activate()
    return ctx


def map_one(ctx: SmmuContext, pa: int, va: int, size: int, attrs=RW_WB) -> None:
    ctx.update_start()
    ctx.map(pa, va, size, attrs)
    ctx.update_done()


def fault(ctx: SmmuContext, va: int, access: Access = Access.READ) -> None:
    with pytest.raises(DeviceFaultError):
        ctx.translate_access(va, access)


# -- the register window ------------------------------------------------------------------


def test_window_layout_follows_numpage_and_pagesize() -> None:
    smmu = make_smmu(banks=3, register_base=JUNO_BASE, numpage=8)
    assert smmu.register_base == JUNO_BASE
    assert smmu.register_window == AddressRange(JUNO_BASE, JUNO_SIZE)  # the DT reg size
    assert [smmu.bank_base(n) for n in range(3)] == [0x2B50_8000, 0x2B50_9000, 0x2B50_A000]
    # IDR1: PAGESIZE 0 (4K), NUMPAGENDXB 2 (NUMPAGE = 2**3), NUMCB 3
    assert smmu.read_register(JUNO_BASE + 0x24) == (2 << 28) | 3


def test_default_numpage_is_the_smallest_that_holds_the_banks() -> None:
    smmu = make_smmu(banks=3)
    assert smmu.numpage == 4 and smmu.register_page_size == SZ_4K
    assert smmu.bank_base(2) == smmu.register_base + (4 + 2) * SZ_4K
    big = make_smmu(banks=1, register_page_size=SZ_64K, register_base=0x1000_0000)
    assert big.numpage == 2 and big.register_window == AddressRange(0x1000_0000, 4 * SZ_64K)
    assert big.read_register(0x1000_0024) == (1 << 31) | (0 << 28) | 1
    assert big.bank_base(0) == 0x1000_0000 + 2 * SZ_64K


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"register_base": 0x2B50_1000, "numpage": 8}, "aligned to the window size 0x10000"),
        ({"register_base": -4}, "register base -4 must be >= 0"),
        ({"register_base": "0x1000"}, "not an integer"),
        ({"register_page_size": 8192}, "8192 must be 4 KiB or 64 KiB"),
        ({"numpage": 6}, "NUMPAGE 6 must be a power of two"),
        ({"numpage": 512}, "NUMPAGE 512 must be a power of two from 2 to 256"),
        ({"numpage": 2}, "NUMPAGE 2 leaves no page for some of its 3 context banks"),
        ({"register_base": 1 << 48}, "ends above 2\\*\\*48"),
    ],
)
def test_bad_windows_are_refused(kw: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        make_smmu(banks=3, **kw)


def test_configuration_registers_read_as_programmed() -> None:
    smmu = make_smmu()
    ctx = active(smmu, bank=1)
    sctlr = (1 << 0) | (1 << 5) | (1 << 6) | (1 << 7)  # M, CFRE, CFIE, CFCFG (stall)
    assert ctx.read_register(SCTLR) == sctlr
    assert ctx.read_register(TTBR0) == ctx.ttbr0
    assert ctx.read_register(TCR) == smmu.bank_registers(1).ttbcr
    page = smmu.bank_base(1)
    assert smmu.read_register(page + TTBR0) == ctx.ttbr0
    ctx.deactivate()
    assert smmu.read_register(page + SCTLR) == 0


def test_register_access_misuse_is_refused_and_changes_nothing() -> None:
    smmu = make_smmu()
    ctx = active(smmu)
    fault(ctx, 0x0070_0000)
    base, page = smmu.register_base, smmu.bank_base(0)
    before = smmu.snapshot()
    cases = [
        (lambda: smmu.read_register(base - 4), "outside its register window"),
        (lambda: smmu.read_register(base + 2 * 4 * SZ_4K), "outside its register window"),
        (lambda: smmu.read_register(page + 0x59), "not 4-byte aligned"),
        (lambda: smmu.read_register(page + 0x50), "0x50 is not modelled.*FSR 0x58"),
        (lambda: smmu.read_register(base + 0x20), "global register page 0 offset 0x20"),
        (lambda: smmu.write_register(base + 0x24, 0), "read-only"),
        (lambda: smmu.write_register(page + SCTLR, 0), "SCTLR is programmed by activate"),
        (lambda: smmu.write_register(page + TTBR0, 0), "TTBR0 is programmed"),
        (lambda: smmu.write_register(page + FSR, 1 << 32), "does not fit 32 bits"),
        (lambda: smmu.write_register(page + FSR, -1), "must be >= 0"),
        (lambda: smmu.write_register(page + FAR + 4, 1 << 32), "does not fit 32 bits"),
        (lambda: ctx.read_register(SZ_4K), "beyond the 0x1000-byte bank page"),
        (lambda: ctx.write_register("0x58", 0), "offset '0x58' is not an integer"),
    ]
    for call, match in cases:
        with pytest.raises(InvalidArgumentError, match=match):
            call()
    assert smmu.snapshot() == before
    other = smmu.context_init("unbound")
    with pytest.raises(StateError, match="not bound to a bank"):
        other.read_register(FSR)


def test_pages_of_unimplemented_banks_read_zero_and_ignore_writes() -> None:
    smmu = make_smmu(banks=3)  # NUMPAGE 4: the page of bank 3 exists, the bank does not
    page3 = smmu.register_base + (4 + 3) * SZ_4K
    before = smmu.snapshot()
    assert smmu.read_register(page3 + FSR) == 0
    smmu.write_register(page3 + FSR, 0xFFFF_FFFF)
    assert smmu.snapshot() == before


# -- faults set the registers --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "format_bits", "level"),
    [(ARMV7S, 0b00, 1), (ARMV7_LPAE, 0b01, 1), (VMSAV8_4K, 0b10, 0)],
)
def test_translation_fault_records_fsr_far_fsynr0(
    fmt: PageTableFormat, format_bits: int, level: int
) -> None:
    smmu = make_smmu(fmt)
    ctx = active(smmu)
    assert ctx.read_register(FSR) == format_bits << 9  # Format reads the scheme, no fault
    fault(ctx, 0x0070_0ABC, Access.WRITE)
    assert ctx.read_register(FSR) == TF | format_bits << 9
    assert ctx.read_register(FAR) == 0x0070_0ABC
    # the first level has no entry: PLVL is the walk's first level, a write, privileged
    assert ctx.read_register(FSYNR0) == level | WNR | PNU
    status = ctx.fault_status
    assert status is not None and status.kind is FaultKind.TRANSLATION and status.write


def test_permission_fault_names_the_leaf_level_and_a_read() -> None:
    smmu = make_smmu()
    ctx = active(smmu)
    map_one(ctx, PA, 0x0010_0000, SZ_4K, RO_WB)
    fault(ctx, 0x0010_0010, Access.WRITE)
    assert ctx.read_register(FSR) == PF
    assert ctx.read_register(FSYNR0) == 2 | WNR | PNU  # a small page: level 2
    ctx.write_register(FSR, PF)
    map_one(ctx, PA + SZ_1M, 0x0030_0000, SZ_1M, RO_WB)
    fault(ctx, 0x0030_0000, Access.EXEC)  # RO_WB is not executable: a section, level 1
    assert ctx.read_register(FSR) == PF
    assert ctx.read_register(FSYNR0) == 1 | PNU | IND  # an instruction fetch, not a write


def test_a_second_fault_only_sets_multi_until_cleared_by_writing_ones() -> None:
    smmu = make_smmu()
    ctx = active(smmu)
    fault(ctx, 0x0070_0000)
    fault(ctx, 0x0080_0000, Access.WRITE)
    assert ctx.read_register(FSR) == TF | MULTI
    assert ctx.read_register(FAR) == 0x0070_0000  # the first fault's details stay
    assert ctx.read_register(FSYNR0) == 1 | PNU
    ctx.write_register(FSR, 0)  # zeros change nothing
    assert ctx.read_register(FSR) == TF | MULTI
    ctx.write_register(FSR, MULTI)
    assert ctx.read_register(FSR) == TF
    ctx.write_register(FSR, ctx.read_register(FSR))  # the driver's clear: write it back
    assert ctx.read_register(FSR) == 0
    fault(ctx, 0x0090_0000, Access.WRITE)
    assert (ctx.read_register(FSR), ctx.read_register(FAR)) == (TF, 0x0090_0000)


def test_format_bits_cannot_be_cleared() -> None:
    smmu = make_smmu(ARMV7_LPAE)
    ctx = active(smmu)
    ctx.write_register(FSR, 0xFFFF_FFFF)
    assert ctx.read_register(FSR) == 0b01 << 9


def test_far_is_64_bits_and_reads_by_halves() -> None:
    smmu = make_smmu(VMSAV8_4K)
    ctx = active(smmu)
    fault(ctx, 0x12_3456_7000)
    page = smmu.bank_base(0)
    assert smmu.read_register(page + FAR) == 0x12_3456_7000
    assert smmu.read_register(page + FAR + 4) == 0x12  # the upper word
    smmu.write_register(page + FAR + 4, 0xAB)
    assert ctx.read_register(FAR) == 0xAB_3456_7000


def test_an_external_fault_on_a_table_walk_sets_ef_and_ptwf() -> None:
    smmu = make_smmu()
    ctx = active(smmu)
    hole = 0x4000_0000  # no memory there
    smmu.memory.write_u32(ctx.ttbr0 + 4 * 0x7, hole | 0b01)  # L1 entry -> L2 table in a hole
    fault(ctx, 0x0070_0000)
    assert ctx.read_register(FSR) == EF
    assert ctx.read_register(FSYNR0) == 2 | PNU | PTWF  # the read of the level-2 table failed
    status = ctx.fault_status
    assert status is not None and status.walk_fault and status.kind is FaultKind.BUS


def test_the_handler_sees_the_transaction_stalled_and_can_clear() -> None:
    smmu = make_smmu()
    ctx = active(smmu)
    seen: list[tuple[int, int, SmmuFault]] = []

    def handler(event: SmmuFault, data: object) -> int:
        seen.append((ctx.read_register(FSR), ctx.read_register(FAR), event))
        ctx.write_register(FSR, ctx.read_register(FSR))  # acknowledge, as a driver does
        ctx.update_start()
        ctx.map(PA, event.va & ~0xFFF, SZ_4K, RW_WB)
        ctx.update_done()
        return 1

    ctx.hook_interrupt(handler)
    assert ctx.translate_access(0x0070_0123, Access.READ).pa == PA + 0x123
    ((fsr, far, event),) = seen
    assert fsr == TF | SS and far == 0x0070_0123
    assert event.registers is not None and event.registers.fsr == TF | SS
    assert ctx.read_register(FSR) == 0  # the resume cleared SS; the handler cleared TF
    ctx.write_register(FSR, SS)
    assert ctx.read_register(FSR) == 0


def test_without_a_handler_the_fault_stays_recorded_after_deactivation() -> None:
    smmu = make_smmu()
    ctx = active(smmu, bank=2)
    fault(ctx, 0x0070_0000)
    ctx.deactivate()
    assert smmu.fault_status(2).fsr == TF  # no stall without a handler; kept for a post-mortem
    assert "TF" in smmu.fault_status(2).describe()
    ctx.unbind()
    assert ctx.fault_status is None
