"""Smallest pages stored and cleared one descriptor each, where the tables allow it.

Why: a streaming DMA map of a few 4 KiB pages lands in a last-level table that almost
always exists already (Linux and this model keep empty tables), so the whole table
change is one descriptor store per page.  :meth:`PageTable.map` and
:meth:`PageTable.unmap` get there through the run planner, the free check and the
range walker, which cost tens of times the store.  These functions do the point
descent the hardware walker does and say whether the simple case holds; if it does
not (a table missing, a table descriptor whose inherited fields differ, a slot in
use, a block, a table that releases its empty pages), they answer None and the
caller takes the general path, so the table bytes, the shadow counts and the errors
stay exactly those of :class:`~vcmm.hw.pgtable.table.PageTable`.

The slots are written with :meth:`PageTable.store_words`, one logged edit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat, Role
from vcmm.hw.pgtable.table import PageTable

#: ``(table page, entry index, descriptor)`` of one store.
Slot = tuple[int, int, int]
U64 = npt.NDArray[np.uint64]


@functools.lru_cache(maxsize=1024)
def _inherits(kind: DescriptorKind, desc: int, fmt: PageTableFormat, attrs: PageAttrs) -> bool:
    """Whether the table descriptor ``desc`` is what mapping ``attrs`` below it would
    write (its inherited fields agree).  Memoised: a streaming map meets the same few
    table descriptors again and again, and encoding one is a dozen steps."""
    return kind.encode(kind.output_address(desc), fmt.attr_values(attrs)) == desc


def _word_read(table: PageTable) -> Callable[[int], int]:
    """The memory's counted read of one descriptor of ``table``'s width."""
    return table.memory.read_u32 if table.fmt.entry_bytes == 4 else table.memory.read_u64


def _last_table(
    table: PageTable,
    va: int,
    li: int,
    attrs: PageAttrs | None,
    read: Callable[[int], int] | None = None,
) -> int | None:
    """The address of the level-``li`` table holding ``va``'s slot, or None if a level
    above has no table there (or, with ``attrs``, one whose descriptor would need
    rewriting for them: the inherited fields differ).  ``read`` reads a descriptor
    (the memory's counted word read by default)."""
    fmt = table.fmt
    eb = fmt.entry_bytes
    if read is None:
        read = _word_read(table)
    addr = table.root
    levels = table.geometry.levels
    for k in range(li):
        gl = levels[k]
        desc = read(addr + gl.index(va) * eb)
        kind = gl.classify(desc)
        if kind is None or kind.role is not Role.TABLE:
            return None
        if attrs is not None and not _inherits(kind, desc, fmt, attrs):
            return None
        addr = kind.output_address(desc)
    return addr


class _LeafSlots:
    """Each page's slot in its last-level table, the descent done once per table; a
    page named twice is refused (None), as a second store there would not be simple."""

    __slots__ = ("_attrs", "_gl", "_li", "_seen", "_span", "_table", "_tables")

    def __init__(self, table: PageTable, li: int, attrs: PageAttrs | None) -> None:
        self._table, self._li, self._attrs = table, li, attrs
        self._gl = table.geometry.levels[li]
        self._span = self._gl.table_span
        self._tables: dict[int, int | None] = {}
        self._seen: set[int] = set()

    def find(self, va: int) -> tuple[int, int] | None:
        """``(table address, entry index)`` of ``va``, or None."""
        if va in self._seen:
            return None
        self._seen.add(va)
        key = va // self._span
        tables = self._tables
        if key in tables:
            addr = tables[key]
        else:
            addr = tables[key] = _last_table(self._table, va, self._li, self._attrs)
        return None if addr is None else (addr, self._gl.index(va))


@functools.lru_cache(maxsize=256)
def _leaf_plan(geo: Geometry, attrs: PageAttrs) -> tuple[int, DescriptorKind, int] | None:
    """The smallest page's level index, descriptor kind and fixed bits
    (type and attributes) for ``attrs`` in ``geo``, or None when a smallest page is
    not one descriptor or the format cannot say ``attrs``.  Memoised: a table meets
    the same few attribute sets on every map (geometries live as long as their
    tables and compare by identity)."""
    li, kind = geo.leaf[geo.fmt.min_page]
    if kind.copies != 1:
        return None
    try:
        values = geo.fmt.attr_values(attrs)
    except VcmmError:
        return None
    return li, kind, kind.type_value | kind.attr_bits(values)  # as kind.encode


#: From this many pages on, the checks, the slots' words and the descriptors are
#: worked out with numpy: a fixed cost of about 150 us against about 2.5 us a page
#: in the loop (measured: 64 pages 189 against 149 us, 256 pages 260 against 655,
#: 700 pages 590 against 1932).  Anything that is not the simple case then goes
#: through the loop, so declines, errors and counted reads stay the loop's.
MANY_PAGES = 128


class _Gathered(NamedTuple):
    """Per page: its last-level table, its entry index there, the word it holds; and
    how many descents found those tables (one per table span, as the loop makes)."""

    tables: U64
    slots: U64
    words: U64
    descents: int


def _gather(table: PageTable, li: int, vas: U64, attrs: PageAttrs | None) -> _Gathered | None:
    """The slots of ``vas`` (distinct, in range) and the words in them, read without
    counting; None if a level above has no table for one of them (or, with
    ``attrs``, one whose inherited fields differ) or a slot is not memory.  On use,
    the caller counts the reads the page loop would have made (:func:`_count`)."""
    memory, eb = table.memory, table.fmt.entry_bytes
    gl = table.geometry.levels[li]
    span_shift = gl.shift + gl.index_bits

    def peek(addr: int) -> int:
        words, backed = memory.peek_words(np.array([addr], dtype=np.uint64), eb)
        return int(words[0]) if backed[0] else -1  # -1: not memory, never a table

    keys, inverse = np.unique(vas >> np.uint64(span_shift), return_inverse=True)
    bases: list[int] = []
    for key in keys.tolist():
        base = _last_table(table, key << span_shift, li, attrs, peek)
        if base is None:
            return None
        bases.append(base)
    tables = np.array(bases, dtype=np.uint64)[inverse]
    index = (vas >> np.uint64(gl.shift)) & np.uint64(gl.entries - 1)
    words, backed = memory.peek_words(tables + index * np.uint64(eb), eb)
    if not backed.all():
        return None
    return _Gathered(tables, index, words, len(bases))


def _count(table: PageTable, li: int, found: _Gathered) -> None:
    """Count the reads the page loop makes when every page is the simple case: the
    descent to each distinct last-level table and one word per page."""
    reads = found.descents * li + found.words.size
    table.memory.count_reads(reads * table.fmt.entry_bytes)


def _int_pairs(pages: Sequence[tuple[int, int]]) -> npt.NDArray[np.int64] | None:
    """``pages`` as an ``[n, 2]`` array when every value is a plain int that fits."""
    if not all(type(va) is int and type(pa) is int for va, pa in pages):
        return None
    try:
        return np.array(pages, dtype=np.int64).reshape(-1, 2)
    except OverflowError:
        return None


def _store_many(
    table: PageTable,
    pages: Sequence[tuple[int, int]],
    li: int,
    kind: DescriptorKind,
    fixed: int,
    attrs: PageAttrs,
) -> list[Slot] | None:
    """:func:`store_slots`' loop, vectorised; None wherever the loop might not map."""
    arr = _int_pairs(pages)
    if arr is None:
        return None
    vas, pas = arr[:, 0], arr[:, 1]
    size = table.fmt.min_page
    if (
        bool(((vas % size) | (pas % size)).any())
        or int(vas.min()) < 0
        or int(vas.max()) >= table.geometry.va_limit
        or int(pas.min()) < 0
        or int(pas.max()) + size > kind.oa_limit
        or np.unique(vas).size != vas.size
    ):
        return None
    found = _gather(table, li, vas.astype(np.uint64), attrs)
    if found is None or bool(found.words.any()):
        return None
    _count(table, li, found)
    descs = kind.encode_many(pas.astype(np.uint64), fixed)
    return list(zip(found.tables.tolist(), found.slots.tolist(), descs.tolist(), strict=True))


def store_slots(
    table: PageTable, pages: Sequence[tuple[int, int]], attrs: PageAttrs
) -> list[Slot] | None:
    """The stores mapping each ``(va, pa)`` as one smallest page with ``attrs``, or
    None if any page is not the simple case (nothing is checked twice: the caller
    then maps the general way, which raises what it raises)."""
    fmt, geo = table.fmt, table.geometry
    size = fmt.min_page
    plan = _leaf_plan(geo, attrs) if isinstance(attrs, PageAttrs) else None
    if plan is None:
        return None
    li, kind, fixed = plan
    if len(pages) >= MANY_PAGES:
        many = _store_many(table, pages, li, kind, fixed, attrs)
        if many is not None:
            return many
    read = _word_read(table)
    eb, limit = fmt.entry_bytes, geo.va_limit
    slots: list[Slot] = []
    leaf = _LeafSlots(table, li, attrs)
    for va, pa in pages:
        if type(va) is not int or type(pa) is not int:  # the general path checks them
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


def clear_slots(table: PageTable, vas: Sequence[int]) -> list[Slot] | None:
    """The stores clearing the smallest page mapped at each of ``vas``, or None if any
    is not one smallest-page leaf (a block, a hole) or the table releases the tables
    an unmap empties (``keep_tables=False``)."""
    if not table.keep_tables:
        return None
    fmt, geo = table.fmt, table.geometry
    li, kind = geo.leaf[fmt.min_page]
    if kind.copies != 1:
        return None
    if len(vas) >= MANY_PAGES:
        many = _clear_many(table, vas, li, kind)
        if many is not None:
            return many
    read = _word_read(table)
    eb, gl = fmt.entry_bytes, geo.levels[li]
    slots: list[Slot] = []
    leaf = _LeafSlots(table, li, None)
    for va in vas:
        if type(va) is not int or va < 0:  # the general path checks it
            return None
        found = leaf.find(va)
        if found is None:
            return None
        addr, index = found
        if gl.classify(read(addr + index * eb)) is not kind:
            return None
        slots.append((addr, index, 0))
    return slots


def _clear_many(
    table: PageTable, vas: Sequence[int], li: int, kind: DescriptorKind
) -> list[Slot] | None:
    """:func:`clear_slots`' loop, vectorised; None wherever the loop might not clear."""
    if not all(type(va) is int for va in vas):
        return None
    try:
        arr = np.array(vas, dtype=np.int64)
    except OverflowError:
        return None
    if int(arr.min()) < 0 or np.unique(arr).size != arr.size:
        return None
    found = _gather(table, li, arr.astype(np.uint64), None)
    if found is None:
        return None
    if not bool(table.geometry.levels[li].classified_as(found.words, kind).all()):
        return None
    _count(table, li, found)
    return [
        (base, index, 0)
        for base, index in zip(found.tables.tolist(), found.slots.tolist(), strict=True)
    ]
