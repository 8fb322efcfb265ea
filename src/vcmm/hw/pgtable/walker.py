"""Walking page tables in memory: one address (the hardware walker) or a range (visitors).

Both walks need nothing but the format, the memory and the root address, so what they
report is what a memory dump plus the ARM manual says.

:func:`walk_tables` translates one input address the way the hardware does.

:func:`walk_range` is the one range walk every table operation is built on, in the
manner of Linux's ``io_pgtable_walk_data`` and its ``visit`` op: it visits every table
reachable from the root that holds part of ``[start, end)``, parents before children
and siblings in address order, and hands each to a :class:`Visitor` as a
:class:`Slots`: the descriptors of the slots covering the range in that table, read
with one vectorised read.  The visitor classifies them vectorised (a leaf kind's
``match_many``), decides which table descriptors to descend through, and may rewrite
the slots (``Slots.edit``) and write them back when it leaves the table.  Finding the
first (un)mapped address, clearing a range (unmap), checking and rewriting attributes
(set_attrs) and decoding every mapping are visitors (:mod:`vcmm.hw.pgtable.visitors`);
a batched or vectorised operation added later is one more.  Work at one address (the
leaf that maps it, installing a run of leaves, splitting a block, checking a run's
slots are free) follows one path down with scalar reads instead, as the hardware
walker does: for a single page that is several times cheaper than a range walk.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import FaultKind
from vcmm.checks import is_int
from vcmm.errors import BusError, InvalidArgumentError
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, GeoLevel, Geometry, PageTableFormat, Role
from vcmm.hw.walk import Walk

U64 = npt.NDArray[np.uint64]


def walk_tables(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    root: int,
    va: int,
    *,
    va_bits: int | None = None,
) -> Walk:
    """Translate ``va`` by reading descriptors from ``memory``, starting at ``root``.

    This is the hardware walker: it needs only what a TTBR/TTBCR and a memory dump
    give.  An invalid or reserved descriptor is a translation fault, a leaf with the
    format's access flag clear an access-flag fault, an input address at or beyond
    ``2**va_bits`` or a descriptor with output-address bits the format does not have
    (``size_fault_mask``) an address-size fault, a descriptor read from a hole a bus
    fault.
    """
    if not is_int(va) or va < 0:
        raise InvalidArgumentError(f"walk: va {va!r} must be a non-negative integer")
    if not is_int(root) or root < 0:
        raise InvalidArgumentError(f"walk: root {root!r} must be a non-negative integer")
    geo = fmt.geometry(va_bits)
    levels = geo.levels
    if va >= geo.va_limit:
        return Walk(va=va, reads=0, level=levels[0].level, fault=FaultKind.ADDRESS_SIZE)
    read = memory.read_u32 if fmt.entry_bytes == 4 else memory.read_u64
    table = root
    reads = 0
    parent: DescriptorKind | None = None
    parent_desc = 0
    for gl in levels:
        try:
            desc = read(table + ((va >> gl.shift) & gl.index_mask) * gl.entry_bytes)
        except BusError:
            return Walk(va=va, reads=reads, level=gl.level, fault=FaultKind.BUS)
        reads += 1
        kind = gl.classify(desc)
        if kind is None:
            return Walk(va=va, reads=reads, level=gl.level, fault=FaultKind.TRANSLATION)
        if desc & kind.size_fault_mask:
            return Walk(va=va, reads=reads, level=gl.level, fault=FaultKind.ADDRESS_SIZE)
        if kind.role is Role.TABLE:
            table = kind.output_address(desc)
            parent, parent_desc = kind, desc
            continue
        af = fmt.access_flag_mask(kind)
        if af and not desc & af:
            return Walk(va=va, reads=reads, level=gl.level, fault=FaultKind.ACCESS_FLAG)
        return Walk(
            va=va,
            reads=reads,
            pa=kind.output_address(desc) + (va & (kind.size - 1)),
            page_size=kind.size,
            attrs=fmt.leaf_attrs(kind, desc, parent, parent_desc),
            level=gl.level,
        )
    return Walk(va=va, reads=reads, level=levels[-1].level, fault=FaultKind.TRANSLATION)


@dataclass(slots=True, eq=False)
class Slots:
    """One table as a range walk sees it: the slots that cover its part of the range.

    ``words[j]`` is the descriptor of slot ``i0 + j``; ``tables[j]`` says whether it is a
    table descriptor (the ones the walk may descend through).  ``parent`` and
    ``parent_desc`` are the table descriptor that points here (``None`` at the root),
    whose fields some leaves inherit.  A visitor that rewrites slots does it on
    :meth:`edit`'s copy, leaving ``words`` as read.
    """

    table: int
    #: Index of the table's level in ``Geometry.levels``.
    li: int
    level: GeoLevel
    #: Input address of the table's slot 0.
    tva: int
    i0: int
    #: The part of the walked range inside this table.
    start: int
    end: int
    words: U64
    tables: npt.NDArray[np.bool_]
    parent: DescriptorKind | None
    parent_desc: int
    #: The visitor's rewritten copy of ``words`` (None until :meth:`edit`).
    new: U64 | None = None

    def va(self, j: int) -> int:
        """Input address of slot ``i0 + j``."""
        return self.tva + ((self.i0 + j) << self.level.shift)

    def edit(self) -> U64:
        """A copy of ``words`` to rewrite (the same copy on every call)."""
        if self.new is None:
            self.new = self.words.copy()
        return self.new

    def changed(self) -> bool:
        """Whether :meth:`edit`'s copy differs from what was read."""
        return self.new is not None and not np.array_equal(self.new, self.words)


class Visitor:
    """What a range walk calls; the base class looks at nothing and descends everywhere.

    For each table: :meth:`table` once with all its slots, then for each table
    descriptor among them, in address order, :meth:`descend` (return False to skip the
    subtree) and, after the subtree, :meth:`ascend`; finally :meth:`leave`.
    """

    def table(self, slots: Slots) -> None:
        """See the slots of one table before any of its subtrees."""

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        """Whether to walk the table that slot ``j`` (descriptor ``desc``, covering input
        addresses from ``va``) points at."""
        return True

    def ascend(self, slots: Slots, j: int, child: int) -> None:
        """The subtree under slot ``j`` (table ``child``) has been walked."""

    def leave(self, slots: Slots) -> None:
        """Every subtree of this table has been walked."""


def walk_range(
    geo: Geometry, memory: PhysicalMemory, root: int, start: int, end: int, visitor: Visitor
) -> None:
    """Walk the tables under ``root`` that hold part of ``[start, end)`` (see the module
    notes); ``start < end <= geo.va_limit`` is the caller's to check."""
    _visit(geo, memory, root, 0, 0, start, end, None, 0, visitor)


def _visit(
    geo: Geometry,
    memory: PhysicalMemory,
    table: int,
    li: int,
    tva: int,
    start: int,
    end: int,
    parent: DescriptorKind | None,
    parent_desc: int,
    visitor: Visitor,
) -> None:
    gl = geo.levels[li]
    shift = gl.shift
    i0 = (start - tva) >> shift
    count = ((end - 1 - tva) >> shift) + 1 - i0
    words = memory.read_words(table + i0 * gl.entry_bytes, count, gl.entry_bytes)
    tk = gl.table_kind
    tables = tk.match_many(words) if tk is not None else np.zeros(count, dtype=np.bool_)
    slots = Slots(table, li, gl, tva, i0, start, end, words, tables, parent, parent_desc)
    visitor.table(slots)
    if tk is not None:
        span = 1 << shift
        for j in np.flatnonzero(tables).tolist():
            desc = int(words[j])
            cva = tva + ((i0 + j) << shift)
            if visitor.descend(slots, j, desc, cva):
                child = tk.output_address(desc)
                sub_start, sub_end = max(start, cva), min(end, cva + span)
                _visit(geo, memory, child, li + 1, cva, sub_start, sub_end, tk, desc, visitor)
                visitor.ascend(slots, j, child)
    visitor.leave(slots)
