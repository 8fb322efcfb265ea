"""The DMA API's own memory: a non-cacheable coherent pool and an atomic pool.

Why a carve-out (the decision docs/DMA.md explains at length): a non-coherent device
needs a CPU alias of its coherent buffer that is *not* cacheable, and the VCMM's
mapping graph refuses an uncached alias of kernel RAM, because the kernel's linear map
already maps it cacheable and ARMv6+ outlaws mismatched aliases (seed 000,
L2075-2094).  So non-coherent coherent buffers come from memory the linear map does
not cover, as ARM Linux does with its CMA areas (removed from the linear map at boot
and remapped) and its atomic pool:

- :class:`CoherentPool` is a physically contiguous carve-out (where the platform's
  ``[dma]`` table says, by default part of its first ``contiguous`` target) managed
  by its own buddy allocator, so allocations are served
  largest order first with fallback exactly like ``__iommu_dma_alloc_pages`` and can
  be fragmented on purpose;
- :class:`AtomicPool` is a small carve-out mapped non-cacheable into the kernel once,
  at creation, so an atomic allocation never has to create a CPU mapping (ARM's
  ``atomic_pool``, 256 KiB by default).

An allocation from either pool is handed to the core as a *view* of the pool's
carve-out (``vcm_phys_view``): the mapping graph then finds the pool alias and every
other mapping of the same pages, and the carve-out cannot be freed under a buffer.
Each carve-out is an allocation whose ``holder`` names the pool, so ``vcmm graph`` and
reports show what the DMA API took.  Creating a pool is all or nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.checks import is_int
from vcmm.core.flags import Attr, PhysAttr
from vcmm.core.objects import PhysMem, Vcm
from vcmm.errors import InvalidArgumentError, OutOfMemoryError
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.chunk import Chunk
from vcmm.mm.genalloc import RangeAllocator
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi


def _carve(system: VcmmApi, target: str, size: int, what: str) -> PhysMem:
    """``size`` contiguous bytes of ``target`` for the pool ``what``, held by it."""
    tgt = system.target(target)
    if tgt.linear_mapped:
        raise InvalidArgumentError(
            f"{what}: target {target!r} is in the CPU's cacheable linear map; a "
            "non-cacheable pool there would alias it with another memory type"
        )
    if not is_int(size) or size <= 0 or size % SZ_4K:
        raise InvalidArgumentError(f"{what}: size {size!r} must be a positive multiple of 4 KiB")
    return system.vcm_phys_alloc(target, size, PhysAttr.CONTIGUOUS, holder=f"the DMA API ({what})")


class CoherentPool:
    """Buddy-managed carve-out backing non-coherent coherent buffers."""

    def __init__(self, system: VcmmApi, target: str, size: int, *, max_order: int = 10) -> None:
        self.system = system
        with Transaction("coherent pool", boundary=True) as txn:
            self.physmem = _carve(system, target, size, "coherent pool")
            txn.on_undo(system.vcm_phys_free, self.physmem)
            (region,) = self.physmem.chunk_ranges
            self.region = AddressRange(region.start, size)
            self.buddy = BuddyAllocator(self.region, page=SZ_4K, max_order=max_order)

    def release(self) -> None:
        """Give the carve-out back (nothing allocated from it any more)."""
        self.system.vcm_phys_free(self.physmem)

    def alloc(self, size: int, *, contiguous: bool = False) -> list[Chunk]:
        """``size`` bytes (page multiple) as buddy blocks, largest order first; one
        block (tail given back) when ``contiguous``.  All or nothing."""
        try:
            if contiguous:
                pa = self.buddy.alloc_pages_exact(size)
                return [Chunk(pa, size)]
            return self.buddy.alloc_pages_largest_first(size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"coherent pool {self.region}: cannot allocate {format_size(size)}"
                f"{' contiguous' if contiguous else ''}: {exc}"
            ) from None

    def view(self, chunks: list[Chunk]) -> PhysMem:
        """The core's view of the carve-out's ``chunks`` laid end to end."""
        start = self.physmem.chunk_ranges[0].start
        return self.system.vcm_phys_view(
            self.physmem, windows=[(c.pa - start, c.size) for c in chunks]
        )

    def free(self, chunks: list[Chunk]) -> None:
        for c in chunks:
            self.buddy.free_pages(c.pa)

    def snapshot(self) -> object:
        return self.buddy.snapshot()


class AtomicPool:
    """Pre-mapped non-cacheable pool for allocations that may not sleep."""

    def __init__(self, system: VcmmApi, vmm: Vcm, target: str, size: int) -> None:
        self.system = system
        with Transaction("atomic pool", boundary=True) as txn:
            self.physmem = _carve(system, target, size, "atomic pool")
            txn.on_undo(system.vcm_phys_free, self.physmem)
            (region,) = self.physmem.chunk_ranges
            self.region = AddressRange(region.start, size)
            self.space = RangeAllocator(self.region, granule=SZ_4K)
            # The kernel alias needs vmalloc space, which may be full: the carve-out
            # above must go back then too (it used to leak).
            self.res = system.vcm_reserve(vmm, size, Attr.RW | Attr.NONCACHED)
            txn.on_undo(system.vcm_unreserve, self.res)
            system.vcm_back(self.res, self.physmem)
        self.cpu_base: int = self.res.dev_addr

    def alloc(self, size: int) -> tuple[int, int]:
        """``(physical address, kernel address)`` of ``size`` contiguous bytes."""
        try:
            pa = self.space.alloc(size)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"atomic pool {self.region}: no {format_size(size)} left: {exc}"
            ) from None
        return pa, self.cpu_base + (pa - self.region.start)

    def view(self, pa: int, size: int) -> PhysMem:
        """The core's view of ``[pa, pa+size)`` of the pool."""
        return self.system.vcm_phys_view(self.physmem, pa - self.region.start, size)

    def release(self) -> None:
        """Unmap the kernel alias and give the carve-out back (nothing allocated)."""
        self.system.vcm_unback(self.res)
        self.system.vcm_unreserve(self.res)
        self.system.vcm_phys_free(self.physmem)

    def contains(self, cpu_addr: int) -> bool:
        return self.cpu_base <= cpu_addr < self.cpu_base + self.region.size

    def free(self, pa: int) -> None:
        self.space.free(pa)

    def snapshot(self) -> object:
        return self.space.snapshot()
