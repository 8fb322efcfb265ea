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
from collections.abc import Sequence

from vcmm.attrs import PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat, Role
from vcmm.hw.pgtable.table import PageTable

#: ``(table page, entry index, descriptor)`` of one store.
Slot = tuple[int, int, int]


@functools.lru_cache(maxsize=1024)
def _inherits(kind: DescriptorKind, desc: int, fmt: PageTableFormat, attrs: PageAttrs) -> bool:
    """Whether the table descriptor ``desc`` is what mapping ``attrs`` below it would
    write (its inherited fields agree).  Memoised: a streaming map meets the same few
    table descriptors again and again, and encoding one is a dozen steps."""
    return kind.encode(kind.output_address(desc), fmt.attr_values(attrs)) == desc


def _last_table(table: PageTable, va: int, li: int, attrs: PageAttrs | None) -> int | None:
    """The address of the level-``li`` table holding ``va``'s slot, or None if a level
    above has no table there (or, with ``attrs``, one whose descriptor would need
    rewriting for them: the inherited fields differ)."""
    fmt = table.fmt
    read = table.memory.read_u32 if fmt.entry_bytes == 4 else table.memory.read_u64
    eb = fmt.entry_bytes
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
    read = table.memory.read_u32 if fmt.entry_bytes == 4 else table.memory.read_u64
    eb, limit = fmt.entry_bytes, geo.va_limit
    slots: list[Slot] = []
    leaf = _LeafSlots(table, li, attrs)
    for va, pa in pages:
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
    read = table.memory.read_u32 if fmt.entry_bytes == 4 else table.memory.read_u64
    eb, gl = fmt.entry_bytes, geo.levels[li]
    slots: list[Slot] = []
    leaf = _LeafSlots(table, li, None)
    for va in vas:
        found = leaf.find(va)
        if found is None:
            return None
        addr, index = found
        if gl.classify(read(addr + index * eb)) is not kind:
            return None
        slots.append((addr, index, 0))
    return slots
