"""``PageTable.leaf_spans``: the addresses and sizes of ``mappings()`` without decoding
anything else (what the graph export counts pages with).

The reference is ``mappings()`` itself, on tables built by random maps in every format
and then spoiled with random words (reserved encodings, faulting sizes, table
descriptors pointing anywhere), so the walk skips what ``Decode`` skips.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4M

RAM = 0x8000_0000
RAM_SIZE = 0x1000_0000
FORMATS = {"v7s": ARMV7S, "v8": VMSAV8_4K, "lpae": ARMV7_LPAE}


def _table(fmt: PageTableFormat) -> tuple[PhysicalMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, RAM_SIZE))])
    return mem, PageTable(fmt, mem, TableMemory(mem, AddressRange(RAM, SZ_4M)))


def _reference(pt: PageTable) -> tuple[list[int], list[int]] | type[BaseException]:
    try:
        entries = sorted((e.va, e.size) for e in pt.mappings())
    except VcmmError as exc:
        return type(exc)
    return [va for va, _ in entries], [size for _, size in entries]


def _spans(pt: PageTable) -> tuple[list[int], list[int]] | type[BaseException]:
    try:
        return pt.leaf_spans()
    except VcmmError as exc:
        return type(exc)


#: Words to spoil a table with: a descriptor of any type into RAM (so a walk through it
#: reads memory that exists), with random attribute bits and random bits 40-47
#: (output-address bits LPAE does not have: its walk faults on them and skips the leaf
#: or subtree).  Table descriptors often point at the tables the maps made, so a
#: subtree a walk must skip holds leaves.  The short-descriptor format takes the low
#: 32 bits.
_JUNK = st.builds(
    lambda page, low, attrs, high, top: (
        (RAM + page * 4096) | (attrs << 2 & 0xFFC) | low | high << 40 | top << 52
    ),
    st.integers(0, 0x1000) | st.integers(0, 8),  # often a page of the table window's start
    st.integers(0, 3),
    st.integers(0, 0x3FF),
    st.integers(0, 255) | st.just(0),
    st.integers(0, 0xFFF),
)


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(sorted(FORMATS)),
    maps=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 6), st.integers(1, 3)), max_size=8),
    junk=st.lists(st.tuples(st.integers(0, 1 << 20), _JUNK), max_size=6),
)
def test_leaf_spans_are_the_mappings_addresses_and_sizes(
    name: str, maps: list[tuple[int, int, int]], junk: list[tuple[int, int]]
) -> None:
    fmt = FORMATS[name]
    mem, pt = _table(fmt)
    sizes = sorted(pt.sizes)
    for slot, size_index, count in maps:
        size = sizes[size_index % len(sizes)]
        va = slot * size % (1 << 31)
        with contextlib.suppress(VcmmError):  # overlapping an earlier map: it stays
            pt.map(va, RAM + SZ_4M + (va % (RAM_SIZE // 2)), size * count, PageAttrs())
    assert _spans(pt) == _reference(pt)
    width = 4 if fmt is ARMV7S else 8
    pages = pt.table_pages()
    for where, word in junk:
        pa, length = pages[where % len(pages)]
        at = pa + (where // len(pages)) % (length // width) * width
        if width == 4:
            mem.write_u32(at, word & 0xFFFF_FFFF)
        else:
            mem.write_u64(at, word)
    assert _spans(pt) == _reference(pt)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_a_destroyed_table_refuses_as_mappings_does(name: str) -> None:
    _, pt = _table(FORMATS[name])
    pt.destroy()
    with pytest.raises(VcmmError) as spans:
        pt.leaf_spans()
    with pytest.raises(VcmmError) as entries:
        list(pt.mappings())
    assert type(spans.value) is type(entries.value)
    assert str(spans.value).replace("leaf_spans", "mappings") == str(entries.value)


def test_lpae_skips_a_leaf_and_a_subtree_its_walk_faults_on() -> None:
    """Output-address bits 40-47 do not exist in LPAE: a leaf or a table descriptor
    with one set faults, so the leaf is not a mapping and the subtree is not walked
    (here it points at the table holding the real page, which would count twice)."""
    mem, pt = _table(ARMV7_LPAE)
    pt.map(0x1000, RAM + 0x80_0000, 0x1000, PageAttrs())
    (_, _), (l2, _), (l3, _) = pt.table_pages()
    mem.write_u64(l3 + 8 * 2, (RAM + 0x90_0000) | 0x400 | 3 | 5 << 40)  # a faulting page
    mem.write_u64(l2 + 8 * 1, l3 | 3 | 5 << 40)  # a faulting table: 2 MiB on, the same L3
    assert pt.leaf_spans() == ([0x1000], [0x1000]) == _reference(pt)
    mem.write_u64(l2 + 8 * 1, l3 | 3)  # the same table without the bits: walked
    assert pt.leaf_spans() == ([0x1000, 0x20_1000], [0x1000, 0x1000]) == _reference(pt)
