"""The physical memory targets of the VCMM: block pools, contiguous carve-outs, on-chip
SRAM and kernel-managed system RAM.

Seed 000 (L283-292) describes the first two: "one pool is a contiguous block of memory
and the other is a set of contiguous block pools" of 4K, 64K and 1M (and 16M) blocks,
which the allocator never splits; requests are served "1 MB, then 64 KB, then 4 KB"
(L1413) so a multimedia IOMMU maps a buffer with few, large TLB entries.  The reviewers
add on-chip memory as a special pool (L4075-4089) and ask that kernel-managed RAM, which
sits in the CPU's cacheable linear map, be told apart (L2075-2094).

Every target here is all or nothing: a failing ``allocate`` gives back whatever it took
and raises :class:`OutOfMemoryError` naming the target, the request and what was
missing; a failing ``free`` frees nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

from vcmm import inject
from vcmm.checks import is_int
from vcmm.errors import (
    InvalidArgumentError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.mm.buddy import BuddyAllocator, BuddySnapshot
from vcmm.mm.chunk import Chunk, describe
from vcmm.mm.genalloc import RangeAllocator, RangeAllocatorSnapshot
from vcmm.mm.target import AllocRequest, MemoryTarget, TargetSet, check_free_list, check_request
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, align_up, format_size, is_power_of_two

__all__ = [
    "BlockPool",
    "ContiguousPool",
    "MemoryTarget",
    "OnChipPool",
    "SystemRamTarget",
    "TargetSet",
]


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"memory target name {name!r} must be a non-empty string")
    return name


def _sizes_text(sizes: Iterable[int]) -> str:
    return ",".join(format_size(s) for s in sizes)


class _Target:
    """What every target here shares: its name, and the public calls that validate
    their arguments once (:func:`check_request`, :func:`check_free_list`) before the
    target's own ``_allocate``/``_can_satisfy``/``_owns``/``_release`` see them.

    ``free`` is all or nothing: every chunk is checked to be the target's before any
    is released.  ``_FOREIGN`` words the refusal for each kind of target.
    """

    linear_mapped = False
    special = False
    _FOREIGN = "an allocation of target"

    _name: str

    @property
    def name(self) -> str:
        return self._name

    @property
    def _allocator(self) -> RangeAllocator | BuddyAllocator:
        """The one allocator behind a single-window target; multi-region targets
        (block pools) override the properties below instead."""
        raise NotImplementedError

    @property
    def regions(self) -> tuple[AddressRange, ...]:
        return (self._allocator.range,)

    @property
    def free_bytes(self) -> int:
        return self._allocator.free_bytes

    @property
    def total_bytes(self) -> int:
        return self._allocator.total_bytes

    def allocate(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> list[Chunk]:
        return self._allocate(check_request(length, block_sizes, alignment, contiguous))

    def can_satisfy(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> bool:
        return self._can_satisfy(check_request(length, block_sizes, alignment, contiguous))

    def free(self, chunks: Iterable[Chunk]) -> None:
        items = check_free_list(chunks)
        for chunk in items:
            if not self._owns(chunk):
                raise StateError(
                    f"chunk {chunk} is not {self._FOREIGN} {self._name!r} "
                    "(foreign chunk, wrong size, or already freed)"
                )
        for chunk in items:
            self._release(chunk)

    def _allocate(self, request: AllocRequest) -> list[Chunk]:
        raise NotImplementedError

    def _can_satisfy(self, request: AllocRequest) -> bool:
        raise NotImplementedError

    def _owns(self, chunk: Chunk) -> bool:
        raise NotImplementedError

    def _release(self, chunk: Chunk) -> None:
        raise NotImplementedError


class BlockPool(_Target):
    """Carve-out pools of fixed-size blocks, one region per block size, never split.

    ``regions`` maps each block size to its region (aligned to the block size, a whole
    number of blocks).  :meth:`carve` lays the regions out from one base address.
    """

    linear_mapped = False
    special = False

    def __init__(self, name: str, regions: Mapping[int, AddressRange]) -> None:
        self._name = _check_name(name)
        if not isinstance(regions, Mapping) or not regions:
            raise InvalidArgumentError(
                f"block pool {name!r} needs a non-empty mapping of block size -> region"
            )
        checked: list[tuple[int, AddressRange]] = []
        for size, region in regions.items():
            if not is_int(size) or not is_power_of_two(size):
                raise UnsupportedSizeError(f"block size {size!r} is not a power of two")
            if not isinstance(region, AddressRange) or region.size == 0:
                raise InvalidArgumentError(f"region {region!r} for {format_size(size)} blocks")
            if not region.is_aligned(size):
                raise InvalidArgumentError(
                    f"region {region} for {format_size(size)} blocks must start and end on "
                    f"a {format_size(size)} boundary"
                )
            for other_size, other in checked:
                if region.overlaps(other):
                    raise InvalidArgumentError(
                        f"region {region} ({format_size(size)} blocks) overlaps {other} "
                        f"({format_size(other_size)} blocks)"
                    )
            checked.append((size, region))
        self._sizes = tuple(sorted((s for s, _ in checked), reverse=True))
        self._regions = dict(checked)
        self._free: dict[int, npt.NDArray[np.bool_]] = {
            size: np.ones(region.size // size, dtype=np.bool_) for size, region in checked
        }
        self._allocated: dict[int, int] = {}

    @classmethod
    def carve(cls, name: str, base: int, counts: Mapping[int, int]) -> BlockPool:
        """Lay out ``counts[size]`` blocks of each size from ``base`` upward, largest
        size first, each region aligned to its block size."""
        if not is_int(base) or base < 0:
            raise InvalidArgumentError(f"base {base!r} must be a non-negative integer")
        if not isinstance(counts, Mapping) or not counts:
            raise InvalidArgumentError(f"counts {counts!r} must map block sizes to counts")
        regions: dict[int, AddressRange] = {}
        addr = base
        for size in sorted(counts, reverse=True):
            count = counts[size]
            if not is_int(count) or count <= 0:
                raise InvalidArgumentError(f"count {count!r} of {size!r} blocks must be > 0")
            if not is_int(size) or not is_power_of_two(size):
                raise UnsupportedSizeError(f"block size {size!r} is not a power of two")
            addr = align_up(addr, size)
            regions[size] = AddressRange(addr, count * size)
            addr += count * size
        return cls(name, regions)

    # -- properties --------------------------------------------------------------

    @property
    def regions(self) -> tuple[AddressRange, ...]:
        return tuple(self._regions[s] for s in self._sizes)

    @property
    def block_sizes(self) -> tuple[int, ...]:
        """The pool's block sizes, largest first."""
        return self._sizes

    @property
    def free_bytes(self) -> int:
        return sum(int(mask.sum()) * size for size, mask in self._free.items())

    @property
    def total_bytes(self) -> int:
        return sum(region.size for region in self._regions.values())

    def free_blocks(self, size: int) -> int:
        """Free blocks of ``size``."""
        if size not in self._free:
            raise UnsupportedSizeError(
                f"block pool {self._name!r} has no {size!r}-byte blocks "
                f"(sizes: {_sizes_text(self._sizes)})"
            )
        return int(self._free[size].sum())

    def _free_summary(self) -> str:
        return " ".join(f"{format_size(s)}:{int(self._free[s].sum())}" for s in self._sizes)

    # -- planning ----------------------------------------------------------------

    def _allowed(self, request: AllocRequest) -> tuple[int, ...]:
        if request.block_sizes is None:
            return self._sizes
        unknown = [s for s in request.block_sizes if s not in self._free]
        if unknown:
            raise UnsupportedSizeError(
                f"block pool {self._name!r} has no blocks of {_sizes_text(unknown)} "
                f"(sizes: {_sizes_text(self._sizes)})"
            )
        return request.block_sizes

    def _candidates(self, size: int, alignment: int, want: int) -> npt.NDArray[np.intp]:
        """Indices of up to ``want`` free blocks of ``size`` whose address is aligned."""
        free = self._free[size]
        if alignment <= size:
            return np.flatnonzero(free)[:want]
        base = self._regions[size].start
        step = alignment // size
        first = ((-base) % alignment) // size
        return first + step * np.flatnonzero(free[first::step])[:want]

    def _plan(self, request: AllocRequest) -> tuple[dict[int, npt.NDArray[np.intp]], str | None]:
        """Blocks to take per size, and why it falls short (``None`` when it does not)."""
        sizes = self._allowed(request)
        length = align_up(request.length, sizes[-1])
        if request.contiguous:
            for size in reversed(sizes):
                if size >= length:
                    found = self._candidates(size, request.alignment, 1)
                    if len(found):
                        return {size: found}, None
            return {}, (
                f"no free single block of at least {format_size(length)} among "
                f"{_sizes_text(sizes)} aligned to {format_size(request.alignment)}"
            )
        plan: dict[int, npt.NDArray[np.intp]] = {}
        remaining = length
        for size in sizes:
            if remaining >= size:
                taken = self._candidates(size, request.alignment, remaining // size)
                if len(taken):
                    plan[size] = taken
                    remaining -= len(taken) * size
        if remaining:
            got = [Chunk(self._regions[s].start, s) for s, idx in plan.items() for _ in idx]
            return plan, (
                f"{format_size(remaining)} missing after {describe(got)} "
                f"(blocks {_sizes_text(sizes)}, aligned to {format_size(request.alignment)})"
            )
        return plan, None

    # -- MemoryTarget ------------------------------------------------------------

    def _allocate(self, request: AllocRequest) -> list[Chunk]:
        """Largest blocks first; ``length`` rounds up to the smallest allowed block.

        ``contiguous`` asks for one block big enough for ``length`` (the smallest such
        allowed size): blocks are never split or joined.
        """
        plan, missing = self._plan(request)
        inject.check(inject.AllocSite.PHYS, self)
        if missing is not None:
            raise OutOfMemoryError(
                f"memory target {self._name!r} cannot allocate {request.describe()}: {missing}; "
                f"free blocks {self._free_summary()}"
            )
        chunks = []
        for size, indices in plan.items():
            self._free[size][indices] = False
            base = self._regions[size].start
            for index in indices.tolist():
                pa = base + index * size
                self._allocated[pa] = size
                chunks.append(Chunk(pa, size))
        return chunks

    def _can_satisfy(self, request: AllocRequest) -> bool:
        try:
            return self._plan(request)[1] is None
        except UnsupportedSizeError:
            return False

    _FOREIGN = "a block allocated from pool"

    def _owns(self, chunk: Chunk) -> bool:
        """A chunk is a block this pool handed out and still holds."""
        return self._allocated.get(chunk.pa) == chunk.size

    def _release(self, chunk: Chunk) -> None:
        del self._allocated[chunk.pa]
        self._free[chunk.size][(chunk.pa - self._regions[chunk.size].start) // chunk.size] = True

    def snapshot(self) -> tuple[tuple[tuple[int, bytes], ...], tuple[tuple[int, int], ...]]:
        return (
            tuple((s, np.packbits(self._free[s]).tobytes()) for s in self._sizes),
            tuple(sorted(self._allocated.items())),
        )

    def __repr__(self) -> str:
        return f"BlockPool({self._name!r}, free {self._free_summary()})"


class ContiguousPool(_Target):
    """A carve-out for physically contiguous allocations: first fit, one chunk each.

    ``block_sizes`` here are mapping hints: the length rounds up to the smallest one and
    the chunk is placed, if a hole allows, on a boundary of the largest one that fits in
    the length, so an IOMMU can map it with large entries; otherwise on ``alignment``.
    """

    _FOREIGN = "an allocation of pool"

    def __init__(self, name: str, range: AddressRange, *, granule: int = SZ_4K) -> None:
        self._name = _check_name(name)
        self._space = RangeAllocator(range, granule=granule, site=inject.AllocSite.PHYS)

    @property
    def _allocator(self) -> RangeAllocator:
        return self._space

    @property
    def granule(self) -> int:
        return self._space.granule

    def largest_free(self) -> int:
        return self._space.largest_free()

    def _allocate(self, request: AllocRequest) -> list[Chunk]:
        granule = self._space.granule
        if request.block_sizes is not None:
            small = [s for s in request.block_sizes if s < granule]
            if small:
                raise UnsupportedSizeError(
                    f"block sizes {_sizes_text(small)} are below the granule "
                    f"{format_size(granule)} of pool {self._name!r}"
                )
        unit = request.block_sizes[-1] if request.block_sizes else granule
        size = align_up(request.length, unit)
        align = max(request.alignment, granule)
        preferred = max(
            (s for s in request.block_sizes or () if s <= size and s > align), default=align
        )
        last: OutOfAddressSpaceError | None = None
        for attempt in dict.fromkeys((preferred, align)):
            try:
                pa = self._space.alloc(size, attempt)
            except OutOfAddressSpaceError as exc:
                last = exc
                continue
            return [Chunk(pa, size)]
        raise OutOfMemoryError(
            f"memory target {self._name!r} cannot allocate {request.describe()}: no free "
            f"{format_size(size)} hole aligned to {format_size(align)} "
            f"({format_size(self.free_bytes)} free, largest hole "
            f"{format_size(self._space.largest_free())})"
        ) from last

    def _can_satisfy(self, request: AllocRequest) -> bool:
        granule = self._space.granule
        if request.block_sizes and request.block_sizes[-1] < granule:
            return False
        unit = request.block_sizes[-1] if request.block_sizes else granule
        size = align_up(request.length, unit)
        align = max(request.alignment, granule)
        return any(
            align_up(hole.start, align) + size <= hole.end for hole in self._space.free_ranges()
        )

    def _owns(self, chunk: Chunk) -> bool:
        return self._space.lookup(chunk.pa) == chunk.range

    def _release(self, chunk: Chunk) -> None:
        self._space.free(chunk.pa)

    def snapshot(self) -> RangeAllocatorSnapshot:
        return self._space.snapshot()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._name!r}, {self._space.range}, "
            f"{format_size(self.free_bytes)} free)"
        )


class OnChipPool(ContiguousPool):
    """On-chip SRAM: a small contiguous pool with special properties (faster, scarce)."""

    special = True


class SystemRamTarget(_Target):
    """Kernel-managed system RAM served by the buddy allocator.

    The memory is in the CPU's cacheable linear map (``linear_mapped``), so mapping it
    uncached elsewhere is an attribute conflict the core must refuse or resolve.
    Non-contiguous requests use the dma-iommu strategy (largest order first, falling
    back); contiguous ones take one buddy block and give back its unused tail.
    """

    linear_mapped = True

    def __init__(self, buddy: BuddyAllocator, *, name: str = "system") -> None:
        if not isinstance(buddy, BuddyAllocator):
            raise InvalidArgumentError(f"{buddy!r} is not a BuddyAllocator")
        self._name = _check_name(name)
        self._buddy = buddy

    @classmethod
    def from_range(
        cls, range: AddressRange, *, name: str = "system", page: int = SZ_4K, max_order: int = 10
    ) -> SystemRamTarget:
        return cls(BuddyAllocator(range, page=page, max_order=max_order), name=name)

    @property
    def buddy(self) -> BuddyAllocator:
        return self._buddy

    @property
    def _allocator(self) -> BuddyAllocator:
        return self._buddy

    def _orders(self, request: AllocRequest) -> tuple[list[int], int]:
        """Allowed buddy orders (every chunk aligned as asked) and the alignment order."""
        page, top = self._buddy.page, self._buddy.max_order
        align_order = max(0, request.alignment.bit_length() - page.bit_length())
        if align_order > top:
            raise UnsupportedSizeError(
                f"alignment {format_size(request.alignment)} exceeds the largest buddy block "
                f"{format_size(page << top)} of target {self._name!r}"
            )
        if request.block_sizes is None:
            return list(range(align_order, top + 1)), align_order
        orders = []
        for size in request.block_sizes:
            order = size.bit_length() - page.bit_length()
            if size < page or order > top:
                raise UnsupportedSizeError(
                    f"block size {format_size(size)} is not a buddy block of target "
                    f"{self._name!r} ({format_size(page)} to {format_size(page << top)})"
                )
            orders.append(order)
        if request.contiguous:
            return sorted(orders), align_order
        usable = sorted(o for o in orders if o >= align_order)
        if not usable:
            raise UnsupportedSizeError(
                f"no block size in {_sizes_text(request.block_sizes)} is a multiple of the "
                f"alignment {format_size(request.alignment)}"
            )
        return usable, align_order

    def _allocate(self, request: AllocRequest) -> list[Chunk]:
        orders, align_order = self._orders(request)
        unit = self._buddy.page << orders[0]
        size = align_up(request.length, unit)
        try:
            if request.contiguous:
                pa = self._buddy.alloc_pages_exact(size, align_order=align_order)
                return [Chunk(pa, size)]
            return self._buddy.alloc_pages_largest_first(size, orders=orders)
        except OutOfMemoryError as exc:
            raise OutOfMemoryError(
                f"memory target {self._name!r} cannot allocate {request.describe()}: {exc}"
            ) from exc

    def can_satisfy(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> bool:
        """Answered by a trial allocation given straight back: buddy merging restores
        the free lists exactly, so the state after is the state before."""
        try:
            chunks = self.allocate(
                length, block_sizes=block_sizes, alignment=alignment, contiguous=contiguous
            )
        except (OutOfMemoryError, UnsupportedSizeError):
            return False
        self.free(chunks)
        return True

    def _owns(self, chunk: Chunk) -> bool:
        return self._buddy.allocation_size(chunk.pa) == chunk.size

    def _release(self, chunk: Chunk) -> None:
        self._buddy.free_pages(chunk.pa)

    def snapshot(self) -> BuddySnapshot:
        return self._buddy.snapshot()

    def __repr__(self) -> str:
        return f"SystemRamTarget({self._name!r}, {self._buddy!r})"
