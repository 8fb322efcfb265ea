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

A caller that makes several calls as one all-or-nothing step (the core's ``vcm_back``
writing a reservation's runs, then rewriting aliases, which may split blocks and run
out of table memory) opens a :class:`Journal` around them: every call's edit then
joins the journal's, a failing call still takes back its own changes (to a savepoint),
and the journal's rollback puts back every byte, table page and count as they were
before the first call.  That is exact where replaying inverse calls is not: an unmap
does not give back the tables the map allocated (empty tables are kept, as Linux's
io-pgtable keeps them), and a block mapped over an empty kept table releases it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vcmm.errors import OutOfMemoryError, StateError
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
    #: ``(address, old bytes, table, change of its valid count)`` per write, oldest first.
    writes: list[tuple[int, npt.NDArray[np.uint8], int, int]] = field(default_factory=list)
    allocated: list[int] = field(default_factory=list)
    released: dict[int, TableInfo] = field(default_factory=dict)

    def joined(self, op: str) -> Edit:
        """An edit named ``op`` logging into this one's lists (a call inside a journal)."""
        return Edit(op, self.writes, self.allocated, self.released)

    def mark(self) -> tuple[int, int, int]:
        """Where the logs stand now: what :meth:`TableSet.rollback` can go back to."""
        return (len(self.writes), len(self.allocated), len(self.released))


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
        self._valid = valid_mask
        self._read_word = memory.read_u32 if eb == 4 else memory.read_u64
        self._tables: dict[int, TableInfo] = {}
        self._journal: Edit | None = None
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
        if words.size == 1:  # one descriptor (a page, a section, a table pointer)
            valid = self._valid
            delta = bool(int(words[0]) & valid) - bool(int(old[0]) & valid)
        else:
            delta = int(np.count_nonzero(words & self._vm)) - int(
                np.count_nonzero(old & self._vm_typed)
            )
        edit.writes.append((addr, old_raw, table, delta))
        self._memory.write(addr, words.astype(self._dtype))
        info.count += delta

    def put_slots(self, slots: Sequence[tuple[int, int, int]]) -> None:
        """Write descriptor ``desc`` at entry ``index`` of table page ``table`` for each
        ``(table, index, desc)`` in order and keep the valid counts; the caller checked
        every slot first (nothing can fail half way).  The slots of a table go in one
        :meth:`PhysicalMemory.exchange_words` (the words they overwrite give the
        count's change), which counts the same word reads and writes as a
        :meth:`put_words` per run of consecutive entries; inside a journal they go
        run by run, logged, and a lone slot goes as one :meth:`put_words` (cheaper
        than the exchange's checks)."""
        if self._journal is not None:
            for table, index, descs in runs_of_slots(slots):
                self.put_words(table, index, descs)
            return
        if len(slots) == 1:  # one page: a word read and a word store
            table, index, desc = slots[0]
            self.put_words(table, index, [desc])
            return
        valid, eb, memory = self._valid, self._eb, self._memory
        for table, (indexes, words) in _slots_by_table(slots).items():
            info = self._tables[table]
            old = memory.exchange_words(table, eb, indexes, words)
            info.count += sum(1 for w in words if w & valid) - sum(1 for w in old if w & valid)

    def put_words(self, table: int, index: int, words: list[int]) -> None:
        """Overwrite entries ``index..`` of ``table`` with ``words`` and keep the valid
        count: :meth:`write` without the undo log, for a caller that checked every
        slot first and so cannot fail half way (inside a journal it logs as usual)."""
        if self._journal is not None:
            self.write(self._journal, table, index, np.array(words, np.uint64))
            return
        eb, vm = self._eb, int(self._vm)
        addr = table + index * eb
        memory = self._memory
        if len(words) == 1:  # one page: a word read and a word store, no array
            word = words[0]
            read, write = (
                (memory.read_u32, memory.write_u32)
                if eb == 4
                else (memory.read_u64, memory.write_u64)
            )
            self._tables[table].count += bool(word & vm) - bool(read(addr) & vm)
            write(addr, word)
            return
        old = memory.read(addr, len(words) * eb)
        delta = sum(1 for w in words if w & vm) - sum(
            1 for k in range(0, len(old), eb) if int.from_bytes(old[k : k + eb], "little") & vm
        )
        memory.write(addr, b"".join(w.to_bytes(eb, "little") for w in words))
        self._tables[table].count += delta

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

    def release_subtrees(self, edit: Edit, li: int, table: int, index: int, count: int) -> None:
        """Release every table below slots ``index..index+count`` of ``table`` (level
        index ``li``), which the caller is about to overwrite with a block: the tables
        must map nothing (empty ones an unmap kept)."""
        tk = self._geo.levels[li].table_kind
        if tk is None:
            return
        if count == 1:  # one block's slot (a section): a scalar read, no arrays
            desc = self._read_word(table + index * self._eb)
            if desc & self._valid and tk.matches(desc):
                child = tk.output_address(desc)
                info = self._tables[child]
                self.release_subtrees(edit, info.li, child, 0, self._geo.levels[info.li].entries)
                self.release(edit, child)
            return
        words = self._memory.read_words(table + index * self._eb, count, self._eb)
        hit = ((words & self._vm) != 0) & tk.match_many(words)
        for child in tk.output_many(words[hit]).tolist():
            info = self._tables[child]
            self.release_subtrees(edit, info.li, child, 0, self._geo.levels[info.li].entries)
            self.release(edit, child)

    def release_empty(self, edit: Edit, tables: list[int]) -> None:
        """Release each of ``tables`` (newest first) that is still in the tree and
        maps nothing, clearing the descriptor that points at it."""
        for table in reversed(tables):
            info = self._tables.get(table)
            if info is None or info.li == 0 or info.count:
                continue
            tk = self._geo.levels[info.li - 1].table_kind
            assert tk is not None
            for parent, above in list(self._tables.items()):
                if above.li != info.li - 1:
                    continue
                words = self._memory.read_words(
                    parent, self._geo.levels[above.li].entries, self._eb
                )
                hit = np.flatnonzero(((words & self._vm) != 0) & tk.match_many(words))
                slot = hit[tk.output_many(words[hit]) == np.uint64(table)]
                if slot.size:
                    self.write(edit, parent, int(slot[0]), np.zeros(1, dtype=np.uint64))
                    self.release(edit, table)
                    break

    def editing(self, op: str) -> _Editing:
        """An :class:`Edit` for the ``with`` block: committed if the block completes,
        rolled back (and the exception passed on) if anything in it raises.  Inside a
        journal the edit joins it: the block's own changes are taken back on failure,
        and nothing is final before the journal commits."""
        journal = self._journal
        if journal is None:
            return _Editing(self, Edit(op), None)
        return _Editing(self, journal.joined(op), journal.mark())

    def rollback(self, edit: Edit, mark: tuple[int, int, int] = (0, 0, 0)) -> None:
        """Undo everything ``edit`` logged after ``mark`` (all of it by default), in
        reverse: released tables come back, bytes and valid counts are restored, and
        tables allocated are freed."""
        n_writes, n_allocated, n_released = mark
        for table in list(edit.released)[n_released:]:
            self._tables[table] = edit.released.pop(table)
        for addr, old, table, delta in reversed(edit.writes[n_writes:]):
            self._memory.write(addr, old)
            self._tables[table].count -= delta
        del edit.writes[n_writes:]
        for table in reversed(edit.allocated[n_allocated:]):
            info = self._tables.pop(table)
            self._tm.free(table, info.size)
        del edit.allocated[n_allocated:]

    def commit(self, edit: Edit) -> None:
        """Make ``edit`` final: free the pages of the tables it released."""
        for table, info in sorted(edit.released.items()):
            self._tm.free(table, info.size)

    def journal(self, op: str) -> Journal:
        """Open a :class:`Journal` (one at a time) that every later call joins."""
        if self._journal is not None:
            raise StateError(
                f"{op}: the table rooted at {self.root:#x} already has an open journal "
                f"({self._journal.op}); one caller at a time makes calls all or nothing"
            )
        self._journal = Edit(op)
        return Journal(self, self._journal)

    def close_journal(self, edit: Edit, *, commit: bool) -> None:
        """End the journal ``edit``: make it final, or take all of it back."""
        if self._journal is not edit:
            raise StateError(f"{edit.op}: this journal of table {self.root:#x} is not open")
        self._journal = None
        if commit:
            self.commit(edit)
        else:
            self.rollback(edit)

    def destroy(self) -> None:
        """Free every table page, root included."""
        for pa, info in sorted(self._tables.items()):
            self._tm.free(pa, info.size)
        self._tables.clear()


class Journal:
    """Several table calls as one step (see the module notes): :meth:`commit` once they
    all succeeded, or :meth:`rollback` to put the tables back as they were when it was
    opened.  Either ends it."""

    __slots__ = ("_edit", "_tables")

    def __init__(self, tables: TableSet, edit: Edit) -> None:
        self._tables = tables
        self._edit = edit

    def allocated(self) -> list[int]:
        """Tables allocated since the journal opened and still in the tree, oldest
        first (what :meth:`TableSet.release_empty` can give back later)."""
        return [t for t in self._edit.allocated if t not in self._edit.released]

    def commit(self) -> None:
        """Make every change final (free the tables they released)."""
        self._tables.close_journal(self._edit, commit=True)

    def rollback(self) -> None:
        """Take every change back, newest first."""
        self._tables.close_journal(self._edit, commit=False)


class _Editing:
    """The context manager of :meth:`TableSet.editing` (a class, not a generator: every
    map and unmap enters one)."""

    __slots__ = ("_edit", "_mark", "_tables")

    def __init__(self, tables: TableSet, edit: Edit, mark: tuple[int, int, int] | None) -> None:
        self._tables = tables
        self._edit = edit
        self._mark = mark  # inside a journal: where this call's changes begin

    def __enter__(self) -> Edit:
        return self._edit

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._mark is not None:
            if kind is not None:
                self._tables.rollback(self._edit, self._mark)
        elif kind is None:
            self._tables.commit(self._edit)
        else:
            self._tables.rollback(self._edit)


def runs_of_slots(
    slots: Sequence[tuple[int, int, int]],
) -> list[tuple[int, int, list[int]]]:
    """``(table, first index, descriptors)`` for each run of consecutive entries of one
    table among ``(table, index, descriptor)`` slots (one write per run)."""
    runs: list[tuple[int, int, list[int]]] = []
    for table, index, desc in slots:
        if runs:
            t, first, descs = runs[-1]
            if t == table and first + len(descs) == index:
                descs.append(desc)
                continue
        runs.append((table, index, [desc]))
    return runs


def _slots_by_table(
    slots: Sequence[tuple[int, int, int]],
) -> dict[int, tuple[list[int], list[int]]]:
    """Per table, the entry indexes and descriptors of its ``(table, index,
    descriptor)`` slots, in their order (stores to different tables do not meet, so
    grouping them keeps every word and count that storing in order gives)."""
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for table, index, desc in slots:
        group = groups.get(table)
        if group is None:
            group = groups[table] = ([], [])
        group[0].append(index)
        group[1].append(desc)
    return groups
