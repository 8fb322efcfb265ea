"""ARMv7 LPAE long-descriptor stage 1 (Linux's ARM_32_LPAE_S1), checked bit for bit.

Expected descriptors are built from the bit positions written out below (ARM DDI 0406C
B3.6, the long-descriptor translation table format: descriptor formats, memory attribute
fields, TTBCR.T0SZ and the level a walk starts at; B4.1, the MAIR0/MAIR1 register
descriptions), never from the implementation's tables.
"""

from __future__ import annotations

import itertools

import pytest

from vcmm.attrs import FaultKind, MemType, PageAttrs
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, UnsupportedSizeError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, VMSAV8_4K, PageTable, decode_tables, walk_tables
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_2M, SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
OA_MASK = 0x0000_00FF_FFFF_F000  # output address bits [39:12]

# MAIR0 holds Attr0..Attr3, MAIR1 Attr4..Attr7.  Attr bytes: 0x00
# Strongly-ordered, 0x04 Device, 0x44 Normal outer/inner non-cacheable, 0xbb Normal
# WT non-transient R+W allocate, 0xff Normal WB non-transient R+W allocate, 0xee
# Normal WB non-transient R allocate.
ATTR_INDEX = {
    MemType.STRONGLY_ORDERED: 0,
    MemType.DEVICE: 1,
    MemType.NORMAL_NC: 2,
    MemType.NORMAL_WT: 3,
    MemType.NORMAL_WB_WA: 4,
    MemType.NORMAL_WB_NWA: 5,
}

# AP[2:1] (bits 7:6): 00 PL1 RW/PL0 none, 01 RW/RW, 10 PL1 RO/PL0 none, 11 RO/RO
AP21 = {(True, False): 0b00, (True, True): 0b01, (False, False): 0b10, (False, True): 0b11}


def leaf_desc(pa: int, a: PageAttrs, *, page: bool) -> int:
    # block/page: XN=bit54 (no execution at any PL), PXN=bit53, OA=bits39:12 (39:21 for
    #             2M, 39:30 for 1G), nG=bit11, AF=bit10, SH=bits9:8, AP[2:1]=bits7:6,
    #             NS=bit5, AttrIndx=bits4:2, type bits1:0 = 0b11 page (L3) / 0b01 block
    if not a.exec:
        pxn, xn = 1, 1
    elif a.user:
        pxn, xn = 1, 0  # user code, not executable at PL1
    else:
        pxn, xn = 0, 0  # kernel code: XN would forbid PL1 too
    return (
        xn << 54
        | pxn << 53
        | (pa & OA_MASK)
        | int(not a.global_) << 11
        | 1 << 10
        | (0b11 if a.shareable else 0b00) << 8
        | AP21[(a.write, a.user)] << 6
        | int(a.ns) << 5
        | ATTR_INDEX[a.memtype] << 2
        | (0b11 if page else 0b01)
    )


def table_desc(next_pa: int) -> int:
    # table: NSTable=63, APTable=62:61, XNTable=60, PXNTable=59 (all 0),
    #        next-level table address bits39:12, type bits1:0 = 0b11
    return (next_pa & OA_MASK) | 0b11


def ref_walk(mem: PhysicalMemory, root: int, va: int) -> tuple[int, int] | None:
    """Independent 3-level walk with T0SZ=0: (pa, block size) or None on a fault."""
    if va >> 32:
        return None
    table = root
    for level, shift, mask in ((1, 30, 0b11), (2, 21, 0x1FF), (3, 12, 0x1FF)):
        d = mem.read_u64(table + ((va >> shift) & mask) * 8)
        if not d & 1 or d & 0x0000_FF00_0000_0000:
            return None  # invalid, or output address bits [47:40] set
        if level < 3 and d & 0b10:
            table = d & OA_MASK
            continue
        if level == 3 and not d & 0b10:
            return None  # 0b01 at level 3 is reserved
        if not d & (1 << 10):
            return None  # access flag fault
        size = 1 << shift
        return (d & OA_MASK & ~(size - 1)) | (va & (size - 1)), size
    return None


def make(
    va_bits: int | None = None, *, keep_tables: bool = True
) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(ARMV7_LPAE, mem, tm, va_bits=va_bits, keep_tables=keep_tables)


def entry(mem: PhysicalMemory, table: int, va: int, shift: int) -> int:
    mask = 0b11 if shift == 30 else 0x1FF
    return mem.read_u64(table + ((va >> shift) & mask) * 8)


def l3_table(mem: PhysicalMemory, root: int, va: int) -> int:
    l2 = entry(mem, root, va, 30) & OA_MASK
    return entry(mem, l2, va, 21) & OA_MASK


ALL_ATTRS = [
    PageAttrs(read=True, write=w, user=u, memtype=m, shareable=s, global_=g, ns=ns, exec=x)
    for m, (w, u), s, g, ns, x in itertools.product(
        list(MemType), list(AP21), [False, True], [True, False], [False, True], [False, True]
    )
]

PAGE_VA, PAGE_PA = 0x1234_5000, 0x00AB_8765_4000
BLOCK2M_VA, BLOCK2M_PA = 0x8060_0000, 0x00FF_FFE0_0000  # the last 2M of the 40-bit space
BLOCK1G_VA, BLOCK1G_PA = 0xC000_0000, 0x0080_4000_0000


def test_mair_value_and_its_two_registers() -> None:
    assert ARMV7_LPAE.mair == 0x0000_EEFF_BB44_0400
    mair0, mair1 = ARMV7_LPAE.mair & 0xFFFF_FFFF, ARMV7_LPAE.mair >> 32
    assert (mair0, mair1) == (0xBB44_0400, 0x0000_EEFF)


def test_geometry_is_three_levels_of_4k_2m_1g() -> None:
    _, _, pt = make()
    assert pt.sizes == (SZ_1G, SZ_2M, SZ_4K)
    assert [(lv.level, lv.shift, lv.entries) for lv in pt.geometry.levels] == [
        (1, 30, 4),
        (2, 21, 512),
        (3, 12, 512),
    ]


def test_every_size_and_attribute_combination_bit_exact() -> None:
    for attrs in ALL_ATTRS:
        mem, _, pt = make()
        pt.map(PAGE_VA, PAGE_PA, SZ_4K, attrs)
        pt.map(BLOCK2M_VA, BLOCK2M_PA, SZ_2M, attrs)
        pt.map(BLOCK1G_VA, BLOCK1G_PA, SZ_1G, attrs)

        # 4K page: L1 -> L2 -> L3, each table descriptor pointing at a table page
        t = pt.root
        for shift in (30, 21):
            d = entry(mem, t, PAGE_VA, shift)
            assert d == table_desc(d & OA_MASK)
            t = d & OA_MASK
            assert (t, SZ_4K) in pt.table_pages()
        assert entry(mem, t, PAGE_VA, 12) == leaf_desc(PAGE_PA, attrs, page=True), attrs

        # 2M block: L1 -> block at L2
        t = entry(mem, pt.root, BLOCK2M_VA, 30) & OA_MASK
        assert entry(mem, t, BLOCK2M_VA, 21) == leaf_desc(BLOCK2M_PA, attrs, page=False)

        # 1G block: in the 4-entry first level itself
        assert entry(mem, pt.root, BLOCK1G_VA, 30) == leaf_desc(BLOCK1G_PA, attrs, page=False)

        for va, pa, size, level in (
            (PAGE_VA, PAGE_PA, SZ_4K, 3),
            (BLOCK2M_VA, BLOCK2M_PA, SZ_2M, 2),
            (BLOCK1G_VA, BLOCK1G_PA, SZ_1G, 1),
        ):
            offset = size - 8 - (size >> 2)
            w = pt.walk(va + offset)
            assert (w.pa, w.page_size, w.level, w.attrs, w.reads) == (
                pa + offset,
                size,
                level,
                attrs,
                level,
            )


# -- worked examples ------------------------------------------------------------------------


def test_page_worked_example() -> None:
    mem, _, pt = make()
    pt.map(0x1000, 0x8_1234_5000, SZ_4K, PageAttrs(shareable=True))
    # XN|PXN (bits54,53) | OA 0x8_12345000 | AF (0x400) | SH=11 (0x300) | AP=00
    # | AttrIndx=4 (0x10) | type 0b11
    assert mem.read_u64(l3_table(mem, pt.root, 0x1000) + 8) == 0x0060_0008_1234_5713


def test_2m_block_worked_example() -> None:
    mem, _, pt = make()
    attrs = PageAttrs(
        write=False, user=True, exec=True, memtype=MemType.DEVICE, global_=False, ns=True
    )
    pt.map(0x4020_0000, 0xA0_4020_0000, SZ_2M, attrs)
    l2 = mem.read_u64(pt.root + 1 * 8) & OA_MASK
    # PXN (bit53) | OA 0xA0_40200000 | nG (0x800) | AF (0x400) | AP=11 (0xC0) | NS (0x20)
    # | AttrIndx=1 (0x4) | type 0b01
    assert mem.read_u64(l2 + 1 * 8) == 0x0020_00A0_4020_0CE5


def test_1g_block_worked_example() -> None:
    mem, _, pt = make()
    user_data = PageAttrs(user=True, memtype=MemType.NORMAL_NC, shareable=True)
    pt.map(SZ_1G * 3, 0xFF_C000_0000, SZ_1G, user_data)
    # XN|PXN (bits54,53) | OA 0xFF_C0000000 | AF (0x400) | SH=11 (0x300) | AP=01 (0x40)
    # | AttrIndx=2 (0x8) | type 0b01
    assert mem.read_u64(pt.root + 3 * 8) == 0x0060_00FF_C000_0749
    pt.unmap(SZ_1G * 3, SZ_1G)
    kernel_code = PageAttrs(exec=True, memtype=MemType.NORMAL_NC, shareable=True)
    pt.map(SZ_1G * 3, 0xFF_C000_0000, SZ_1G, kernel_code)
    # executable at PL1: neither XN nor PXN (VMSAv8-64 would set UXN here); AP=00
    assert mem.read_u64(pt.root + 3 * 8) == 0x0000_00FF_C000_0709


def test_execute_bits_differ_from_vmsav8() -> None:
    kernel_code = PageAttrs(exec=True)
    words = {}
    for fmt in (ARMV7_LPAE, VMSAV8_4K):
        mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
        pt = PageTable(fmt, mem, TableMemory(mem, AddressRange(RAM, SZ_4M)))
        pt.map(0, RAM, SZ_4K, kernel_code)
        words[fmt.name] = [e for e in mem.read_words(RAM, 4 * 512, 8).tolist() if e & 0x400]
    # bit 54 is XN (every PL) in LPAE, UXN (EL0 only) in VMSAv8-64
    assert words[ARMV7_LPAE.name] == [RAM | 0x413]
    assert words[VMSAV8_4K.name] == [1 << 54 | RAM | 0x413]


def test_pxn_decodes_as_not_executable_unless_user_accessible() -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs(exec=True))
    l3 = l3_table(mem, pt.root, 0)
    mem.write_u64(l3, mem.read_u64(l3) | 1 << 53)  # PXN, PL0 has no access (AP[1]=0)
    a = pt.walk(0).attrs
    assert a is not None and not a.exec
    mem.write_u64(l3, mem.read_u64(l3) | 1 << 6)  # AP[1]=1: PL0 may fetch
    a = pt.walk(0).attrs
    assert a is not None and a.exec and a.user
    mem.write_u64(l3, mem.read_u64(l3) | 1 << 54)  # XN: nobody may
    a = pt.walk(0).attrs
    assert a is not None and not a.exec


# -- output addresses: 40 bits -------------------------------------------------------------


def test_output_address_beyond_40_bits_is_refused() -> None:
    _, tm, pt = make()
    before, tm_before = pt.snapshot(), tm.snapshot()
    with pytest.raises(InvalidArgumentError, match="below 0x10000000000"):
        pt.map(0, 1 << 40, SZ_2M, PageAttrs())
    with pytest.raises(InvalidArgumentError, match="0x10000000000"):
        pt.map(0, (1 << 40) - SZ_2M, 2 * SZ_2M, PageAttrs())  # the second block crosses
    assert pt.snapshot() == before and tm.snapshot() == tm_before


def test_table_memory_must_lie_below_40_bits() -> None:
    high = PhysicalMemory([MemoryRegion("hi", AddressRange(1 << 40, SZ_4M))])
    with pytest.raises(InvalidArgumentError, match="0x10000000000"):
        PageTable(ARMV7_LPAE, high, TableMemory(high, AddressRange(1 << 40, SZ_4M)))


@pytest.mark.parametrize(("bit", "level", "reads"), [(40, 3, 3), (47, 3, 3)])
def test_leaf_with_output_bits_above_40_is_an_address_size_fault(
    bit: int, level: int, reads: int
) -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs())
    l3 = l3_table(mem, pt.root, 0)
    mem.write_u64(l3, mem.read_u64(l3) | 1 << bit)
    w = pt.walk(0)
    assert (w.fault, w.level, w.reads, w.pa) == (FaultKind.ADDRESS_SIZE, level, reads, None)
    assert list(pt.mappings()) == []
    assert ref_walk(mem, pt.root, 0) is None


def test_table_descriptor_with_bits_above_40_faults_where_it_is_read() -> None:
    mem, _, pt = make()
    pt.map(SZ_1G, RAM, SZ_4K, PageAttrs())
    mem.write_u64(pt.root + 8, mem.read_u64(pt.root + 8) | 1 << 44)
    w = pt.walk(SZ_1G)
    assert (w.fault, w.level, w.reads) == (FaultKind.ADDRESS_SIZE, 1, 1)
    assert list(decode_tables(ARMV7_LPAE, mem, pt.root)) == []


def test_bit_40_is_an_address_bit_in_vmsav8_not_in_lpae() -> None:
    """The same corruption means PA[40] to VMSAv8-64's 48-bit output."""
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    pt = PageTable(VMSAV8_4K, mem, TableMemory(mem, AddressRange(RAM, SZ_4M)))
    pt.map(0, RAM, SZ_4K, PageAttrs())
    l1 = mem.read_u64(pt.root) & OA_MASK
    l3 = l3_table(mem, l1, 0)
    mem.write_u64(l3, mem.read_u64(l3) | 1 << 40)
    assert pt.walk(0).pa == (1 << 40) | RAM


# -- refusals and faults ------------------------------------------------------------------------


def test_no_read_is_refused_naming_the_format() -> None:
    _, tm, pt = make()
    before, tm_before = pt.snapshot(), tm.snapshot()
    with pytest.raises(InvalidArgumentError, match="LPAE"):
        pt.map(0, RAM, SZ_4K, PageAttrs(read=False, write=False))
    assert pt.snapshot() == before and tm.snapshot() == tm_before


@pytest.mark.parametrize("size", [SZ_4K * 16, 1 << 20, 1 << 24])
def test_short_descriptor_sizes_are_not_lpae_sizes(size: int) -> None:
    _, tm, pt = make()
    before, tm_before = pt.snapshot(), tm.snapshot()
    with pytest.raises(UnsupportedSizeError, match="1G, 2M, 4K"):
        pt.map(0, RAM, size, PageAttrs(), page_size=size)
    assert pt.snapshot() == before and tm.snapshot() == tm_before


def test_access_flag_clear_faults() -> None:
    mem, _, pt = make()
    pt.map(0x20_0000, 0x9000_0000, SZ_2M, PageAttrs())
    l2 = mem.read_u64(pt.root) & OA_MASK
    mem.write_u64(l2 + 8, mem.read_u64(l2 + 8) & ~(1 << 10))
    w = pt.walk(0x20_1234)
    assert (w.fault, w.level, w.reads, w.pa) == (FaultKind.ACCESS_FLAG, 2, 2, None)


def test_input_beyond_32_bits_is_an_address_size_fault() -> None:
    _, _, pt = make()
    w = pt.walk(1 << 32)
    assert (w.fault, w.reads, w.level) == (FaultKind.ADDRESS_SIZE, 0, 1)
    with pytest.raises(InvalidArgumentError, match="32-bit"):
        pt.map((1 << 32) - SZ_4K, RAM, 2 * SZ_4K, PageAttrs())


@pytest.mark.parametrize(("level", "reads"), [(1, 1), (2, 2), (3, 3)])
def test_translation_fault_level_and_reads(level: int, reads: int) -> None:
    _, _, pt = make()
    # build tables down to the level above the probe, leaving the probe's slot empty
    va = SZ_1G
    if level >= 2:
        pt.map(va + SZ_1G - SZ_2M, 0x4000_0000, SZ_2M, PageAttrs())
        va += SZ_1G - 2 * SZ_2M
    if level >= 3:
        pt.map(va + SZ_2M - SZ_4K, 0x4000_0000, SZ_4K, PageAttrs())
        va += SZ_2M - 2 * SZ_4K
    w = pt.walk(va)
    assert (w.fault, w.level, w.reads) == (FaultKind.TRANSLATION, level, reads)


def test_reserved_l3_encoding_faults() -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs())
    l3 = l3_table(mem, pt.root, 0)
    mem.write_u64(l3, mem.read_u64(l3) & ~0b10)  # 0b01 at level 3 is reserved
    assert pt.walk(0).fault is FaultKind.TRANSLATION


def test_attrindx_decodes_through_the_mair() -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs())
    l3 = l3_table(mem, pt.root, 0)
    for memtype, index in ATTR_INDEX.items():
        mem.write_u64(l3, (mem.read_u64(l3) & ~(0b111 << 2)) | index << 2)
        a = pt.walk(0).attrs
        assert a is not None and a.memtype is memtype


# -- narrower input spaces (TTBCR.T0SZ) -----------------------------------------------------------


def test_t0sz_1_has_a_2_entry_first_level() -> None:
    mem, _, pt = make(va_bits=31)
    assert pt.geometry.levels[0].entries == 2
    pt.map(SZ_1G, 0x4000_0000, SZ_1G, PageAttrs())
    assert mem.read_u64(pt.root + 8) == leaf_desc(0x4000_0000, PageAttrs(), page=False)
    assert pt.walk(SZ_1G + 0x1234).pa == 0x4000_1234
    assert pt.walk(2 * SZ_1G).fault is FaultKind.ADDRESS_SIZE


def test_t0sz_2_starts_at_level_2_without_1g_blocks() -> None:
    mem, _, pt = make(va_bits=30)
    assert pt.table_pages() == [(pt.root, SZ_4K)]
    assert pt.sizes == (SZ_2M, SZ_4K)
    entries = pt.map(0, 0x4000_0000, SZ_1G, PageAttrs())
    assert {e.size for e in entries} == {SZ_2M}  # the root is the level-2 table
    assert mem.read_u64(pt.root + 511 * 8) == leaf_desc(0x7FE0_0000, PageAttrs(), page=False)
    w = pt.walk(SZ_1G - 1)
    assert (w.pa, w.level, w.reads) == (0x7FFF_FFFF, 2, 1)


def test_t0sz_7_has_a_16_entry_second_level() -> None:
    mem, _, pt = make(va_bits=25)
    assert pt.geometry.levels[0].table_bytes == 128
    pt.map(15 * SZ_2M, 0x4000_0000, SZ_4K, PageAttrs())
    assert mem.read_u64(pt.root + 15 * 8) & 0b11 == 0b11
    assert pt.walk(15 * SZ_2M).pa == 0x4000_0000
    assert pt.walk(16 * SZ_2M).fault is FaultKind.ADDRESS_SIZE


# -- walk agrees with an independent walker and with a dump --------------------------------------


def test_walk_agrees_with_reference_walker_and_raw_root() -> None:
    mem, _, pt = make()
    pt.map(SZ_1G - SZ_2M - SZ_4K, RAM - SZ_2M - SZ_4K, SZ_1G + 2 * SZ_2M + 3 * SZ_4K, PageAttrs())
    probes = list(range(SZ_1G - SZ_4M, 2 * SZ_1G + SZ_4M, 0x3_3337))
    for va in probes:
        w = pt.walk(va)
        ref = ref_walk(mem, pt.root, va)
        if ref is None:
            assert w.fault is FaultKind.TRANSLATION
        else:
            assert (w.pa, w.page_size) == ref
        assert walk_tables(ARMV7_LPAE, mem, pt.root, va) == w


# -- splits, set_attrs, undo (the operations of test_pgtable_ops, LPAE paths) --------------------

PAGE_RW = leaf_desc(0, PageAttrs(), page=True)
BLOCK_RW = leaf_desc(0, PageAttrs(), page=False)


def words(mem: PhysicalMemory, pa: int, count: int) -> list[int]:
    return [int(x) for x in mem.read_words(pa, count, 8)]


def test_1g_block_in_the_first_level_splits_two_levels() -> None:
    mem, tm, pt = make(keep_tables=False)
    baseline = tm.used_bytes
    pt.map(SZ_1G, 0x40_0000_0000, SZ_1G, PageAttrs())
    assert len(pt.table_pages()) == 1  # the block lives in the 4-entry root
    hole = SZ_1G + 3 * SZ_2M + 5 * SZ_4K
    pt.unmap(hole, SZ_4K)
    l1 = mem.read_u64(pt.root + 8)
    assert l1 == table_desc(l1)  # the block became a table descriptor
    l2_words = words(mem, l1 & OA_MASK, 512)
    for i, d in enumerate(l2_words):
        if i != 3:
            assert d == (0x40_0000_0000 + i * SZ_2M) | BLOCK_RW
    l3 = l2_words[3] & OA_MASK
    assert l2_words[3] == table_desc(l3)
    assert words(mem, l3, 512) == [
        0 if i == 5 else (0x40_0000_0000 + 3 * SZ_2M + i * SZ_4K) | PAGE_RW for i in range(512)
    ]
    assert pt.walk(hole).fault is FaultKind.TRANSLATION
    assert pt.walk(hole + SZ_4K).pa == 0x40_0000_0000 + 3 * SZ_2M + 6 * SZ_4K
    pt.unmap(SZ_1G, hole - SZ_1G)
    pt.unmap(hole + SZ_4K, 2 * SZ_1G - hole - SZ_4K)
    assert pt.table_pages() == [(pt.root, 64)] and tm.used_bytes == baseline


def test_set_attrs_rewrites_the_sh_field_of_blocks_and_pages() -> None:
    mem, _, pt = make()
    pt.map(SZ_2M, 0x9020_0000, SZ_2M + SZ_4K, PageAttrs())
    pt.set_attrs(SZ_2M, SZ_2M + SZ_4K, PageAttrs(shareable=True))
    l2 = mem.read_u64(pt.root) & OA_MASK
    assert mem.read_u64(l2 + 8) == 0x9020_0000 | BLOCK_RW | 0b11 << 8
    l3 = mem.read_u64(l2 + 16) & OA_MASK
    assert mem.read_u64(l3) == 0x9040_0000 | PAGE_RW | 0b11 << 8


def test_out_of_table_memory_mid_map_undoes_everything() -> None:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, 3 * SZ_4K))  # root page + one L2 + one L3
    pt = PageTable(ARMV7_LPAE, mem, tm)
    pt.map(0, RAM, SZ_4K, PageAttrs())
    assert tm.free_bytes == 0
    before = (pt.snapshot(), tm.snapshot(), mem.digest())
    # the first run fits in the existing L3 table; the second needs a new one
    with pytest.raises(OutOfMemoryError, match="map: out of table memory"):
        pt.map(SZ_2M - 2 * SZ_4K, RAM + SZ_4M, 4 * SZ_4K, PageAttrs())
    assert (pt.snapshot(), tm.snapshot(), mem.digest()) == before
    assert pt.walk(SZ_2M - SZ_4K).fault is FaultKind.TRANSLATION
