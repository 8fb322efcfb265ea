"""VMSAv8-64 stage 1, 4 KiB granule, checked bit for bit against the ARM ARM layouts.

Expected descriptors are built from the bit positions written out below (ARM DDI 0487
D8.3 descriptor formats, D8.4 attribute fields, MAIR_EL1 attribute encodings), never
from the implementation's tables.
"""

from __future__ import annotations

import itertools

import pytest

from vcmm.attrs import FaultKind, MemType, PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import MAIR, VMSAV8_4K, PageTable, walk_tables
from vcmm.hw.pgtable.armv8 import memtype_from_mair_byte
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_2M, SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
OA_MASK = 0x0000_FFFF_FFFF_F000  # output address bits [47:12]

# MAIR attribute bytes (Linux-like): Attr0 0x00 Device-nGnRnE, Attr1 0x04 Device-nGnRE,
# Attr2 0x44 Normal inner/outer NC, Attr3 0xbb Normal WT non-transient RW-alloc,
# Attr4 0xff Normal WB non-transient RW-alloc, Attr5 0xee Normal WB non-transient R-alloc.
ATTR_INDEX = {
    MemType.STRONGLY_ORDERED: 0,
    MemType.DEVICE: 1,
    MemType.NORMAL_NC: 2,
    MemType.NORMAL_WT: 3,
    MemType.NORMAL_WB_WA: 4,
    MemType.NORMAL_WB_NWA: 5,
}

# AP[2:1] (bits 7:6): 00 EL1 RW/EL0 none, 01 RW/RW, 10 EL1 RO/EL0 none, 11 RO/RO
AP21 = {(True, False): 0b00, (True, True): 0b01, (False, False): 0b10, (False, True): 0b11}


def leaf_desc(pa: int, a: PageAttrs, *, page: bool) -> int:
    # block/page: UXN=bit54, PXN=bit53, OA=bits47:12 (47:21 for 2M, 47:30 for 1G),
    #             nG=bit11, AF=bit10, SH=bits9:8, AP[2:1]=bits7:6, NS=bit5,
    #             AttrIndx=bits4:2, type bits1:0 = 0b11 page (L3) / 0b01 block (L1, L2)
    if not a.exec:
        pxn, uxn = 1, 1
    elif a.user:
        pxn, uxn = 1, 0  # user code: never executable at EL1
    else:
        pxn, uxn = 0, 1  # kernel code
    return (
        uxn << 54
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
    # table: NSTable=63, APTable=62:61, UXNTable=60, PXNTable=59 (all 0),
    #        next-level table address bits47:12, type bits1:0 = 0b11
    return (next_pa & OA_MASK) | 0b11


def ref_walk(mem: PhysicalMemory, root: int, va: int) -> tuple[int, int] | None:
    """Independent 4-level walk: (pa, block size) or None on a fault."""
    table = root
    for level, shift in ((0, 39), (1, 30), (2, 21), (3, 12)):
        d = mem.read_u64(table + ((va >> shift) & 0x1FF) * 8)
        if not d & 1:
            return None
        if level < 3 and d & 0b10:
            table = d & OA_MASK
            continue
        if level == 0 or (level == 3 and not d & 0b10):
            return None  # no L0 blocks; 0b01 at L3 is reserved
        if not d & (1 << 10):
            return None  # access flag fault
        size = 1 << shift
        return (d & OA_MASK & ~(size - 1)) | (va & (size - 1)), size
    return None


def make(va_bits: int | None = None) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(VMSAV8_4K, mem, tm, va_bits=va_bits)


def entry(mem: PhysicalMemory, table: int, va: int, shift: int) -> int:
    return mem.read_u64(table + ((va >> shift) & 0x1FF) * 8)


ALL_ATTRS = [
    PageAttrs(read=True, write=w, user=u, memtype=m, shareable=s, global_=g, ns=ns, exec=x)
    for m, (w, u), s, g, ns, x in itertools.product(
        list(MemType), list(AP21), [False, True], [True, False], [False, True], [False, True]
    )
]

PAGE_VA, PAGE_PA = 0x0000_7F12_3456_7000, 0x0000_8765_4321_0000
BLOCK2M_VA, BLOCK2M_PA = 0x0000_0012_3440_0000, 0x0000_0ABC_DEE0_0000
BLOCK1G_VA, BLOCK1G_PA = 0x0000_4000_C000_0000, 0x0000_FFFF_C000_0000


def test_mair_value() -> None:
    # Attr0 in bits 7:0 ... Attr5 in bits 47:40
    assert MAIR == 0x0000_EEFF_BB44_0400
    assert VMSAV8_4K.mair == MAIR


@pytest.mark.parametrize("attrs", ALL_ATTRS, ids=lambda a: a.short().replace(" ", "_"))
def test_every_size_and_attribute_combination_bit_exact(attrs: PageAttrs) -> None:
    mem, _, pt = make()
    pt.map(PAGE_VA, PAGE_PA, SZ_4K, attrs)
    pt.map(BLOCK2M_VA, BLOCK2M_PA, SZ_2M, attrs)
    pt.map(BLOCK1G_VA, BLOCK1G_PA, SZ_1G, attrs)

    # 4K page: L0 -> L1 -> L2 -> L3, each table descriptor pointing at a table page
    t = pt.root
    for shift in (39, 30, 21):
        d = entry(mem, t, PAGE_VA, shift)
        assert d == table_desc(d & OA_MASK)
        t = d & OA_MASK
        assert (t, SZ_4K) in pt.table_pages()
    assert entry(mem, t, PAGE_VA, 12) == leaf_desc(PAGE_PA, attrs, page=True)

    # 2M block: L0 -> L1 -> block at L2
    t = pt.root
    for shift in (39, 30):
        t = entry(mem, t, BLOCK2M_VA, shift) & OA_MASK
    assert entry(mem, t, BLOCK2M_VA, 21) == leaf_desc(BLOCK2M_PA, attrs, page=False)

    # 1G block: L0 -> block at L1
    t = entry(mem, pt.root, BLOCK1G_VA, 39) & OA_MASK
    assert entry(mem, t, BLOCK1G_VA, 30) == leaf_desc(BLOCK1G_PA, attrs, page=False)

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
            level + 1,
        )


# -- worked examples ------------------------------------------------------------------------


def test_page_worked_example() -> None:
    mem, _, pt = make()
    pt.map(0x1000, 0x8_1234_5000, SZ_4K, PageAttrs(shareable=True))
    l1 = mem.read_u64(pt.root) & OA_MASK
    l2 = mem.read_u64(l1) & OA_MASK
    l3 = mem.read_u64(l2) & OA_MASK
    # UXN|PXN (bits54,53) | OA 0x8_12345000 | AF (0x400) | SH=11 (0x300) | AP=00
    # | AttrIndx=4 (0x10) | type 0b11
    assert mem.read_u64(l3 + 8) == 0x0060_0008_1234_5713


def test_2m_block_worked_example() -> None:
    mem, _, pt = make()
    attrs = PageAttrs(
        write=False, user=True, exec=True, memtype=MemType.DEVICE, global_=False, ns=True
    )
    pt.map(0x4020_0000, 0x4020_0000, SZ_2M, attrs)
    l1 = mem.read_u64(pt.root) & OA_MASK
    l2 = mem.read_u64(l1 + 1 * 8) & OA_MASK
    # PXN (bit53) | OA 0x40200000 | nG (0x800) | AF (0x400) | AP=11 (0xC0) | NS (0x20)
    # | AttrIndx=1 (0x4) | type 0b01
    assert mem.read_u64(l2 + 1 * 8) == 0x0020_0000_4020_0CE5


def test_1g_block_worked_example() -> None:
    mem, _, pt = make()
    user_data = PageAttrs(user=True, memtype=MemType.NORMAL_NC, shareable=True)
    pt.map(SZ_1G * 3, 0x1_C000_0000, SZ_1G, user_data)
    l1 = mem.read_u64(pt.root) & OA_MASK
    # UXN|PXN (bits54,53) | OA 0x1C0000000 | AF (0x400) | SH=11 (0x300) | AP=01 (0x40)
    # | AttrIndx=2 (0x8) | type 0b01
    assert mem.read_u64(l1 + 3 * 8) == 0x0060_0001_C000_0749
    pt.unmap(SZ_1G * 3, SZ_1G)
    kernel_code = PageAttrs(exec=True, memtype=MemType.NORMAL_NC, shareable=True)
    pt.map(SZ_1G * 3, 0x1_C000_0000, SZ_1G, kernel_code)
    l1 = mem.read_u64(pt.root) & OA_MASK  # the emptied L1 table was freed and reallocated
    # exec at EL1 only: UXN (bit54) without PXN; AP=00
    assert mem.read_u64(l1 + 3 * 8) == 0x0040_0001_C000_0709


# -- refusals and faults ------------------------------------------------------------------------


def test_no_read_is_refused_naming_the_format() -> None:
    _, tm, pt = make()
    before, tm_before = pt.snapshot(), tm.snapshot()
    with pytest.raises(InvalidArgumentError, match="VMSAv8"):
        pt.map(0, RAM, SZ_4K, PageAttrs(read=False, write=False))
    assert pt.snapshot() == before and tm.snapshot() == tm_before


def test_output_address_beyond_48_bits_is_refused() -> None:
    _, _, pt = make()
    before = pt.snapshot()
    with pytest.raises(InvalidArgumentError, match="below 0x1000000000000"):
        pt.map(0, 1 << 48, SZ_2M, PageAttrs())
    assert pt.snapshot() == before


def test_access_flag_clear_faults() -> None:
    mem, _, pt = make()
    pt.map(0x20_0000, 0x9000_0000, SZ_2M, PageAttrs())
    l1 = mem.read_u64(pt.root) & OA_MASK
    l2 = mem.read_u64(l1) & OA_MASK
    mem.write_u64(l2 + 8, mem.read_u64(l2 + 8) & ~(1 << 10))
    w = pt.walk(0x20_1234)
    assert (w.fault, w.level, w.reads, w.pa) == (FaultKind.ACCESS_FLAG, 2, 3, None)


def test_input_beyond_48_bits_is_an_address_size_fault() -> None:
    _, _, pt = make()
    w = pt.walk(1 << 48)
    assert (w.fault, w.reads, w.level) == (FaultKind.ADDRESS_SIZE, 0, 0)
    with pytest.raises(InvalidArgumentError, match="48-bit"):
        pt.map((1 << 48) - SZ_4K, RAM, 2 * SZ_4K, PageAttrs())


@pytest.mark.parametrize(("level", "reads"), [(0, 1), (1, 2), (2, 3), (3, 4)])
def test_translation_fault_level_and_reads(level: int, reads: int) -> None:
    _, _, pt = make()
    # build tables down to the level above the probe, leaving the probe's slot empty
    va = 0x0000_1000_0000_0000
    if level >= 1:
        pt.map(va + (1 << 39) - SZ_1G, 0x4000_0000, SZ_1G, PageAttrs())
        va += (1 << 39) - 2 * SZ_1G
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
    l3 = mem.read_u64(mem.read_u64(mem.read_u64(pt.root) & OA_MASK) & OA_MASK) & OA_MASK
    mem.write_u64(l3, mem.read_u64(l3) & ~0b10)  # 0b01 at level 3 is reserved
    assert pt.walk(0).fault is FaultKind.TRANSLATION


@pytest.mark.parametrize(
    ("byte", "memtype"),
    [
        (0x00, MemType.STRONGLY_ORDERED),  # Device-nGnRnE
        (0x04, MemType.DEVICE),  # Device-nGnRE
        (0x08, MemType.DEVICE),  # Device-nGRE
        (0x0C, MemType.DEVICE),  # Device-GRE
        (0x44, MemType.NORMAL_NC),
        (0xBB, MemType.NORMAL_WT),  # WT non-transient, R+W allocate
        (0xAA, MemType.NORMAL_WT),  # WT non-transient, R allocate
        (0x88, MemType.NORMAL_WT),  # WT non-transient, no allocate
        (0xFF, MemType.NORMAL_WB_WA),
        (0x77, MemType.NORMAL_WB_WA),  # WB transient R+W allocate
        (0xEE, MemType.NORMAL_WB_NWA),  # WB non-transient R allocate
        (0xCC, MemType.NORMAL_WB_NWA),  # WB non-transient no allocate
        (0x4F, MemType.NORMAL_WB_WA),  # outer NC, inner WB-RWA: inner policy decides
    ],
)
def test_mair_byte_decoding(byte: int, memtype: MemType) -> None:
    assert memtype_from_mair_byte(byte) is memtype


def test_attrindx_decodes_through_the_mair() -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs(memtype=MemType.NORMAL_WB_WA))
    l3 = mem.read_u64(mem.read_u64(mem.read_u64(pt.root) & OA_MASK) & OA_MASK) & OA_MASK
    for index, memtype in enumerate(
        [
            MemType.STRONGLY_ORDERED,
            MemType.DEVICE,
            MemType.NORMAL_NC,
            MemType.NORMAL_WT,
            MemType.NORMAL_WB_WA,
            MemType.NORMAL_WB_NWA,
        ]
    ):
        mem.write_u64(l3, (mem.read_u64(l3) & ~(0b111 << 2)) | index << 2)
        a = pt.walk(0).attrs
        assert a is not None and a.memtype is memtype


def test_outer_shareable_decodes_as_shareable() -> None:
    mem, _, pt = make()
    pt.map(0, RAM, SZ_4K, PageAttrs())
    l3 = mem.read_u64(mem.read_u64(mem.read_u64(pt.root) & OA_MASK) & OA_MASK) & OA_MASK
    mem.write_u64(l3, mem.read_u64(l3) | 0b10 << 8)
    a = pt.walk(0).attrs
    assert a is not None and a.shareable


# -- narrower input spaces (T0SZ) ------------------------------------------------------------------


def test_39_bit_space_starts_at_level_1() -> None:
    mem, _, pt = make(va_bits=39)
    assert pt.table_pages() == [(pt.root, SZ_4K)]
    pt.map(SZ_1G * 5, 0x4000_0000, SZ_1G, PageAttrs())
    # the root is the level-1 table: 1G block at index 5
    assert mem.read_u64(pt.root + 5 * 8) == leaf_desc(0x4000_0000, PageAttrs(), page=False)
    w = pt.walk(SZ_1G * 5 + 0x1234)
    assert (w.pa, w.level, w.reads) == (0x4000_1234, 1, 1)
    assert pt.walk(1 << 39).fault is FaultKind.ADDRESS_SIZE


def test_42_bit_space_has_an_8_entry_level_0() -> None:
    mem, _, pt = make(va_bits=42)
    assert pt.table_pages() == [(pt.root, 64)]
    va = 7 << 39
    pt.map(va, 0x4000_0000, SZ_4K, PageAttrs())
    assert mem.read_u64(pt.root + 7 * 8) & 0b11 == 0b11
    assert pt.walk(va).pa == 0x4000_0000
    assert pt.walk(8 << 39).fault is FaultKind.ADDRESS_SIZE


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
        assert walk_tables(VMSAV8_4K, mem, pt.root, va) == w
