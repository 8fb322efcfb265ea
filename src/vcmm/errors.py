"""The exception hierarchy: every failure in vcmm is a :class:`VcmmError`.

The seed's calls return 0 on failure and leave the caller guessing (a reviewer's
complaint).  Here each failure has a type that says which rule was broken and a
message naming the values involved.  Subclasses also derive from the closest builtin
(``ValueError``, ``LookupError``, ``MemoryError``, ``TimeoutError``) so generic handlers
keep working.
"""

from __future__ import annotations

from typing import Any


class VcmmError(Exception):
    """Base of every error vcmm raises on purpose."""


class InvalidArgumentError(VcmmError, ValueError):
    """An argument has the wrong type, range or combination."""


class AlignmentError(InvalidArgumentError):
    """An address or length is not aligned as the rule requires."""


class UnsupportedSizeError(InvalidArgumentError):
    """A size is not one the hardware or format supports."""


class OwnershipError(InvalidArgumentError):
    """The memory belongs to someone else: a memory target's free list, the page-table
    allocator, or an allocation the caller did not name."""


class NotFoundError(VcmmError, LookupError):
    """A named thing (device, context, memory target, fd) does not exist."""


class BusError(VcmmError):
    """A physical access hit a hole in the address map."""

    def __init__(self, message: str, address: int) -> None:
        super().__init__(message)
        self.address = address


class MappingError(VcmmError):
    """A mapping operation broke a rule of the address space or table."""


class AlreadyMappedError(MappingError):
    """The range (or part of it) is already mapped."""


class NotMappedError(MappingError):
    """The range (or part of it) is not mapped."""


class AttributeConflictError(MappingError):
    """A second mapping of a physical chunk disagrees on memory type or sharing."""


class OutOfMemoryError(VcmmError, MemoryError):
    """A physical pool, table pool or address space has no room for the request."""


class OutOfAddressSpaceError(OutOfMemoryError):
    """An address-space allocator (VCM, IOVA) has no free range that fits."""


class StateError(VcmmError):
    """The object is in the wrong state for the call (freed, inactive, unbound...)."""


class BusyError(StateError):
    """The object still has dependents (mappings, associations, users)."""


class FaultError(VcmmError):
    """A bus master's transaction faulted and was terminated.

    Carries the details a fault handler receives so callers can react in code.
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details
        for key, value in details.items():
            setattr(self, key, value)


class DeviceFaultError(FaultError):
    """A device transaction faulted in its translation path and was terminated."""


class SegmentationFault(FaultError):
    """A user-process CPU access outside a mapping or against its protection."""


class KernelFault(FaultError):
    """A kernel-mode CPU access faulted: what Linux would report as an oops."""


class WaitTimeoutError(VcmmError, TimeoutError):
    """A wait (fence, lock) did not finish within its timeout."""


class WoundedError(BusyError):
    """A wound/wait transaction was wounded by an older one: release all locks and
    retry (the kernel's ``-EDEADLK``).

    ``mutex`` is the lock whose wait revealed the wound; take it first on the retry.
    """

    def __init__(self, message: str, mutex: object) -> None:
        super().__init__(message)
        self.mutex = mutex


class AlreadyHeldError(StateError):
    """A wound/wait context already holds this lock (the kernel's ``-EALREADY``)."""


class DmaApiError(VcmmError):
    """A DMA API misuse detected by the DMA debugging checker."""


class ConstraintError(InvalidArgumentError):
    """Buffer constraints that no buffer can meet: a buffer collection's participants
    disagree (an empty intersection) or the platform cannot serve what they agree on.

    ``participant`` names the participant whose constraints emptied the set (or the
    platform), ``constraint`` the constraint that became impossible.
    """

    def __init__(self, message: str, *, participant: str = "", constraint: str = "") -> None:
        super().__init__(message)
        self.participant = participant
        self.constraint = constraint


class TargetPolicyError(StateError):
    """A memory target registered at run time answered against the target contract:
    chunks outside its regions, overlapping each other or a live allocation, of the
    wrong size or alignment, or an exception that is not a :class:`VcmmError`."""
