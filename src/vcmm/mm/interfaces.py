"""What the allocators offer the core: the address-space and memory-target contracts.

The core places reservations with a *range allocator* and takes physical memory from
*memory targets*; it never needs to know which implementation is behind either.  The
contracts are spelled out here as Protocols, so the core's checks and a caller's
custom allocator (the seed reviewers' hook, 000 L4053) are tested against one
definition instead of a list of method names.

- :class:`VcmAllocator`: what any allocator of VCM addresses needs (``alloc``,
  ``free``, ``snapshot``); a custom one passed to ``vcm_create(allocator=...)`` is
  checked against it, plus :class:`FixedPlacement` for one-to-one VCMs.
- :class:`SplittingAllocator`: the core's own allocator
  (:class:`~vcmm.mm.genalloc.RangeAllocator`), which also cuts and glues live ranges
  in place for ``vcm_split``/``vcm_merge`` and knows its window.
- :class:`AllocatorFactory`: how the core makes one for a window.
- :class:`~vcmm.mm.target.MemoryTarget`: a physical memory target (pools, buddy).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from vcmm.mm.target import MemoryTarget
from vcmm.ranges import AddressRange

__all__ = [
    "AllocatorFactory",
    "FixedPlacement",
    "MemoryTarget",
    "SplittingAllocator",
    "VcmAllocator",
]


@runtime_checkable
class VcmAllocator(Protocol):
    """Hands out address ranges of one VCM: ``alloc(size, align) -> addr``,
    ``free(addr)``, and a comparable ``snapshot()`` for all-or-nothing checks."""

    def alloc(self, size: int, align: int | None = None) -> int: ...
    def free(self, addr: int) -> object: ...
    def snapshot(self) -> object: ...


@runtime_checkable
class FixedPlacement(VcmAllocator, Protocol):
    """An allocator that can also take a range at a fixed address (one-to-one VCMs
    place each reservation at its backing's physical address)."""

    def alloc_at(self, addr: int, size: int) -> int: ...


class SplittingAllocator(FixedPlacement, Protocol):
    """The core's own allocator: also cuts a live range in two and glues two back, in
    place (nothing freed, so it cannot fail half way), and knows its window."""

    @property
    def range(self) -> AddressRange: ...
    def split(self, addr: int, offset: int) -> None: ...
    def join(self, addr: int, right: int) -> None: ...


class AllocatorFactory(Protocol):
    """``factory(window, granule=...)``: a fresh allocator over ``window``."""

    def __call__(self, range: AddressRange, *, granule: int) -> SplittingAllocator: ...
