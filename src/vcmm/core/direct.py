"""Backing and unbacking an IOMMU reservation with one descriptor store per page.

Why: the DMA API's streaming calls back a fresh reservation with a few caller pages
and take it back soon after, thousands of times a second.  ``vcm_back`` and
``vcm_unback`` (:mod:`vcmm.core.backer`) are general: a journal over every mapper the
change touches, the update bracket on every context, the run planner and the range
walker of the page table.  In the common case none of that generality is used: no
alias changes its shareable bit, every page is one smallest page whose last-level
table exists already (tables are kept when emptied, as Linux keeps them), and the
IOTLB holds nothing of the range.  :class:`DirectBacker` checks that case with one
look-up per page and then does only what it needs: the same sharing plan and mapping
graph records, one store per page (:mod:`vcmm.hw.pgtable.direct`), an IOTLB
invalidation only on a context whose TLB holds an entry of the range.

Anything else (a one-to-one or secure reservation, an alias rewrite, a block, a
missing table, a context inside an update bracket, an undo running) is handed to the
:class:`~vcmm.core.backer.Backer` unchanged, so results, errors and the state after a
failure are the general path's by construction; ``tests/dma/test_lean_path.py`` and
``tests/core/test_direct.py`` compare the two on table bytes, graph, TLB and counters.
"""

from __future__ import annotations

from vcmm.attrs import PageAttrs
from vcmm.core import backing, sharing
from vcmm.core.backer import Backer
from vcmm.core.custom_targets import refuse_non_secure
from vcmm.core.flags import Attr
from vcmm.core.graph import Mapping
from vcmm.core.mappers import IommuMapper, plan_pages
from vcmm.core.objects import PhysMem, Reservation, VcmKind
from vcmm.core.state import CoreState, check_handle
from vcmm.hw.pgtable.direct import Slot, clear_slots, store_slots
from vcmm.hw.smmu.context import SmmuContext
from vcmm.undo import rolling_back

_SECURE = int(Attr.SECURE)


def _pages(mapper: IommuMapper, edges: list[Mapping], cap: int) -> list[tuple[int, int]] | None:
    """``(va, pa)`` of every page of ``edges`` if the general path would map them all
    with the smallest page size, else None."""
    sizes = mapper.page_sizes
    smallest = min(sizes)
    pages: list[tuple[int, int]] = []
    for edge in edges:
        va, pa, size = edge.va, edge.phys.start, edge.phys.size
        if size == smallest:  # one page (a scatterlist's entry): no loop
            pages.append((va, pa))
            continue
        runs = plan_pages(va, pa, size, sizes, cap)
        if any(run.page_size != smallest for run in runs):
            return None
        pages.extend((va + k, pa + k) for k in range(0, size, smallest))
    return pages


def _invalidate_held(contexts: list[SmmuContext], va: int, size: int) -> None:
    """What the update bracket's TLB sync does for one changed range, skipped on a
    context whose TLB holds nothing of it (removing nothing changes nothing)."""
    for ctx in contexts:
        bank = ctx.bank
        if bank is not None and ctx.smmu.tlb.holds(bank, va, size):
            ctx.tlb_gather.add_range(va, size)
            ctx.tlb_gather.sync()


class DirectBacker:
    """``vcm_back_direct``/``vcm_unback_direct``: the general calls' results, in the
    common case of an IOMMU reservation without the general calls' steps."""

    def __init__(self, state: CoreState, backer: Backer) -> None:
        self.state = state
        self.backer = backer
        #: Calls done store by store (``back``, ``unback``) and handed to the general
        #: path (``back_general``; an unback the caller makes with ``vcm_unback``
        #: is not counted), so tests can tell that the case they drive took this path.
        self.counts: dict[str, int] = dict.fromkeys(("back", "back_general", "unback"), 0)

    def _contexts(self, mapper: IommuMapper) -> list[SmmuContext] | None:
        contexts = mapper.contexts()
        for ctx in contexts:
            if ctx.in_update:
                return None
        return contexts

    def vcm_back_direct(self, res: Reservation, physmem: PhysMem) -> None:
        """``vcm_back(res, physmem)``, with one descriptor store per page when the
        reservation is an IOMMU one whose pages all map as smallest pages into existing
        tables without changing any alias (see the module notes)."""
        call = "vcm_back"
        res = check_handle(call, "res", res, Reservation)
        physmem = check_handle(call, "physmem", physmem, PhysMem)
        vcm = res.vcm
        base = res.addr
        if (
            vcm.kind is not VcmKind.IOMMU
            or res.physmem is not None
            or res.cut
            or physmem.size < res.len
            or int.__and__(res.attr, _SECURE)  # IntFlag's & builds a flag: microseconds
            or base is None
            or rolling_back()
        ):
            self.counts["back_general"] += 1
            self.backer.vcm_back(res, physmem)
            return
        refuse_non_secure(self.state, call, res, physmem)
        graph = self.state.graph
        new, rewrites = self.backer.plan(call, res, physmem, base)
        mapper = self.state.mapper(vcm)
        slots = contexts = None
        if not rewrites and isinstance(mapper, IommuMapper):
            slots = self._store_plan(mapper, new, backing.page_cap(physmem))
            contexts = self._contexts(mapper)
        if slots is None or contexts is None:
            self.counts["back_general"] += 1
            self.backer.vcm_back(res, physmem)
            return
        assert isinstance(mapper, IommuMapper)
        mapper.table.store_words(call, slots)
        self.counts["back"] += 1
        _invalidate_held(contexts, base, res.len)  # the pieces fill the reservation
        graph.add(res.id, new)
        res.physmem = physmem
        physmem.backing.append(res)

    def _store_plan(self, mapper: IommuMapper, new: list[Mapping], cap: int) -> list[Slot] | None:
        slots: list[Slot] = []
        for attrs, group in _by_attrs(new):
            pages = _pages(mapper, group, cap)
            found = None if pages is None else store_slots(mapper.table, pages, attrs)
            if found is None:
                return None
            slots += found
        return slots

    def vcm_unback_direct(self, res: Reservation) -> int | None:
        """``vcm_unback(res)`` with one store per page, for an IOMMU reservation mapped
        by smallest pages whose unbacking changes no alias; returns the pages unmapped.  None when
        that case does not hold: then nothing was done (the caller unbacks the general
        way, with ``vcm_unback``)."""
        res = check_handle("vcm_unback", "res", res, Reservation)
        if res.physmem is None or res.cut or rolling_back():
            return None
        mapper = self.state.mapper(res.vcm)
        if not isinstance(mapper, IommuMapper):
            return None
        graph = self.state.graph
        old = graph.of_reservation(res.id)
        if sharing.plan_unback(graph, res.id, old):
            return None
        vas = _page_vas(old, min(mapper.page_sizes))
        slots = clear_slots(mapper.table, vas)
        contexts = self._contexts(mapper)
        if slots is None or contexts is None:
            return None
        mapper.table.store_words("vcm_unback", slots)
        assert res.addr is not None
        _invalidate_held(contexts, res.addr, res.len)
        self.counts["unback"] += 1
        self.backer.forget_tables(res)
        graph.remove(res.id)
        res.physmem.backing.remove(res)
        res.physmem = None
        return len(slots)


def _page_vas(edges: list[Mapping], page: int) -> list[int]:
    """The address of every ``page``-sized page of ``edges`` (a list of single pages,
    the streaming case, without a range per edge)."""
    vas = [edge.va for edge in edges]
    if [edge.phys.size for edge in edges].count(page) == len(edges):
        return vas
    return [edge.va + k for edge in edges for k in range(0, edge.phys.size, page)]


def _by_attrs(edges: list[Mapping]) -> list[tuple[PageAttrs, list[Mapping]]]:
    """``edges`` grouped by their attributes (first seen first)."""
    groups: dict[PageAttrs, list[Mapping]] = {}
    last: PageAttrs | None = None
    group: list[Mapping] = []
    for edge in edges:
        attrs = edge.attrs
        if attrs is not last:  # a plan's edges share a few attrs objects: hash those only
            group = groups.setdefault(attrs, [])
            last = attrs
        group.append(edge)
    return list(groups.items())
