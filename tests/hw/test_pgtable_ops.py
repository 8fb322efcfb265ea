"""PageTable operations over every format: size choice, splits, freeing, misuse, model.

Descriptor values used here are worked out by hand for the default attributes
(``PageAttrs()``: privileged RW, Normal WB write-allocate, non-shareable, global, XN):

ARMv7 short descriptor (TEX=001 C=1 B=1, AP[2:0]=001, XN=1, nG=0, S=0):
  section       base[31:20] | TEX bit12 (0x1000) | AP[1:0]=01 bit10 (0x400) | XN bit4 (0x10)
                | C bit3 | B bit2 | 0b10                                       -> base | 0x141E
  supersection  section bits | bit18 (0x40000)                                 -> base | 0x4141E
  large page    base[31:16] | XN bit15 (0x8000) | TEX bit12 (0x1000) | AP[1:0]=01 bit4 (0x10)
                | C | B | 0b01                                                 -> base | 0x901D
  small page    base[31:12] | TEX=001 bits8:6 (0x40) | AP[1:0]=01 bit4 (0x10) | C | B
                | bit1 | XN bit0                                               -> base | 0x5F
  page table    base[31:10] | NS bit3 (0) | 0b01                               -> base | 0x1
VMSAv8-64 (AttrIndx=4, AP=00, SH=00, AF=1, UXN=PXN=1):
  page          UXN|PXN (0x0060 << 48) | OA | AF (0x400) | AttrIndx 4 (0x10) | 0b11
  block         same with type 0b01
  table         OA | 0b11
ARMv7 LPAE: the same bits (bit 54 is called XN there), output address [39:12].
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vcmm.attrs import FaultKind, MemType, PageAttrs
from vcmm.errors import (
    AlignmentError,
    AlreadyMappedError,
    AttributeConflictError,
    InvalidArgumentError,
    NotMappedError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
    VcmmError,
)
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import (
    ARMV7_LPAE,
    ARMV7S,
    VMSAV8_4K,
    MapEntry,
    PageTable,
    PageTableFormat,
    decode_tables,
    walk_tables,
)
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1K, SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16K, SZ_16M, SZ_64K, SZ_64M

RAM = 0x8000_0000
RAM_SIZE = 0x1000_0000

V7_SECTION = 0x141E
V7_SUPER = 0x4141E
V7_LARGE = 0x901D
V7_SMALL = 0x5F
ALL_FORMATS = [ARMV7S, VMSAV8_4K, ARMV7_LPAE]
FORMAT_IDS = ["v7s", "v8", "lpae"]
V8_PAGE = 0x0060_0000_0000_0413
V8_BLOCK = 0x0060_0000_0000_0411
OA = 0x0000_FFFF_FFFF_F000
A = PageAttrs()


def make(
    fmt: PageTableFormat,
    window: int = SZ_4M,
    va_bits: int | None = None,
    *,
    keep_tables: bool = True,
) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    tm = TableMemory(mem, AddressRange(RAM, window))
    return mem, tm, PageTable(fmt, mem, tm, va_bits=va_bits, keep_tables=keep_tables)


def state(mem: PhysicalMemory, tm: TableMemory, pt: PageTable) -> tuple[object, ...]:
    return pt.snapshot(), tm.snapshot(), mem.digest()


def ref_greedy(va: int, pa: int, size: int, sizes: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """The size rule, one entry at a time: largest size aligned for va and pa that fits."""
    out = []
    while size:
        step = max(s for s in sizes if va % s == 0 and pa % s == 0 and s <= size)
        out.append((va, pa, step))
        va, pa, size = va + step, pa + step, size - step
    return out


def shape(entries: list[MapEntry]) -> list[tuple[int, int, int]]:
    return [(e.va, e.pa, e.size) for e in entries]


def u32s(mem: PhysicalMemory, pa: int, count: int) -> list[int]:
    return [int(x) for x in mem.read_words(pa, count, 4)]


def u64s(mem: PhysicalMemory, pa: int, count: int) -> list[int]:
    return [int(x) for x in mem.read_words(pa, count, 8)]


# -- size selection -------------------------------------------------------------------------


def test_v7s_2m_plus_4k_is_two_sections_and_a_small_page() -> None:
    mem, _, pt = make(ARMV7S)
    entries = pt.map(0x4010_0000, 0x9010_0000, SZ_2M + SZ_4K, A)
    assert shape(entries) == [
        (0x4010_0000, 0x9010_0000, SZ_1M),
        (0x4020_0000, 0x9020_0000, SZ_1M),
        (0x4030_0000, 0x9030_0000, SZ_4K),
    ]
    assert list(pt.mappings()) == entries
    l1 = u32s(mem, pt.root + 0x401 * 4, 3)
    assert l1[:2] == [0x9010_0000 | V7_SECTION, 0x9020_0000 | V7_SECTION]
    l2 = l1[2] & 0xFFFF_FC00
    assert l1[2] == l2 | 0b01
    assert u32s(mem, l2, 2) == [0x9030_0000 | V7_SMALL, 0]


def test_v8_sizes_grow_then_shrink() -> None:
    _, _, pt = make(VMSAV8_4K)
    va = SZ_1G - SZ_2M - SZ_4K
    entries = pt.map(va, 0x1_0000_0000 + va, SZ_1G + 2 * SZ_2M + 3 * SZ_4K, A)
    assert [e.size for e in entries] == [SZ_4K, SZ_2M, SZ_1G, SZ_2M, SZ_4K, SZ_4K]


@pytest.mark.parametrize(
    ("fmt", "va", "pa", "size", "expected"),
    [
        (ARMV7S, 0x0010_0000, 0x9001_0000, SZ_1M, [SZ_64K] * 16),  # pa only 64K aligned
        (ARMV7S, 0x0010_0000, 0x9000_1000, SZ_64K, [SZ_4K] * 16),  # pa only 4K aligned
        (ARMV7S, 0x0100_0000, 0x9010_0000, SZ_16M, [SZ_1M] * 16),  # pa only 1M aligned
        (ARMV7S, 0x000F_0000, 0x800F_0000, SZ_1M + 2 * SZ_64K, [SZ_64K, SZ_1M, SZ_64K]),
        (VMSAV8_4K, SZ_2M, 0x9000_1000, SZ_2M, [SZ_4K] * 512),
        (VMSAV8_4K, SZ_1G, 0x8020_0000, SZ_1G, [SZ_2M] * 512),
        (ARMV7_LPAE, SZ_2M, 0x9000_1000, SZ_2M, [SZ_4K] * 512),
        (ARMV7_LPAE, SZ_1G, 0x8020_0000, SZ_1G, [SZ_2M] * 512),
    ],
)
def test_misaligned_pa_falls_back_to_smaller_sizes(
    fmt: PageTableFormat, va: int, pa: int, size: int, expected: list[int]
) -> None:
    _, _, pt = make(fmt)
    assert [e.size for e in pt.map(va, pa, size, A)] == expected


@settings(max_examples=40, deadline=None)
@given(
    fmt=st.sampled_from(ALL_FORMATS),
    va_pages=st.integers(0, 0x3_0000),
    pa_pages=st.integers(0, 0x3_0000),
    pages=st.integers(1, 12_000),
)
def test_size_choice_matches_reference_greedy(
    fmt: PageTableFormat, va_pages: int, pa_pages: int, pages: int
) -> None:
    _, _, pt = make(fmt, window=16 * SZ_1M)
    va, pa, size = va_pages * SZ_4K, RAM + pa_pages * SZ_4K, pages * SZ_4K
    # make va and pa share their low bits often, so large sizes actually occur
    if pages % 2:
        pa = RAM + (va % SZ_1G)
    entries = pt.map(va, pa, size, A)
    assert shape(entries) == ref_greedy(va, pa, size, fmt.sizes)
    assert list(pt.mappings()) == entries


# -- forced page size ----------------------------------------------------------------------------


def test_forced_4k_over_64m_writes_whole_tables_and_is_exact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mem, tm, pt = make(ARMV7S, keep_tables=False)
    writes: list[int] = []
    write = mem.write
    monkeypatch.setattr(mem, "write", lambda pa, data: (writes.append(pa), write(pa, data)))
    entries = pt.map(0x1000_0000, 0x9000_0000, SZ_64M, A, page_size=SZ_4K)
    assert len(entries) == SZ_64M // SZ_4K and {e.size for e in entries} == {SZ_4K}
    # 64 second-level tables, each full of consecutive small pages
    assert len(pt.table_pages()) == 1 + 64
    # The work is per table, not per descriptor: 16384 descriptors in at most two
    # memory writes per table (its run of 256 words, its first-level entry).  Writing
    # descriptor by descriptor (what made this slow) would take 16384.
    assert len(writes) <= 2 * 64, len(writes)
    l2 = u32s(mem, pt.root + 0x105 * 4, 1)[0] & 0xFFFF_FC00
    assert u32s(mem, l2, 256) == [0x9050_0000 + i * SZ_4K | V7_SMALL for i in range(256)]
    writes.clear()
    removed = pt.unmap(0x1000_0000, SZ_64M)
    assert len(writes) <= 4 * 64, len(writes)
    assert removed == entries
    assert pt.table_pages() == [(pt.root, SZ_16K)] and tm.used_bytes == SZ_16K


def test_forced_64k_gives_large_pages_not_supersections() -> None:
    mem, _, pt = make(ARMV7S)
    entries = pt.map(0x0100_0000, 0x9100_0000, SZ_16M, A, page_size=SZ_64K)
    assert len(entries) == 256 and all(e.size == SZ_64K for e in entries)
    assert mem.read_u32(pt.root + 0x10 * 4) & 0b11 == 0b01  # page table, not supersection


@pytest.mark.parametrize(
    ("fmt", "va", "pa", "size", "page_size", "error"),
    [
        (ARMV7S, 0, RAM, SZ_16K, 2 * SZ_4K, UnsupportedSizeError),
        (ARMV7S, 0, RAM, SZ_2M, SZ_2M, UnsupportedSizeError),
        (VMSAV8_4K, 0, RAM, SZ_1M, SZ_1M, UnsupportedSizeError),
        (VMSAV8_4K, 0, RAM, SZ_64K, SZ_64K, UnsupportedSizeError),
        (ARMV7S, SZ_64K, RAM, SZ_1M, SZ_1M, AlignmentError),  # va
        (ARMV7S, 0, RAM + SZ_64K, SZ_1M, SZ_1M, AlignmentError),  # pa
        (ARMV7S, 0, RAM, SZ_1M + SZ_64K, SZ_1M, AlignmentError),  # size
        (VMSAV8_4K, 0, RAM + SZ_4K, SZ_2M, SZ_2M, AlignmentError),
        (ARMV7_LPAE, 0, RAM, SZ_1M, SZ_1M, UnsupportedSizeError),
        (ARMV7_LPAE, 0, RAM, SZ_16M, SZ_16M, UnsupportedSizeError),
        (ARMV7_LPAE, SZ_2M, RAM + SZ_4K, SZ_2M, SZ_2M, AlignmentError),
        (ARMV7_LPAE, SZ_1G, RAM, SZ_1G + SZ_2M, SZ_1G, AlignmentError),
    ],
)
def test_forced_size_misuse(
    fmt: PageTableFormat, va: int, pa: int, size: int, page_size: int, error: type[VcmmError]
) -> None:
    mem, tm, pt = make(fmt)
    before = state(mem, tm, pt)
    with pytest.raises(error):
        pt.map(va, pa, size, A, page_size=page_size)
    assert state(mem, tm, pt) == before


# -- misuse leaves everything as it was ----------------------------------------------------------


def _forged_write_only() -> PageAttrs:
    """A write-only PageAttrs smuggled past its own check, to test the codecs' guard."""
    attrs = object.__new__(PageAttrs)
    for name in PageAttrs.__dataclass_fields__:
        object.__setattr__(attrs, name, getattr(A, name))
    object.__setattr__(attrs, "read", False)
    return attrs


def test_write_only_attrs_cannot_even_be_built() -> None:
    with pytest.raises(InvalidArgumentError, match="write-only"):
        PageAttrs(read=False, write=True)


MISUSE: list[tuple[str, Callable[[PageTable], object], type[VcmmError], str]] = [
    ("va misaligned", lambda pt: pt.map(0x800, RAM, SZ_4K, A), AlignmentError, "0x800"),
    ("pa misaligned", lambda pt: pt.map(0, RAM + 0x10, SZ_4K, A), AlignmentError, "pa"),
    ("size misaligned", lambda pt: pt.map(0, RAM, 0x1800, A), AlignmentError, "0x1800"),
    ("size zero", lambda pt: pt.map(0, RAM, 0, A), InvalidArgumentError, "size"),
    ("negative va", lambda pt: pt.map(-SZ_4K, RAM, SZ_4K, A), InvalidArgumentError, "negative"),
    (
        "string va",
        lambda pt: pt.map("0", RAM, SZ_4K, A),  # type: ignore[arg-type]
        InvalidArgumentError,
        "integer",
    ),
    ("bool size", lambda pt: pt.map(0, RAM, True, A), InvalidArgumentError, "integer"),
    (
        "attrs type",
        lambda pt: pt.map(0, RAM, SZ_4K, "rw"),  # type: ignore[arg-type]
        InvalidArgumentError,
        "PageAttrs",
    ),
    (
        "write-only attrs",
        lambda pt: pt.map(0, RAM, SZ_4K, _forged_write_only()),
        InvalidArgumentError,
        "write",
    ),
    (
        "overlap inside",
        lambda pt: pt.map(0x0040_3000, RAM, SZ_4K, A),
        AlreadyMappedError,
        "0x403000",
    ),
    (
        "overlap across",
        lambda pt: pt.map(0x003F_F000, RAM, 3 * SZ_4K, A),
        AlreadyMappedError,
        "0x400000",
    ),
    ("unmap unmapped", lambda pt: pt.unmap(0x0100_0000, SZ_4K), NotMappedError, "0x1000000"),
    (
        "unmap partly mapped",
        lambda pt: pt.unmap(0x0040_0000, SZ_2M + SZ_4K),
        NotMappedError,
        "0x600000",
    ),
    ("unmap misaligned", lambda pt: pt.unmap(0x0040_0800, SZ_4K), AlignmentError, "0x400800"),
    (
        "set_attrs unmapped",
        lambda pt: pt.set_attrs(0x003F_F000, 2 * SZ_4K, A),
        NotMappedError,
        "0x3ff000",
    ),
    (
        "set_attrs cuts a block",
        lambda pt: pt.set_attrs(0x0040_0000, SZ_4K, A.with_(shareable=True)),
        AlignmentError,
        "cuts",
    ),
    (
        "beyond input space",
        lambda pt: pt.map((1 << pt.va_bits) - SZ_4K, RAM, SZ_2M, A),
        InvalidArgumentError,
        "input address space",
    ),
    (
        "pa beyond output range",
        lambda pt: pt.map(0x0100_0000, 1 << 48, SZ_4K, A),
        InvalidArgumentError,
        "output address",
    ),
    (
        "forced size unsupported",
        lambda pt: pt.map(0x0100_0000, RAM, SZ_16K, A, page_size=SZ_16K),
        UnsupportedSizeError,
        "page_size",
    ),
]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
@pytest.mark.parametrize(("what", "call", "error", "named"), MISUSE, ids=[m[0] for m in MISUSE])
def test_misuse_raises_typed_error_and_changes_nothing(
    fmt: PageTableFormat,
    what: str,
    call: Callable[[PageTable], object],
    error: type[VcmmError],
    named: str,
) -> None:
    mem, tm, pt = make(fmt)
    pt.map(0x0040_0000, 0x9040_0000, SZ_2M, A)  # a 2M block (v8) / two sections (v7s)
    pt.map(0x0070_0000, 0x9070_0000, SZ_4K, A)
    before = state(mem, tm, pt)
    with pytest.raises(error) as info:
        call(pt)
    assert named in str(info.value), f"{what}: message does not name {named}: {info.value}"
    assert state(mem, tm, pt) == before


# -- table memory exhausted half way ---------------------------------------------------------------


def test_v8_out_of_table_memory_mid_map_undoes_everything() -> None:
    mem, tm, pt = make(VMSAV8_4K, window=4 * SZ_4K)  # root + L1 + L2 + L3, nothing more
    pt.map(0, RAM, SZ_4K, A)
    assert tm.free_bytes == 0
    before = state(mem, tm, pt)
    # the first run fits in the existing L3 table; the second needs a new L3 table
    with pytest.raises(OutOfMemoryError, match="map: out of table memory"):
        pt.map(SZ_2M - 2 * SZ_4K, RAM + SZ_1M, 4 * SZ_4K, A)
    assert state(mem, tm, pt) == before
    assert pt.walk(SZ_2M - SZ_4K).fault is FaultKind.TRANSLATION


def test_v7s_out_of_table_memory_mid_map_undoes_sections_too() -> None:
    mem, tm, pt = make(ARMV7S, window=SZ_16K + SZ_4K)  # root + one page of four 1K tables
    for i in range(4):
        pt.map(i * SZ_1M, RAM + i * SZ_1M, SZ_4K, A)
    before = state(mem, tm, pt)
    with pytest.raises(OutOfMemoryError):
        pt.map(0x0100_0000, 0x9100_0000, SZ_1M + SZ_4K, A)  # section, then a new L2 table
    assert state(mem, tm, pt) == before
    assert pt.walk(0x0100_0000).fault is FaultKind.TRANSLATION


def test_out_of_table_memory_mid_split_undoes_everything() -> None:
    mem, tm, pt = make(ARMV7S, window=SZ_16K)  # the root only
    pt.map(0x0010_0000, 0x9010_0000, SZ_1M, A)
    before = state(mem, tm, pt)
    with pytest.raises(OutOfMemoryError, match="unmap"):
        pt.unmap(0x0010_0000, SZ_4K)
    assert state(mem, tm, pt) == before
    assert pt.walk(0x0010_0000).page_size == SZ_1M


def test_root_allocation_failure() -> None:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4K))
    with pytest.raises(OutOfMemoryError, match="root"):
        PageTable(ARMV7S, mem, tm)
    assert tm.used_bytes == 0


# -- splitting blocks on partial unmap -----------------------------------------------------------


def test_v7s_section_split_into_large_and_small_pages() -> None:
    mem, tm, pt = make(ARMV7S, keep_tables=False)
    pt.map(0x0010_0000, 0x9010_0000, SZ_1M, A)
    removed = pt.unmap(0x0010_0000, SZ_4K)
    assert removed == [MapEntry(0x0010_0000, 0x9010_0000, SZ_4K, A)]
    l1 = mem.read_u32(pt.root + 1 * 4)
    l2 = l1 & 0xFFFF_FC00
    assert l1 == l2 | 0b01
    expected = (
        [0]
        + [0x9010_0000 + i * SZ_4K | V7_SMALL for i in range(1, 16)]
        + [0x9010_0000 + (i // 16) * SZ_64K | V7_LARGE for i in range(16, 256)]
    )
    assert u32s(mem, l2, 256) == expected
    entries = list(pt.mappings())
    assert [e.size for e in entries] == [SZ_4K] * 15 + [SZ_64K] * 15
    assert pt.walk(0x001F_FFFC).pa == 0x901F_FFFC
    pt.unmap(0x0010_1000, SZ_1M - SZ_4K)
    assert pt.table_pages() == [(pt.root, SZ_16K)] and tm.used_bytes == SZ_16K


def test_v7s_supersection_split_into_sections() -> None:
    mem, _, pt = make(ARMV7S)
    pt.map(0x0100_0000, 0x9100_0000, SZ_16M, A)
    removed = pt.unmap(0x0110_0000, SZ_1M)
    assert removed == [MapEntry(0x0110_0000, 0x9110_0000, SZ_1M, A)]
    expected = [0x9100_0000 + k * SZ_1M | V7_SECTION for k in range(16)]
    expected[1] = 0
    assert u32s(mem, pt.root + 0x10 * 4, 16) == expected
    assert len(pt.table_pages()) == 1  # same-level split: no new table


def test_v7s_supersection_split_down_to_small_pages() -> None:
    mem, _, pt = make(ARMV7S)
    pt.map(0x0100_0000, 0x9100_0000, SZ_16M, A)
    pt.unmap(0x0123_4000, SZ_4K)
    words = u32s(mem, pt.root + 0x10 * 4, 16)
    # the 1M at 0x01200000 (slot 2) became a page table; the other 15 are sections
    assert [w for i, w in enumerate(words) if i != 2] == [
        0x9100_0000 + k * SZ_1M | V7_SECTION for k in range(16) if k != 2
    ]
    assert words[2] & 0b11 == 0b01
    l2 = words[2] & 0xFFFF_FC00
    l2_words = u32s(mem, l2, 256)
    # the 64K page at 0x01230000 became small pages, entry 4 (0x01234000) removed
    assert l2_words[0x30:0x40] == [
        0 if i == 4 else 0x9123_0000 + i * SZ_4K | V7_SMALL for i in range(16)
    ]
    assert l2_words[0x40] == 0x9124_0000 | V7_LARGE
    assert sum(e.size for e in pt.mappings()) == SZ_16M - SZ_4K


def test_v7s_large_page_split() -> None:
    mem, _, pt = make(ARMV7S)
    pt.map(0x0001_0000, 0x9001_0000, SZ_64K, A)
    l2 = mem.read_u32(pt.root) & 0xFFFF_FC00
    pt.unmap(0x0001_3000, SZ_4K)
    assert u32s(mem, l2 + 16 * 4, 16) == [
        0 if i == 3 else 0x9001_0000 + i * SZ_4K | V7_SMALL for i in range(16)
    ]


def test_v8_2m_block_split_into_pages() -> None:
    mem, _, pt = make(VMSAV8_4K)
    pt.map(SZ_2M, 0x9020_0000, SZ_2M, A)
    removed = pt.unmap(SZ_2M + 100 * SZ_4K, SZ_4K)
    assert removed == [MapEntry(SZ_2M + 100 * SZ_4K, 0x9020_0000 + 100 * SZ_4K, SZ_4K, A)]
    l1 = u64s(mem, pt.root, 1)[0] & OA
    l2_entry = u64s(mem, l1, 1)[0] & OA
    desc = u64s(mem, l2_entry + 8, 1)[0]
    assert desc & 0b11 == 0b11
    l3 = desc & OA
    assert desc == l3 | 0b11
    assert u64s(mem, l3, 512) == [
        0 if i == 100 else (0x9020_0000 + i * SZ_4K) | V8_PAGE for i in range(512)
    ]


def test_v8_1g_block_split_two_levels() -> None:
    mem, tm, pt = make(VMSAV8_4K, keep_tables=False)
    baseline = tm.used_bytes
    pt.map(SZ_1G, 0x4000_0000, SZ_1G, A)
    hole = SZ_1G + 3 * SZ_2M + 5 * SZ_4K
    pt.unmap(hole, SZ_4K)
    l1 = u64s(mem, pt.root, 1)[0] & OA
    l2 = u64s(mem, l1 + 8, 1)[0] & OA
    l2_words = u64s(mem, l2, 512)
    for i, d in enumerate(l2_words):
        if i != 3:
            assert d == (0x4000_0000 + i * SZ_2M) | V8_BLOCK
    l3 = l2_words[3] & OA
    assert l2_words[3] == l3 | 0b11
    assert u64s(mem, l3, 512) == [
        0 if i == 5 else (0x4000_0000 + 3 * SZ_2M + i * SZ_4K) | V8_PAGE for i in range(512)
    ]
    assert len(pt.table_pages()) == 4
    assert pt.walk(hole).fault is FaultKind.TRANSLATION
    assert pt.walk(hole + SZ_4K).pa == 0x4000_0000 + 3 * SZ_2M + 6 * SZ_4K
    pt.unmap(SZ_1G, hole - SZ_1G)
    pt.unmap(hole + SZ_4K, 2 * SZ_1G - hole - SZ_4K)
    assert pt.table_pages() == [(pt.root, SZ_4K)] and tm.used_bytes == baseline


def test_split_of_supersection_above_4g_is_refused_without_change() -> None:
    mem, tm, pt = make(ARMV7S)
    pt.map(0, 0x1_0000_0000, SZ_16M, A)
    before = state(mem, tm, pt)
    with pytest.raises(InvalidArgumentError, match="split"):
        pt.unmap(0, SZ_1M)
    assert state(mem, tm, pt) == before
    assert [e.size for e in pt.unmap(0, SZ_16M)] == [SZ_16M]


# -- empty tables go back to the table memory -------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
def test_empty_tables_are_freed_one_by_one_without_keep_tables(fmt: PageTableFormat) -> None:
    _, tm, pt = make(fmt, keep_tables=False)
    baseline = tm.used_bytes
    vas = [0x0000_3000, 0x0050_0000, 0x0A00_7000]
    for i, va in enumerate(vas):
        pt.map(va, RAM + i * SZ_4K, SZ_4K, A)
    peak = tm.used_bytes
    table_counts = [len(pt.table_pages())]
    for va in vas:
        pt.unmap(va, SZ_4K)
        table_counts.append(len(pt.table_pages()))
    assert table_counts == sorted(table_counts, reverse=True) and table_counts[-1] == 1
    assert peak > baseline and tm.used_bytes == baseline
    assert list(pt.mappings()) == []


def test_v7s_second_level_tables_share_pages() -> None:
    _, tm, pt = make(ARMV7S)
    for i in range(4):
        pt.map(i * SZ_1M, RAM + i * SZ_4K, SZ_4K, A)
    l2s = [pa for pa, size in pt.table_pages() if size == SZ_1K]
    assert len(l2s) == 4 and len({pa // SZ_4K for pa in l2s}) == 1
    assert tm.committed_bytes == SZ_16K + SZ_4K


# -- set_attrs ---------------------------------------------------------------------------------------


def test_v7s_set_attrs_flips_only_the_s_bit() -> None:
    mem, _, pt = make(ARMV7S)
    size = SZ_16M + SZ_1M + SZ_64K + SZ_4K
    mapped = pt.map(0x0100_0000, 0x9100_0000, size, A)
    # supersection at L1 0x10..0x1f, section at 0x20, page table at 0x21 holding the large
    # page (L2 0..15) and the small page (L2 16)
    l2 = mem.read_u32(pt.root + 0x21 * 4) & 0xFFFF_FC00
    old_l1, old_l2 = u32s(mem, pt.root + 0x10 * 4, 17), u32s(mem, l2, 17)
    out = pt.set_attrs(0x0100_0000, size, A.with_(shareable=True))
    assert shape(out) == shape(mapped)
    assert all(e.attrs == A.with_(shareable=True) for e in out)
    new_l1, new_l2 = u32s(mem, pt.root + 0x10 * 4, 17), u32s(mem, l2, 17)
    # S is bit16 in supersections and sections, bit10 in large and small pages
    assert [n ^ o for n, o in zip(new_l1, old_l1, strict=True)] == [1 << 16] * 17
    assert [n ^ o for n, o in zip(new_l2, old_l2, strict=True)] == [1 << 10] * 17
    assert new_l2[0] == 0x9210_0000 | V7_LARGE | 1 << 10
    assert new_l2[16] == 0x9211_0000 | V7_SMALL | 1 << 10
    w = pt.walk(0x0200_0000)
    assert w.page_size == SZ_1M and w.attrs is not None and w.attrs.shareable


def test_v8_set_attrs_rewrites_sh_field() -> None:
    mem, _, pt = make(VMSAV8_4K)
    pt.map(SZ_2M, 0x9020_0000, SZ_2M + SZ_4K, A)
    pt.set_attrs(SZ_2M, SZ_2M + SZ_4K, A.with_(shareable=True))
    l1 = u64s(mem, pt.root, 1)[0] & OA
    l2 = u64s(mem, l1, 1)[0] & OA
    assert u64s(mem, l2 + 8, 1)[0] == 0x9020_0000 | V8_BLOCK | 0b11 << 8
    l3 = u64s(mem, l2 + 16, 1)[0] & OA
    assert u64s(mem, l3, 1)[0] == 0x9040_0000 | V8_PAGE | 0b11 << 8


def test_set_attrs_returns_and_walk_shows_new_attrs() -> None:
    _, _, pt = make(VMSAV8_4K)
    pt.map(0, RAM, 3 * SZ_4K, A)
    new = PageAttrs(write=False, memtype=MemType.NORMAL_NC, global_=False)
    out = pt.set_attrs(SZ_4K, SZ_4K, new)
    assert out == [MapEntry(SZ_4K, RAM + SZ_4K, SZ_4K, new)]
    assert [pt.walk(va).attrs for va in (0, SZ_4K, 2 * SZ_4K)] == [A, new, A]


def test_v7s_ns_shared_by_a_second_level_table() -> None:
    mem, tm, pt = make(ARMV7S)
    pt.map(0, RAM, 2 * SZ_4K, A)
    before = state(mem, tm, pt)
    with pytest.raises(AttributeConflictError, match="NS"):
        pt.map(2 * SZ_4K, RAM, SZ_4K, A.with_(ns=True))
    with pytest.raises(AttributeConflictError):
        pt.set_attrs(0, SZ_4K, A.with_(ns=True))
    assert state(mem, tm, pt) == before
    pt.set_attrs(0, 2 * SZ_4K, A.with_(ns=True))  # every page of the table: allowed
    assert mem.read_u32(pt.root) & (1 << 3)
    attrs = [pt.walk(va).attrs for va in (0, SZ_4K)]
    assert all(a is not None and a.ns for a in attrs)
    pt.map(2 * SZ_4K, RAM, SZ_4K, A.with_(ns=True))  # now agrees with the table


# -- dumps, decoding, lifecycle -------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
def test_a_memory_dump_gives_the_same_translation(fmt: PageTableFormat) -> None:
    mem, _, pt = make(fmt)
    pt.map(0x0100_0000, 0x9100_0000, SZ_16M + SZ_2M + 20 * SZ_4K, A)
    pt.map(0x0400_3000, 0x8800_0000, SZ_64K, A.with_(user=True, exec=True))
    pt.unmap(0x0101_0000, SZ_64K)
    dump = {pa: mem.read(pa, size) for pa, size in pt.table_pages()}
    copy = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    for pa, data in dump.items():
        copy.write(pa, data)
    for va in range(0x00F0_0000, 0x0420_0000, 0x1_1111):
        assert walk_tables(fmt, copy, pt.root, va) == pt.walk(va)
    assert list(decode_tables(fmt, copy, pt.root)) == list(pt.mappings())


def test_contiguous_leaves_are_one_mapping_each() -> None:
    _, _, pt = make(ARMV7S)
    pt.map(0x0100_0000, 0x9100_0000, SZ_16M, A)
    pt.map(0x0001_0000, 0x9001_0000, SZ_64K, A)
    assert shape(list(pt.mappings())) == [
        (0x0001_0000, 0x9001_0000, SZ_64K),
        (0x0100_0000, 0x9100_0000, SZ_16M),
    ]


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
def test_destroy_frees_everything_and_refuses_further_use(fmt: PageTableFormat) -> None:
    _, tm, pt = make(fmt)
    pt.map(0, RAM, SZ_4M + SZ_4K, A)
    pt.destroy()
    assert tm.used_bytes == 0 and tm.committed_bytes == 0
    for call in (
        lambda: pt.map(0, RAM, SZ_4K, A),
        lambda: pt.unmap(0, SZ_4K),
        lambda: pt.walk(0),
        lambda: pt.mappings(),
        lambda: pt.set_attrs(0, SZ_4K, A),
        lambda: pt.table_pages(),
        lambda: pt.snapshot(),
        pt.destroy,
    ):
        with pytest.raises(StateError, match="destroyed"):
            call()


def test_constructor_misuse() -> None:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    other = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    tm = TableMemory(other, AddressRange(RAM, SZ_4M))
    with pytest.raises(InvalidArgumentError, match="another PhysicalMemory"):
        PageTable(ARMV7S, mem, tm)
    high = PhysicalMemory([MemoryRegion("hi", AddressRange(0x1_0000_0000, SZ_4M))])
    with pytest.raises(InvalidArgumentError, match="beyond"):
        PageTable(ARMV7S, high, TableMemory(high, AddressRange(0x1_0000_0000, SZ_4M)))
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    for bad in (24, 33, "32"):
        with pytest.raises(InvalidArgumentError, match="va_bits"):
            PageTable(ARMV7S, mem, tm, va_bits=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        PageTable("armv7s", mem, tm)  # type: ignore[arg-type]
    assert tm.used_bytes == 0


def test_walk_rejects_bad_addresses() -> None:
    _, _, pt = make(ARMV7S)
    for bad in (-1, "0", 1.5):
        with pytest.raises(InvalidArgumentError):
            pt.walk(bad)  # type: ignore[arg-type]


# -- property: random map/unmap/set_attrs against a page dictionary ---------------------------------

V7_POOL = [
    A,
    PageAttrs(write=False, user=True),
    PageAttrs(memtype=MemType.NORMAL_NC, shareable=True, global_=False),
    PageAttrs(exec=True, memtype=MemType.DEVICE),
    PageAttrs(read=False, write=False, memtype=MemType.STRONGLY_ORDERED),
]
V8_POOL = [*V7_POOL[:4], PageAttrs(user=True, exec=True, memtype=MemType.NORMAL_WT, ns=True)]


class Model:
    """page number -> (pa, attrs), the obvious reference for a page table."""

    def __init__(self, granule: int) -> None:
        self.g = granule
        self.pages: dict[int, tuple[int, PageAttrs]] = {}
        #: Every attrs object the model was given (a few): see :meth:`from_entries`.
        self.given: dict[PageAttrs, PageAttrs] = {}

    def any_mapped(self, va: int, size: int) -> bool:
        return any(p in self.pages for p in range(va // self.g, (va + size) // self.g))

    def all_mapped(self, va: int, size: int) -> bool:
        return all(p in self.pages for p in range(va // self.g, (va + size) // self.g))

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        self.given.setdefault(attrs, attrs)
        for k in range(size // self.g):
            self.pages[va // self.g + k] = (pa + k * self.g, attrs)

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        self.given.setdefault(attrs, attrs)
        for p in range(va // self.g, (va + size) // self.g):
            self.pages[p] = (self.pages[p][0], attrs)

    def unmap(self, va: int, size: int) -> None:
        for p in range(va // self.g, (va + size) // self.g):
            del self.pages[p]

    def first(self, va: int, size: int, *, mapped: bool) -> int | None:
        """First address of the range whose page is (or is not) mapped."""
        for p in range(va // self.g, (va + size) // self.g):
            if (p in self.pages) == mapped:
                return p * self.g
        return None

    def lookup(self, va: int) -> tuple[int, PageAttrs] | None:
        hit = self.pages.get(va // self.g)
        return None if hit is None else (hit[0] + va % self.g, hit[1])

    def from_entries(self, entries: list[MapEntry]) -> dict[int, tuple[int, PageAttrs]]:
        """page -> (pa, attrs) of every granule the entries cover.

        Built a range at a time (no Python loop per page of a block), and each entry's
        attrs replaced by the equal object the model was given, if any (looked up
        once per decoded object: entries decoded together share one), so comparing
        thousands of pages compares attrs by identity: the same dict, an equal
        comparison, a fraction of the time."""
        out: dict[int, tuple[int, PageAttrs]] = {}
        given, canonical = self.given, {}
        g = self.g
        for e in entries:
            attrs = canonical.get(id(e.attrs))
            if attrs is None:
                attrs = canonical[id(e.attrs)] = given.get(e.attrs, e.attrs)
            if e.size == g:
                out[e.va // g] = (e.pa, attrs)
                continue
            first, n = e.va // g, e.size // g
            out.update(
                zip(
                    range(first, first + n),
                    zip(range(e.pa, e.pa + e.size, g), repeat(attrs, n), strict=True),
                    strict=True,
                )
            )
        return out


OPS = st.lists(
    st.tuples(
        st.sampled_from(["map", "map", "unmap", "set_attrs"]),
        st.integers(0, 3),  # size unit index
        st.integers(0, 10_000),  # va slot
        st.integers(1, 40),  # length in units
        st.integers(0, 3),  # pa unit index
        st.integers(0, 10_000),  # pa slot
        st.integers(0, 4),  # attrs
        st.integers(0, 10_000),  # sampling seed
    ),
    max_size=10,
)

CONFIGS = {
    "v7s": (ARMV7S, SZ_4K, [SZ_4K, SZ_64K, SZ_1M, SZ_16M], SZ_64M, V7_POOL),
    "v8-small": (VMSAV8_4K, SZ_4K, [SZ_4K, SZ_64K, SZ_2M, 4 * SZ_2M], 16 * SZ_2M, V8_POOL),
    "v8-large": (VMSAV8_4K, SZ_2M, [SZ_2M, 16 * SZ_2M, SZ_1G, SZ_1G], 4 * SZ_1G, V8_POOL),
    "lpae-small": (ARMV7_LPAE, SZ_4K, [SZ_4K, SZ_64K, SZ_2M, 4 * SZ_2M], 16 * SZ_2M, V8_POOL),
    # the whole 32-bit input space, so 1G blocks in the 4-entry first level
    "lpae-large": (ARMV7_LPAE, SZ_2M, [SZ_2M, 16 * SZ_2M, SZ_1G, SZ_1G], 4 * SZ_1G, V8_POOL),
}


def _check_against_model(pt: PageTable, model: Model, probes: list[int]) -> None:
    for va in probes:
        w = pt.walk(va)
        want = model.lookup(va)
        if want is None:
            assert w.fault is FaultKind.TRANSLATION, f"{va:#x} should be unmapped: {w}"
        else:
            assert (w.pa, w.attrs) == want, f"{va:#x}: walk {w} model {want}"
    entries = list(pt.mappings())
    assert model.from_entries(entries) == model.pages
    # bookkeeping shadow agrees with the bytes
    vm = pt.fmt.valid_mask
    word = np.dtype(f"<u{pt.fmt.entry_bytes}")
    for pa, size, count, data in pt.snapshot().tables:
        words = np.frombuffer(data, dtype=word, count=size // word.itemsize)
        assert count == np.count_nonzero(words & word.type(vm)), f"table {pa:#x} count"


@pytest.mark.parametrize("config", list(CONFIGS))
@settings(max_examples=35, deadline=None)
@given(ops=OPS, keep=st.booleans())
def test_random_operations_agree_with_page_dictionary(
    config: str, ops: list[tuple[int, ...]], keep: bool
) -> None:
    fmt, granule, units, window, pool = CONFIGS[config]
    mem, tm, pt = make(fmt, window=SZ_4M, keep_tables=keep)
    baseline = tm.used_bytes
    model = Model(granule)
    for kind, unit_i, va_slot, length, pa_unit_i, pa_slot, attrs_i, seed in ops:
        unit = units[unit_i]
        va = (va_slot * unit) % window
        size = min(length * unit, window - va)
        if kind != "map" and model.pages and seed % 4:
            # aim at what is mapped: a leaf (or a run of leaves) exactly, or a few
            # granules inside a mapping, which splits the blocks around it
            leaves = list(pt.mappings())
            first = leaves[va_slot % len(leaves)]
            if seed % 2:
                last = leaves[min(len(leaves) - 1, va_slot % len(leaves) + length % 3)]
                va, size = first.va, last.va + last.size - first.va
            else:
                va = first.va + (seed * granule) % first.size
                size = min(length * granule, window - va)
        pa = (pa_slot * units[pa_unit_i]) % (1 << 31)  # below 4G with the range
        attrs = pool[attrs_i]
        before = state(mem, tm, pt)
        if kind == "map":
            if model.any_mapped(va, size):
                with pytest.raises(AlreadyMappedError):
                    pt.map(va, pa, size, attrs)
                assert state(mem, tm, pt) == before
            else:
                entries = pt.map(va, pa, size, attrs)
                assert shape(entries) == ref_greedy(va, pa, size, fmt.sizes)
                model.map(va, pa, size, attrs)
        elif kind == "unmap":
            if not model.all_mapped(va, size):
                hole = model.first(va, size, mapped=False)
                assert hole is not None
                with pytest.raises(NotMappedError, match=f"{hole:#x} is not mapped"):
                    pt.unmap(va, size)  # the first hole, even past blocks it must split
                assert state(mem, tm, pt) == before
            else:
                removed = pt.unmap(va, size)
                assert sum(e.size for e in removed) == size
                assert model.from_entries(removed) == {
                    p: model.pages[p] for p in range(va // granule, (va + size) // granule)
                }
                model.unmap(va, size)
        else:
            leaves = [e for e in pt.mappings() if e.va < va + size and va < e.va + e.size]
            whole = model.all_mapped(va, size) and all(
                va <= e.va and e.va + e.size <= va + size for e in leaves
            )
            if not model.all_mapped(va, size):
                with pytest.raises(NotMappedError):
                    pt.set_attrs(va, size, attrs)
                assert state(mem, tm, pt) == before
            elif not whole:
                with pytest.raises(AlignmentError):
                    pt.set_attrs(va, size, attrs)
                assert state(mem, tm, pt) == before
            else:
                pt.set_attrs(va, size, attrs)
                model.set_attrs(va, size, attrs)
        event(f"{kind} {'ok' if state(mem, tm, pt) != before else 'refused'}")
        for mapped in (True, False):  # one range walk answers what the model scans for
            assert pt.find(va, size, mapped=mapped) == model.first(va, size, mapped=mapped)
        probes = [
            va,
            va + size - 1,
            (va + seed * granule) % window,
            (seed * 7919 * granule) % window,
        ]
        probes += [
            p * granule + seed % granule
            for p in list(model.pages)[:: max(1, len(model.pages) // 8)]
        ]
        _check_against_model(pt, model, probes)
    # unmap everything that is left
    for p in sorted(model.pages):
        if p in model.pages:
            run = p
            while run + 1 in model.pages:
                run += 1
            pt.unmap(p * granule, (run - p + 1) * granule)
            model.unmap(p * granule, (run - p + 1) * granule)
    assert list(pt.mappings()) == []
    if not keep:  # only the root remains
        assert pt.table_pages() == [(pt.root, pt.table_pages()[0][1])]
        assert tm.used_bytes == baseline
    pt.destroy()  # kept or not, every table page goes back
    assert tm.used_bytes == 0


@pytest.mark.parametrize("fmt", ALL_FORMATS, ids=FORMAT_IDS)
def test_walk_from_a_root_in_a_hole_is_a_bus_fault(fmt: PageTableFormat) -> None:
    mem, _, _ = make(fmt)
    w = walk_tables(fmt, mem, 0x1000, 0x0040_0000)
    assert (w.fault, w.reads, w.pa) == (FaultKind.BUS, 0, None)
