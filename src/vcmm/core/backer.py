"""Backing: mapping reservations onto physical memory, and cache maintenance for them.

``vcm_back`` plans everything first (where each piece goes, which pages map it, which
aliases change their shareable bit: :mod:`vcmm.core.backing`,
:mod:`vcmm.core.sharing`), then writes the tables inside one update bracket per
mapper (a reservation's runs in one batched table write), journaled so that a
failure is undone byte for byte, and only then changes the
mapping graph and the handles; ``vcm_unback`` is the same in reverse.  The sync calls
are the DMA API's ``sync_for_device``/``sync_for_cpu`` over a backed reservation,
through the one cache-maintenance rule (:func:`vcmm.hw.cachesync.dma_sync`).
"""

from __future__ import annotations

from collections.abc import Callable

from vcmm.attrs import DmaDirection, PageAttrs
from vcmm.collector import collector_paused
from vcmm.core import backing, sharing
from vcmm.core.custom_targets import refuse_non_secure
from vcmm.core.flags import Attr, page_attrs_of
from vcmm.core.graph import Mapping
from vcmm.core.objects import PhysMem, Reservation, VcmKind
from vcmm.core.sharing import Rewrite
from vcmm.core.spaces import fixed_placement
from vcmm.core.state import CoreState, check_handle
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.bus import BusMaster
from vcmm.hw.cachesync import dma_sync
from vcmm.hw.pgtable import PageTable
from vcmm.ranges import union
from vcmm.sizes import format_size
from vcmm.undo import rolling_back


def _constant(attrs: PageAttrs) -> Callable[[int], PageAttrs]:
    """``attrs`` whatever the address (the attributes of one block entry)."""
    return lambda _va: attrs


class Backer:
    """Backs and unbacks the reservations of one VCMM."""

    def __init__(self, state: CoreState) -> None:
        self.state = state
        #: Per backed reservation: the tables its backing allocated (per page table).
        #: Unmapping keeps empty tables, as Linux does; only a backing taken back by
        #: an undo gives its tables back, so the failed call leaves no trace.
        self._made: dict[int, list[tuple[PageTable, list[int]]]] = {}

    # -- backing -----------------------------------------------------------------------

    def plan(
        self, call: str, res: Reservation, physmem: PhysMem, base: int
    ) -> tuple[list[Mapping], list[Rewrite]]:
        """The edges backing ``res`` with ``physmem`` from ``base`` gives, and the
        aliases whose shareable bit changes (:func:`vcmm.core.sharing.plan_back`), with
        the reservation's attributes; shared by the general and the direct backing."""
        vcm = res.vcm
        global_ = vcm.kind is not VcmKind.USER
        return sharing.plan_back(
            self.state.graph,
            call,
            backing.pieces(res.len, physmem, base),
            space=vcm.space,
            res_id=res.id,
            owner=f"{res.name} ({vcm.kind.value} {vcm.name})",
            attrs=(
                page_attrs_of(res.attr, shareable=False, global_=global_),
                page_attrs_of(res.attr, shareable=True, global_=global_),
            ),
        )

    def vcm_back(self, res: Reservation, physmem: PhysMem) -> None:
        """Map a reservation onto physical memory (the first ``res.len`` bytes of an
        allocation, a view or a wrap).

        The pieces are laid end to end from the reservation's start; each is mapped
        with the largest page size at which both its VA and PA are aligned (capped by
        the allocation's block sizes).  The mapping graph refuses an alias that
        disagrees on memory type or cache policy (``AttributeConflictError`` naming
        both mappings) and, for every page this backing makes mapped by two address
        spaces, rewrites every existing mapping of it shareable (tables rewritten,
        blocks split where only part of one changes, TLB entries invalidated), whatever
        made those mappings: a device's, the kernel's or a process's.  If the VCM is
        live, its contexts see the change through the SMMU update bracket.  A
        one-to-one reservation is placed at the physical address of its backing, which
        must be contiguous and inside the VCM.
        """
        with collector_paused():  # a backing of 16384 pieces makes ~80,000 objects
            self._back(res, physmem)

    def _back(self, res: Reservation, physmem: PhysMem) -> None:
        call = "vcm_back"
        res = check_handle(call, "res", res, Reservation)
        physmem = check_handle(call, "physmem", physmem, PhysMem)
        vcm = res.vcm
        if res.physmem is not None:
            raise StateError(f"{call}: {res.name} is already backed by {res.physmem.name}")
        if physmem.size < res.len:
            raise InvalidArgumentError(
                f"{call}: {physmem.name} has {format_size(physmem.size)}, less than"
                f" {res.name}'s {format_size(res.len)}"
            )
        if not res.attr & Attr.SECURE:
            refuse_non_secure(self.state, call, res, physmem)
        base = res.addr
        if vcm.kind is VcmKind.ONE_TO_ONE:
            base = backing.one_to_one_base(call, res, physmem)
        assert base is not None
        new, rewrites = self.plan(call, res, physmem, base)
        mapper = self.state.mapper(vcm)
        changed = [
            mapper,
            *backing.rewritten_mappers(rewrites, self.state.reservation, self.state.mapper),
        ]
        with backing.Undoable(
            call, lambda: f"{call}: backing {res.name} with {physmem.name}"
        ) as undo:
            undo.journal(call, changed)
            if vcm.kind is VcmKind.ONE_TO_ONE:
                fixed_placement(call, vcm).alloc_at(base, res.len)
                undo.placed(vcm.allocator, base)
            with backing.updating_all(changed):
                backing.write_tables(mapper, new, backing.page_cap(physmem))
                backing.apply_rewrites(
                    self.state.graph, rewrites, self.state.reservation, self.state.mapper
                )
        if undo.made:
            self._made[res.id] = undo.made
        self.state.graph.add(res.id, new)
        for old, parts in rewrites:
            self.state.graph.replace(old, parts)
        res.addr = base
        res.physmem = physmem
        physmem.backing.append(res)

    def forget_tables(self, res: Reservation) -> None:
        """``res`` was unbacked without this part (``vcm_unback_direct``, which keeps
        tables as an ordinary unback does): drop the note of the tables its backing
        made, which only an undo of that backing would give back."""
        self._made.pop(res.id, None)

    def vcm_unback(self, res: Reservation) -> None:
        """Unmap a reservation from its physical memory and invalidate the TLBs.

        Pages left mapped by a single address space lose the shareable bit on every
        remaining alias (unless the memory is kernel RAM).  A one-to-one reservation
        becomes unplaced.
        """
        with collector_paused():  # an unbacking of 16384 pieces makes ~50,000 objects
            self._unback(res)

    def _unback(self, res: Reservation) -> None:
        call = "vcm_unback"
        res = check_handle(call, "res", res, Reservation)
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed; there is nothing to unback")
        vcm = res.vcm
        physmem = res.physmem
        old = self.state.graph.of_reservation(res.id)
        rewrites = sharing.plan_unback(self.state.graph, res.id, old)
        mapper = self.state.mapper(vcm)
        changed = [
            mapper,
            *backing.rewritten_mappers(rewrites, self.state.reservation, self.state.mapper),
        ]
        # One bracket over every table that changes: the TLBs are invalidated only once
        # the unmap and the alias rewrites (which may split blocks and run out of table
        # memory) all succeeded.
        with (
            backing.Undoable(call, lambda: f"{call}: unbacking {res.name}") as undo,
            backing.updating_all(changed),
        ):
            undo.journal(call, changed)
            for va, size, attrs in backing.va_groups(old) if mapper.page_sizes else ():
                if res.cut:  # a block may be shared with a neighbour: split it
                    for edge in (va, va + size):
                        backing.split_leaf(mapper, edge, _constant(attrs))
                mapper.unmap(va, size, runs=False)
            backing.apply_rewrites(
                self.state.graph, rewrites, self.state.reservation, self.state.mapper
            )
            if rolling_back():  # the undo of a backing: its tables go too
                for table, made in self._made.get(res.id, ()):
                    table.release_empty(made)
        self._made.pop(res.id, None)
        self.state.graph.remove(res.id)
        for before, parts in rewrites:
            self.state.graph.replace(before, parts)
        physmem.backing.remove(res)
        res.physmem = None
        if vcm.kind is VcmKind.ONE_TO_ONE and res.addr is not None:
            vcm.allocator.free(res.addr)
            res.addr = None

    # -- cache maintenance ---------------------------------------------------------------

    def _sync(self, call: str, res: Reservation, direction: object, for_cpu: bool) -> bool:
        res = check_handle(call, "res", res, Reservation)
        if not isinstance(direction, DmaDirection):
            raise InvalidArgumentError(f"{call}: direction {direction!r} is not a DmaDirection")
        if direction is DmaDirection.NONE:
            raise InvalidArgumentError(
                f"{call}: direction NONE names no transfer; use TO_DEVICE, FROM_DEVICE or "
                "BIDIRECTIONAL"
            )
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed; there is nothing to sync")
        devices = [a.device for a in res.vcm.associations if a.device is not self.state.cpu]
        if all(isinstance(d, BusMaster) and d.coherent for d in devices):
            return False
        ranges = union([m.phys for m in self.state.graph.of_reservation(res.id)])
        return dma_sync(self.state.cpu.cache, ranges, direction, for_cpu=for_cpu)

    def vcm_sync_for_device(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer to its devices (the DMA API's ``sync_for_device``).

        TO_DEVICE and BIDIRECTIONAL clean the CPU cache over the reservation's physical
        memory, so a non-coherent device reads what the CPU wrote; FROM_DEVICE
        invalidates it, so no dirty line can later overwrite what the device writes.
        Skipped (returns False) when every device associated with the reservation's
        VCM snoops the CPU cache, or when none is (a VMM reservation is the CPU's own
        view: sync the device's reservation of the buffer); True when maintenance ran.
        """
        return self._sync("vcm_sync_for_device", res, direction, for_cpu=False)

    def vcm_sync_for_cpu(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer back to the CPU (the DMA API's ``sync_for_cpu``).

        FROM_DEVICE and BIDIRECTIONAL invalidate the CPU cache over the reservation's
        physical memory, so the CPU does not read lines that went stale while the device
        wrote; TO_DEVICE needs nothing.  Skipped (False) as for
        :meth:`vcm_sync_for_device`.
        """
        return self._sync("vcm_sync_for_cpu", res, direction, for_cpu=True)
