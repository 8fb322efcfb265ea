"""The library of buffer mappers (seed 000 L1667-1677): how a VCM reaches hardware.

The manager never touches an SMMU or the CPU's tables directly.  Each VCM kind has a
mapper with the same small interface (map a run of pages, unmap, rewrite attributes,
bracket a batch of changes); adding a kind of bus master means adding a mapper, not
changing the manager.

Decisions:

- **Pages are planned here, not by the table.**  :func:`plan_pages` maps each physical
  chunk with the largest page size at which both the VA and the PA are aligned, capped
  by the allocation's block sizes (000 L262: the attribute is "a specification to map
  memory using various block sizes"), so ``PhysAttr.blocks(SZ_4K)`` maps with 4 KiB
  pages even when the target handed out one large contiguous chunk.  Each run is then
  given to the table with its page size forced, so what the table writes is exactly
  what was planned.
- **One table per VCM, split or not.**  With TTBCR.N=1 the SMMU walks VA[31]=0 through
  TTBR0 indexed by VA[30:20]; for VA < 2 GiB those are the same slots as VA[31:20] in
  the VCM's full 16 KiB table, so the same table is the low half of one context and
  the whole space of another, as it would be on hardware.
- **The update bracket.**  Every batch of table changes of an IOMMU VCM runs inside
  ``update_start``/``update_done`` of every active context using the VCM; the changed
  ranges are reported to each context's TLB-maintenance gather
  (:mod:`vcmm.hw.tlbgather`), which ``update_done`` syncs (the policy, precise ranges
  or the whole bank, is the gather's).  The CPU's mappers (kernel and user address
  spaces) report theirs to a gather of the CPU's and sync it once, the user one for
  its ASID only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.core.banks import parked_on
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.pgtable.mapmany import page_spans
from vcmm.ranges import coalesce

if TYPE_CHECKING:
    from vcmm.core.objects import Vcm
    from vcmm.hw.cpu import Cpu
    from vcmm.hw.pgtable import MapEntry, PageTable
    from vcmm.hw.smmu import SmmuContext

U64 = npt.NDArray[np.uint64]

#: The kernel table is indexed by VA[47:0]; kernel VAs carry all-ones in VA[63:48].
_VA_MASK = (1 << 48) - 1


@dataclass(frozen=True, slots=True)
class PageRun:
    """``size`` bytes from ``va`` to ``pa``, mapped with pages of ``page_size``."""

    va: int
    pa: int
    size: int
    page_size: int


def plan_pages(va: int, pa: int, size: int, sizes: tuple[int, ...], cap: int) -> list[PageRun]:
    """Cut ``[va, va+size) -> pa`` into runs of equal pages, largest aligned page first.

    At each step the page is the largest of ``sizes`` not above ``cap`` and the bytes
    left at which both addresses are aligned; a run continues until a larger page
    becomes possible (both addresses reach its alignment) or the bytes run out.
    ``va``, ``pa`` and ``size`` must be multiples of the smallest size.
    """
    usable = sorted((s for s in sizes if s <= cap), reverse=True)
    runs: list[PageRun] = []
    end = va + size
    while va < end:
        left = end - va
        page = next(s for s in usable if s <= left and va % s == 0 and pa % s == 0)
        count = left // page
        for bigger in reversed([s for s in usable if s > page]):
            if (va - pa) % bigger == 0:
                count = min(count, (bigger - va % bigger) // page)
                break
        n = count * page
        runs.append(PageRun(va, pa, n, page))
        va, pa = va + n, pa + n
    return runs


def merge_runs(runs: list[PageRun]) -> list[PageRun]:
    """Join runs that continue each other in VA and PA with the same page size.

    Mapping the joined run with its page size forced writes exactly the leaves the
    separate runs would; it only saves table calls (3072 4 KiB chunks become one).
    """
    merged: list[PageRun] = []
    for run in runs:
        last = merged[-1] if merged else None
        if (
            last is not None
            and last.page_size == run.page_size
            and last.va + last.size == run.va
            and last.pa + last.size == run.pa
        ):
            merged[-1] = PageRun(last.va, last.pa, last.size + run.size, run.page_size)
        else:
            merged.append(run)
    return merged


class Mapper(Protocol):
    """What the manager needs from the hardware below a VCM.

    ``unmap`` returns the leaves it removed (as runs); ``leaf`` tells which leaf maps an
    address, so the core can split a block before rewriting the attributes of part of
    it; ``map_many`` writes many runs in one batched table call (all or nothing).
    ``map_pages`` maps pages of the smallest size given as arrays (one call, no object
    per page).  ``page_table`` is the table the mapper writes (None without one): the core opens
    a journal on it, so that a call of many table steps is undone byte for byte.
    Changes are made inside ``updating()``, which does the TLB maintenance when the
    outermost bracket closes.
    """

    @property
    def page_sizes(self) -> tuple[int, ...]: ...
    def page_table(self) -> PageTable | None: ...
    def map(self, run: PageRun, attrs: PageAttrs) -> None: ...
    def map_many(self, runs: Sequence[tuple[PageAttrs, PageRun]]) -> None: ...
    def map_pages(self, vas: U64, pas: U64, attrs: PageAttrs) -> None: ...
    def unmap(self, va: int, size: int, *, runs: bool = True) -> list[PageRun]: ...
    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None: ...
    def leaf(self, va: int) -> PageRun | None: ...
    def updating(self) -> contextlib.AbstractContextManager[None]: ...
    def restoring(self) -> contextlib.AbstractContextManager[None]: ...
    def restored(self) -> None: ...
    def flush_held(self) -> None: ...


def _leaves(entries: Iterable[MapEntry], va_bias: int = 0) -> list[PageRun]:
    """Removed table entries as runs of equal leaves (``va_bias`` restores bits the
    table does not index, the kernel's sign extension)."""
    return merge_runs([PageRun(e.va + va_bias, e.pa, e.size, e.size) for e in entries])


class _Bracket:
    """The re-entrant ``updating()`` bracket of a :class:`_TableMapper` (a plain class:
    it is entered on every map and unmap, where a generator costs too much)."""

    __slots__ = ("_mapper", "_quiet")

    def __init__(self, mapper: _TableMapper, quiet: bool) -> None:
        self._mapper = mapper
        self._quiet = quiet

    def __enter__(self) -> None:
        self._mapper._enter()

    def __exit__(self, kind: object, *exc: object) -> None:
        self._mapper._exit(failed=kind is not None, quiet=self._quiet)


class _TableMapper:
    """A mapper over one page table: records what changed inside the bracket and does
    the TLB maintenance once, when the outermost bracket closes."""

    def __init__(self) -> None:
        self._dirty: list[tuple[int, int]] = []
        self._held: list[tuple[int, int]] = []
        self._depth = 0
        self._quiet = False
        self._sizes: tuple[int, ...] | None = None

    def _table(self) -> PageTable:
        raise NotImplementedError

    def _start(self) -> None:
        """Open the hardware's side of the bracket (nothing on the CPU)."""

    def _finish(self, ranges: list[tuple[int, int]]) -> None:
        raise NotImplementedError

    def _enter(self) -> None:
        if self._depth == 0:
            self._dirty = []
            self._start()
        self._depth += 1

    def _exit(self, *, failed: bool, quiet: bool) -> None:
        self._depth -= 1
        if self._depth:
            return
        ranges, self._dirty = coalesce(self._dirty), []
        if failed or quiet:
            # A failed call is about to be undone (its entries restored exactly, and no
            # access ran in between to fill the TLB from them): keep the ranges until
            # the undo says so, rather than dropping TLB entries that stay right.
            if failed:
                self._held.extend(ranges)
            ranges = []
        self._finish(ranges)

    def updating(self) -> contextlib.AbstractContextManager[None]:
        return _Bracket(self, False)

    def restoring(self) -> contextlib.AbstractContextManager[None]:
        """The bracket an undo runs in: it puts back entries exactly as they were, so
        the TLB entries cached from them before the failed call stay right."""
        return _Bracket(self, True)

    def restored(self) -> None:
        """Every change a failed call made was undone: nothing is left to invalidate."""
        self._held = []

    def flush_held(self) -> None:
        """An undo could not finish: invalidate what the failed call touched."""
        held, self._held = coalesce(self._held), []
        if held:
            self._start()
            self._finish(held)

    @property
    def page_sizes(self) -> tuple[int, ...]:
        if self._sizes is None:
            self._sizes = tuple(self._table().sizes)
        return self._sizes

    #: The bits of a VA the table is indexed with (kernel VAs lose their top bits).
    _va_mask = (1 << 64) - 1

    def _index_va(self, va: int) -> int:
        """The address the table is indexed with."""
        return va & self._va_mask

    def page_table(self) -> PageTable:
        return self._table()

    def map(self, run: PageRun, attrs: PageAttrs) -> None:
        """All or nothing, as :meth:`PageTable.map` is."""
        self._table().map(
            self._index_va(run.va), run.pa, run.size, attrs, page_size=run.page_size, entries=False
        )
        self._dirty.append((run.va, run.size))

    def map_many(self, runs: Sequence[tuple[PageAttrs, PageRun]]) -> None:
        """Every ``(attrs, run)`` in one :meth:`PageTable.map_many` call: all or nothing,
        the same table bytes as :meth:`map` run by run, the same ranges to invalidate."""
        if not runs:
            return
        if len(runs) == 1:  # one piece (a 4 KiB map_page): the plain map is ~4x cheaper
            attrs, run = runs[0]
            self.map(run, attrs)
            return
        mask = self._va_mask
        pieces = [(run.va & mask, run.pa, run.size, attrs) for attrs, run in runs]
        sizes = [run.page_size for _, run in runs]
        self._table().map_many(pieces, page_size=sizes, entries=False)
        self._dirty += [(run.va, run.size) for _, run in runs]

    def map_pages(self, vas: U64, pas: U64, attrs: PageAttrs) -> None:
        """Page ``vas[i] -> pas[i]`` for every ``i`` in one :meth:`PageTable.map_pages`
        call: all or nothing, the same table bytes as :meth:`map` page by page, the
        same ranges to invalidate (joined up front: a few spans, not one per page)."""
        table = self._table()
        table.map_pages(vas & np.uint64(self._va_mask), pas, attrs)
        self._dirty += page_spans(vas, table.fmt.min_page)

    def unmap(self, va: int, size: int, *, runs: bool = True) -> list[PageRun]:
        """Unmap ``[va, va+size)``; the leaves removed as runs, or ``[]`` with
        ``runs=False`` (a caller that does not read them skips decoding 16384 leaves)."""
        index_va = self._index_va(va)
        removed = self._table().unmap(index_va, size, entries=runs)
        self._dirty.append((va, size))
        return _leaves(removed, va - index_va) if runs else []

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        self._table().set_attrs(self._index_va(va), size, attrs)
        self._dirty.append((va, size))

    def leaf(self, va: int) -> PageRun | None:
        index_va = self._index_va(va)
        walk = self._table().walk(index_va)
        if not walk.ok:
            return None
        return PageRun(walk.va_base + (va - index_va), walk.pa_base, walk.page_size, walk.page_size)


class ContextBrackets:
    """The seed's ``smmu_update_start``/``smmu_update_done`` brackets of SMMU contexts,
    shared by the IOMMU mappers of one VCMM.

    One call can change two VCMs that run on one split context (its low and its high
    half): each mapper opens the context's bracket, but the hardware bracket opens
    once, with the first, and closes with the last (after both invalidated what they
    changed).
    """

    def __init__(self) -> None:
        self._depth: dict[int, int] = {}

    def open(self, ctx: SmmuContext) -> None:
        depth = self._depth.get(id(ctx), 0)
        if depth == 0:
            ctx.update_start()
        self._depth[id(ctx)] = depth + 1

    def close(self, ctx: SmmuContext) -> None:
        depth = self._depth[id(ctx)] - 1
        if depth:
            self._depth[id(ctx)] = depth
            return
        del self._depth[id(ctx)]
        ctx.update_done()


class IommuMapper(_TableMapper):
    """An IOMMU VCM's page table and the contexts running it.

    The bracket is the seed's ``smmu_update_start``/``smmu_update_done`` on every live
    context (through the VCMM's :class:`ContextBrackets`); the changed ranges go to each
    context's TLB-maintenance gather, which ``update_done`` syncs when the last bracket
    on the context closes.
    """

    def __init__(self, vcm: Vcm, brackets: ContextBrackets | None = None) -> None:
        super().__init__()
        assert vcm.table is not None
        self.vcm = vcm
        self.table: PageTable = vcm.table
        self._brackets = brackets if brackets is not None else ContextBrackets()
        self._opened: list[SmmuContext] = []

    def _table(self) -> PageTable:
        return self.table

    def contexts(self) -> list[SmmuContext]:
        """The SMMU contexts running this VCM, or parked on its table (each once): a
        parked context's bank keeps its TLB entries for its return, so they too must
        see every change (:mod:`vcmm.core.banks`)."""
        seen: dict[int, SmmuContext] = {}
        for a in self.vcm.associations:
            device = a.device
            if not isinstance(device, SmmuDevice):
                continue
            ctx = device.ctx
            if a.active or parked_on(ctx, self.table):
                seen.setdefault(id(ctx), ctx)
        return list(seen.values())

    def _start(self) -> None:
        opened: list[SmmuContext] = []
        try:
            for ctx in self.contexts():
                self._brackets.open(ctx)
                opened.append(ctx)
        except BaseException:
            for ctx in opened:
                self._brackets.close(ctx)
            raise
        self._opened = opened

    def _finish(self, ranges: list[tuple[int, int]]) -> None:
        opened, self._opened = self._opened, []
        for ctx in opened:
            for va, size in ranges:
                ctx.tlb_gather.add_range(va, size)
            self._brackets.close(ctx)


class VmmMapper(_TableMapper):
    """The kernel's address space: reservations are kernel virtual areas (alloc_vm_area).

    Mappings go into the CPU's kernel table, indexed by VA[47:0]; the TLB ranges are
    flushed through the CPU's kernel gather (kernel entries are global) when the
    bracket closes.
    """

    def __init__(self, cpu: Cpu) -> None:
        super().__init__()
        self.cpu = cpu

    def _table(self) -> PageTable:
        return self.cpu.kernel_table

    _va_mask = _VA_MASK

    def _finish(self, ranges: list[tuple[int, int]]) -> None:
        gather = self.cpu.tlb_gather()
        for va, size in ranges:
            gather.add_range(va, size)
        gather.sync()


class UserMapper(_TableMapper):
    """A process's address space: the CPU's TTBR0 table of one ASID.

    Entries are user mappings, never global (a global user entry would hit for every
    process); the TLB is flushed for this ASID only when the bracket closes.
    """

    def __init__(self, cpu: Cpu, asid: int) -> None:
        super().__init__()
        self.cpu = cpu
        self.asid = asid

    def _table(self) -> PageTable:
        return self.cpu.address_space(self.asid)

    def _finish(self, ranges: list[tuple[int, int]]) -> None:
        gather = self.cpu.tlb_gather(self.asid)
        for va, size in ranges:
            gather.add_range(va, size)
        gather.sync()


class OneToOneMapper:
    """Physically addressed devices: no tables, the address is the physical one."""

    page_sizes: tuple[int, ...] = ()

    def page_table(self) -> None:
        """No table: see :meth:`map`."""
        return None

    def map(self, run: PageRun, attrs: PageAttrs) -> None:
        """Nothing to program: the device already reaches every physical address."""

    def map_many(self, runs: Sequence[tuple[PageAttrs, PageRun]]) -> None:
        """See :meth:`map`."""

    def map_pages(self, vas: U64, pas: U64, attrs: PageAttrs) -> None:
        """See :meth:`map`."""

    def unmap(self, va: int, size: int, *, runs: bool = True) -> list[PageRun]:
        """See :meth:`map`."""
        return []

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        """See :meth:`map`."""

    def leaf(self, va: int) -> PageRun | None:
        """See :meth:`map`."""
        return None

    def updating(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def restoring(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def restored(self) -> None:
        """See :meth:`map`."""

    def flush_held(self) -> None:
        """See :meth:`map`."""


# -- programming SMMU contexts --------------------------------------------------------------


def program_context(
    ctx: SmmuContext, bank: int | None, low: PageTable | None, high: PageTable | None, split: bool
) -> None:
    """Bind (if needed), point the context at the tables, and activate it (if needed).

    Reprogramming an active context invalidates its bank's TLB entries (the SMMU does
    that on every register write), which a context switch requires anyway.
    """
    bound_here = False
    if not ctx.is_bound:
        ctx.bind(ctx.smmu, bank)
        bound_here = True
    try:
        ctx.set_tables(low, high, split=split)
        if not ctx.is_active:
            ctx.activate()
    except BaseException:
        if bound_here:
            ctx.use_own_tables()
            ctx.unbind()
        raise
