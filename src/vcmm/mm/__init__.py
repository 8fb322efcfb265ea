"""Allocators: address spaces (VCM ranges, IOVAs) and physical memory targets.

Layer 3 of vcmm.  Address-space allocators hand out numbers, never memory:
:class:`RangeAllocator` (genalloc-like, for VCM reservations and kernel virtual areas)
and the IOVA domains of the DMA API, placing by the seed's 2015 iova.c
(:class:`IovaDomain`) or mainline 6.x's (:class:`LinuxIovaDomain`; by name:
:func:`new_iova_domain`).  Memory targets hand
out physical :class:`Chunk` lists: :class:`BlockPool`, :class:`ContiguousPool`,
:class:`OnChipPool` and :class:`SystemRamTarget` (over a :class:`BuddyAllocator`), all
implementing :class:`MemoryTarget` and tried in priority order by :class:`TargetSet`.
"""

from vcmm.mm.buddy import BuddyAllocator, BuddySnapshot
from vcmm.mm.chunk import Chunk, coalesce, describe, find_overlap, total_size
from vcmm.mm.genalloc import RangeAllocator, RangeAllocatorSnapshot
from vcmm.mm.iova import IovaCounters, IovaDomain, IovaSnapshot
from vcmm.mm.iova_linux import LinuxIovaDomain, LinuxIovaSnapshot
from vcmm.mm.iova_policy import IOVA_POLICIES, IovaAllocator, new_iova_domain
from vcmm.mm.pools import BlockPool, ContiguousPool, OnChipPool, SystemRamTarget
from vcmm.mm.target import AllocRequest, MemoryTarget, TargetSet, check_request

__all__ = [
    "IOVA_POLICIES",
    "AllocRequest",
    "BlockPool",
    "BuddyAllocator",
    "BuddySnapshot",
    "Chunk",
    "ContiguousPool",
    "IovaAllocator",
    "IovaCounters",
    "IovaDomain",
    "IovaSnapshot",
    "LinuxIovaDomain",
    "LinuxIovaSnapshot",
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
    "new_iova_domain",
    "total_size",
]
