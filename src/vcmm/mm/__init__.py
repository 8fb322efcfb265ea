"""Allocators: address spaces (VCM ranges, IOVAs) and physical memory targets.

Layer 3 of vcmm.  Address-space allocators hand out numbers, never memory:
:class:`RangeAllocator` (genalloc-like, for VCM reservations and kernel virtual areas)
and :class:`IovaDomain` (Linux iova.c semantics, for the DMA API).  Memory targets hand
out physical :class:`Chunk` lists: :class:`BlockPool`, :class:`ContiguousPool`,
:class:`OnChipPool` and :class:`SystemRamTarget` (over a :class:`BuddyAllocator`), all
implementing :class:`MemoryTarget` and tried in priority order by :class:`TargetSet`.
"""

from vcmm.mm.buddy import BuddyAllocator, BuddySnapshot
from vcmm.mm.chunk import Chunk, coalesce, describe, find_overlap, total_size
from vcmm.mm.genalloc import RangeAllocator, RangeAllocatorSnapshot
from vcmm.mm.iova import IovaCounters, IovaDomain, IovaSnapshot
from vcmm.mm.pools import BlockPool, ContiguousPool, OnChipPool, SystemRamTarget
from vcmm.mm.target import AllocRequest, MemoryTarget, TargetSet, check_request

__all__ = [
    "AllocRequest",
    "BlockPool",
    "BuddyAllocator",
    "BuddySnapshot",
    "Chunk",
    "ContiguousPool",
    "IovaCounters",
    "IovaDomain",
    "IovaSnapshot",
    "MemoryTarget",
    "OnChipPool",
    "RangeAllocator",
    "RangeAllocatorSnapshot",
    "SystemRamTarget",
    "TargetSet",
    "check_request",
    "coalesce",
    "describe",
    "find_overlap",
    "total_size",
]
