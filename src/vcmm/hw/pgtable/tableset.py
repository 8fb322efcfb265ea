"""The table pages one translation tree owns, and the undo log of each change to them.

The bytes in memory are the truth about translations; a :class:`TableSet` keeps only
what the memory cannot say cheaply: which table pages belong to the tree, at which
level, and how many valid entries each holds, so that a table left empty by an unmap
goes back to its :class:`~vcmm.hw.tablemem.TableMemory`.

Every change goes through an :class:`Edit` (``with tables.editing(op) as edit:``):
each descriptor write records the bytes it overwrites, each table allocated or released
is noted, and if the block raises :meth:`TableSet.rollback` puts everything back in
reverse, so a call that fails half way (table memory runs out, a block cannot be split)
leaves no trace.  Released tables go back to the allocator only on
:meth:`TableSet.commit`, when the block completes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vcmm.errors import OutOfMemoryError
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import Geometry
from vcmm.hw.tablemem import MIN_BLOCK, TableMemory

U64 = npt.NDArray[np.uint64]


@dataclass(slots=True)
class TableInfo:
    """One table page of the tree."""

    li: int  # index into Geometry.levels
    size: int  # bytes allocated from TableMemory
    count: int  # valid entries (each copy of a contiguous leaf counts)


@dataclass(slots=True)
class Edit:
    """Undo log of one mutating call (``op`` names it in error messages)."""

    op: str
    writes: list[tuple[int, npt.NDArray[np.uint8]]] = field(default_factory=list)
    counts: dict[int, int] = field(default_factory=dict)
    allocated: list[int] = field(default_factory=list)
    released: dict[int, TableInfo] = field(default_factory=dict)


class TableSet:
    """The table pages of one tree (root included) in ``memory``, from ``table_memory``."""

    def __init__(
        self,
        geo: Geometry,
        memory: PhysicalMemory,
        table_memory: TableMemory,
        valid_mask: int,
    ) -> None:
        self._geo = geo
        self._memory = memory
        self._tm = table_memory
        eb = geo.levels[0].entry_bytes
        self._eb = eb
        self._dtype = np.dtype("<u4" if eb == 4 else "<u8")
        self._vm = np.uint64(valid_mask)
        self._vm_typed = self._dtype.type(valid_mask)
        self._tables: dict[int, TableInfo] = {}
        size = max(geo.root_bytes, MIN_BLOCK)
        try:
            self.root = table_memory.alloc(size, size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(f"PageTable: no table memory for the root table: {exc}") from exc
        self._tables[self.root] = TableInfo(0, size, 0)

    def __len__(self) -> int:
        return len(self._tables)

    def count(self, table: int) -> int:
        """Valid entries of one table page of the tree."""
        return self._tables[table].count

    def pages(self) -> list[tuple[int, int, int]]:
        """``(pa, size, valid entries)`` of every table page, sorted by address."""
        return sorted((pa, info.size, info.count) for pa, info in self._tables.items())

    # -- changes, each logged in an Edit ---------------------------------------------------

    def write(self, edit: Edit, table: int, index: int, words: U64) -> None:
        """Overwrite entries ``index..`` of ``table``, logging the old bytes and counts."""
        eb = self._eb
        addr = table + index * eb
        old_raw = self._memory.read_array(addr, words.size * eb)
        old = old_raw.view(self._dtype)
        info = self._tables[table]
        edit.counts.setdefault(table, info.count)
        edit.writes.append((addr, old_raw))
        self._memory.write(addr, words.astype(self._dtype))
        info.count += int(np.count_nonzero(words & self._vm)) - int(
            np.count_nonzero(old & self._vm_typed)
        )

    def alloc(self, edit: Edit, li: int) -> int:
        """A zeroed table page for level index ``li``."""
        level = self._geo.levels[li]
        size = max(level.table_bytes, MIN_BLOCK)
        try:
            pa = self._tm.alloc(size, size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"{edit.op}: out of table memory for a level-{level.level} table; the call "
                f"was undone: {exc}"
            ) from exc
        self._tables[pa] = TableInfo(li, size, 0)
        edit.allocated.append(pa)
        return pa

    def release(self, edit: Edit, table: int) -> None:
        """Drop an (empty) table from the tree; its page is freed on :meth:`commit`."""
        edit.released[table] = self._tables.pop(table)

    def editing(self, op: str) -> _Editing:
        """An :class:`Edit` for the ``with`` block: committed if the block completes,
        rolled back (and the exception passed on) if anything in it raises."""
        return _Editing(self, Edit(op))

    def rollback(self, edit: Edit) -> None:
        """Undo everything ``edit`` logged, in reverse."""
        for addr, old in reversed(edit.writes):
            self._memory.write(addr, old)
        self._tables.update(edit.released)
        for table, count in edit.counts.items():
            if table in self._tables:
                self._tables[table].count = count
        for table in reversed(edit.allocated):
            info = self._tables.pop(table)
            self._tm.free(table, info.size)

    def commit(self, edit: Edit) -> None:
        """Make ``edit`` final: free the pages of the tables it released."""
        for table, info in sorted(edit.released.items()):
            self._tm.free(table, info.size)

    def destroy(self) -> None:
        """Free every table page, root included."""
        for pa, info in sorted(self._tables.items()):
            self._tm.free(pa, info.size)
        self._tables.clear()


class _Editing:
    """The context manager of :meth:`TableSet.editing` (a class, not a generator: every
    map and unmap enters one)."""

    __slots__ = ("_edit", "_tables")

    def __init__(self, tables: TableSet, edit: Edit) -> None:
        self._tables = tables
        self._edit = edit

    def __enter__(self) -> Edit:
        return self._edit

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self._tables.commit(self._edit)
        else:
            self._tables.rollback(self._edit)
