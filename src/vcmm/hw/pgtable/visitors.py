"""The range operations on page tables, each a :class:`~vcmm.hw.pgtable.walker.Visitor`.

Every visitor classifies a table's slots vectorised (one ``match_many`` per descriptor
kind) and touches Python objects only for what it reports (a removed leaf, a decoded
mapping).  The read-only ones need nothing but the format; the mutating ones change
tables only through a :class:`~vcmm.hw.pgtable.tableset.TableSet` and the
:class:`~vcmm.hw.pgtable.tableset.Edit` of the call, so a failure can be undone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.errors import AttributeConflictError
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat
from vcmm.hw.pgtable.tableset import Edit, TableSet
from vcmm.hw.pgtable.walker import Slots, Visitor, walk_range
from vcmm.sizes import format_size

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


#: Below this many leaves, decoding them one by one beats numpy's per-call overhead.
_VECTOR_MIN = 16


def _leaf_entries(
    fmt: PageTableFormat,
    slots: Slots,
    kind: DescriptorKind,
    hit: npt.NDArray[np.bool_],
    attrs: PageAttrs | None = None,
) -> list[tuple[int, MapEntry]]:
    """The leaves of ``kind`` at the slots ``hit`` marks, each once (the first of its
    ``copies``), as ``(slot, MapEntry)`` in slot order; ``attrs`` overrides the decoded
    attributes.  Many leaves are decoded vectorised (addresses, attribute bits), their
    attributes once per distinct bit pattern."""
    index = np.flatnonzero(hit)
    if kind.copies > 1:
        index = index[(slots.i0 + index) % kind.copies == 0]
    size, parent, parent_desc = kind.size, slots.parent, slots.parent_desc
    if index.size < _VECTOR_MIN:
        out = []
        for j in index.tolist():
            desc = int(slots.words[j])
            got = attrs or fmt.leaf_attrs(kind, desc, parent, parent_desc)
            out.append((j, MapEntry(slots.va(j), kind.output_address(desc), size, got)))
        return out
    descs = slots.words[index]
    vas = (slots.i0 + index.astype(np.uint64)) << np.uint64(slots.level.shift)
    vas += np.uint64(slots.tva)
    pas = kind.output_many(descs).tolist()
    bits = (descs & np.uint64(kind.attr_mask)).tolist()
    if attrs is None:
        decoded = {b: fmt.leaf_attrs(kind, b, parent, parent_desc) for b in set(bits)}
    else:
        decoded = dict.fromkeys(bits, attrs)
    return [
        (j, MapEntry(va, pa, size, decoded[b]))
        for j, va, pa, b in zip(index.tolist(), vas.tolist(), pas, bits, strict=True)
    ]


def _leaf_mask(slots: Slots) -> np.ndarray:
    is_leaf = np.zeros(slots.words.shape, dtype=np.bool_)
    for kind in slots.level.leaf_kinds:
        is_leaf |= kind.match_many(slots.words)
    return is_leaf


class FirstAddress(Visitor):
    """The first address of the range that is mapped (``mapped``) or not: ``found``."""

    def __init__(self, *, mapped: bool) -> None:
        self.mapped = mapped
        self.found: int | None = None
        #: Per table being walked: the first slot answering at its own level, if any.
        self._first: list[int | None] = []

    def table(self, slots: Slots) -> None:
        is_leaf = _leaf_mask(slots)
        answers = is_leaf if self.mapped else ~(is_leaf | slots.tables)
        self._note(answers)

    def _note(self, answers: npt.NDArray[np.bool_]) -> None:
        """Remember the first slot of the table being entered that answers."""
        hits = np.flatnonzero(answers)
        self._first.append(int(hits[0]) if hits.size else None)

    def _answer(self, slots: Slots, j: int) -> None:
        self.found = max(slots.start, slots.va(j))

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        if self.found is not None:
            return False
        first = self._first[-1]
        if first is not None and first < j:  # an earlier slot of this table answers
            self._answer(slots, first)
            return False
        return True

    def leave(self, slots: Slots) -> None:
        first = self._first.pop()
        if self.found is None and first is not None:
            self._answer(slots, first)


class Clear(FirstAddress):
    """Invalidate every leaf in the range (none may straddle it), keeping the tables
    left empty (``keep_tables``, Linux's rule) or releasing them; ``removed`` lists the
    leaves as they were (unless ``report`` is False: decoding them is most of the cost
    of clearing many pages).

    The range must be mapped throughout: ``found`` is the first address nothing maps,
    where the walk stops (the caller rolls the edit back), so unmapping needs no
    separate walk to look for holes first.
    """

    def __init__(
        self,
        fmt: PageTableFormat,
        tables: TableSet,
        edit: Edit,
        *,
        keep_tables: bool,
        report: bool = True,
    ) -> None:
        super().__init__(mapped=False)
        self._fmt = fmt
        self._tables = tables
        self._edit = edit
        self._keep = keep_tables
        self._report = report
        self.removed: list[MapEntry] = []

    def table(self, slots: Slots) -> None:
        words = slots.words
        mapped = slots.tables.copy()
        for kind in slots.level.leaf_kinds:
            hit = kind.match_many(words)
            if not hit.any():
                continue
            mapped |= hit
            slots.edit()[hit] = 0
            if self._report:
                self.removed.extend(e for _, e in _leaf_entries(self._fmt, slots, kind, hit))
        self._note(~mapped)

    def ascend(self, slots: Slots, j: int, child: int) -> None:
        if not self._keep and self._tables.count(child) == 0:
            slots.edit()[j] = 0
            self._tables.release(self._edit, child)

    def leave(self, slots: Slots) -> None:
        super().leave(slots)
        if slots.changed():
            assert slots.new is not None
            self._tables.write(self._edit, slots.table, slots.i0, slots.new)


class CheckTableFields(FirstAddress):
    """Refuse changing a table-descriptor field (ARMv7 NS) shared with mappings outside
    the range: ``conflict`` says where.  Like :class:`FirstAddress` with ``mapped``
    False it also finds the first hole (``found``), which set_attrs reports first."""

    def __init__(
        self, op: str, geo: Geometry, memory: PhysicalMemory, values: Mapping[str, int]
    ) -> None:
        super().__init__(mapped=False)
        self._op = op
        self._geo = geo
        self._memory = memory
        self._values = values
        self.conflict: AttributeConflictError | None = None

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        if not super().descend(slots, j, desc, va):
            return False
        if self.conflict is not None:
            return True  # keep looking for holes: they are reported first
        tk = slots.level.table_kind
        assert tk is not None
        if desc & tk.attr_mask == tk.attr_bits(self._values):
            return True
        level, below = slots.level, self._geo.levels[slots.li + 1]
        sub_start, sub_end = max(slots.start, va), min(slots.end, va + level.slot_span)
        child = self._memory.read_words(tk.output_address(desc), below.entries, below.entry_bytes)
        slot_va = va + (np.arange(child.size, dtype=np.int64) << below.shift)
        outside = (slot_va < sub_start) | (slot_va >= sub_end)
        if np.any((child & np.uint64(below.valid_mask)).astype(bool) & outside):
            self.conflict = AttributeConflictError(
                f"{self._op} [{slots.start:#x}, {slots.end:#x}): the {tk.name} at {va:#x} "
                f"holds fields {tk.field_names} for all of [{va:#x}, "
                f"{va + level.slot_span:#x}), which has mappings outside the range; they "
                "would change too"
            )
        return True


class Rewrite(Visitor):
    """Rewrite the attribute fields of every leaf in the range and of the table
    descriptors above them; ``out`` lists the leaves with their new attributes
    (``stored``: what the new fields read back as)."""

    def __init__(
        self,
        fmt: PageTableFormat,
        tables: TableSet,
        edit: Edit,
        values: Mapping[str, int],
        stored: PageAttrs,
    ) -> None:
        self._fmt = fmt
        self._tables = tables
        self._edit = edit
        self._values = values
        self._stored = stored
        self.out: list[MapEntry] = []

    def table(self, slots: Slots) -> None:
        words = slots.words
        for kind in slots.level.leaf_kinds:
            hit = kind.match_many(words)
            if not hit.any():
                continue
            keep = np.uint64(_ALL_ONES ^ kind.attr_mask)
            slots.edit()[hit] = (words[hit] & keep) | np.uint64(kind.attr_bits(self._values))
            found = _leaf_entries(self._fmt, slots, kind, hit, self._stored)
            self.out.extend(e for _, e in found)

    def ascend(self, slots: Slots, j: int, child: int) -> None:
        tk = slots.level.table_kind
        assert tk is not None
        keep = np.uint64(_ALL_ONES ^ tk.attr_mask)
        slots.edit()[j] = (slots.words[j] & keep) | np.uint64(tk.attr_bits(self._values))

    def leave(self, slots: Slots) -> None:
        if slots.changed():
            assert slots.new is not None
            self._tables.write(self._edit, slots.table, slots.i0, slots.new)


class Decode(Visitor):
    """Every leaf mapping in the range, in input-address order: ``entries``.

    Descriptors the hardware walker would fault on (reserved encodings, output-address
    bits the format does not have) map nothing and are skipped, with their subtrees.
    """

    def __init__(self, fmt: PageTableFormat) -> None:
        self._fmt = fmt
        self.entries: list[MapEntry] = []
        #: Per table being walked: its leaves not yet emitted, and how many were.
        self._pending: list[tuple[list[tuple[int, MapEntry]], list[int]]] = []

    def table(self, slots: Slots) -> None:
        level, words = slots.level, slots.words
        valid = (words & np.uint64(level.valid_mask)) != 0
        leaves: list[tuple[int, MapEntry]] = []
        kinds = 0
        for kind in level.leaf_kinds:
            hit = kind.match_many(words) & valid
            if kind.size_fault_mask:
                hit &= (words & np.uint64(kind.size_fault_mask)) == 0
            found = _leaf_entries(self._fmt, slots, kind, hit)
            if found:
                leaves.extend(found)
                kinds += 1
        if kinds > 1:
            leaves.sort(key=lambda item: item[0])
        self._pending.append((leaves, [0]))

    def _emit_before(self, j: int | None) -> None:
        leaves, done = self._pending[-1]
        k = done[0]
        while k < len(leaves) and (j is None or leaves[k][0] < j):
            self.entries.append(leaves[k][1])
            k += 1
        done[0] = k

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        self._emit_before(j)
        tk = slots.level.table_kind
        assert tk is not None
        return not desc & tk.size_fault_mask

    def leave(self, slots: Slots) -> None:
        self._emit_before(None)
        self._pending.pop()


class LeafSpans(Visitor):
    """Every leaf's input address and size, the leaves :class:`Decode` finds, without
    their output addresses or attributes: ``vas`` and ``sizes``, in walk order.

    Why: counting a table's pages by size (the graph export does it for every
    reservation) needs only these, and building a :class:`MapEntry` with decoded
    attributes per leaf cost most of an export.
    """

    def __init__(self) -> None:
        self.vas: list[int] = []
        self.sizes: list[int] = []

    def table(self, slots: Slots) -> None:
        level, words = slots.level, slots.words
        valid = (words & np.uint64(level.valid_mask)) != 0
        for kind in level.leaf_kinds:
            hit = kind.match_many(words) & valid
            if kind.size_fault_mask:
                hit &= (words & np.uint64(kind.size_fault_mask)) == 0
            index = np.flatnonzero(hit)
            if kind.copies > 1:
                index = index[(slots.i0 + index) % kind.copies == 0]
            if index.size:
                vas = ((slots.i0 + index.astype(np.uint64)) << np.uint64(level.shift)) + np.uint64(
                    slots.tva
                )
                self.vas += vas.tolist()
                self.sizes += [kind.size] * index.size

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        tk = slots.level.table_kind
        assert tk is not None
        return not desc & tk.size_fault_mask


def leaf_spans(
    fmt: PageTableFormat, memory: PhysicalMemory, root: int, *, va_bits: int | None = None
) -> tuple[list[int], list[int]]:
    """The input address and size of every leaf reachable from ``root`` (the leaves of
    :func:`decode_tables`), sorted by address."""
    geo = fmt.geometry(va_bits)
    spans = LeafSpans()
    walk_range(geo, memory, root, 0, geo.va_limit, spans)
    order = sorted(range(len(spans.vas)), key=spans.vas.__getitem__)
    return [spans.vas[i] for i in order], [spans.sizes[i] for i in order]


def decode_tables(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    root: int,
    *,
    va_bits: int | None = None,
) -> Iterator[MapEntry]:
    """Every leaf mapping reachable from ``root``, in input-address order, from memory."""
    geo = fmt.geometry(va_bits)
    decode = Decode(fmt)
    walk_range(geo, memory, root, 0, geo.va_limit, decode)
    return iter(decode.entries)
