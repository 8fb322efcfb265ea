"""Page tables in simulated physical memory: map, unmap, walk, set_attrs, decode.

The operations are generic over :class:`~vcmm.hw.pgtable.format.PageTableFormat`, the
way Linux's io-pgtable drives each format from its description.  The bytes in
:class:`~vcmm.hw.memory.PhysicalMemory` are the only truth about translations:
:func:`walk_tables` and :func:`decode_tables` need nothing but the format, the memory
and the root address, so a memory dump plus the ARM manual gives the same answers.
:class:`PageTable` keeps a small shadow (which table pages it owns, at which level, and
how many valid entries each holds) only to know when a table has become empty and can
go back to its :class:`~vcmm.hw.tablemem.TableMemory`.

Every mutating call validates everything it can first, then mutates through a
transaction that records the previous bytes of every descriptor it overwrites and
every table it allocates or releases; if anything fails half way (table memory runs
out, a block cannot be split), the transaction is rolled back and the call leaves no
trace.  Tables released by a call go back to the allocator only when it commits.

Policies:

- ``map`` picks, at each step, the largest page/block size at which both the current
  input and output address are aligned and which fits in what is left (so 2M+4K at a
  1M-aligned address is two sections and a small page); ``page_size`` forces one size.
- ``unmap`` of part of a block splits it, like Linux's ``split_blk_unmap``: the block
  is rewritten as blocks of the next smaller size (a supersection into 16 sections, a
  large page into 16 small pages, a section into a second-level table of large pages,
  a 1G block into a table of 2M blocks, a 2M block into a table of 4K pages), and the
  splitting repeats until the range boundary falls on an entry boundary; then only
  the requested part is cleared.  Table pages left empty are released.
- ``set_attrs`` rewrites whole mappings only: a range that cuts through a block or
  page is refused (AlignmentError) rather than silently splitting.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import FaultKind, PageAttrs
from vcmm.errors import (
    AlignmentError,
    AlreadyMappedError,
    AttributeConflictError,
    BusError,
    InvalidArgumentError,
    NotMappedError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat, Role
from vcmm.hw.tablemem import MIN_BLOCK, TableMemory
from vcmm.hw.walk import Walk
from vcmm.sizes import format_size

U64 = npt.NDArray[np.uint64]
_ALL_ONES = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class MapEntry:
    """One leaf mapping: ``[va, va+size)`` -> ``[pa, pa+size)`` with ``attrs``.

    A large page or supersection is one entry even though it fills 16 slots.
    """

    va: int
    pa: int
    size: int
    attrs: PageAttrs

    def __str__(self) -> str:
        return f"{self.va:#x} -> {self.pa:#x} {format_size(self.size)} {self.attrs.short()}"


@dataclass(frozen=True, slots=True)
class PageTableSnapshot:
    """The bytes of every table page plus the shadow, for before/after comparisons."""

    root: int
    #: (pa, size, valid entries, bytes) per table page, sorted by pa.
    tables: tuple[tuple[int, int, int, bytes], ...]

    @property
    def table_pages(self) -> list[tuple[int, int]]:
        return [(pa, size) for pa, size, _, _ in self.tables]


# -- reading tables from memory alone --------------------------------------------------------


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
    if isinstance(va, bool) or not isinstance(va, int) or va < 0:
        raise InvalidArgumentError(f"walk: va {va!r} must be a non-negative integer")
    if isinstance(root, bool) or not isinstance(root, int) or root < 0:
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


def decode_tables(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    root: int,
    *,
    va_bits: int | None = None,
) -> Iterator[MapEntry]:
    """Every leaf mapping reachable from ``root``, in input-address order, from memory."""
    geo = fmt.geometry(va_bits)
    return _decode(fmt, geo, memory, root, 0, 0, None, 0)


def _decode(
    fmt: PageTableFormat,
    geo: Geometry,
    memory: PhysicalMemory,
    table: int,
    li: int,
    tva: int,
    parent: DescriptorKind | None,
    parent_desc: int,
) -> Iterator[MapEntry]:
    gl = geo.levels[li]
    words = memory.read_words(table, gl.entries, gl.entry_bytes)
    for j in np.flatnonzero(words & np.uint64(gl.valid_mask)).tolist():
        desc = int(words[j])
        kind = gl.classify(desc)
        if kind is None or desc & kind.size_fault_mask:
            continue  # the walker faults here: nothing is mapped through it
        va = tva + (j << gl.shift)
        if kind.role is Role.TABLE:
            yield from _decode(fmt, geo, memory, kind.output_address(desc), li + 1, va, kind, desc)
        elif j % kind.copies == 0:
            attrs = fmt.leaf_attrs(kind, desc, parent, parent_desc)
            yield MapEntry(va, kind.output_address(desc), kind.size, attrs)


# -- the mutable table --------------------------------------------------------------------------


@dataclass(slots=True)
class _TableInfo:
    li: int  # index into Geometry.levels
    size: int  # bytes allocated from TableMemory
    count: int  # valid entries (each copy of a contiguous leaf counts)


@dataclass(frozen=True, slots=True)
class _Run:
    """``count`` consecutive leaves of one kind inside one table."""

    va: int
    pa: int
    li: int
    kind: DescriptorKind
    count: int

    @property
    def end(self) -> int:
        return self.va + self.count * self.kind.size


@dataclass(frozen=True, slots=True)
class _Leaf:
    table: int
    li: int
    index: int  # slot of the first copy
    kind: DescriptorKind
    desc: int
    parent: DescriptorKind | None
    parent_desc: int


class _Txn:
    """Undo log of one mutating call."""

    __slots__ = ("allocated", "counts", "op", "released", "writes")

    def __init__(self, op: str) -> None:
        self.op = op
        self.writes: list[tuple[int, npt.NDArray[np.uint8]]] = []
        self.counts: dict[int, int] = {}
        self.allocated: list[int] = []
        self.released: dict[int, _TableInfo] = {}


def _int_arg(op: str, name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
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
    ) -> None:
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
        self._dtype = np.dtype("<u4" if self._eb == 4 else "<u8")
        self._vm = np.uint64(fmt.valid_mask)
        self._read_word = memory.read_u32 if self._eb == 4 else memory.read_u64
        self._tables: dict[int, _TableInfo] = {}
        size = max(geo.root_bytes, MIN_BLOCK)
        try:
            self._root = table_memory.alloc(size, size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(f"PageTable: no table memory for the root table: {exc}") from exc
        self._tables[self._root] = _TableInfo(0, size, 0)
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

    # -- low-level access ----------------------------------------------------------------------

    def _read(self, pa: int, count: int) -> U64:
        return self._memory.read_words(pa, count, self._eb)

    def _write(self, txn: _Txn, table: int, index: int, words: U64) -> None:
        """Overwrite entries ``index..`` of ``table``, logging the old bytes and counts."""
        addr = table + index * self._eb
        old_raw = self._memory.read_array(addr, words.size * self._eb)
        old = old_raw.view(self._dtype)
        info = self._tables[table]
        txn.counts.setdefault(table, info.count)
        txn.writes.append((addr, old_raw))
        self._memory.write(addr, words.astype(self._dtype))
        info.count += int(np.count_nonzero(words & self._vm)) - int(
            np.count_nonzero(old & self._dtype.type(self._fmt.valid_mask))
        )

    def _alloc_table(self, txn: _Txn, li: int) -> int:
        size = max(self._geo.levels[li].table_bytes, MIN_BLOCK)
        try:
            pa = self._tm.alloc(size, size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"{txn.op}: out of table memory for a level-{self._geo.levels[li].level} "
                f"table; the call was undone: {exc}"
            ) from exc
        self._tables[pa] = _TableInfo(li, size, 0)
        txn.allocated.append(pa)
        return pa

    def _release(self, txn: _Txn, table: int) -> None:
        txn.released[table] = self._tables.pop(table)

    def _rollback(self, txn: _Txn) -> None:
        for addr, old in reversed(txn.writes):
            self._memory.write(addr, old)
        self._tables.update(txn.released)
        for table, count in txn.counts.items():
            if table in self._tables:
                self._tables[table].count = count
        for table in reversed(txn.allocated):
            info = self._tables.pop(table)
            self._tm.free(table, info.size)

    def _commit(self, txn: _Txn) -> None:
        for table, info in sorted(txn.released.items()):
            self._tm.free(table, info.size)

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

    def _span(self, li: int, tva: int, start: int, end: int) -> tuple[int, int]:
        """Slot indices ``[i0, i1)`` of the level-``li`` table at ``tva`` covering a range."""
        shift = self._geo.levels[li].shift
        return (start - tva) >> shift, ((end - 1 - tva) >> shift) + 1

    def _find(
        self, table: int, li: int, tva: int, start: int, end: int, mapped: bool
    ) -> int | None:
        """First address in ``[start, end)`` that is mapped (or, if not ``mapped``, unmapped)."""
        gl = self._geo.levels[li]
        i0, i1 = self._span(li, tva, start, end)
        words = self._read(table + i0 * self._eb, i1 - i0)
        is_leaf = np.zeros(words.shape, dtype=np.bool_)
        for kind in gl.leaf_kinds:
            is_leaf |= kind.match_many(words)
        tk = gl.table_kind
        is_table = tk.match_many(words) if tk is not None else np.zeros_like(is_leaf)
        interesting = (is_leaf | is_table) if mapped else ~is_leaf
        for j in np.flatnonzero(interesting).tolist():
            slot_va = tva + ((i0 + j) << gl.shift)
            at = max(start, slot_va)
            if is_table[j] and tk is not None:
                child = tk.output_address(int(words[j]))
                stop = min(end, slot_va + gl.slot_span)
                found = self._find(child, li + 1, slot_va, at, stop, mapped)
                if found is not None:
                    return found
            else:
                return at
        return None

    # -- map ----------------------------------------------------------------------------------

    def map(
        self,
        va: int,
        pa: int,
        size: int,
        attrs: PageAttrs,
        *,
        page_size: int | None = None,
    ) -> list[MapEntry]:
        """Map ``[va, va+size)`` to ``pa`` with ``attrs``; returns the leaves created.

        Uses the largest size at which va and pa are both aligned and which fits, or
        exactly ``page_size`` when given.  Refuses (no change) if any part is mapped.
        """
        op = "map"
        self._live(op)
        va, size = self._range(op, va, size)
        pa = _int_arg(op, "pa", pa)
        if pa % self._fmt.min_page:
            raise AlignmentError(
                f"{op}: pa {pa:#x} is not a multiple of the {format_size(self._fmt.min_page)} "
                f"minimum page of {self._fmt.name}"
            )
        values = self._fmt.attr_values(attrs)
        forced = None
        if page_size is not None:
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
        runs = self._plan(va, pa, size, forced)
        for run in runs:
            limit = run.kind.oa_limit
            if run.pa + run.count * run.kind.size > limit:
                step = run.kind.size
                bad = run.pa if run.pa >= limit else run.pa + -(-(limit - run.pa) // step) * step
                raise InvalidArgumentError(
                    f"{op}: output address {bad:#x} cannot be held by a {run.kind.name} of "
                    f"{self._fmt.name}: it reaches only addresses below {limit:#x}"
                )
        self._check_free(op, va, pa, size, runs, values)
        txn = _Txn(op)
        try:
            for run in runs:
                self._install(txn, run, values)
        except BaseException:
            self._rollback(txn)
            raise
        self._commit(txn)
        stored = self._fmt.decode_attrs(values)
        return [
            MapEntry(run.va + k * run.kind.size, run.pa + k * run.kind.size, run.kind.size, stored)
            for run in runs
            for k in range(run.count)
        ]

    def _plan(self, va: int, pa: int, size: int, forced: int | None) -> list[_Run]:
        """Cut the request into runs of equal leaves, each inside one table."""
        geo = self._geo
        runs: list[_Run] = []
        end = va + size
        while va < end:
            remaining = end - va
            if forced is not None:
                step = forced
            else:
                step = next(s for s in geo.sizes if va % s == 0 and pa % s == 0 and s <= remaining)
            count = remaining // step
            if forced is None:
                # Stop where a larger size becomes usable (va and pa both aligned to it).
                for big in geo.sizes:
                    if big <= step:
                        break
                    if (va - pa) % big or va % big == 0:
                        continue
                    k = (big - va % big) // step
                    if remaining - k * step >= big:
                        count = min(count, k)
            li, kind = geo.leaf[step]
            span = geo.levels[li].table_span
            while count:
                n = min(count, (span - va % span) // step)
                runs.append(_Run(va, pa, li, kind, n))
                va += n * step
                pa += n * step
                count -= n
        return runs

    def _check_free(
        self, op: str, va: int, pa: int, size: int, runs: list[_Run], values: Mapping[str, int]
    ) -> None:
        for run in runs:
            table, parent, parent_desc = self._root, None, 0
            reachable = True
            for li in range(run.li):
                gl = self._geo.levels[li]
                desc = self._read_word(table + gl.index(run.va) * self._eb)
                if not desc & self._fmt.valid_mask:
                    reachable = False
                    break
                kind = gl.classify(desc)
                if kind is None or kind.role is Role.LEAF:
                    raise self._overlap(op, va, pa, size, run)
                table, parent, parent_desc = kind.output_address(desc), kind, desc
            if not reachable:
                continue
            gl = self._geo.levels[run.li]
            words = self._read(table + gl.index(run.va) * self._eb, run.count * run.kind.copies)
            if np.any(words & self._vm):
                raise self._overlap(op, va, pa, size, run)
            if run.kind.inherits and parent is not None:
                have = parent.field_values(parent_desc)
                for name in run.kind.inherits:
                    if have.get(name, 0) != values.get(name, 0):
                        raise AttributeConflictError(
                            f"{op}: {run.kind.name}s at {run.va:#x} with {name}="
                            f"{values.get(name, 0)} would share a {parent.name} whose {name}="
                            f"{have.get(name, 0)} applies to all its entries ({self._fmt.name})"
                        )

    def _overlap(self, op: str, va: int, pa: int, size: int, run: _Run) -> AlreadyMappedError:
        at = self._find(self._root, 0, 0, run.va, run.end, mapped=True)
        where = run.va if at is None else at
        w = walk_tables(self._fmt, self._memory, self._root, where, va_bits=self._geo.va_bits)
        existing = (
            f"[{w.va_base:#x}, {w.va_base + w.page_size:#x}) is mapped to {w.pa_base:#x}"
            if w.ok
            else f"{where:#x} is in use"
        )
        return AlreadyMappedError(
            f"{op} [{va:#x}, {va + size:#x}) -> {pa:#x}: {existing}; nothing was mapped"
        )

    def _install(self, txn: _Txn, run: _Run, values: Mapping[str, int]) -> None:
        levels = self._geo.levels
        table = self._root
        for li in range(run.li):
            gl = levels[li]
            idx = gl.index(run.va)
            desc = self._read_word(table + idx * self._eb)
            tk = gl.table_kind
            assert tk is not None  # guaranteed by _validate_geometry
            if desc & self._fmt.valid_mask:
                table = tk.output_address(desc)
                continue
            child = self._alloc_table(txn, li + 1)
            self._write(txn, table, idx, np.array([tk.encode(child, values)], dtype=np.uint64))
            table = child
        kind = run.kind
        pas = np.uint64(run.pa) + np.arange(run.count, dtype=np.uint64) * np.uint64(kind.size)
        descs = kind.encode_many(pas, kind.attr_bits(values))
        if kind.copies > 1:
            descs = np.repeat(descs, kind.copies)
        self._write(txn, table, levels[run.li].index(run.va), descs)

    # -- unmap --------------------------------------------------------------------------------

    def unmap(self, va: int, size: int) -> list[MapEntry]:
        """Unmap ``[va, va+size)`` (all of it must be mapped); returns what was removed.

        Blocks cut by the range are split first (see the module notes); table pages
        left empty are released.
        """
        op = "unmap"
        self._live(op)
        va, size = self._range(op, va, size)
        end = va + size
        hole = self._find(self._root, 0, 0, va, end, mapped=False)
        if hole is not None:
            raise NotMappedError(
                f"{op} [{va:#x}, {end:#x}): {hole:#x} is not mapped; nothing was unmapped"
            )
        txn = _Txn(op)
        removed: list[MapEntry] = []
        try:
            self._split_at(txn, va)
            if end < self._geo.va_limit:
                self._split_at(txn, end)
            self._clear(txn, self._root, 0, 0, va, end, None, 0, removed)
        except BaseException:
            self._rollback(txn)
            raise
        self._commit(txn)
        removed.sort(key=lambda e: e.va)
        return removed

    def _split_at(self, txn: _Txn, boundary: int) -> None:
        """Split blocks until no leaf straddles ``boundary``."""
        while True:
            leaf = self._leaf_at(boundary)
            if leaf is None or boundary % leaf.kind.size == 0:
                return
            self._split(txn, leaf)

    def _split(self, txn: _Txn, leaf: _Leaf) -> None:
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
                f"{txn.op}: cannot split the {kind.name} mapping output address {pa:#x}: "
                f"{kind2.name}s only reach addresses below {kind2.oa_limit:#x}; "
                f"unmap the whole {kind.name} instead"
            )
        count = kind.size // smaller
        pas = np.uint64(pa) + np.arange(count, dtype=np.uint64) * np.uint64(smaller)
        descs = kind2.encode_many(pas, kind2.attr_bits(values))
        if kind2.copies > 1:
            descs = np.repeat(descs, kind2.copies)
        if li2 == leaf.li:
            self._write(txn, leaf.table, leaf.index, descs)
            return
        child = self._alloc_table(txn, li2)
        self._write(txn, child, 0, descs)
        tk = self._geo.levels[leaf.li].table_kind
        assert tk is not None
        self._write(txn, leaf.table, leaf.index, np.array([tk.encode(child, values)], np.uint64))

    def _clear(
        self,
        txn: _Txn,
        table: int,
        li: int,
        tva: int,
        start: int,
        end: int,
        parent: DescriptorKind | None,
        parent_desc: int,
        removed: list[MapEntry],
    ) -> None:
        """Invalidate every leaf in ``[start, end)`` (none straddles it) under ``table``."""
        gl = self._geo.levels[li]
        i0, i1 = self._span(li, tva, start, end)
        words = self._read(table + i0 * self._eb, i1 - i0)
        new = words.copy()
        for kind in gl.leaf_kinds:
            hit = kind.match_many(words)
            if not hit.any():
                continue
            new[hit] = 0
            for j in np.flatnonzero(hit).tolist():
                if (i0 + j) % kind.copies:
                    continue
                desc = int(words[j])
                removed.append(
                    MapEntry(
                        tva + ((i0 + j) << gl.shift),
                        kind.output_address(desc),
                        kind.size,
                        self._fmt.leaf_attrs(kind, desc, parent, parent_desc),
                    )
                )
        tk = gl.table_kind
        if tk is not None:
            for j in np.flatnonzero(tk.match_many(words)).tolist():
                desc = int(words[j])
                child = tk.output_address(desc)
                cva = tva + ((i0 + j) << gl.shift)
                sub_start, sub_end = max(start, cva), min(end, cva + gl.slot_span)
                self._clear(txn, child, li + 1, cva, sub_start, sub_end, tk, desc, removed)
                if self._tables[child].count == 0:
                    new[j] = 0
                    self._release(txn, child)
        if not np.array_equal(new, words):
            self._write(txn, table, i0, new)

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
        hole = self._find(self._root, 0, 0, va, end, mapped=False)
        if hole is not None:
            raise NotMappedError(
                f"{op} [{va:#x}, {end:#x}): {hole:#x} is not mapped; nothing was changed"
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
        if any(k.fields for k in self._fmt.kinds if k.role is Role.TABLE):
            self._check_table_fields(op, self._root, 0, 0, va, end, values)
        txn = _Txn(op)
        out: list[MapEntry] = []
        stored = self._fmt.decode_attrs(values)
        try:
            self._rewrite(txn, self._root, 0, 0, va, end, values, stored, out)
        except BaseException:
            self._rollback(txn)
            raise
        self._commit(txn)
        out.sort(key=lambda e: e.va)
        return out

    def _check_table_fields(
        self,
        op: str,
        table: int,
        li: int,
        tva: int,
        start: int,
        end: int,
        values: Mapping[str, int],
    ) -> None:
        """Refuse changing a table-descriptor field shared with mappings outside the range."""
        gl = self._geo.levels[li]
        tk = gl.table_kind
        if tk is None:
            return
        i0, i1 = self._span(li, tva, start, end)
        words = self._read(table + i0 * self._eb, i1 - i0)
        want = tk.attr_bits(values)
        for j in np.flatnonzero(tk.match_many(words)).tolist():
            desc = int(words[j])
            child = tk.output_address(desc)
            cva = tva + ((i0 + j) << gl.shift)
            sub_start, sub_end = max(start, cva), min(end, cva + gl.slot_span)
            if desc & tk.attr_mask != want:
                child_words = self._read(child, self._geo.levels[li + 1].entries)
                shift = self._geo.levels[li + 1].shift
                slot_va = cva + (np.arange(child_words.size, dtype=np.int64) << shift)
                outside = (slot_va < sub_start) | (slot_va >= sub_end)
                if np.any((child_words & self._vm).astype(bool) & outside):
                    raise AttributeConflictError(
                        f"{op} [{start:#x}, {end:#x}): the {tk.name} at {cva:#x} holds fields "
                        f"{tk.field_names} for all of [{cva:#x}, {cva + gl.slot_span:#x}), "
                        "which has mappings outside the range; they would change too"
                    )
            self._check_table_fields(op, child, li + 1, cva, sub_start, sub_end, values)

    def _rewrite(
        self,
        txn: _Txn,
        table: int,
        li: int,
        tva: int,
        start: int,
        end: int,
        values: Mapping[str, int],
        stored: PageAttrs,
        out: list[MapEntry],
    ) -> None:
        gl = self._geo.levels[li]
        i0, i1 = self._span(li, tva, start, end)
        words = self._read(table + i0 * self._eb, i1 - i0)
        new = words.copy()
        for kind in gl.leaf_kinds:
            hit = kind.match_many(words)
            if not hit.any():
                continue
            keep = np.uint64(_ALL_ONES ^ kind.attr_mask)
            new[hit] = (words[hit] & keep) | np.uint64(kind.attr_bits(values))
            for j in np.flatnonzero(hit).tolist():
                if (i0 + j) % kind.copies == 0:
                    desc = int(words[j])
                    va = tva + ((i0 + j) << gl.shift)
                    out.append(MapEntry(va, kind.output_address(desc), kind.size, stored))
        tk = gl.table_kind
        if tk is not None:
            keep = np.uint64(_ALL_ONES ^ tk.attr_mask)
            for j in np.flatnonzero(tk.match_many(words)).tolist():
                desc = int(words[j])
                cva = tva + ((i0 + j) << gl.shift)
                sub_start, sub_end = max(start, cva), min(end, cva + gl.slot_span)
                child = tk.output_address(desc)
                self._rewrite(txn, child, li + 1, cva, sub_start, sub_end, values, stored, out)
                new[j] = (words[j] & keep) | np.uint64(tk.attr_bits(values))
        if not np.array_equal(new, words):
            self._write(txn, table, i0, new)

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

    def table_pages(self) -> list[tuple[int, int]]:
        """``(pa, size)`` of every table this tree owns, root included, sorted."""
        self._live("table_pages")
        return sorted((pa, info.size) for pa, info in self._tables.items())

    def snapshot(self) -> PageTableSnapshot:
        """Bytes and bookkeeping of every table, to compare state before/after a call."""
        self._live("snapshot")
        return PageTableSnapshot(
            root=self._root,
            tables=tuple(
                (pa, info.size, info.count, self._memory.read(pa, info.size))
                for pa, info in sorted(self._tables.items())
            ),
        )

    def destroy(self) -> None:
        """Free every table page, root included; the object refuses further use."""
        self._live("destroy")
        for pa, info in sorted(self._tables.items()):
            self._tm.free(pa, info.size)
        self._tables.clear()
        self._alive = False
