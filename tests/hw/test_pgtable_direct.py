"""Store-per-page mapping (``hw/pgtable/direct.py``) against ``PageTable.map``/``unmap``.

``store_slots`` + ``store_words`` must leave exactly the bytes and valid counts that
``map`` leaves for the same pages, in all three formats, and ``clear_slots`` those of
``unmap``; every case they do not handle (no table yet, a slot in use, a block, a
hole, inherited fields that differ, a table that releases emptied pages) must be
declined with None, changing nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType, PageAttrs
from vcmm.errors import AttributeConflictError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.pgtable.direct import clear_slots, store_slots
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_4K, SZ_4M, SZ_64K, SZ_256M

RAM = 0x8000_0000
A = PageAttrs()
FORMATS = [ARMV7S, ARMV7_LPAE, VMSAV8_4K]
BASE = SZ_1G  # the VA of the first page used


def make(fmt: PageTableFormat, *, keep_tables: bool = True) -> PageTable:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    table = PageTable(fmt, mem, tm, keep_tables=keep_tables)
    table.map(BASE, RAM + SZ_64K, SZ_4K, A)  # the last-level table exists, kept empty
    table.unmap(BASE, SZ_4K)
    return table


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=20, deadline=None)
@given(
    slots=st.lists(st.integers(0, 255), min_size=1, max_size=12, unique=True),
    frames=st.lists(st.integers(16, 4000), min_size=12, max_size=12),
    shared=st.booleans(),
)
def test_stores_leave_what_map_and_unmap_leave(
    fmt: PageTableFormat, slots: list[int], frames: list[int], shared: bool
) -> None:
    attrs = PageAttrs(shareable=shared)
    pages = [(BASE + s * SZ_4K, RAM + f * SZ_4K) for s, f in zip(slots, frames, strict=False)]
    direct, general = make(fmt), make(fmt)
    found = store_slots(direct, pages, attrs)
    assert found is not None and len(found) == len(pages)
    direct.store_words("map", found)
    for va, pa in pages:
        general.map(va, pa, SZ_4K, attrs)
    assert direct.snapshot() == general.snapshot()
    for va, pa in pages:  # what the hardware walker reads back
        walk = direct.walk(va + 0x123)
        assert walk.ok and walk.pa == pa + 0x123 and walk.attrs.shareable is shared
    cleared = clear_slots(direct, [va for va, _ in pages])
    assert cleared is not None
    direct.store_words("unmap", cleared)
    for va, _ in pages:
        general.unmap(va, SZ_4K)
    assert direct.snapshot() == general.snapshot()
    assert list(direct.mappings()) == []


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_what_is_not_one_store_per_page_is_declined(fmt: PageTableFormat) -> None:
    table = make(fmt)
    before = table.snapshot()
    far = BASE + 64 * SZ_1M  # no last-level table there yet
    assert store_slots(table, [(far, RAM + SZ_1M)], A) is None
    assert store_slots(table, [(BASE, RAM + 3)], A) is None  # not page aligned
    assert store_slots(table, [(BASE, RAM), (BASE, RAM + SZ_4K)], A) is None  # twice
    assert clear_slots(table, [BASE]) is None  # a hole
    assert table.snapshot() == before
    table.map(BASE, RAM + SZ_1M, SZ_4K, A)
    assert store_slots(table, [(BASE, RAM + 2 * SZ_1M)], A) is None  # slot in use
    table.map(BASE + SZ_64K, RAM + SZ_1M + SZ_64K, SZ_64K, A)  # a large page or 16 pages
    big = table.walk(BASE + SZ_64K).page_size
    assert (clear_slots(table, [BASE + SZ_64K]) is None) == (big > SZ_4K)
    if fmt is ARMV7S:  # the level-1 descriptor carries NS for its whole table
        other = PageAttrs(ns=True)
        assert store_slots(table, [(BASE + SZ_4K, RAM + SZ_1M)], other) is None
        with pytest.raises(AttributeConflictError):  # what map says of the same page
            table.map(BASE + SZ_4K, RAM + SZ_1M, SZ_4K, other)
    uncached = PageAttrs(memtype=MemType.NORMAL_NC)
    assert store_slots(table, [(BASE + SZ_4K, RAM + SZ_1M)], uncached) is not None
    assert clear_slots(make(fmt, keep_tables=False), [BASE]) is None
