"""ARMv7 short-descriptor tables, checked bit for bit against the ARM ARM layouts.

Every expected descriptor here is built from the bit positions written out in the
comments (ARM DDI 0406C B3.5.1 short-descriptor formats, B3.8.2 TEX/C/B with TEX remap
off, B3.7.1 AP[2:0] with SCTLR.AFE=0), never from the implementation's tables.
"""

from __future__ import annotations

import itertools

import pytest

from vcmm.attrs import FaultKind, MemType, PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, PageTable, walk_tables
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1K, SZ_1M, SZ_4K, SZ_4M, SZ_16K, SZ_16M, SZ_64K, SZ_256M

RAM = 0x8000_0000

# -- the manual, written out ------------------------------------------------------------------

# B3.8.2, TEX remap disabled: (TEX[2:0], C, B)
TEXCB = {
    MemType.STRONGLY_ORDERED: (0b000, 0, 0),
    MemType.DEVICE: (0b000, 0, 1),  # shareable device
    MemType.NORMAL_WT: (0b000, 1, 0),  # outer and inner write-through, no write-allocate
    MemType.NORMAL_WB_NWA: (0b000, 1, 1),  # outer and inner write-back, no write-allocate
    MemType.NORMAL_NC: (0b001, 0, 0),  # outer and inner non-cacheable
    MemType.NORMAL_WB_WA: (0b001, 1, 1),  # outer and inner write-back, write-allocate
}

# B3.7.1, AP[2:0] with AFE=0: (read, write, user) -> AP[2:0]
AP = {
    (False, False, False): 0b000,  # no access
    (True, True, False): 0b001,  # PL1 RW, PL0 no access
    (True, True, True): 0b011,  # full access
    (True, False, False): 0b101,  # PL1 RO, PL0 no access
    (True, False, True): 0b111,  # PL1 RO, PL0 RO
}


def _common(a: PageAttrs) -> tuple[int, int, int, int, int, int, int, int, int]:
    tex, c, b = TEXCB[a.memtype]
    ap = AP[(a.read, a.write, a.user)]
    return (
        tex,
        c,
        b,
        ap >> 2,
        ap & 0b11,
        int(not a.exec),
        int(a.shareable),
        int(not a.global_),
        int(a.ns),
    )


def section_desc(pa: int, a: PageAttrs) -> int:
    # section: base[31:20]=PA[31:20], NS=bit19, bit18=0, nG=bit17, S=bit16, AP2=bit15,
    #          TEX=bits14:12, AP1:0=bits11:10, domain=bits8:5 (0), XN=bit4, C=bit3, B=bit2,
    #          type bits1:0=0b10
    tex, c, b, ap2, ap10, xn, s, ng, ns = _common(a)
    return (
        (pa & 0xFFF0_0000)
        | ns << 19
        | ng << 17
        | s << 16
        | ap2 << 15
        | tex << 12
        | ap10 << 10
        | xn << 4
        | c << 3
        | b << 2
        | 0b10
    )


def supersection_desc(pa: int, a: PageAttrs) -> int:
    # supersection: PA[31:24]=bits31:24, PA[35:32]=bits23:20, NS=bit19, bit18=1, nG=bit17,
    #               S=bit16, AP2=bit15, TEX=bits14:12, AP1:0=bits11:10, PA[39:36]=bits8:5,
    #               XN=bit4, C=bit3, B=bit2, type bits1:0=0b10
    tex, c, b, ap2, ap10, xn, s, ng, ns = _common(a)
    return (
        (pa & 0xFF00_0000)
        | ((pa >> 32) & 0xF) << 20
        | ns << 19
        | 1 << 18
        | ng << 17
        | s << 16
        | ap2 << 15
        | tex << 12
        | ap10 << 10
        | ((pa >> 36) & 0xF) << 5
        | xn << 4
        | c << 3
        | b << 2
        | 0b10
    )


def page_table_desc(l2_pa: int, ns: bool) -> int:
    # page table: base[31:10], bit9 impl (0), domain=bits8:5 (0), SBZ bit4, NS=bit3,
    #             PXN=bit2 (0), type bits1:0=0b01
    return (l2_pa & 0xFFFF_FC00) | int(ns) << 3 | 0b01


def large_desc(pa: int, a: PageAttrs) -> int:
    # large page: base[31:16], XN=bit15, TEX=bits14:12, nG=bit11, S=bit10, AP2=bit9,
    #             SBZ bits8:6, AP1:0=bits5:4, C=bit3, B=bit2, type bits1:0=0b01
    tex, c, b, ap2, ap10, xn, s, ng, _ = _common(a)
    return (
        (pa & 0xFFFF_0000)
        | xn << 15
        | tex << 12
        | ng << 11
        | s << 10
        | ap2 << 9
        | ap10 << 4
        | c << 3
        | b << 2
        | 0b01
    )


def small_desc(pa: int, a: PageAttrs) -> int:
    # small page: base[31:12], nG=bit11, S=bit10, AP2=bit9, TEX=bits8:6, AP1:0=bits5:4,
    #             C=bit3, B=bit2, bit1=1, XN=bit0
    tex, c, b, ap2, ap10, xn, s, ng, _ = _common(a)
    return (
        (pa & 0xFFFF_F000)
        | ng << 11
        | s << 10
        | ap2 << 9
        | tex << 6
        | ap10 << 4
        | c << 3
        | b << 2
        | 0b10
        | xn
    )


def ref_walk(mem: PhysicalMemory, root: int, va: int, va_bits: int = 32) -> tuple[int, int] | None:
    """Independent short-descriptor walk: (pa, page size) or None for a fault."""
    l1 = mem.read_u32(root + ((va >> 20) & ((1 << (va_bits - 20)) - 1)) * 4)
    if l1 & 0b11 == 0b00:
        return None
    if l1 & 0b11 == 0b01:
        l2 = mem.read_u32((l1 & 0xFFFF_FC00) + ((va >> 12) & 0xFF) * 4)
        if l2 & 0b11 == 0b00:
            return None
        if l2 & 0b11 == 0b01:
            return (l2 & 0xFFFF_0000) | (va & 0xFFFF), SZ_64K
        return (l2 & 0xFFFF_F000) | (va & 0xFFF), SZ_4K
    if l1 & (1 << 18):
        pa = (l1 & 0xFF00_0000) | ((l1 >> 20) & 0xF) << 32 | ((l1 >> 5) & 0xF) << 36
        return pa | (va & 0xFF_FFFF), SZ_16M
    return (l1 & 0xFFF0_0000) | (va & 0xF_FFFF), SZ_1M


# -- fixtures ---------------------------------------------------------------------------------


def make(va_bits: int | None = None) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(ARMV7S, mem, tm, va_bits=va_bits)


PERMS = list(AP)
ALL_ATTRS = [
    PageAttrs(read=r, write=w, user=u, memtype=m, shareable=s, global_=g, ns=ns, exec=x)
    for m, (r, w, u), s, g, ns, x in itertools.product(
        list(MemType), PERMS, [False, True], [True, False], [False, True], [False, True]
    )
]


def _id(a: PageAttrs) -> str:
    return a.short().replace(" ", "_") + (
        "_ap" + "".join("1" if v else "0" for v in (a.read, a.write, a.user))
    )


# -- every size x every attribute combination ------------------------------------------------------

SEC_VA, SEC_PA = 0x0010_0000, 0xC030_0000
SUPER_VA, SUPER_PA = 0x0100_0000, 0xA5_1200_0000  # PA[39:32] = 0xA5
LARGE_VA, LARGE_PA = 0x0203_0000, 0x9ABC_0000
SMALL_VA, SMALL_PA = 0x0300_5000, 0x8765_4000


@pytest.mark.parametrize("attrs", ALL_ATTRS, ids=_id)
def test_every_size_and_attribute_combination_bit_exact(attrs: PageAttrs) -> None:
    mem, _, pt = make()
    root = pt.root
    pt.map(SEC_VA, SEC_PA, SZ_1M, attrs, page_size=SZ_1M)
    pt.map(SUPER_VA, SUPER_PA, SZ_16M, attrs, page_size=SZ_16M)
    pt.map(LARGE_VA, LARGE_PA, SZ_64K, attrs, page_size=SZ_64K)
    pt.map(SMALL_VA, SMALL_PA, SZ_4K, attrs, page_size=SZ_4K)

    # section: first-level index va[31:20]
    assert mem.read_u32(root + (SEC_VA >> 20) * 4) == section_desc(SEC_PA, attrs)
    # supersection: 16 identical entries at indexes 0x010..0x01f
    words = [mem.read_u32(root + i * 4) for i in range(0x010, 0x020)]
    assert words == [supersection_desc(SUPER_PA, attrs)] * 16
    # the neighbour below is untouched (0x020 above is the large page's page table)
    assert mem.read_u32(root + 0x00F * 4) == 0

    # large page: page table at L1 index 0x020, then 16 copies at L2 index 0x30..0x3f
    l1 = mem.read_u32(root + (LARGE_VA >> 20) * 4)
    l2 = l1 & 0xFFFF_FC00
    assert l1 == page_table_desc(l2, attrs.ns)
    assert (l2, SZ_1K) in pt.table_pages() and l2 % SZ_1K == 0
    words = [mem.read_u32(l2 + i * 4) for i in range(0x30, 0x40)]
    assert words == [large_desc(LARGE_PA, attrs)] * 16
    assert mem.read_u32(l2 + 0x2F * 4) == 0 and mem.read_u32(l2 + 0x40 * 4) == 0

    # small page: page table at L1 index 0x030, entry at L2 index 5
    l1 = mem.read_u32(root + (SMALL_VA >> 20) * 4)
    l2 = l1 & 0xFFFF_FC00
    assert l1 == page_table_desc(l2, attrs.ns)
    assert mem.read_u32(l2 + 5 * 4) == small_desc(SMALL_PA, attrs)

    # and the walk decodes every one of them back to the same attributes
    for va, pa, size, level in (
        (SEC_VA, SEC_PA, SZ_1M, 1),
        (SUPER_VA, SUPER_PA, SZ_16M, 1),
        (LARGE_VA, LARGE_PA, SZ_64K, 2),
        (SMALL_VA, SMALL_PA, SZ_4K, 2),
    ):
        offset = size - 0x10 - (size >> 3)
        w = pt.walk(va + offset)
        assert (w.pa, w.page_size, w.level, w.attrs) == (pa + offset, size, level, attrs)
        assert w.reads == level


# -- worked examples, bits done by hand ------------------------------------------------------------


def test_section_worked_example() -> None:
    mem, _, pt = make()
    pt.map(0x4010_0000, 0x8010_0000, SZ_1M, PageAttrs(memtype=MemType.NORMAL_WB_WA))
    # base 0x801<<20 | TEX=001 (bit12) | AP[1:0]=01 (bit10) | XN (bit4) | C (bit3) | B (bit2)
    # | type 0b10  =  0x80100000 | 0x1000 | 0x400 | 0x10 | 0x8 | 0x4 | 0x2
    assert mem.read_u32(pt.root + 0x401 * 4) == 0x8010_141E


def test_small_page_worked_example() -> None:
    mem, _, pt = make()
    attrs = PageAttrs(
        user=True, exec=True, memtype=MemType.NORMAL_NC, shareable=True, global_=False
    )
    pt.map(0x0000_1000, 0x9000_5000, SZ_4K, attrs)
    l2 = mem.read_u32(pt.root) & 0xFFFF_FC00
    assert mem.read_u32(pt.root) == l2 | 0b01  # page table, NS=0, domain 0
    # base 0x90005 | nG (bit11) | S (bit10) | TEX=001 (bits8:6 -> 0x40) | AP[1:0]=11 (0x30)
    # | bit1 | XN=0  =  0x90005000 | 0x800 | 0x400 | 0x40 | 0x30 | 0x2
    assert mem.read_u32(l2 + 1 * 4) == 0x9000_5C72


def test_large_page_worked_example() -> None:
    mem, _, pt = make()
    attrs = PageAttrs(write=False, memtype=MemType.STRONGLY_ORDERED)
    pt.map(0x0001_0000, 0x9001_0000, SZ_64K, attrs)
    l2 = mem.read_u32(pt.root) & 0xFFFF_FC00
    # base 0x9001 | XN (bit15) | AP2 (bit9) | AP[1:0]=01 (bit4) | type 0b01 ; AP=101 priv RO
    assert [mem.read_u32(l2 + i * 4) for i in range(16, 32)] == [0x9001_8211] * 16


def test_supersection_worked_example() -> None:
    mem, _, pt = make()
    attrs = PageAttrs(user=True, exec=True, memtype=MemType.NORMAL_WT, shareable=True, ns=True)
    pt.map(0x0200_0000, 0xA5_1200_0000, SZ_16M, attrs)
    # PA[31:24]=0x12 | PA[35:32]=5 at bits23:20 | NS bit19 | bit18 | S bit16
    # | AP[1:0]=11 at bits11:10 | PA[39:36]=0xA at bits8:5 | C bit3 | type 0b10
    # = 0x12000000 | 0x500000 | 0x80000 | 0x40000 | 0x10000 | 0xC00 | 0x140 | 0x8 | 0x2
    assert [mem.read_u32(pt.root + i * 4) for i in range(0x20, 0x30)] == [0x125D_0D4A] * 16
    w = pt.walk(0x02AB_CDEF)
    assert w.pa == 0xA5_12AB_CDEF and w.page_size == SZ_16M


# -- decoding encodings vcmm never writes -------------------------------------------------------------


@pytest.mark.parametrize(
    ("ap", "expected"),
    [
        (0b010, (True, True, False)),  # PL1 RW / PL0 RO: documented as priv RW, user=False
        (0b100, (False, False, False)),  # reserved: no access
        (0b110, (True, False, True)),  # deprecated RO/RO
    ],
)
def test_decode_of_other_ap_values(ap: int, expected: tuple[bool, bool, bool]) -> None:
    mem, _, pt = make()
    pt.map(0x0010_0000, 0x9000_0000, SZ_1M, PageAttrs())
    slot = pt.root + 1 * 4
    desc = mem.read_u32(slot) & ~((1 << 15) | (0b11 << 10))
    mem.write_u32(slot, desc | (ap >> 2) << 15 | (ap & 0b11) << 10)
    a = pt.walk(0x0010_0000).attrs
    assert a is not None and (a.read, a.write, a.user) == expected


@pytest.mark.parametrize(
    ("tex", "c", "b", "memtype"),
    [
        (0b010, 0, 0, MemType.DEVICE),  # non-shareable device
        (0b101, 0, 1, MemType.NORMAL_WB_WA),  # TEX=1BB: inner policy CB=01 WB-WA
        (0b110, 1, 0, MemType.NORMAL_WT),  # inner CB=10 WT
        (0b111, 1, 1, MemType.NORMAL_WB_NWA),  # inner CB=11 WB no-WA
        (0b100, 0, 0, MemType.NORMAL_NC),  # inner CB=00 NC
        (0b001, 0, 1, MemType.STRONGLY_ORDERED),  # reserved -> most conservative
    ],
)
def test_decode_of_other_tex_cb(tex: int, c: int, b: int, memtype: MemType) -> None:
    mem, _, pt = make()
    pt.map(0x0010_0000, 0x9000_0000, SZ_1M, PageAttrs())
    slot = pt.root + 1 * 4
    desc = mem.read_u32(slot) & ~((0b111 << 12) | (1 << 3) | (1 << 2))
    mem.write_u32(slot, desc | tex << 12 | c << 3 | b << 2)
    a = pt.walk(0x0010_0000).attrs
    assert a is not None and a.memtype is memtype


def test_pxn_section_encoding_still_translates() -> None:
    mem, _, pt = make()
    pt.map(0x0010_0000, 0x9000_0000, SZ_1M, PageAttrs())
    slot = pt.root + 4
    mem.write_u32(slot, mem.read_u32(slot) | 0b01)  # bits1:0 = 0b11: section with PXN
    assert pt.walk(0x0010_0004).pa == 0x9000_0004


# -- output address limits -------------------------------------------------------------------


def test_supersection_reaches_40_bit_pa_with_extended_base() -> None:
    mem, _, pt = make()
    pt.map(0, 0x1_0000_0000, SZ_16M, PageAttrs())
    # PA[35:32] = 1 -> bit20; PA[39:36] = 0
    assert mem.read_u32(pt.root) & 0xFFF0_01E0 == 0x0010_0000
    assert pt.walk(0x12_3456).pa == 0x1_0012_3456


@pytest.mark.parametrize(
    ("pa", "size", "page_size"),
    [
        (0x1_0000_0000, SZ_1M, None),
        (0x1_0000_0000, SZ_4K, None),
        (0x1_0010_0000, SZ_64K, SZ_64K),
        (0xFF_0000_0000 + SZ_16M, SZ_1M, SZ_1M),
    ],
)
def test_pa_beyond_32_bits_only_for_supersections(
    pa: int, size: int, page_size: int | None
) -> None:
    _, tm, pt = make()
    before, tm_before = pt.snapshot(), tm.snapshot()
    with pytest.raises(InvalidArgumentError, match="below 0x100000000"):
        pt.map(0x0100_0000, pa, size, PageAttrs(), page_size=page_size)
    assert pt.snapshot() == before and tm.snapshot() == tm_before


def test_pa_beyond_40_bits_is_refused() -> None:
    _, _, pt = make()
    before = pt.snapshot()
    with pytest.raises(InvalidArgumentError):
        pt.map(0, 1 << 40, SZ_16M, PageAttrs())
    assert pt.snapshot() == before


def test_no_access_with_user_is_refused_naming_the_format() -> None:
    _, _, pt = make()
    before = pt.snapshot()
    with pytest.raises(InvalidArgumentError, match="ARMv7"):
        pt.map(0, 0x9000_0000, SZ_4K, PageAttrs(read=False, write=False, user=True))
    assert pt.snapshot() == before


def test_no_access_mapping_is_ap_000_and_walks() -> None:
    mem, _, pt = make()
    pt.map(0x0010_0000, 0x9000_0000, SZ_1M, PageAttrs(read=False, write=False))
    desc = mem.read_u32(pt.root + 4)
    assert (desc >> 15) & 1 == 0 and (desc >> 10) & 0b11 == 0
    a = pt.walk(0x0010_0000).attrs
    assert a is not None and not a.read and not a.write


# -- TTBCR.N: reduced first level -------------------------------------------------------------


@pytest.mark.parametrize("n", range(8))
def test_reduced_first_level_table_size_and_alignment(n: int) -> None:
    mem, _, pt = make(va_bits=32 - n)
    size = SZ_16K >> n
    assert pt.table_pages() == [(pt.root, max(size, 64))]
    assert pt.root % size == 0
    top = (1 << (32 - n)) - SZ_1M  # last 1 MiB of the reduced space: last L1 entry
    pt.map(top, 0x9000_0000, SZ_1M, PageAttrs())
    last_slot = pt.root + (size // 4 - 1) * 4
    assert mem.read_u32(last_slot) == section_desc(0x9000_0000, PageAttrs())
    assert pt.walk(top + 5).pa == 0x9000_0005
    beyond = pt.walk(1 << (32 - n)) if n else None
    if beyond is not None:
        assert beyond.fault is FaultKind.ADDRESS_SIZE and beyond.reads == 0
        with pytest.raises(InvalidArgumentError, match="input address space"):
            pt.map(1 << (32 - n), 0x9000_0000, SZ_4K, PageAttrs())


def test_ns_of_pages_lives_in_the_table_descriptor() -> None:
    mem, _, pt = make()
    pt.map(0x0000_0000, 0x9000_0000, SZ_4K, PageAttrs(ns=True))
    l1 = mem.read_u32(pt.root)
    assert l1 & (1 << 3)  # NS bit of the page-table descriptor
    l2 = l1 & 0xFFFF_FC00
    assert mem.read_u32(l2) == small_desc(0x9000_0000, PageAttrs(ns=True))
    w = pt.walk(0)
    assert w.attrs is not None and w.attrs.ns


# -- walk agrees with an independent walker and with a dump --------------------------------


SZ_2M_PLUS = 2 * SZ_1M + 5 * SZ_4K


def test_walk_agrees_with_reference_walker_and_raw_root() -> None:
    mem, _, pt = make()
    attrs = PageAttrs()
    pt.map(0x0000_0000, 0x9000_0000, SZ_16M + SZ_1M + SZ_64K + SZ_4K, attrs)
    pt.map(0x0200_3000, 0x8800_3000, SZ_2M_PLUS, attrs)
    probes = [*range(0, 0x0300_0000, 0x1_3579), 0x0111_0FFF, 0x0111_1000]
    for va in probes:
        w = pt.walk(va)
        ref = ref_walk(mem, pt.root, va)
        if ref is None:
            assert w.fault is FaultKind.TRANSLATION
        else:
            assert (w.pa, w.page_size) == ref
        assert walk_tables(ARMV7S, mem, pt.root, va) == w


def test_translation_fault_levels_and_read_counts() -> None:
    _, _, pt = make()
    w = pt.walk(0x0040_0000)
    assert (w.fault, w.level, w.reads) == (FaultKind.TRANSLATION, 1, 1)
    pt.map(0x0040_0000, 0x9000_0000, SZ_4K, PageAttrs())
    w = pt.walk(0x0040_1000)
    assert (w.fault, w.level, w.reads) == (FaultKind.TRANSLATION, 2, 2)
