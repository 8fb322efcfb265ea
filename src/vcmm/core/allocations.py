"""Physical allocations: memory taken from targets, views, wraps and pins
(``vcm_phys_*``).

An allocation comes from a memory target (block pools, contiguous carve-outs, the
buddy allocator of kernel RAM, on-chip SRAM) tried in the caller's or the platform's
order; a view describes part of one for backing, a wrap describes pages someone else
owns.  Who may wrap or free what is :mod:`vcmm.core.ownership`'s rule; the owner map
records which allocation each physical page belongs to.
"""

from __future__ import annotations

from collections.abc import Sequence

from vcmm.checks import check_int
from vcmm.core import ownership, physical
from vcmm.core.flags import PhysAttr, check_phys_attr
from vcmm.core.objects import PhysMem
from vcmm.core.ownership import Pin, pinned_message
from vcmm.core.state import CoreState, check_handle, check_holder
from vcmm.errors import (
    BusyError,
    InvalidArgumentError,
    OutOfMemoryError,
    UnsupportedSizeError,
    VcmmError,
)
from vcmm.mm.cma import CmaArea
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size


def _describe_phys_attr(attr: PhysAttr) -> str:
    parts = [f"alignment {format_size(attr.alignment)}"]
    if attr.block_sizes:
        parts.append("blocks " + "/".join(format_size(s) for s in attr.block_sizes))
    if attr.contiguous:
        parts.append("contiguous")
    return ", ".join(parts)


class Allocations:
    """The physical allocations, views and wraps of one VCMM."""

    def __init__(self, state: CoreState) -> None:
        self.state = state

    # -- physical memory ---------------------------------------------------------------

    def vcm_phys_alloc(
        self,
        memtype: str | Sequence[str] | None,
        len: int,
        attr: object = PhysAttr.NONE,
        *,
        holder: str | None = None,
    ) -> PhysMem:
        """Allocate physical memory from a memory target (000 L255-292).

        ``memtype`` names a target (``"blocks"``: 16M/1M/64K/4K pools, largest block
        first, never split; ``"contig"``: a contiguous carve-out; ``"ebi"``: kernel RAM
        from the buddy allocator, in the CPU's linear map; ``"smi"``: on-chip SRAM), a
        list tried in order, or ``None`` for the platform's priority order.  ``attr``
        (:class:`PhysAttr`) asks for alignment, block sizes and/or one contiguous chunk;
        its block sizes also cap the page size backings use.  ``holder`` (an extension)
        names a layer allocating for its own use (reports and graphs show it).
        """
        call = "vcm_phys_alloc"
        length = check_int(call, "len", len, minimum=1)
        pattr = check_phys_attr(attr)
        check_holder(call, holder)
        if memtype is None:
            names = list(self.state.target_priority)
        elif isinstance(memtype, str):
            names = [memtype]
        elif (
            isinstance(memtype, list | tuple)
            and memtype
            and all(isinstance(n, str) for n in memtype)
        ):
            names = list(memtype)
        else:
            raise InvalidArgumentError(
                f"{call}: memtype {memtype!r} must be a target name, a list of them, or None"
            )
        if names[1:] and (dups := sorted({n for n in names if names.count(n) > 1})):
            raise InvalidArgumentError(f"{call}: memtype lists {dups} more than once")
        for name in names:
            self.state.target(name)
        failures: list[tuple[str, VcmmError]] = []
        for name in names:
            target = self.state.targets[name]
            try:
                chunks = target.allocate(
                    length,
                    block_sizes=pattr.block_sizes,
                    alignment=pattr.alignment,
                    contiguous=pattr.contiguous,
                )
            except (OutOfMemoryError, UnsupportedSizeError) as exc:
                try:  # a CMA area takes back pages it lent (vcmm.core.cmareclaim)
                    if not isinstance(exc, OutOfMemoryError) or not isinstance(target, CmaArea):
                        raise
                    chunks = self.state.cma.allocate(target, length, pattr)
                except (OutOfMemoryError, UnsupportedSizeError) as why:
                    failures.append((name, why))
                    continue
            ranges = tuple(AddressRange(c.pa, c.size) for c in chunks)
            physmem = PhysMem(
                self.state.new_id(),
                name,
                length,
                pattr,
                ranges,
                target_chunks=tuple(chunks),
                holder=holder,
            )
            self.state.physmems[physmem.id] = physmem
            self.state.owners.add(physmem)
            return physmem
        cls = (
            UnsupportedSizeError
            if all(isinstance(e, UnsupportedSizeError) for _, e in failures)
            else OutOfMemoryError
        )
        raise cls(
            f"{call}: no target in {names} can allocate {format_size(length)} with "
            f"{_describe_phys_attr(pattr)}: " + "; ".join(f"{n}: {e}" for n, e in failures)
        )

    def vcm_phys_free(self, physmem: PhysMem) -> None:
        """Return an allocation to its target; refused while it backs a reservation, a
        view of it lives or something pins it (an exported dma-buf, a wrap of its pages).
        Freeing a view or a wrap only forgets it (its pages belong to its parent, or to
        whoever wrapped them) and gives back the pins a wrap held."""
        call = "vcm_phys_free"
        physmem = check_handle(call, "physmem", physmem, PhysMem)
        if physmem.backing:
            users = ", ".join(r.name for r in physmem.backing)
            raise BusyError(f"{call}: {physmem.name} still backs {users}; vcm_unback them first")
        if physmem.views:
            views = ", ".join(v.name for v in physmem.views)
            raise BusyError(
                f"{call}: {physmem.name} still has the view(s) {views}; a view pins the "
                "memory it shows, vcm_phys_free them first"
            )
        if physmem.pins:
            raise BusyError(pinned_message(call, physmem))
        if physmem.parent is not None:
            physmem.parent.views.remove(physmem)
        elif physmem.owner is None:
            self.state.targets[physmem.target].free(physmem.target_chunks)
            self.state.owners.remove(physmem)
        for pin in physmem.holds:
            ownership.release(pin)
        physmem.freed = True
        del self.state.physmems[physmem.id]

    def vcm_phys_view(
        self,
        physmem: PhysMem,
        offset: int | None = None,
        len: int | None = None,
        *,
        windows: Sequence[tuple[int, int]] | None = None,
    ) -> PhysMem:
        """A view of bytes ``[offset, offset+len)`` of ``physmem`` (its pieces laid end
        to end), or of several ``windows`` ``(offset, len)`` laid end to end.

        Backing a reservation with the view maps exactly those pages; the mapping graph
        finds the aliases of every byte whatever chunk it lies in.  The view pins the
        allocation (``vcm_phys_free`` of it is refused while the view lives); a view of
        a view is a view of the same allocation.  Free it with ``vcm_phys_free``.
        """
        call = "vcm_phys_view"
        physmem = check_handle(call, "physmem", physmem, PhysMem)
        if windows is None:
            if offset is None or len is None:
                raise InvalidArgumentError(f"{call}: give offset and len, or windows")
            windows = [(offset, len)]
        elif offset is not None or len is not None:
            raise InvalidArgumentError(f"{call}: give offset and len, or windows, not both")
        checked = physical.check_windows(call, physmem, windows)
        view = physical.make_view(self.state.new_id(), physmem, checked)
        assert view.parent is not None
        view.parent.views.append(view)
        self.state.physmems[view.id] = view
        return view

    def vcm_phys_wrap(
        self,
        ranges: Sequence[AddressRange],
        *,
        owner: str,
        of: PhysMem | Sequence[PhysMem] = (),
    ) -> PhysMem:
        """Describe pages as one piece of memory (``ranges``, whole pages, laid end to
        end; repeats allowed) so a reservation can be backed with them.

        Who may wrap what (:mod:`vcmm.core.ownership`, docs/DESIGN.md "Ownership"):
        pages of a live allocation only when ``of`` names it (or a view or wrap of it),
        and the wrap then pins what ``of`` names until it is freed; RAM no target or
        table allocator owns freely; free and page-table pages never
        (:class:`~vcmm.errors.OwnershipError` naming the owner).  ``owner`` says whose
        the wrap is.  ``vcm_phys_free`` of a wrap forgets it and gives back its pins.
        """
        call = "vcm_phys_wrap"
        held = ownership.check_of(call, of)
        wrap = physical.make_wrap(
            self.state.new_id,
            self.state.memory,
            ranges,
            owner,
            check=lambda pieces: self.state.owners.check_wrap(call, pieces, held),
        )
        wrap.holds = tuple(ownership.pin(p, f"{wrap.name} ({owner})", wrap) for p in held)
        self.state.physmems[wrap.id] = wrap
        return wrap

    def vcm_phys_owners(self, ranges: Sequence[AddressRange]) -> tuple[PhysMem, ...]:
        """The live allocations holding any page of ``ranges`` (first seen first), as
        the kernel finds the owner of a page it is handed (``dma_map_page``, a driver's
        mmap hook); ``OwnershipError`` for pages free in a target or page-table pages."""
        call = "vcm_phys_owners"
        pieces = physical.check_page_ranges(call, self.state.memory, ranges)
        return self.state.owners.owners(call, pieces)

    def vcm_phys_wrap_owned(self, ranges: Sequence[AddressRange], *, owner: str) -> PhysMem:
        """``vcm_phys_wrap(ranges, owner=owner, of=vcm_phys_owners(ranges))`` in one
        pass: the wrap of pages a caller is handed, pinning the allocations that hold
        them (the DMA API's lean map of a driver's pages and scatterlists).

        The two calls would check every range twice and look its owner up twice; here
        each is done once.  The result, the errors (worded as those calls word them:
        ``vcm_phys_owners`` for the ranges and their owners, ``vcm_phys_wrap`` for
        ``owner``) and the state left are the composition's: the owners found are
        exactly what the wrap's rule (:meth:`OwnerMap.check_wrap
        <vcmm.core.ownership.OwnerMap.check_wrap>`) accepts with them named.
        """
        call = "vcm_phys_owners"
        pieces = physical.check_page_ranges(call, self.state.memory, ranges)
        held = self.state.owners.owners(call, pieces)
        owner = physical.check_owner("vcm_phys_wrap", owner)
        wrap = physical.wrap_of(self.state.new_id(), pieces, owner)
        wrap.holds = tuple(ownership.pin(p, f"{wrap.name} ({owner})", wrap) for p in held)
        self.state.physmems[wrap.id] = wrap
        return wrap

    def vcm_phys_pin(self, physmem: PhysMem, *, holder: str) -> Pin:
        """Keep ``physmem`` from being freed until :meth:`vcm_phys_unpin`; ``holder``
        is named in the refusal (an exporter pins what it shares)."""
        call = "vcm_phys_pin"
        physmem = check_handle(call, "physmem", physmem, PhysMem)
        if not isinstance(holder, str) or not holder:
            raise InvalidArgumentError(f"{call}: holder {holder!r} must be a non-empty string")
        return ownership.pin(physmem, holder)

    def vcm_phys_unpin(self, pin: Pin) -> None:
        """Give back a pin :meth:`vcm_phys_pin` made."""
        ownership.unpin("vcm_phys_unpin", pin)
