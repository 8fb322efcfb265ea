"""The seed's calls as one table, shared by the VCMM and the booted system.

Each seed call (``vcm_create``, ``vcm_back``, ...) is a method of the part of the
core that owns its concern (:class:`~vcmm.core.spaces.AddressSpaces`,
:class:`~vcmm.core.binding.Binding`, :class:`~vcmm.core.allocations.Allocations`,
:class:`~vcmm.core.custom_targets.TargetRegistry`, :class:`~vcmm.core.backer.Backer`).
:class:`SeedCalls` lists them once; a class that has those parts and a machine lock
(:class:`HasVcmmParts`: :class:`~vcmm.core.manager.Vcmm` holds them,
``vcmm.System`` hands out its VCMM's) inherits the calls.  So the table cannot drift
between the two, and a call on the system takes the lock once and runs the part's
method directly, not through a second facade.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from vcmm.core.allocations import Allocations
from vcmm.core.backer import Backer
from vcmm.core.binding import Binding
from vcmm.core.custom_targets import TargetRegistry
from vcmm.core.direct import DirectBacker
from vcmm.core.spaces import AddressSpaces

if TYPE_CHECKING:
    from vcmm.hw.lock import MachineLock

__all__ = ["HasVcmmParts", "Locked", "SeedCalls", "VcmmCalls", "seed_call"]

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C")
Owner = TypeVar("Owner", bound="Locked")


class Locked(Protocol):
    """An object whose calls run under a machine lock (the VCMM, a booted system)."""

    @property
    def lock(self) -> MachineLock: ...


class HasVcmmParts(Locked, Protocol):
    """What a seed call needs of its owner: the machine lock and the core's parts."""

    @property
    def spaces(self) -> AddressSpaces: ...
    @property
    def binding(self) -> Binding: ...
    @property
    def allocations(self) -> Allocations: ...
    @property
    def backer(self) -> Backer: ...
    @property
    def registry(self) -> TargetRegistry: ...
    @property
    def direct(self) -> DirectBacker: ...


def seed_call(
    part: Callable[[Owner], C], method: Callable[Concatenate[C, P], R]
) -> Callable[Concatenate[Owner, P], R]:
    """A facade method: take the owner's machine lock (re-entrant, so the calls it
    makes, device accesses and fault handlers backing a page, do not block on it) and
    run ``method`` of the part that owns the concern, ``part(owner)``.  Name,
    signature and docstring are the part's, so ``help(system.vcm_back)`` shows the
    seed call's documentation."""

    def call(self: Owner, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.lock:
            return method(part(self), *args, **kwargs)

    functools.update_wrapper(call, method)
    return call


# The part that owns each concern: what a seed call runs in (``attrgetter`` runs in
# C: the dispatch adds no Python frame to the call).
_spaces: Callable[[HasVcmmParts], AddressSpaces] = operator.attrgetter("spaces")
_binding: Callable[[HasVcmmParts], Binding] = operator.attrgetter("binding")
_allocations: Callable[[HasVcmmParts], Allocations] = operator.attrgetter("allocations")
_backer: Callable[[HasVcmmParts], Backer] = operator.attrgetter("backer")
_registry: Callable[[HasVcmmParts], TargetRegistry] = operator.attrgetter("registry")
_direct: Callable[[HasVcmmParts], DirectBacker] = operator.attrgetter("direct")


class SeedCalls:
    """The seed's calls, each under the machine lock, for a :class:`HasVcmmParts`.

    A base without state: the subclass provides ``lock`` and the six parts (the type
    checker holds each call's ``self`` to :class:`HasVcmmParts`).
    """

    __slots__ = ()

    vcm_create = seed_call(_spaces, AddressSpaces.vcm_create)
    vcm_create_from_prebuilt = seed_call(_spaces, AddressSpaces.vcm_create_from_prebuilt)
    vcm_free = seed_call(_spaces, AddressSpaces.vcm_free)
    vcm_reserve = seed_call(_spaces, AddressSpaces.vcm_reserve)
    vcm_unreserve = seed_call(_spaces, AddressSpaces.vcm_unreserve)
    vcm_split = seed_call(_spaces, AddressSpaces.vcm_split)
    vcm_merge = seed_call(_spaces, AddressSpaces.vcm_merge)
    vcm_assoc = seed_call(_binding, Binding.vcm_assoc)
    vcm_deassoc = seed_call(_binding, Binding.vcm_deassoc)
    vcm_activate = seed_call(_binding, Binding.vcm_activate)
    vcm_deactivate = seed_call(_binding, Binding.vcm_deactivate)
    vcm_hook = seed_call(_binding, Binding.vcm_hook)
    vcm_phys_alloc = seed_call(_allocations, Allocations.vcm_phys_alloc)
    vcm_phys_free = seed_call(_allocations, Allocations.vcm_phys_free)
    vcm_phys_view = seed_call(_allocations, Allocations.vcm_phys_view)
    vcm_phys_wrap = seed_call(_allocations, Allocations.vcm_phys_wrap)
    vcm_phys_owners = seed_call(_allocations, Allocations.vcm_phys_owners)
    vcm_phys_pin = seed_call(_allocations, Allocations.vcm_phys_pin)
    vcm_phys_unpin = seed_call(_allocations, Allocations.vcm_phys_unpin)
    vcm_register_target = seed_call(_registry, TargetRegistry.vcm_register_target)
    vcm_unregister_target = seed_call(_registry, TargetRegistry.vcm_unregister_target)
    vcm_back = seed_call(_backer, Backer.vcm_back)
    vcm_unback = seed_call(_backer, Backer.vcm_unback)
    vcm_sync_for_device = seed_call(_backer, Backer.vcm_sync_for_device)
    vcm_sync_for_cpu = seed_call(_backer, Backer.vcm_sync_for_cpu)


class VcmmCalls(SeedCalls):
    """The seed's calls and the calls the project added on the same terms (each a
    part's method under the machine lock): what :class:`~vcmm.core.manager.Vcmm` and
    ``vcmm.System`` inherit.  Kept apart so :class:`SeedCalls` stays the seed's 25."""

    __slots__ = ()

    vcm_back_direct = seed_call(_direct, DirectBacker.vcm_back_direct)
    vcm_unback_direct = seed_call(_direct, DirectBacker.vcm_unback_direct)
    vcm_phys_wrap_owned = seed_call(_allocations, Allocations.vcm_phys_wrap_owned)
