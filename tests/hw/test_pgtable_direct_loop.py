"""The store-per-page loops of ``hw/pgtable/direct.py`` and ``TableSet.put_slots``
against the loops they replaced and the general path, on twin tables.

The loops read a table's slots through one window (``PhysicalMemory.peek_window``)
and count the reads afterwards, and ``put_slots`` stores a table's slots with one
``PhysicalMemory.exchange_words``.  The reference below is the previous code: one
counted word read per slot, one ``put_words`` per run of consecutive entries.  Both
run on twin tables with the same pages (random slots over three kept last-level
tables and one span without a table, pages in use, pages named twice, misaligned or
out-of-range addresses, values that are not ints) and must give the same answer, the
same refusals, the same table bytes and valid counts, and the same memory counters;
the general ``PageTable.map``/``unmap`` must leave the same bytes and counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType, PageAttrs
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat, direct
from vcmm.hw.pgtable.direct import Slot, clear_slots, store_slots
from vcmm.hw.pgtable.tableset import runs_of_slots
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_4K, SZ_4M, SZ_64K, SZ_256M

RAM = 0x8000_0000
BASE = SZ_1G
FORMATS = [ARMV7S, ARMV7_LPAE, VMSAV8_4K]  # every format the model has (v8: 4K granule)
ATTRS = [PageAttrs(), PageAttrs(shareable=True), PageAttrs(memtype=MemType.NORMAL_NC)]


# -- the previous loops, kept as the reference ----------------------------------------------


class _OldLeafSlots:
    """The previous per-call descent cache: one counted descent per table span."""

    def __init__(self, table: PageTable, li: int, attrs: PageAttrs | None) -> None:
        self._table, self._li, self._attrs = table, li, attrs
        self._gl = table.geometry.levels[li]
        self._span = self._gl.table_span
        self._tables: dict[int, int | None] = {}
        self._seen: set[int] = set()

    def find(self, va: int) -> tuple[int, int] | None:
        if va in self._seen:
            return None
        self._seen.add(va)
        key = va // self._span
        if key not in self._tables:
            self._tables[key] = direct._last_table(self._table, va, self._li, self._attrs)
        addr = self._tables[key]
        return None if addr is None else (addr, self._gl.index(va))


def old_store_slots(table: PageTable, pages: Sequence[Any], attrs: Any) -> list[Slot] | None:
    fmt, geo = table.fmt, table.geometry
    size = fmt.min_page
    plan = direct._leaf_plan(geo, attrs) if isinstance(attrs, PageAttrs) else None
    if plan is None:
        return None
    li, kind, fixed = plan
    read = direct._word_read(table)
    eb, limit = fmt.entry_bytes, geo.va_limit
    slots: list[Slot] = []
    leaf = _OldLeafSlots(table, li, attrs)
    for va, pa in pages:
        if type(va) is not int or type(pa) is not int:
            return None
        if va % size or pa % size or not 0 <= va < limit or pa + size > kind.oa_limit:
            return None
        found = leaf.find(va)
        if found is None:
            return None
        addr, index = found
        if read(addr + index * eb):
            return None
        desc = fixed
        for piece in kind.address:
            desc |= ((pa >> piece.pa_lsb) & ((1 << piece.width) - 1)) << piece.desc_lsb
        slots.append((addr, index, desc))
    return slots


def old_clear_slots(table: PageTable, vas: Sequence[Any]) -> list[Slot] | None:
    if not table.keep_tables:
        return None
    fmt, geo = table.fmt, table.geometry
    li, kind = geo.leaf[fmt.min_page]
    read = direct._word_read(table)
    eb, gl = fmt.entry_bytes, geo.levels[li]
    slots: list[Slot] = []
    leaf = _OldLeafSlots(table, li, None)
    for va in vas:
        if type(va) is not int or va < 0:
            return None
        found = leaf.find(va)
        if found is None:
            return None
        addr, index = found
        if gl.classify(read(addr + index * eb)) is not kind:
            return None
        slots.append((addr, index, 0))
    return slots


def old_put_slots(table: PageTable, slots: list[Slot]) -> None:
    """The previous ``put_slots``: one ``put_words`` per run of consecutive entries."""
    for base, index, descs in runs_of_slots(slots):
        table._tables.put_words(base, index, descs)


# -- twin tables ------------------------------------------------------------------------------


def _twin(fmt: PageTableFormat, mapped: Sequence[tuple[int, int]]) -> PageTable:
    """A table with three kept last-level tables from BASE and ``mapped`` pages."""
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    table = PageTable(fmt, mem, TableMemory(mem, AddressRange(RAM, SZ_4M)))
    span = _span(table)
    for k in range(3):
        table.map(BASE + k * span, RAM + SZ_64K, SZ_4K, PageAttrs())
        table.unmap(BASE + k * span, SZ_4K)
    for va, pa in mapped:
        table.map(va, pa, SZ_4K, PageAttrs())
    return table


def _span(table: PageTable) -> int:
    return table.geometry.levels[table.geometry.leaf[table.fmt.min_page][0]].table_span


def _put_junk(table: PageTable, va: int) -> None:
    """Write a word with the valid bit clear but other bits set into ``va``'s slot."""
    li = table.geometry.leaf[table.fmt.min_page][0]
    gl = table.geometry.levels[li]
    base = direct._last_table(table, va, li, None)
    assert base is not None
    junk = 0xF0 & ~gl.valid_mask
    assert junk and gl.classify(junk) is None
    addr = base + gl.index(va) * table.fmt.entry_bytes
    if table.walk(va).ok:
        table.unmap(va, SZ_4K)
    table.memory.write(addr, junk.to_bytes(table.fmt.entry_bytes, "little"))


def _state(table: PageTable) -> tuple[object, ...]:
    mem = table.memory
    return (table.snapshot(), mem.bytes_read, mem.bytes_written, mem.resident_bytes())


def _page_va(table: PageTable, slot: int) -> int:
    """Slot ``slot`` counted over four spans from BASE (the fourth has no table)."""
    span = _span(table)
    per = min(span // SZ_4K, 300)
    return BASE + (slot // per) * span + (slot % per) * SZ_4K


SPOILERS = ["twice", "misaligned", "beyond", "not int", "negative", "in use"]


def _spoil(pages: list[Any], spoiler: str | None, where: int, limit: int) -> None:
    if spoiler is None or not pages:
        return
    k = where % len(pages)
    va, pa = pages[k]
    if spoiler == "twice":
        pages.insert(k + 1, (va, pa + SZ_4K))
    elif spoiler == "misaligned":
        pages[k] = (va, pa + 8)
    elif spoiler == "beyond":
        pages[k] = (limit, pa)
    elif spoiler == "not int":
        pages[k] = (va, float(pa))
    elif spoiler == "negative":
        pages[k] = (-SZ_4K, pa)


@contextlib.contextmanager
def _thresholds(many: int, window: int) -> Any:
    with (
        mock.patch.object(direct, "MANY_PAGES", many),
        mock.patch.object(direct, "WINDOW_PAGES", window),
    ):
        yield


CASE = settings(max_examples=40, deadline=None)
SLOTS = st.lists(st.integers(0, 4 * 300 - 1), min_size=1, max_size=70, unique=True)
FRAMES = st.lists(st.integers(16, 60000), min_size=70, max_size=70)
SPOILER = st.sampled_from([None, None, *SPOILERS])
#: (MANY_PAGES, WINDOW_PAGES): the loop with windows, the loop word by word, numpy.
THRESHOLDS = st.sampled_from([(10**9, 1), (10**9, 10**9), (1, 1), (10**9, 4)])


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@CASE
@given(
    slots=SLOTS,
    frames=FRAMES,
    used=st.lists(st.integers(0, 4 * 300 - 1), max_size=12),
    spoiler=SPOILER,
    where=st.integers(0, 200),
    attrs=st.sampled_from(ATTRS),
    thresholds=THRESHOLDS,
)
def test_store_slots_agree_with_the_previous_loop_and_map(
    fmt: PageTableFormat,
    slots: list[int],
    frames: list[int],
    used: list[int],
    spoiler: str | None,
    where: int,
    attrs: PageAttrs,
    thresholds: tuple[int, int],
) -> None:
    """Same slots or the same refusal, the same counted reads; stored, the same bytes,
    counts and counters as the previous store, and the bytes and counts of map."""
    probe = _twin(fmt, [])
    vas = [_page_va(probe, s) for s in slots]
    pages: list[Any] = [(va, RAM + f * SZ_4K) for va, f in zip(vas, frames, strict=False)]
    mapped = [(_page_va(probe, u), RAM + SZ_64K) for u in used if u < 3 * 300]
    if spoiler == "in use" and pages:
        mapped.append((pages[where % len(pages)][0], RAM + SZ_64K))
    _spoil(pages, spoiler, where, probe.geometry.va_limit)
    new, old, general = (_twin(fmt, sorted(set(mapped))) for _ in range(3))
    assert _state(new) == _state(old)
    with _thresholds(*thresholds):
        found = store_slots(new, pages, attrs)
    expected = old_store_slots(old, pages, attrs)
    assert found == expected
    assert _state(new) == _state(old)  # the same reads counted, nothing written
    if found is None:
        return
    new.store_words("store", found)
    old_put_slots(old, expected)  # type: ignore[arg-type]
    assert _state(new) == _state(old)
    for va, pa in pages:
        general.map(va, pa, SZ_4K, attrs)
    assert new.snapshot() == general.snapshot()


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@CASE
@given(
    slots=SLOTS,
    clear=st.lists(st.integers(0, 4 * 300 - 1), min_size=1, max_size=70),
    spoiler=st.sampled_from([None, None, "twice", "not int", "negative", "hole", "junk", "large"]),
    where=st.integers(0, 200),
    thresholds=THRESHOLDS,
)
def test_clear_slots_agree_with_the_previous_loop_and_unmap(
    fmt: PageTableFormat,
    slots: list[int],
    clear: list[int],
    spoiler: str | None,
    where: int,
    thresholds: tuple[int, int],
) -> None:
    """Clearing mapped pages (and, spoilt, a page named twice, a hole, a bad value):
    the same slots or refusal and reads as the previous loop; stored, the same bytes,
    counts and counters, and the bytes and counts of unmap."""
    probe = _twin(fmt, [])
    mapped = sorted({(_page_va(probe, s), RAM + (s + 16) * SZ_4K) for s in slots if s < 900})
    vas: list[Any] = [va for va, _ in mapped]
    if spoiler == "hole":
        vas.insert(where % (len(vas) + 1), _page_va(probe, clear[0]))
        if len(set(vas)) != len(vas):
            vas = list(dict.fromkeys(vas))
    elif spoiler in ("twice", "not int", "negative") and vas:
        k = where % len(vas)
        vas.insert(k, {"twice": vas[k], "not int": str(vas[k]), "negative": -vas[k]}[spoiler])
    new, old, general = (_twin(fmt, mapped) for _ in range(3))
    if spoiler == "junk":  # a word that is not a descriptor (invalid, yet not zero)
        va = _page_va(probe, clear[0] % 600)
        for table in (new, old, general):
            _put_junk(table, va)
        vas = [v for v in vas if v != va]
        vas.insert(where % (len(vas) + 1), va)
    elif spoiler == "large":  # a 64 KiB page: one large-page leaf or 16 small ones
        va = BASE + 2 * _span(probe) - SZ_64K
        for table in (new, old, general):
            for v in range(va, va + SZ_64K, SZ_4K):
                if table.walk(v).ok:
                    table.unmap(v, SZ_4K)
            table.map(va, RAM + SZ_4M, SZ_64K, PageAttrs())
        vas = [v for v in vas if not va <= v < va + SZ_64K]
        vas.insert(where % (len(vas) + 1), va + SZ_4K * (where % 16))
    with _thresholds(*thresholds):
        found = clear_slots(new, vas)
    expected = old_clear_slots(old, vas)
    assert found == expected
    assert _state(new) == _state(old)
    if found is None:
        return
    new.store_words("clear", found)
    old_put_slots(old, expected)
    assert _state(new) == _state(old)
    for va in vas:
        general.unmap(va, SZ_4K)
    assert new.snapshot() == general.snapshot()


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=30, deadline=None)
@given(
    slots=st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 255), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=40,
    )
)
def test_put_slots_agrees_with_put_words_per_run(
    fmt: PageTableFormat, slots: list[tuple[int, int, int]]
) -> None:
    """Any slots, tables interleaved, an entry written twice, valid and invalid
    words: the same bytes, valid counts and counters as one ``put_words`` per run."""
    new, old = _twin(fmt, []), _twin(fmt, [])
    bases = sorted(p for p, _, count in new._tables.pages() if p != new.root)[:3]
    eb = fmt.entry_bytes
    stores = [(bases[t % len(bases)], i, w & ((1 << (8 * eb)) - 1)) for t, i, w in slots]
    new.store_words("store", stores)
    old_put_slots(old, stores)
    assert _state(new) == _state(old)
