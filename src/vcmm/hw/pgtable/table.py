"""Page tables in simulated physical memory: map, unmap, walk, set_attrs, decode.

The operations are generic over :class:`~vcmm.hw.pgtable.format.PageTableFormat`, the
way Linux's io-pgtable drives each format from its description.  The bytes in
:class:`~vcmm.hw.memory.PhysicalMemory` are the only truth about translations:
:func:`~vcmm.hw.pgtable.walker.walk_tables` and
:func:`~vcmm.hw.pgtable.visitors.decode_tables` need nothing but the format, the memory
and the root address, so a memory dump plus the ARM manual gives the same answers.
:class:`PageTable` keeps a small shadow (:class:`~vcmm.hw.pgtable.tableset.TableSet`:
which table pages it owns, at which level, and how many valid entries each holds) only
to know when a table has become empty and can go back to its
:class:`~vcmm.hw.tablemem.TableMemory`.

Range work (find the first (un)mapped address, clear a range, check and rewrite its
attributes, decode it) is one walk, :func:`~vcmm.hw.pgtable.walker.walk_range`, driven
by the visitors of :mod:`vcmm.hw.pgtable.visitors`; point work (the leaf at an
address, checking a planned run is free, installing it, splitting a block) descends
one path with scalar reads.

Every mutating call validates everything it can first, then mutates through an
:class:`~vcmm.hw.pgtable.tableset.Edit` that records the previous bytes of every
descriptor it overwrites and every table it allocates or releases; if anything fails
half way (table memory runs out, a block cannot be split), the edit is rolled back and
the call leaves no trace.  Tables released by a call go back to the allocator only
when it commits.

Policies:

- ``map`` picks, at each step, the largest page/block size at which both the current
  input and output address are aligned and which fits in what is left (so 2M+4K at a
  1M-aligned address is two sections and a small page); ``page_size`` forces one size.
- ``unmap`` of part of a block splits it, like Linux's ``split_blk_unmap``: the block
  is rewritten as blocks of the next smaller size (a supersection into 16 sections, a
  large page into 16 small pages, a section into a second-level table of large pages,
  a 1G block into a table of 2M blocks, a 2M block into a table of 4K pages), and the
  splitting repeats until the range boundary falls on an entry boundary; then only
  the requested part is cleared.  Table pages left empty stay (``keep_tables``, the
  default), as Linux's io-pgtable-arm and io-pgtable-arm-v7s keep them: the next map
  nearby reuses them instead of allocating again.  A block later mapped over an empty
  table releases it (and its empty subtables), as Linux's ``arm_lpae_init_pte`` /
  ``arm_v7s_init_pte`` do; an empty table whose inherited fields (ARMv7 NS) differ
  from the next page mapped into it has its descriptor rewritten.  With
  ``keep_tables=False`` an unmap releases the tables it leaves empty.
- Several calls can be made one all-or-nothing step with :meth:`PageTable.journal`.
- ``set_attrs`` rewrites whole mappings only: a range that cuts through a block or
  page is refused (AlignmentError) rather than silently splitting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.checks import is_int
from vcmm.errors import (
    AlignmentError,
    AlreadyMappedError,
    AttributeConflictError,
    InvalidArgumentError,
    NotMappedError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat, Role
from vcmm.hw.pgtable.mapmany import (
    address_array,
    install_pages,
    joined_pages,
    leaf_descriptors,
    page_arrays,
    per_piece_sizes,
    single_pages,
)
from vcmm.hw.pgtable.plan import Run, plan_runs
from vcmm.hw.pgtable.snapshot import PageTableSnapshot
from vcmm.hw.pgtable.tableset import Edit, Journal, TableSet
from vcmm.hw.pgtable.visitors import (
    CheckTableFields,
    Clear,
    FirstAddress,
    MapEntry,
    Rewrite,
    decode_tables,
    leaf_spans,
)
from vcmm.hw.pgtable.walker import Visitor, walk_range, walk_tables
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.walk import Walk
from vcmm.sizes import format_size


@dataclass(frozen=True, slots=True)
class _Leaf:
    table: int
    li: int
    index: int  # slot of the first copy
    kind: DescriptorKind
    desc: int
    parent: DescriptorKind | None
    parent_desc: int


def _int_arg(op: str, name: str, value: object) -> int:
    if type(value) is not int:  # a plain int (every call from the core) needs no test
        if not is_int(value):
            raise InvalidArgumentError(f"{op}: {name} {value!r} is not an integer")
        value = int(value)
    if value < 0:
        raise InvalidArgumentError(f"{op}: {name} {value:#x} is negative")
    return value


class PageTable:
    """One translation table tree of ``fmt`` living in ``memory``.

    The root table is allocated here; :attr:`root` is what a TTBR would hold.
    ``va_bits`` narrows the input address space (ARMv7 TTBCR.N = 32 - va_bits, ARMv8
    T0SZ = 64 - va_bits), shrinking the first-level table accordingly.
    """

    def __init__(
        self,
        fmt: PageTableFormat,
        memory: PhysicalMemory,
        table_memory: TableMemory,
        *,
        va_bits: int | None = None,
        keep_tables: bool = True,
    ) -> None:
        if not isinstance(keep_tables, bool):
            raise InvalidArgumentError(f"keep_tables={keep_tables!r} is not a bool")
        if not isinstance(fmt, PageTableFormat):
            raise InvalidArgumentError(f"fmt must be a PageTableFormat, got {fmt!r}")
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(f"memory must be a PhysicalMemory, got {memory!r}")
        if not isinstance(table_memory, TableMemory):
            raise InvalidArgumentError(f"table_memory must be a TableMemory, got {table_memory!r}")
        if table_memory.memory is not memory:
            raise InvalidArgumentError(
                "table_memory allocates from another PhysicalMemory than the one the "
                "table is read from"
            )
        geo = fmt.geometry(va_bits)
        limit = min(k.oa_limit for k in fmt.kinds if k.role is Role.TABLE)
        if table_memory.window.end > limit:
            raise InvalidArgumentError(
                f"table memory window {table_memory.window} reaches beyond {limit:#x}, the "
                f"highest address a {fmt.name} table descriptor can point at"
            )
        self._fmt = fmt
        self._memory = memory
        self._tm = table_memory
        self._geo = geo
        self._eb = fmt.entry_bytes
        self._read_word = memory.read_u32 if self._eb == 4 else memory.read_u64
        self._tables = TableSet(geo, memory, table_memory, fmt.valid_mask)
        self._root = self._tables.root
        self._keep = keep_tables
        self._alive = True

    # -- properties ------------------------------------------------------------------------

    @property
    def fmt(self) -> PageTableFormat:
        return self._fmt

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def table_memory(self) -> TableMemory:
        return self._tm

    @property
    def geometry(self) -> Geometry:
        return self._geo

    @property
    def va_bits(self) -> int:
        return self._geo.va_bits

    @property
    def root(self) -> int:
        """Physical address of the root table (the TTBR value)."""
        return self._root

    @property
    def keep_tables(self) -> bool:
        """Whether an unmap keeps the tables it leaves empty (Linux io-pgtable does)."""
        return self._keep

    def journal(self, op: str) -> Journal:
        """Make the calls until the journal's ``commit`` or ``rollback`` one step: a
        rollback puts every byte, table page and count back as they were now (see
        :mod:`vcmm.hw.pgtable.tableset`).  One journal at a time."""
        self._live(op)
        return self._tables.journal(op)

    def release_empty(self, tables: Sequence[int]) -> None:
        """Give back those of ``tables`` (as a journal's ``allocated()`` lists them)
        that map nothing any more: the undo of a map whose tables an unmap kept."""
        with self._tables.editing("release_empty") as edit:
            self._tables.release_empty(edit, list(tables))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Page and block sizes this table can map, largest first."""
        return self._geo.sizes

    def __repr__(self) -> str:
        state = f"{len(self._tables)} tables" if self._alive else "destroyed"
        return f"PageTable({self._fmt.name}, root={self._root:#x}, {state})"

    # -- validation helpers -------------------------------------------------------------------

    def _live(self, op: str) -> None:
        if not self._alive:
            raise StateError(f"{op}: the page table rooted at {self._root:#x} was destroyed")

    def _range(self, op: str, va: object, size: object) -> tuple[int, int]:
        va_i = _int_arg(op, "va", va)
        size_i = _int_arg(op, "size", size)
        page = self._fmt.min_page
        if size_i == 0:
            raise InvalidArgumentError(f"{op}: size is 0; the range must cover at least a page")
        if va_i % page:
            raise AlignmentError(
                f"{op}: va {va_i:#x} is not a multiple of the {format_size(page)} minimum "
                f"page of {self._fmt.name}"
            )
        if size_i % page:
            raise AlignmentError(
                f"{op}: size {size_i:#x} is not a multiple of the {format_size(page)} minimum "
                f"page of {self._fmt.name}"
            )
        if va_i + size_i > self._geo.va_limit:
            raise InvalidArgumentError(
                f"{op}: range [{va_i:#x}, {va_i + size_i:#x}) goes beyond the "
                f"{self._geo.va_bits}-bit input address space of this table"
            )
        return va_i, size_i

    # -- point descents ---------------------------------------------------------------------

    def _leaf_at(self, va: int) -> _Leaf | None:
        """The leaf that maps ``va`` (with where it sits), or None."""
        table, parent, parent_desc = self._root, None, 0
        for li, gl in enumerate(self._geo.levels):
            idx = gl.index(va)
            desc = self._read_word(table + idx * self._eb)
            kind = gl.classify(desc)
            if kind is None:
                return None
            if kind.role is Role.TABLE:
                table, parent, parent_desc = kind.output_address(desc), kind, desc
                continue
            return _Leaf(table, li, idx - idx % kind.copies, kind, desc, parent, parent_desc)
        return None

    def _walk(self, start: int, end: int, visitor: Visitor) -> None:
        walk_range(self._geo, self._memory, self._root, start, end, visitor)

    def _first(self, va: int, end: int, *, mapped: bool) -> int | None:
        finder = FirstAddress(mapped=mapped)
        self._walk(va, end, finder)
        return finder.found

    def find(self, va: int, size: int, *, mapped: bool) -> int | None:
        """The first address of ``[va, va+size)`` that is mapped (``mapped=True``) or
        not mapped (False), or None: one range walk, whatever the range's size."""
        op = "find"
        self._live(op)
        va, size = self._range(op, va, size)
        if not isinstance(mapped, bool):
            raise InvalidArgumentError(f"{op}: mapped={mapped!r} is not a bool")
        return self._first(va, va + size, mapped=mapped)

    # -- map ----------------------------------------------------------------------------------

    def map(
        self,
        va: int,
        pa: int,
        size: int,
        attrs: PageAttrs,
        *,
        page_size: int | None = None,
        entries: bool = True,
    ) -> list[MapEntry]:
        """Map ``[va, va+size)`` to ``pa`` with ``attrs``; returns the leaves created,
        or nothing with ``entries=False`` (a caller that does not read them saves
        decoding the attributes and one object per leaf).

        Uses the largest size at which va and pa are both aligned and which fits, or
        exactly ``page_size`` when given.  Refuses (no change) if any part is mapped.
        """
        op = "map"
        self._live(op)
        runs, values = self._plan(op, va, pa, size, attrs, page_size)
        self._check_free(op, runs[0].va, runs[0].pa, size, runs, values)
        with self._tables.editing(op) as edit:
            for run in runs:
                self._install(edit, run, values)
        return self._entries(runs, values) if entries else []

    def map_many(
        self,
        pieces: Sequence[tuple[int, int, int, PageAttrs]],
        *,
        page_size: int | Sequence[int | None] | None = None,
        entries: bool = True,
    ) -> list[MapEntry]:
        """Map every ``(va, pa, size, attrs)`` of ``pieces`` in one edit: all of them or,
        if any piece is refused (a bad argument, a part already mapped or mapped by an
        earlier piece, an inherited field that disagrees), none.

        ``page_size`` forces one size for all pieces, or one per piece (a sequence as
        long as ``pieces``; None leaves that piece to the table's choice).  The tables
        come out byte for byte as calling :meth:`map` on each piece in turn would leave
        them (same plan, same table allocations in the same order); the pieces are
        planned and checked once up front and written inside one undo log, so a
        refusal half way rolls every earlier piece back.  Returns the leaves created,
        or nothing with ``entries=False`` (a caller that does not read them saves
        building one object per page).
        """
        op = "map_many"
        self._live(op)
        if isinstance(pieces, str | bytes) or not isinstance(pieces, Sequence):
            raise InvalidArgumentError(f"{op}: pieces must be a sequence of (va, pa, size, attrs)")
        sizes = per_piece_sizes(op, page_size, len(pieces))
        pages = single_pages(self._fmt, self._geo.va_limit, pieces, sizes)
        if pages is not None:
            with self._tables.editing(op) as edit:
                args = (self._fmt, self._geo, self._memory, self._tables, self._root, edit)
                if install_pages(*args, *pages):
                    if not entries:
                        return []
                    stored = [self._fmt.decode_attrs(v) for v in pages[3]]
                    size = self._fmt.min_page
                    return [
                        MapEntry(va, pa, size, stored[g])
                        for va, pa, g in zip(
                            pages[0].tolist(), pages[1].tolist(), pages[2].tolist(), strict=True
                        )
                    ]
        plans = []
        for i, piece in enumerate(pieces):
            if not isinstance(piece, tuple) or len(piece) != 4:
                raise InvalidArgumentError(
                    f"{op}: piece {i} is {piece!r}, not a (va, pa, size, attrs) tuple"
                )
            plans.append(self._plan(f"{op} piece {i}", *piece, sizes[i]))
        with self._tables.editing(op) as edit:
            for (runs, values), (_, _, size, _) in zip(plans, pieces, strict=True):
                self._check_free(op, runs[0].va, runs[0].pa, size, runs, values)
                for run in runs:
                    self._install(edit, run, values)
        if not entries:
            return []
        return [e for runs, values in plans for e in self._entries(runs, values)]

    def map_pages(self, vas: npt.ArrayLike, pas: npt.ArrayLike, attrs: PageAttrs) -> None:
        """Map page ``vas[i]`` to ``pas[i]``, each one page of the smallest size, with
        ``attrs``: :meth:`map_many` of those pages for a caller holding them as arrays
        (a backing of thousands of separate pages), with no Python object per page.
        All or nothing, and the same tables, bytes, allocation order and errors as
        :meth:`map_many` of the pages in order, each joined to the one before it when
        it continues it in both addresses (as the runs of a backing are)."""
        op = "map_pages"
        self._live(op)
        va, pa = address_array(op, "vas", vas), address_array(op, "pas", pas)
        if va.shape != pa.shape:
            raise InvalidArgumentError(f"{op}: {va.size} vas but {pa.size} pas")
        if not va.size:
            return
        pages = page_arrays(self._fmt, self._geo.va_limit, va, pa, attrs)
        if pages is not None:
            with self._tables.editing(op) as edit:
                args = (self._fmt, self._geo, self._memory, self._tables, self._root, edit)
                if install_pages(*args, *pages):
                    return
        size = self._fmt.min_page
        pieces = [(v, p, n, attrs) for v, p, n in joined_pages(va, pa, size)]
        self.map_many(pieces, page_size=size, entries=False)

    def _plan(
        self, op: str, va: object, pa: object, size: object, attrs: object, page_size: object
    ) -> tuple[list[Run], Mapping[str, int]]:
        """The checked plan of one mapping: its runs and the attribute field values."""
        va, size = self._range(op, va, size)
        pa = _int_arg(op, "pa", pa)
        if pa % self._fmt.min_page:
            raise AlignmentError(
                f"{op}: pa {pa:#x} is not a multiple of the {format_size(self._fmt.min_page)} "
                f"minimum page of {self._fmt.name}"
            )
        values = self._fmt.attr_values(attrs)  # type: ignore[arg-type]  # it checks
        forced = None if page_size is None else self._forced_size(op, va, pa, size, page_size)
        runs = plan_runs(self._geo, va, pa, size, forced)
        self._check_output(op, runs)
        return runs, values

    def _entries(self, runs: list[Run], values: Mapping[str, int]) -> list[MapEntry]:
        stored = self._fmt.decode_attrs(values)
        return [
            MapEntry(run.va + k * run.kind.size, run.pa + k * run.kind.size, run.kind.size, stored)
            for run in runs
            for k in range(run.count)
        ]

    def _forced_size(self, op: str, va: int, pa: int, size: int, page_size: object) -> int:
        forced = _int_arg(op, "page_size", page_size)
        if forced not in self._geo.leaf:
            sizes = ", ".join(format_size(s) for s in self._geo.sizes)
            raise UnsupportedSizeError(
                f"{op}: page_size {forced:#x} is not a {self._fmt.name} page or block size "
                f"({sizes})"
            )
        for name, value in (("va", va), ("pa", pa), ("size", size)):
            if value % forced:
                raise AlignmentError(
                    f"{op}: {name} {value:#x} is not aligned to the forced page size "
                    f"{format_size(forced)}"
                )
        return forced

    def _check_output(self, op: str, runs: list[Run]) -> None:
        for run in runs:
            limit = run.kind.oa_limit
            if run.pa + run.count * run.kind.size > limit:
                step = run.kind.size
                bad = run.pa if run.pa >= limit else run.pa + -(-(limit - run.pa) // step) * step
                raise InvalidArgumentError(
                    f"{op}: output address {bad:#x} cannot be held by a {run.kind.name} of "
                    f"{self._fmt.name}: it reaches only addresses below {limit:#x}"
                )

    def _check_free(
        self, op: str, va: int, pa: int, size: int, runs: list[Run], values: Mapping[str, int]
    ) -> None:
        """Refuse (before any change) a plan that meets a mapping or an inherited field.

        Point work, not a range walk: each run's path is followed down with scalar
        reads, as the hardware walker does, and only the run's own slots are read as a
        vector (this is the map hot path).
        """
        for run in runs:
            table, parent, parent_desc = self._root, None, 0
            for li in range(run.li):
                gl = self._geo.levels[li]
                desc = self._read_word(table + gl.index(run.va) * self._eb)
                if not desc & self._fmt.valid_mask:
                    break  # no table yet: the run's slots are free
                kind = gl.classify(desc)
                if kind is None or kind.role is Role.LEAF:
                    self._refuse_overlap(op, va, pa, size, run)
                table, parent, parent_desc = kind.output_address(desc), kind, desc
            else:
                gl = self._geo.levels[run.li]
                words = self._memory.read_words(
                    table + gl.index(run.va) * self._eb, run.count * run.kind.copies, self._eb
                )
                valid = (words & np.uint64(self._fmt.valid_mask)) != 0
                if valid.any() and self._occupied(gl.table_kind, words[valid], run):
                    self._refuse_overlap(op, va, pa, size, run)
                if run.kind.inherits and parent is not None and self._tables.count(table):
                    self._check_inherited(op, run, parent, parent_desc, values)

    def _occupied(self, tk: DescriptorKind | None, words: npt.NDArray[np.uint64], run: Run) -> bool:
        """Whether valid slots ``words`` under ``run`` hold anything but tables with no
        mapping below (empty kept tables, which a block may replace)."""
        if tk is None or not tk.match_many(words).all():
            return True
        return self._first(run.va, run.end, mapped=True) is not None

    def _refuse_overlap(self, op: str, va: int, pa: int, size: int, run: Run) -> NoReturn:
        at = self._first(run.va, run.end, mapped=True)
        where = run.va if at is None else at
        w = walk_tables(self._fmt, self._memory, self._root, where, va_bits=self.va_bits)
        existing = (
            f"[{w.va_base:#x}, {w.va_base + w.page_size:#x}) is mapped to {w.pa_base:#x}"
            if w.ok
            else f"{where:#x} is in use"
        )
        raise AlreadyMappedError(
            f"{op} [{va:#x}, {va + size:#x}) -> {pa:#x}: {existing}; nothing was mapped"
        )

    def _check_inherited(
        self,
        op: str,
        run: Run,
        parent: DescriptorKind,
        parent_desc: int,
        values: Mapping[str, int],
    ) -> None:
        have = parent.field_values(parent_desc)
        for name in run.kind.inherits:
            if have.get(name, 0) != values.get(name, 0):
                raise AttributeConflictError(
                    f"{op}: {run.kind.name}s at {run.va:#x} with {name}="
                    f"{values.get(name, 0)} would share a {parent.name} whose {name}="
                    f"{have.get(name, 0)} applies to all its entries ({self._fmt.name})"
                )

    def _install(self, edit: Edit, run: Run, values: Mapping[str, int]) -> None:
        levels = self._geo.levels
        table = self._root
        for li in range(run.li):
            gl = levels[li]
            idx = gl.index(run.va)
            desc = self._read_word(table + idx * self._eb)
            tk = gl.table_kind
            assert tk is not None  # guaranteed by _validate_geometry
            if desc & self._fmt.valid_mask:
                child = tk.output_address(desc)
                stamped = tk.encode(child, values)
                if stamped != desc and not self._tables.count(child):  # an empty kept table
                    self._tables.write(edit, table, idx, np.array([stamped], np.uint64))
                table = child
                continue
            child = self._tables.alloc(edit, li + 1)
            self._tables.write(edit, table, idx, np.array([tk.encode(child, values)], np.uint64))
            table = child
        gl = levels[run.li]
        first = gl.index(run.va)
        if gl.table_kind is not None:  # empty kept tables where the block goes
            self._tables.release_subtrees(edit, run.li, table, first, run.count * run.kind.copies)
        descs = leaf_descriptors(run.kind, run.pa, run.count, values)
        self._tables.write(edit, table, first, descs)

    # -- unmap --------------------------------------------------------------------------------

    def unmap(self, va: int, size: int, *, entries: bool = True) -> list[MapEntry]:
        """Unmap ``[va, va+size)`` (all of it must be mapped); returns what was removed,
        or nothing with ``entries=False`` (unbacking 16384 pages does not read them).

        Blocks cut by the range are split first (see the module notes); table pages
        left empty are kept, or released if the table was made with
        ``keep_tables=False``.
        """
        op = "unmap"
        self._live(op)
        va, size = self._range(op, va, size)
        end = va + size
        with self._tables.editing(op) as edit:
            clear = Clear(self._fmt, self._tables, edit, keep_tables=self._keep, report=entries)
            try:
                self._split_at(edit, va)
                if end < self._geo.va_limit:
                    self._split_at(edit, end)
            except BaseException:
                clear.found = self._first(va, end, mapped=False)  # a hole is the first error
                if clear.found is None:
                    raise
            else:
                self._walk(va, end, clear)  # clears, and stops at the first hole
            if clear.found is not None:
                raise NotMappedError(
                    f"{op} [{va:#x}, {end:#x}): {clear.found:#x} is not mapped; nothing was "
                    "unmapped"
                )
        clear.removed.sort(key=lambda e: e.va)
        return clear.removed

    def _split_at(self, edit: Edit, boundary: int) -> None:
        """Split blocks until no leaf straddles ``boundary``."""
        while True:
            leaf = self._leaf_at(boundary)
            if leaf is None or boundary % leaf.kind.size == 0:
                return
            self._split(edit, leaf)

    def _split(self, edit: Edit, leaf: _Leaf) -> None:
        """Rewrite one leaf as leaves of the next smaller size (same bytes mapped)."""
        kind = leaf.kind
        values = kind.field_values(leaf.desc)
        if kind.inherits and leaf.parent is not None:
            table_values = leaf.parent.field_values(leaf.parent_desc)
            values.update({name: table_values.get(name, 0) for name in kind.inherits})
        pa = kind.output_address(leaf.desc)
        smaller = self._geo.smaller_size(kind.size)
        li2, kind2 = self._geo.leaf[smaller]
        if pa + kind.size > kind2.oa_limit:
            raise InvalidArgumentError(
                f"{edit.op}: cannot split the {kind.name} mapping output address {pa:#x}: "
                f"{kind2.name}s only reach addresses below {kind2.oa_limit:#x}; "
                f"unmap the whole {kind.name} instead"
            )
        descs = leaf_descriptors(kind2, pa, kind.size // smaller, values)
        if li2 == leaf.li:
            self._tables.write(edit, leaf.table, leaf.index, descs)
            return
        child = self._tables.alloc(edit, li2)
        self._tables.write(edit, child, 0, descs)
        tk = self._geo.levels[leaf.li].table_kind
        assert tk is not None
        table_desc = np.array([tk.encode(child, values)], np.uint64)
        self._tables.write(edit, leaf.table, leaf.index, table_desc)

    # -- set_attrs ------------------------------------------------------------------------------

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> list[MapEntry]:
        """Rewrite the attributes of the whole mappings covering exactly ``[va, va+size)``.

        Output addresses and sizes stay; every descriptor (and, for formats whose pages
        inherit fields such as ARMv7 NS, the table descriptor above) is rewritten.
        """
        op = "set_attrs"
        self._live(op)
        va, size = self._range(op, va, size)
        values = self._fmt.attr_values(attrs)
        end = va + size
        check = (
            CheckTableFields(op, self._geo, self._memory, values)
            if any(k.fields for k in self._fmt.kinds if k.role is Role.TABLE)
            else FirstAddress(mapped=False)
        )
        self._walk(va, end, check)  # one walk: holes, and table fields shared outside
        if check.found is not None:
            raise NotMappedError(
                f"{op} [{va:#x}, {end:#x}): {check.found:#x} is not mapped; nothing was changed"
            )
        for addr in (va, end - 1):
            leaf = self._leaf_at(addr)
            assert leaf is not None
            base = addr - addr % leaf.kind.size
            if base < va or base + leaf.kind.size > end:
                raise AlignmentError(
                    f"{op} [{va:#x}, {end:#x}): the range cuts the {leaf.kind.name} mapping "
                    f"[{base:#x}, {base + leaf.kind.size:#x}); set_attrs rewrites whole mappings "
                    "(unmap and map again to change part of one)"
                )
        if isinstance(check, CheckTableFields) and check.conflict is not None:
            raise check.conflict
        stored = self._fmt.decode_attrs(values)
        with self._tables.editing(op) as edit:
            rewrite = Rewrite(self._fmt, self._tables, edit, values, stored)
            self._walk(va, end, rewrite)
        rewrite.out.sort(key=lambda e: e.va)
        return rewrite.out

    # -- reading ------------------------------------------------------------------------------

    def walk(self, va: int) -> Walk:
        """Translate ``va`` the way the hardware walker would (reads from memory)."""
        if not self._alive:
            self._live("walk")
        return walk_tables(self._fmt, self._memory, self._root, va, va_bits=self._geo.va_bits)

    def mappings(self) -> Iterator[MapEntry]:
        """Every leaf mapping, decoded from the table bytes, in input-address order."""
        self._live("mappings")
        return decode_tables(self._fmt, self._memory, self._root, va_bits=self._geo.va_bits)

    def leaf_spans(self) -> tuple[list[int], list[int]]:
        """``mappings()``'s addresses and sizes only (nothing else decoded), sorted."""
        self._live("leaf_spans")
        return leaf_spans(self._fmt, self._memory, self._root, va_bits=self._geo.va_bits)

    def table_pages(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of every table this tree owns, root included, sorted."""
        self._live("table_pages")
        return [(pa, size) for pa, size, _ in self._tables.pages()]

    def snapshot(self) -> PageTableSnapshot:
        """Bytes and bookkeeping of every table, to compare state before/after a call."""
        self._live("snapshot")
        return PageTableSnapshot(
            root=self._root,
            tables=tuple(
                (pa, size, count, self._memory.read(pa, size))
                for pa, size, count in self._tables.pages()
            ),
        )

    def store_words(self, op: str, slots: Sequence[tuple[int, int, int]]) -> None:
        """:meth:`TableSet.put_slots`: the stores :mod:`.direct` checked, each slot."""
        self._live(op)
        self._tables.put_slots(slots)

    def destroy(self) -> None:
        """Free every table page, root included; the object refuses further use."""
        self._live("destroy")
        self._tables.destroy()
        self._alive = False
