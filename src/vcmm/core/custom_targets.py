"""Memory targets registered at run time: a platform's or a caller's own allocator.

Seed 000 defines a memory target as a pool that may "need to be allocated from in a
unique way or have other user-defined attributes" (L247-253), and its authors answer
the DMA API's reviewers that they "need to use our own allocator" (L4053).  The
platform file builds the standard kinds (:mod:`vcmm.platform.build`); this part lets
a caller add a target with its own placement policy while the system runs
(:meth:`TargetRegistry.vcm_register_target`) and take it away again
(:meth:`TargetRegistry.vcm_unregister_target`).

A registered target is a target like any other: ``vcm_phys_alloc`` takes it by name
or in the priority order, the owner map knows its free pages (nothing may wrap or
DMA-map them), its allocations are owned, pinned while exported and freed back to it.
What it may claim follows the ownership rules (docs/DESIGN.md, "Ownership"): only RAM
nobody owns yet, so its regions lie inside one memory region each and overlap no
other target, the page-table window, a reserved-memory region, the kernel's linear
map or any mapping or wrap of that memory.  Its answers are checked
(:mod:`vcmm.core.checked_target`).  A *secure* target's memory is reached only by
secure mappings (``Attr.SECURE``, NS=0): :func:`refuse_non_secure` is the rule
``vcm_back`` applies.
"""

from __future__ import annotations

from itertools import pairwise

from vcmm.checks import is_int
from vcmm.core.checked_target import CheckedTarget
from vcmm.core.objects import PhysMem, Reservation
from vcmm.core.state import CoreState
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    OwnershipError,
)
from vcmm.mm.target import MemoryTarget
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K


def _check_regions(call: str, target: MemoryTarget) -> tuple[AddressRange, ...]:
    """The target's regions: a non-empty tuple of disjoint, page-aligned ranges."""
    regions = target.regions
    if not isinstance(regions, tuple) or not regions:
        raise InvalidArgumentError(
            f"{call}: target {target.name!r} regions {regions!r} must be a non-empty tuple "
            "of AddressRange"
        )
    for region in regions:
        if not isinstance(region, AddressRange) or region.size == 0:
            raise InvalidArgumentError(
                f"{call}: target {target.name!r} region {region!r} is not a non-empty AddressRange"
            )
        if not region.is_aligned(SZ_4K):
            raise AlignmentError(
                f"{call}: target {target.name!r} region {region} does not start and end on a "
                "4K page boundary"
            )
    ordered = sorted(regions, key=lambda r: r.start)
    for left, right in pairwise(ordered):
        if left.overlaps(right):
            raise InvalidArgumentError(
                f"{call}: target {target.name!r} regions {left} and {right} overlap"
            )
    return regions


class TargetRegistry:
    """Registering and unregistering memory targets of one VCMM."""

    def __init__(self, state: CoreState) -> None:
        self.state = state

    def vcm_register_target(
        self, target: MemoryTarget, *, priority: int | None = None, secure: bool = False
    ) -> None:
        """Add ``target`` (an object implementing :class:`~vcmm.mm.target.MemoryTarget`,
        with its own placement policy) to the memory targets, by its ``name``.

        ``priority``: its place in the default priority order (``memtype=None``), 0
        first; None leaves it out (it serves only callers who name it).  ``secure``:
        only secure reservations (``Attr.SECURE``) may be backed with its memory.
        Refused, nothing changed, when the name is taken, a region is not whole pages
        of one memory region, overlaps another target, the page-table window, a
        reserved-memory region, the linear map, a mapping or a wrap, or the target
        does not start empty.
        """
        call = "vcm_register_target"
        if not isinstance(target, MemoryTarget):
            raise InvalidArgumentError(f"{call}: {target!r} does not implement MemoryTarget")
        name = target.name
        if not isinstance(name, str) or not name or name != name.strip() or "/" in name:
            raise InvalidArgumentError(
                f"{call}: target name {name!r} must be a non-empty string without '/' or "
                "surrounding spaces (it names /dev/dma_heap/<name>)"
            )
        if name in self.state.targets:
            raise InvalidArgumentError(f"{call}: a memory target named {name!r} already exists")
        if not isinstance(secure, bool):
            raise InvalidArgumentError(f"{call}: secure={secure!r} is not a bool")
        order = self.state.target_priority
        if priority is not None and (not is_int(priority) or not 0 <= priority <= len(order)):
            raise InvalidArgumentError(
                f"{call}: priority {priority!r} must be None or a position 0..{len(order)} "
                f"in the priority order {list(order)}"
            )
        if target.linear_mapped:
            raise OwnershipError(
                f"{call}: target {name!r} says it is linear_mapped; kernel RAM is the page "
                "allocator's (a run-time target takes carve-out RAM outside the linear map)"
            )
        regions = _check_regions(call, target)
        for region in regions:
            self._check_unowned(call, name, region)
        if target.free_bytes != target.total_bytes:
            raise InvalidArgumentError(
                f"{call}: target {name!r} has {target.total_bytes - target.free_bytes:#x} "
                "bytes allocated already; a target is registered empty (the core owns what "
                "it hands out)"
            )
        owners = self.state.owners
        checked = CheckedTarget(target, secure=secure, held=lambda r: owners.allocations_in(r))
        self.state.targets[name] = checked
        if priority is not None:
            self.state.target_priority = (*order[:priority], name, *order[priority:])
        owners.add_target(name, regions)

    def _check_unowned(self, call: str, name: str, region: AddressRange) -> None:
        """``region`` is RAM nobody owns: the ownership rules' last category."""
        state = self.state
        what = f"{call}: target {name!r} region {region}"
        if not any(region in m.range for m in state.memory.regions):
            banks = ", ".join(f"{m.name} {m.range}" for m in state.memory.regions)
            raise InvalidArgumentError(f"{what} is not inside one memory region ({banks})")
        for other in state.targets.values():
            for theirs in other.regions:
                if region.overlaps(theirs):
                    raise OwnershipError(f"{what} overlaps target {other.name!r} region {theirs}")
        tables = state.table_memory.window
        if tables is not None and region.overlaps(tables):
            raise OwnershipError(f"{what} overlaps the page-table window {tables}")
        for label, reserved in state.reserved:
            if region.overlaps(reserved):
                raise OwnershipError(
                    f"{what} overlaps reserved-memory region {label!r} {reserved}; reserved "
                    "RAM is its firmware's or driver's"
                )
        mapped = state.graph.overlapping(region)
        if mapped:
            raise OwnershipError(
                f"{what} is mapped already ({mapped[0].describe()}); memory a mapping "
                "reaches cannot become a target's free list"
            )
        for physmem in state.physmems.values():
            if any(region.overlaps(c) for c in physmem.chunk_ranges):
                raise OwnershipError(f"{what} holds pages of {physmem.name}")

    def vcm_unregister_target(self, name: str) -> MemoryTarget:
        """Remove a target :meth:`vcm_register_target` added; returns its policy.

        Refused while any allocation from it lives (naming them) and for the
        platform's own targets."""
        call = "vcm_unregister_target"
        checked = self.state.target(name)
        if not isinstance(checked, CheckedTarget):
            raise InvalidArgumentError(
                f"{call}: {name!r} is one of the platform's targets; only targets registered "
                "with vcm_register_target can be unregistered"
            )
        live = [p.name for p in self.state.physmems.values() if p.target == name and not p.freed]
        if live:
            raise BusyError(
                f"{call}: target {name!r} still has live allocations {', '.join(live)}; "
                "vcm_phys_free them first"
            )
        del self.state.targets[name]
        self.state.target_priority = tuple(n for n in self.state.target_priority if n != name)
        self.state.owners.remove_target(name)
        return checked.policy


def is_secure(target: MemoryTarget) -> bool:
    """Whether ``target`` was registered secure (only secure mappings reach it)."""
    return isinstance(target, CheckedTarget) and target.secure


def refuse_non_secure(state: CoreState, call: str, res: Reservation, physmem: PhysMem) -> None:
    """The rule ``vcm_back`` applies for secure targets: a reservation without
    ``Attr.SECURE`` is not backed with any page of their memory."""
    for target in state.targets.values():
        if not is_secure(target):
            continue
        for piece in physmem.chunk_ranges:
            for region in target.regions:
                if piece.overlaps(region):
                    raise OwnershipError(
                        f"{call}: {physmem.name} holds {piece & region} of secure target "
                        f"{target.name!r}; only a secure reservation (Attr.SECURE) may map it, "
                        f"and {res.name} is non-secure"
                    )
