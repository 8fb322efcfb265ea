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

The slots are written with :meth:`PageTable.store_words`.  A call descends once per
last-level table and reads its slots through a window on each table, counting the
reads as the word reads they stand for; nothing is kept across calls, since the
general map and unmap, undo and table frees change the tables in between.
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


#: From this many pages on, a call reads its slots through a window on each table.
WINDOW_PAGES = 4


class _LeafSlots:
    """Each page's slot in its last-level table and the word in it, for one call.

    The descent is made once per table (its reads counted as they go).  With
    ``windows`` (a call of a few pages or more) the slots are read through one window
    on each table (:meth:`PhysicalMemory.peek_window`) and counted on :meth:`close`
    as the word reads they stand for, so the counters end as one counted read per
    slot would leave them; a window costs about two word reads, so a call of one or
    two pages reads its slots word by word.  A page named twice is refused
    (None), as a second store there would not be simple.  Nothing outlives the call:
    other paths (the general map and unmap, undo, table frees) change the tables
    between calls.
    """

    __slots__ = (
        "_attrs",
        "_eb",
        "_leaves",
        "_li",
        "_mask",
        "_read",
        "_seen",
        "_shift",
        "_span_shift",
        "_table",
        "_windows",
        "reads",
    )

    def __init__(
        self, table: PageTable, li: int, attrs: PageAttrs | None, *, windows: bool
    ) -> None:
        self._table, self._li, self._attrs = table, li, attrs
        self._windows = windows
        gl = table.geometry.levels[li]
        self._shift, self._mask = gl.shift, gl.index_mask
        self._span_shift = gl.shift + gl.index_bits
        self._eb = table.fmt.entry_bytes
        self._read = _word_read(table)
        #: Per table span: the table's address and its window (None: read word by
        #: word), or None where no table is there.
        self._leaves: dict[int, tuple[int, Sequence[int] | None] | None] = {}
        self._seen: set[int] = set()
        #: Slots read through a window and not yet counted.
        self.reads = 0

    def find(self, va: int) -> tuple[int, int, int] | None:
        """``(table address, entry index, word there)`` of ``va``, or None."""
        if va in self._seen:
            return None
        self._seen.add(va)
        key = va >> self._span_shift
        leaves = self._leaves
        leaf = leaves[key] if key in leaves else self._descend(key, va)
        if leaf is None:
            return None
        base, words = leaf
        index = (va >> self._shift) & self._mask
        if words is None:
            return base, index, self._read(base + index * self._eb)
        self.reads += 1
        return base, index, words[index]

    def _descend(self, key: int, va: int) -> tuple[int, Sequence[int] | None] | None:
        table = self._table
        base = _last_table(table, va, self._li, self._attrs, self._read)
        leaf = None
        if base is not None:
            window = None
            if self._windows:
                window = table.memory.peek_window(base, self._mask + 1, self._eb)
            leaf = base, window
        self._leaves[key] = leaf
        return leaf

    def close(self) -> None:
        """Count the slot reads made through windows."""
        self._table.memory.count_reads(self.reads * self._eb)
        self.reads = 0


@functools.lru_cache(maxsize=256)
def _pa_mask(kind: DescriptorKind) -> int:
    """The descriptor bits an output address of ``kind`` occupies when they are the
    address's own bits (``desc |= pa & mask`` encodes it), else 0.  Memoised: asked
    once per call."""
    if any(s.pa_lsb != s.desc_lsb for s in kind.address):
        return 0
    return functools.reduce(lambda m, s: m | s.desc_mask, kind.address, 0)


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
#: worked out with numpy: a fixed cost of about 100 us (ARMv7 short descriptors;
#: 200 us with four levels) against about 0.6 us a page in the loop, whose slots
#: are read through windows (measured store_slots over four tables: 128 pages 137
#: against 86 us, 256 pages 185 against 157, 512 pages 281 against 300; VMSAv8 4K
#: 512 pages 389 against 326).  Anything that is not the simple case then goes
#: through the loop, so declines, errors and counted reads stay the loop's.
MANY_PAGES = 384


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
    plan = _leaf_plan(table.geometry, attrs) if isinstance(attrs, PageAttrs) else None
    if plan is None:
        return None
    li, kind, fixed = plan
    if len(pages) >= MANY_PAGES:
        many = _store_many(table, pages, li, kind, fixed, attrs)
        if many is not None:
            return many
    leaf = _LeafSlots(table, li, attrs, windows=len(pages) >= WINDOW_PAGES)
    try:
        return _store_loop(leaf, pages, table, kind, fixed)
    finally:
        leaf.close()


def _store_loop(
    leaf: _LeafSlots,
    pages: Sequence[tuple[int, int]],
    table: PageTable,
    kind: DescriptorKind,
    fixed: int,
) -> list[Slot] | None:
    """:func:`store_slots` page by page."""
    size, limit = table.fmt.min_page, table.geometry.va_limit
    oa_limit, pa_mask = kind.oa_limit, _pa_mask(kind)
    slots: list[Slot] = []
    for va, pa in pages:
        if type(va) is not int or type(pa) is not int:  # the general path checks them
            return None
        if va % size or pa % size or not 0 <= va < limit or pa + size > oa_limit:
            return None
        found = leaf.find(va)
        if found is None or found[2]:
            return None
        address = pa & pa_mask if pa_mask else kind.address_bits(pa)
        slots.append((found[0], found[1], fixed | address))
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
    classify = geo.levels[li].classify
    slots: list[Slot] = []
    leaf = _LeafSlots(table, li, None, windows=len(vas) >= WINDOW_PAGES)
    try:
        for va in vas:
            if type(va) is not int or va < 0:  # the general path checks it
                return None
            found = leaf.find(va)
            if found is None or classify(found[2]) is not kind:
                return None
            slots.append((found[0], found[1], 0))
    finally:
        leaf.close()
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
