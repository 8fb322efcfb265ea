"""Empty tables kept as Linux keeps them, and journals of several table calls.

Linux's io-pgtable-arm and io-pgtable-arm-v7s never free a table when its last entry
is unmapped (``__arm_lpae_unmap`` / ``__arm_v7s_unmap`` clear the leaf and leave the
table); they free an empty table only when a block is later mapped over its slot
(``arm_lpae_init_pte`` / ``arm_v7s_init_pte``: "we need to unmap and free the old
table before overwriting it with a block entry"), or when the domain goes.  A
journal makes several calls one step: its rollback must restore every byte, table
page and count, which replaying inverse calls cannot once empty tables are kept.
"""

from __future__ import annotations

import pytest

from vcmm.attrs import FaultKind, PageAttrs
from vcmm.errors import AlreadyMappedError, OutOfMemoryError, StateError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16K, SZ_256M

RAM = 0x8000_0000
A = PageAttrs()
FORMATS = [ARMV7S, ARMV7_LPAE, VMSAV8_4K]


def make(
    fmt: PageTableFormat, window: int = SZ_4M, *, keep_tables: bool = True
) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, window))
    return mem, tm, PageTable(fmt, mem, tm, keep_tables=keep_tables)


def state(mem: PhysicalMemory, tm: TableMemory, pt: PageTable) -> tuple[object, ...]:
    return pt.snapshot(), tm.snapshot(), mem.digest()


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_a_map_unmap_pair_allocates_its_tables_once(fmt: PageTableFormat) -> None:
    _mem, tm, pt = make(fmt)
    assert pt.keep_tables
    va = SZ_1G + 5 * SZ_4K
    pt.map(va, RAM + SZ_16K * 64, SZ_4K, A)
    used, pages = tm.used_bytes, pt.table_pages()
    assert len(pages) > 1
    pt.unmap(va, SZ_4K)
    assert pt.table_pages() == pages and tm.used_bytes == used  # kept, empty
    walk = pt.walk(va)
    # the fault now comes from the last level, below the kept table, as on Linux
    assert walk.fault is FaultKind.TRANSLATION and walk.reads == len(pt.geometry.levels)
    for k in range(3):  # every later pair reuses them: no allocation
        pt.map(va + k * SZ_4K, RAM + SZ_1M, SZ_4K, A)
        assert tm.used_bytes == used
        pt.unmap(va + k * SZ_4K, SZ_4K)
    assert list(pt.mappings()) == []
    pt.destroy()
    assert tm.used_bytes == 0


def test_a_section_over_a_kept_v7s_table_releases_it() -> None:
    _mem, _tm, pt = make(ARMV7S)
    root_only = pt.table_pages()
    pt.map(SZ_1M + SZ_4K, RAM, SZ_4K, A)
    pt.unmap(SZ_1M + SZ_4K, SZ_4K)
    assert len(pt.table_pages()) == 2
    entries = pt.map(SZ_1M, RAM + SZ_1M, SZ_1M, A)
    assert [(e.va, e.size) for e in entries] == [(SZ_1M, SZ_1M)]
    assert pt.table_pages() == root_only
    assert pt.walk(SZ_1M + SZ_4K).pa == RAM + SZ_1M + SZ_4K


def test_a_1g_block_over_kept_lpae_tables_releases_the_subtree() -> None:
    _mem, tm, pt = make(VMSAV8_4K)
    pt.map(0, RAM, SZ_4K, A)  # the level-1 table stays in use
    upper, used = pt.table_pages(), tm.used_bytes
    for va in (SZ_1G + SZ_4K, SZ_1G + 7 * SZ_2M):  # two level-3 tables under one level 2
        pt.map(va, RAM, SZ_4K, A)
        pt.unmap(va, SZ_4K)
    assert len(pt.table_pages()) == len(upper) + 3
    pt.map(SZ_1G, 1 << 32, SZ_1G, A)
    assert pt.table_pages() == upper and tm.used_bytes == used
    assert pt.walk(SZ_1G + SZ_4K).page_size == SZ_1G


@pytest.mark.parametrize("fmt", [ARMV7S, VMSAV8_4K], ids=lambda f: f.name)
def test_a_block_over_a_table_still_holding_pages_is_refused(fmt: PageTableFormat) -> None:
    mem, tm, pt = make(fmt)
    block = SZ_1M if fmt is ARMV7S else SZ_2M
    pt.map(block + SZ_4K, RAM, SZ_4K, A)
    pt.map(block + 2 * SZ_4K, RAM, SZ_4K, A)
    pt.unmap(block + SZ_4K, SZ_4K)  # the table holds one page still
    before = state(mem, tm, pt)
    with pytest.raises(AlreadyMappedError, match=f"{block + 2 * SZ_4K:#x}"):
        pt.map(block, RAM + block, block, A)
    assert state(mem, tm, pt) == before


def test_a_kept_v7s_table_takes_the_ns_bit_of_the_next_page() -> None:
    """ARMv7 pages inherit NS from the table descriptor: an empty kept table is
    restamped (as a new one would be made), a table still in use refuses."""
    _mem, _tm, pt = make(ARMV7S)
    secure, nonsecure = A.with_(ns=False), A.with_(ns=True)
    pt.map(SZ_1M, RAM, SZ_4K, nonsecure)
    pt.unmap(SZ_1M, SZ_4K)
    pt.map(SZ_1M + SZ_4K, RAM, SZ_4K, secure)
    assert pt.walk(SZ_1M + SZ_4K).attrs.ns is False
    with pytest.raises(Exception, match="NS"):
        pt.map(SZ_1M, RAM, SZ_4K, nonsecure)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_a_journal_rollback_restores_tables_kept_and_released(fmt: PageTableFormat) -> None:
    mem, tm, pt = make(fmt)
    block = SZ_1M if fmt is ARMV7S else SZ_2M
    pt.map(block + SZ_4K, RAM, SZ_4K, A)
    pt.unmap(block + SZ_4K, SZ_4K)  # an empty kept table under the first block
    before = state(mem, tm, pt)
    journal = pt.journal("test")
    pt.map(block, RAM + block, block, A)  # releases the kept table
    pt.map(SZ_1G, RAM, 4 * SZ_4K, A)  # allocates new ones
    pt.unmap(SZ_1G + SZ_4K, SZ_4K)
    assert state(mem, tm, pt) != before
    journal.rollback()
    assert state(mem, tm, pt) == before
    journal = pt.journal("again")
    pt.map(block, RAM + block, block, A)
    used = tm.used_bytes
    journal.commit()  # the released table's page goes back only now
    assert tm.used_bytes < used
    assert pt.walk(block).page_size == block


def test_a_failing_call_inside_a_journal_takes_back_only_itself() -> None:
    mem, tm, pt = make(ARMV7S, window=SZ_16K + SZ_4K)  # the root and one page of L2s
    before = state(mem, tm, pt)
    journal = pt.journal("test")
    with pytest.raises(StateError, match="already has an open journal"):
        pt.journal("second")
    for k in range(4):  # four 1 KiB level-2 tables fill the page
        pt.map(k * SZ_1M, RAM, SZ_4K, A)
    middle = state(mem, tm, pt)
    with pytest.raises(OutOfMemoryError):
        pt.map(4 * SZ_1M, RAM, 2 * SZ_4K, A)
    with pytest.raises(AlreadyMappedError):
        pt.map(0, RAM, SZ_4K, A)
    assert state(mem, tm, pt) == middle
    journal.rollback()
    assert state(mem, tm, pt) == before
    with pytest.raises(StateError, match="not open"):
        journal.commit()


def test_without_keep_tables_an_unmap_releases_them() -> None:
    _mem, tm, pt = make(ARMV7S, keep_tables=False)
    used = tm.used_bytes
    pt.map(SZ_1M, RAM, SZ_4K, A)
    pt.unmap(SZ_1M, SZ_4K)
    assert tm.used_bytes == used and len(pt.table_pages()) == 1
