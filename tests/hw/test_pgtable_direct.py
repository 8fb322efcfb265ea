"""Store-per-page mapping (``hw/pgtable/direct.py``) against ``PageTable.map``/``unmap``.

``store_slots`` + ``store_words`` must leave exactly the bytes and valid counts that
``map`` leaves for the same pages, in all three formats, and ``clear_slots`` those of
``unmap``; every case they do not handle (no table yet, a slot in use, a block, a
hole, inherited fields that differ, a table that releases emptied pages) must be
declined with None, changing nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType, PageAttrs
from vcmm.errors import AttributeConflictError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat, direct
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
    # what is not a plain page address goes the general way, which refuses it
    assert store_slots(table, [("0x40000000", RAM)], A) is None  # type: ignore[list-item]
    assert store_slots(table, [(BASE, float(RAM))], A) is None  # type: ignore[list-item]
    assert store_slots(table, [(BASE, RAM)], "rw") is None  # type: ignore[arg-type]
    assert clear_slots(table, [None]) is None  # type: ignore[list-item]
    assert clear_slots(table, [-SZ_4K]) is None
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


# -- many pages: the vectorised checks against the page loop ----------------------------------


def _tables(fmt: PageTableFormat, count: int) -> PageTable:
    """A table whose first ``count`` last-level tables from BASE exist, kept empty."""
    table = make(fmt)
    span = table.geometry.levels[table.geometry.leaf[fmt.min_page][0]].table_span
    for k in range(1, count):
        table.map(BASE + k * span, RAM + SZ_64K, SZ_4K, A)
        table.unmap(BASE + k * span, SZ_4K)
    return table


def _both(
    call: Callable[[PageTable], object],
    fmt: PageTableFormat,
    setup: Callable[[PageTable], None],
    simple: bool,
) -> None:
    """``call`` on twin tables, once vectorised and once through the page loop: the
    same answer, the same table bytes after storing it, the same reads counted.  In
    the ``simple`` case the vectorised answer must come without the page loop."""
    results = []
    vectorised = 1  # every call vectorised, whatever the threshold
    for many in (vectorised, 10**9):
        table = _tables(fmt, 3)
        setup(table)
        before = table.memory.bytes_read
        with contextlib.ExitStack() as stack:
            stack.enter_context(mock.patch.object(direct, "MANY_PAGES", many))
            if simple and many == vectorised:  # the page loop must not run
                stack.enter_context(
                    mock.patch.object(direct, "_LeafSlots", side_effect=AssertionError)
                )
            found = call(table)
        reads = table.memory.bytes_read - before
        if found is not None:
            table.store_words("store", found)  # type: ignore[arg-type]
        results.append((found, reads, table.snapshot()))
    assert results[0] == results[1]
    assert (results[0][0] is not None) == simple


SPOILERS = [None, "twice", "no table", "in use", "unaligned"]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=25, deadline=None)
@given(
    slots=st.lists(st.integers(0, 3 * 256 - 1), min_size=16, max_size=80, unique=True),
    frames=st.lists(st.integers(16, 4000), min_size=80, max_size=80),
    spoiler=st.sampled_from(SPOILERS),
    where=st.integers(0, 15),
)
def test_many_pages_agree_with_the_page_loop(
    fmt: PageTableFormat, slots: list[int], frames: list[int], spoiler: str | None, where: int
) -> None:
    """Pages over three last-level tables, mapped and cleared vectorised and by the
    page loop, with at most one page that spoils the simple case: named twice, where
    no last-level table is, in a slot in use, or not page aligned.  Both answer the
    same (None with a spoiler), leave the same bytes and count the same reads."""
    span = _tables(fmt, 1).geometry.levels[-1].table_span
    entries = span // SZ_4K
    vas = [BASE + (s // 256) * span + (s % 256) * SZ_4K for s in slots]
    pages = [(va, RAM + f * SZ_4K) for va, f in zip(vas, frames, strict=False)]
    va, pa = pages[where]
    if spoiler == "twice":
        pages.append((va, pa + SZ_4K))
    elif spoiler == "no table":
        pages[where] = (BASE + 3 * span + 5 * SZ_4K, pa)
    elif spoiler == "unaligned":
        pages[where] = (va, pa + 3)
    assert entries >= 256

    def occupy(table: PageTable) -> None:
        if spoiler == "in use":
            table.map(va, RAM + SZ_1M, SZ_4K, A)

    _both(lambda t: store_slots(t, pages, A), fmt, occupy, spoiler is None)

    def mapped(table: PageTable) -> None:
        for k, (v, p) in enumerate(pages[: len(slots)]):  # "twice" names a page again
            if spoiler in (None, "twice") or k != where:
                table.map(v, p - p % SZ_4K, SZ_4K, A)  # a hole where the spoiler is

    clear_vas = [v for v, _ in pages]
    _both(lambda t: clear_slots(t, clear_vas), fmt, mapped, spoiler is None)
