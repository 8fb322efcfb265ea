"""The machinery behind ``vcm_back``/``vcm_unback``: plans, sharing rewrites, undo.

A backing is computed completely before anything changes: where each chunk goes
(:func:`pieces`), which pages map it (:func:`page_runs`), which existing aliases must
change their shareable bit (:mod:`vcmm.core.sharing`).  Only then are tables written
(a reservation's runs in one batched ``map_many`` call), inside the table journals of
an :class:`UndoLog`, so that a failure part way (table memory running out in the
middle of a large backing) is taken back before the error leaves: tables, TLBs and
allocators end as they began.

Rewriting the shareable bit of *part* of an edge can cut a block (a 1 MiB section of
which one page became shared): :func:`apply_rewrites` first splits such a block into
the pages :func:`plan_pages` would have used for the two sides, then rewrites whole
leaves, as the table's ``set_attrs`` requires.

Every table a call changes (the reservation's own and those of the aliases it
rewrites) is changed inside one update bracket per mapper, all opened before the
first change and closed after the last (:func:`updating_all`).  TLB maintenance runs
when the brackets close, so a call that fails part way (a block split finding no
table memory) is undone before any TLB entry or counter was touched.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.mappers import Mapper, PageRun, merge_runs, plan_pages
from vcmm.core.objects import PhysMem, Reservation, Vcm
from vcmm.core.sharing import Rewrite
from vcmm.errors import InvalidArgumentError, StateError, VcmmError
from vcmm.hw.pgtable import Journal, PageTable
from vcmm.mm.interfaces import VcmAllocator
from vcmm.ranges import AddressRange
from vcmm.undo import Transaction

U64 = npt.NDArray[np.uint64]


def pieces(
    length: int, physmem: PhysMem, base: int
) -> list[tuple[int, AddressRange, AddressRange]]:
    """``(address, physical piece, chunk)`` laying ``physmem``'s pieces from ``base``.

    The pieces go end to end in order; the last one is cut where the reservation ends.
    ``chunk`` is the allocation chunk each piece lies in.  (Offsets by a running sum
    and one bisect for the last piece: a view can have 16384 pieces.)
    """
    ranges = physmem.chunk_ranges
    if len(ranges) == 1:  # one page or run (map_page): no sums
        (only,) = ranges
        cut = only if only.size <= length else AddressRange(only.start, length)
        return [(base, cut, physmem.chunk_keys[0])]
    return laid_out(length, physmem, base)


def laid_out(
    length: int, physmem: PhysMem, base: int
) -> list[tuple[int, AddressRange, AddressRange]]:
    """:func:`pieces` for any number of pieces (the reference of its one-piece case)."""
    ranges = physmem.chunk_ranges
    ends = list(itertools.accumulate([r.size for r in ranges]))
    n = min(bisect.bisect_left(ends, length) + 1, len(ranges))
    vas = [base, *(base + end for end in ends[: n - 1])][:n]
    out = list(zip(vas, ranges[:n], physmem.chunk_keys[:n], strict=True))
    if out and ends[n - 1] > length:
        va, last, chunk = out[-1]
        out[-1] = (va, AddressRange(last.start, length - (va - base)), chunk)
    return out


def page_cap(physmem: PhysMem) -> int:
    """Largest page a backing of ``physmem`` may use: its largest block size, if any."""
    sizes = physmem.attr.block_sizes
    return max(sizes) if sizes else 1 << 64


def page_runs(mapper: Mapper, mappings: list[Mapping], cap: int) -> list[tuple[PageAttrs, PageRun]]:
    """Page runs for one reservation's ``mappings`` (VA order), joined where possible."""
    if not mapper.page_sizes:
        return []
    sizes = mapper.page_sizes
    smallest = min(sizes)
    out: list[tuple[PageAttrs, PageRun]] = []
    for attrs, group in itertools.groupby(mappings, key=lambda m: m.attrs):
        runs: list[PageRun] = []
        for m in group:
            size = m.phys.size
            if size == smallest:
                runs.append(PageRun(m.va, m.phys.start, size, size))
            else:
                runs.extend(plan_pages(m.va, m.phys.start, size, sizes, cap))
        out.extend((attrs, run) for run in merge_runs(runs))
    return out


def single_pages(mapper: Mapper, mappings: list[Mapping]) -> tuple[U64, U64, PageAttrs] | None:
    """Addresses and physical addresses of ``mappings`` as arrays, and their one set
    of attributes, when each is one page of ``mapper``'s smallest size with the same
    attributes object (a backing of separate pages); None otherwise."""
    if not mapper.page_sizes or not mappings:
        return None
    page = min(mapper.page_sizes)
    attrs = mappings[0].attrs
    phys = [m.phys for m in mappings]  # list loops over slots: no call per edge
    if [p.size for p in phys].count(page) != len(phys) or not all(
        map(operator.is_, [m.attrs for m in mappings], itertools.repeat(attrs))
    ):
        return None
    vas = np.array([m.va for m in mappings], dtype=np.uint64)
    return vas, np.array([p.start for p in phys], dtype=np.uint64), attrs


def write_tables(mapper: Mapper, mappings: list[Mapping], cap: int) -> None:
    """Map one reservation's ``mappings`` (VA order) in one batched table call: pages
    as arrays when they are all separate smallest pages, page runs otherwise.  The
    table bytes, allocation order, errors and ranges to invalidate are those of
    :meth:`Mapper.map` run by run over :func:`page_runs`.  A single page (a 4 KiB
    ``map_page``) takes the plain one-run map: building arrays for one page costs
    several times the store."""
    pages = single_pages(mapper, mappings) if len(mappings) > 1 else None
    if pages is not None:
        mapper.map_pages(*pages)
    else:
        mapper.map_many(page_runs(mapper, mappings, cap))


def va_groups(mappings: list[Mapping]) -> list[tuple[int, int, PageAttrs]]:
    """``(va, size, attrs)`` of VA-contiguous runs of ``mappings`` (VA order) with one
    set of attributes: what one unmap or ``set_attrs`` call can cover."""
    if mappings:  # one group (an unbacking of 16384 pages): found with list loops
        vas, sizes = [m.va for m in mappings], [m.phys.size for m in mappings]
        first = mappings[0].attrs
        if vas[1:] == list(map(operator.add, vas, sizes[:-1])) and all(
            map(operator.is_, [m.attrs for m in mappings], itertools.repeat(first))
        ):
            return [(vas[0], sum(sizes), first)]
    groups: list[tuple[int, int, PageAttrs]] = []
    for m in mappings:
        if groups:
            va, size, attrs = groups[-1]
            if va + size == m.va and (attrs is m.attrs or attrs == m.attrs):
                groups[-1] = (va, size + m.phys.size, attrs)
                continue
        groups.append((m.va, m.phys.size, m.attrs))
    return groups


def one_to_one_base(call: str, res: Reservation, physmem: PhysMem) -> int:
    """Where a one-to-one reservation sits: at its backing's physical address.

    The backing must be physically contiguous over the reservation's length, inside
    the VCM, and clear of the VCM's other placed reservations.
    """
    vcm = res.vcm
    start = physmem.chunk_ranges[0].start
    expected = start
    for chunk in physmem.chunk_ranges:
        if expected >= start + res.len:
            break
        if chunk.start != expected:
            raise InvalidArgumentError(
                f"{call}: one-to-one {vcm.name} needs physically contiguous backing; "
                f"{physmem.name} jumps from {expected:#x} to {chunk.start:#x}"
            )
        expected = chunk.end
    span = AddressRange(start, res.len)
    if span not in vcm.range:
        raise InvalidArgumentError(
            f"{call}: {physmem.name} at {span} lies outside one-to-one {vcm.name} "
            f"{vcm.range}; a one-to-one reservation sits at its physical address"
        )
    for other in vcm.reservations:
        if other.range is not None and other.range.overlaps(span):
            raise StateError(
                f"{call}: {span} is already taken by {other.name} in one-to-one {vcm.name}"
            )
    return start


class Undoable:
    """``with Undoable(call, what) as undo:`` the undo log of one backing call, taken
    back as one step of its :class:`~vcmm.undo.Transaction` if the block raises; a
    :class:`~vcmm.errors.VcmmError` then leaves :func:`explained` as ``what()`` failed
    and was undone (``what`` is called only then).  One plain class, the context
    manager and the log at once: it wraps every backing and unbacking.

    Table changes are journaled by the tables themselves: :meth:`journal` opens a
    :meth:`~vcmm.hw.pgtable.PageTable.journal` on every table the call may change,
    which every map, unmap, split and attribute rewrite then joins, so a failure puts
    back every byte, table page and count exactly, whatever the steps were (replaying
    inverse calls cannot: an unmap keeps the tables a map allocated, as Linux's do).
    The rollback runs inside the mappers' restoring brackets: the entries come back
    exactly as they were, so TLB entries cached from them before the call are right
    again and are left alone (the TLBs end as they began too); then each mapper is
    told it was restored, or, if the rollback fails, invalidates what the call
    touched.  The transaction must not join an enclosing one (``boundary=True``):
    once the call succeeded its caller undoes it with ``vcm_unback``.
    """

    __slots__ = ("_journals", "_placed", "_tables", "_txn", "_what", "made")

    def __init__(self, call: str, what: Callable[[], str]) -> None:
        self._txn = Transaction(call, boundary=True)
        self._what = what
        self._journals: list[tuple[Journal, list[Mapper]]] = []
        self._placed: list[tuple[VcmAllocator, int]] = []
        self._tables: list[PageTable] = []
        #: Once committed: the tables the call allocated, per page table.
        self.made: list[tuple[PageTable, list[int]]] = []

    def __enter__(self) -> Undoable:
        txn = self._txn.__enter__()
        txn.on_undo(self._roll_back)
        txn.on_commit(self._commit)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._txn.__exit__(kind, exc, tb)  # rolls back on an exception
        if isinstance(exc, VcmmError):
            why = explained(exc, self._what())
            if why is not exc:
                raise why from exc

    def journal(self, call: str, mappers: Iterable[Mapper]) -> None:
        """Journal every table ``mappers`` write (each table once: the kernel's VMM
        mappers share one) until the call ends."""
        per_table: dict[int, tuple[PageTable, list[Mapper]]] = {}
        for mapper in mappers:
            table = mapper.page_table()
            if table is not None:
                per_table.setdefault(id(table), (table, []))[1].append(mapper)
        for table, users in per_table.values():
            self._journals.append((table.journal(call), users))
            self._tables.append(table)

    def placed(self, allocator: VcmAllocator, addr: int) -> None:
        """A one-to-one reservation was placed at ``addr``: freed on undo."""
        self._placed.append((allocator, addr))

    def _commit(self) -> None:
        journals, self._journals = self._journals, []
        for table, (journal, _) in zip(self._tables, journals, strict=True):
            made = journal.allocated()
            if made:
                self.made.append((table, made))
            journal.commit()

    def _roll_back(self) -> None:
        journals, self._journals = self._journals, []
        placed, self._placed = self._placed, []
        touched = {id(m): m for _, users in journals for m in users}
        try:
            for journal, users in reversed(journals):
                with contextlib.ExitStack() as stack:
                    for mapper in users:
                        stack.enter_context(mapper.restoring())
                    journal.rollback()
        except BaseException:
            for mapper in touched.values():
                mapper.flush_held()
            raise
        for mapper in touched.values():
            mapper.restored()
        for allocator, addr in reversed(placed):
            allocator.free(addr)


def updating_all(mappers: Iterable[Mapper]) -> contextlib.AbstractContextManager[None]:
    """One update bracket around every mapper a call changes (each once, in order).

    Nested brackets of the same mappers inside it do no maintenance; when the block
    ends normally every mapper invalidates what it changed, and when it raises each
    keeps its changed ranges for the undo instead (``restored``/``flush_held``), so a
    failed call never drops a TLB entry that the undo makes right again.  One mapper
    (most calls) is its own bracket, without a stack around it.
    """
    unique = list({id(m): m for m in mappers}.values())
    if len(unique) == 1:
        return unique[0].updating()
    return _updating_each(unique)


@contextlib.contextmanager
def _updating_each(mappers: list[Mapper]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for mapper in mappers:
            stack.enter_context(mapper.updating())
        yield


def rewritten_mappers(
    rewrites: list[Rewrite],
    reservation: Callable[[int], Reservation],
    mapper_of: Callable[[Vcm], Mapper],
) -> list[Mapper]:
    """The mappers whose tables :func:`apply_rewrites` may change (each reservation's
    once: a 16384-piece rewrite names the same few reservations over and over)."""
    res_ids = {old.res_id for old, _ in rewrites if old.res_id is not None}
    return [mapper_of(reservation(res_id).vcm) for res_id in res_ids]


def split_leaf(mapper: Mapper, boundary: int, attrs: Callable[[int], PageAttrs]) -> None:
    """Make ``boundary`` a leaf boundary: a block straddling it is unmapped and mapped
    again as the pages :func:`plan_pages` gives its two sides (same bytes, same
    attributes ``attrs(boundary)``: one descriptor has one set).  The block may reach
    into a neighbouring reservation (``vcm_split`` cuts reservations, not entries).
    Call inside the mapper's update bracket."""
    leaf = mapper.leaf(boundary)
    if leaf is None or leaf.va == boundary:
        return
    before = attrs(boundary)
    mapper.unmap(leaf.va, leaf.size, runs=False)
    cut = boundary - leaf.va
    runs = plan_pages(leaf.va, leaf.pa, cut, mapper.page_sizes, leaf.size)
    runs += plan_pages(boundary, leaf.pa + cut, leaf.size - cut, mapper.page_sizes, leaf.size)
    for run in runs:
        mapper.map(run, before)


def apply_rewrites(
    graph: MappingGraph,
    rewrites: list[Rewrite],
    reservation: Callable[[int], Reservation],
    mapper_of: Callable[[Vcm], Mapper],
) -> None:
    """Rewrite the attributes of aliases in their tables: per reservation, VA-adjacent
    changed pieces with the same change become one ``set_attrs`` call, inside one update
    bracket, after the blocks straddling their ends were split."""
    per_res: dict[int, list[tuple[int, int, PageAttrs, PageAttrs]]] = {}
    for old, parts in rewrites:
        assert old.res_id is not None
        for part in parts:
            if part.attrs != old.attrs:
                per_res.setdefault(old.res_id, []).append(
                    (part.va, part.phys.size, old.attrs, part.attrs)
                )
    for res_id, items in per_res.items():
        mapper = mapper_of(reservation(res_id).vcm)
        if not mapper.page_sizes:
            continue
        items.sort(key=lambda item: item[0])
        groups: list[tuple[int, int, PageAttrs, PageAttrs]] = []
        for va, size, before, after in items:
            if groups:
                gva, gsize, gbefore, gafter = groups[-1]
                if gva + gsize == va and gbefore == before and gafter == after:
                    groups[-1] = (gva, gsize + size, before, after)
                    continue
            groups.append((va, size, before, after))

        def attrs_at(boundary: int, res_id: int = res_id) -> PageAttrs:
            # A group's start lies in the reservation, its end just after it.
            edge = graph.at_va(res_id, boundary) or graph.at_va(res_id, boundary - 1)
            assert edge is not None
            return edge.attrs

        with mapper.updating():
            for boundary in sorted({b for va, size, _, _ in groups for b in (va, va + size)}):
                split_leaf(mapper, boundary, attrs_at)
            for va, size, _, after in groups:
                mapper.set_attrs(va, size, after)


def explained(exc: VcmmError, what: str) -> VcmmError:
    """``exc`` again (same type) with the failed call and its objects named in front.

    Errors raised deep in the tables or allocators name table addresses; the caller
    wants to know which of its calls failed and that nothing was changed.  An error
    type whose constructor takes more than a message gets a note instead.
    """
    try:
        return type(exc)(f"{what} failed and was undone: {exc}")
    except TypeError:
        exc.add_note(f"{what} failed and was undone")
        return exc
