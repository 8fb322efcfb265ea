"""An address-space allocator in the manner of Linux's lib/genalloc.c.

The seed's VCMM reserves ranges of an IOMMU VCM with ``gen_pool_alloc()`` and kernel
virtual areas with ``alloc_vm_area()`` (000 L186-212); a one-to-one VCM passes the
physical address straight through, which here is a fixed placement (:meth:`alloc_at`).
genalloc hands out the lowest free address that fits (first fit) and needs the size
again on free; this allocator remembers the size, so a free names only the address and
a wrong address is caught instead of corrupting the pool.  :meth:`RangeAllocator.split`
and :meth:`RangeAllocator.join` cut and glue live allocations in place (a partial
``munmap``), which needs no free space and so cannot fail half way the way a free
followed by two fixed allocations could.

The free space is kept as sorted, disjoint extents (two parallel lists searched with
``bisect``): exact at any address-space size, where a genalloc bitmap would cost one
bit per granule.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from vcmm import inject
from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError, StateError
from vcmm.ranges import AddressRange
from vcmm.sizes import align_up, format_size, is_power_of_two


@dataclass(frozen=True, slots=True)
class RangeAllocatorSnapshot:
    """Everything a :class:`RangeAllocator` holds, comparable with ``==``."""

    free: tuple[tuple[int, int], ...]
    allocated: tuple[tuple[int, int], ...]


class RangeAllocator:
    """First-fit allocator of granule-multiple ranges inside one address range."""

    def __init__(
        self,
        range: AddressRange,
        *,
        granule: int,
        site: inject.AllocSite = inject.AllocSite.ADDRESS,
    ) -> None:
        """``site`` is what its allocations count as for fault injection
        (:mod:`vcmm.inject`): address ranges, or physical blocks for a pool."""
        if not isinstance(range, AddressRange):
            raise InvalidArgumentError(f"range {range!r} is not an AddressRange")
        granule = check_int("", "granule", granule, minimum=None)
        if not is_power_of_two(granule):
            raise InvalidArgumentError(f"granule {granule:#x} is not a power of two")
        if range.size == 0 or range.start % granule or range.size % granule:
            raise InvalidArgumentError(
                f"range {range} must be non-empty and aligned to the granule {granule:#x}"
            )
        self._range = range
        self._granule = granule
        self._free_starts: list[int] = [range.start]
        self._free_ends: list[int] = [range.end]
        self._alloc_starts: list[int] = []
        self._alloc_size: dict[int, int] = {}
        self._free_bytes = range.size
        if not isinstance(site, inject.AllocSite):
            raise InvalidArgumentError(f"site {site!r} is not an inject.AllocSite")
        self._site = site

    # -- properties --------------------------------------------------------------

    @property
    def range(self) -> AddressRange:
        return self._range

    @property
    def granule(self) -> int:
        return self._granule

    @property
    def free_bytes(self) -> int:
        return self._free_bytes

    @property
    def total_bytes(self) -> int:
        return self._range.size

    @property
    def allocated_bytes(self) -> int:
        return self._range.size - self._free_bytes

    # -- validation --------------------------------------------------------------

    def _check_size(self, size: object) -> int:
        size = check_int("", "size", size, minimum=None)
        if size <= 0 or size % self._granule:
            raise InvalidArgumentError(
                f"size {size:#x} must be a positive multiple of the granule {self._granule:#x}"
            )
        return size

    def _check_align(self, align: object) -> int:
        align = check_int("", "alignment", align, minimum=None)
        if not is_power_of_two(align) or align < self._granule:
            raise InvalidArgumentError(
                f"alignment {align:#x} must be a power of two >= the granule {self._granule:#x}"
            )
        return align

    # -- allocation --------------------------------------------------------------

    def alloc(self, size: int, align: int | None = None) -> int:
        """Reserve ``size`` bytes at the lowest address aligned to ``align``.

        Alignment is absolute (the address, not the offset in the range, is a multiple
        of ``align``), because block mappings need absolute alignment.
        """
        size = self._check_size(size)
        align = self._granule if align is None else self._check_align(align)
        inject.check(self._site, self, OutOfAddressSpaceError)
        for i, (start, end) in enumerate(zip(self._free_starts, self._free_ends, strict=True)):
            addr = align_up(start, align)
            if addr + size <= end:
                self._take(i, addr, size)
                return addr
        raise OutOfAddressSpaceError(
            f"no free range of {format_size(size)} aligned to {format_size(align)} in {self._range}"
            f" ({format_size(self._free_bytes)} free, largest extent "
            f"{format_size(self.largest_free())})"
        )

    def alloc_at(self, addr: int, size: int) -> int:
        """Reserve exactly ``[addr, addr + size)``: the pass-through of one-to-one VCMs."""
        addr = check_int("", "address", addr, minimum=None)
        size = self._check_size(size)
        if addr % self._granule:
            raise InvalidArgumentError(
                f"address {addr:#x} is not aligned to the granule {self._granule:#x}"
            )
        wanted = AddressRange(addr, size) if addr >= 0 else None
        if wanted is None or wanted not in self._range:
            raise InvalidArgumentError(
                f"range [{addr:#x}, +{format_size(size)}) is not inside {self._range}"
            )
        inject.check(self._site, self, OutOfAddressSpaceError)
        i = bisect.bisect_right(self._free_starts, addr) - 1
        if i < 0 or self._free_ends[i] < addr + size:
            clash = next(r for r in self.allocated() if r.overlaps(wanted))
            raise StateError(f"range {wanted} overlaps the allocation {clash}")
        self._take(i, addr, size)
        return addr

    def _take(self, i: int, addr: int, size: int) -> None:
        start, end = self._free_starts[i], self._free_ends[i]
        pieces = [(s, e) for s, e in ((start, addr), (addr + size, end)) if e > s]
        self._free_starts[i : i + 1] = [s for s, _ in pieces]
        self._free_ends[i : i + 1] = [e for _, e in pieces]
        bisect.insort(self._alloc_starts, addr)
        self._alloc_size[addr] = size
        self._free_bytes -= size

    def free(self, addr: int) -> AddressRange:
        """Release the allocation starting at ``addr``; returns the range it covered."""
        addr = check_int("", "address", addr, minimum=None)
        size = self._alloc_size.get(addr)
        if size is None:
            inside = self.lookup(addr)
            where = f"inside the allocation {inside}" if inside else "not allocated"
            raise StateError(
                f"free({addr:#x}): the address is {where}; free takes the start of a live "
                "allocation (double free?)"
            )
        del self._alloc_size[addr]
        del self._alloc_starts[bisect.bisect_left(self._alloc_starts, addr)]
        self._free_bytes += size
        start, end = addr, addr + size
        i = bisect.bisect_left(self._free_starts, start)
        lo, hi = i, i
        if i > 0 and self._free_ends[i - 1] == start:
            lo = i - 1
            start = self._free_starts[i - 1]
        if i < len(self._free_starts) and self._free_starts[i] == end:
            hi = i + 1
            end = self._free_ends[i]
        self._free_starts[lo:hi] = [start]
        self._free_ends[lo:hi] = [end]
        return AddressRange(addr, size)

    def split(self, addr: int, offset: int) -> None:
        """Cut the allocation at ``addr`` in two at ``offset`` (a granule multiple
        strictly inside it): ``[addr, +offset)`` and the rest, both live.  Nothing is
        freed or taken, so it cannot run out of space."""
        addr = check_int("", "address", addr, minimum=None)
        offset = check_int("", "offset", offset, minimum=None)
        size = self._alloc_size.get(addr)
        if size is None:
            raise StateError(f"split({addr:#x}): no live allocation starts there")
        if offset <= 0 or offset >= size or offset % self._granule:
            raise InvalidArgumentError(
                f"split({addr:#x}, {offset:#x}): the offset must be a multiple of the granule "
                f"{self._granule:#x} strictly inside the allocation of {format_size(size)}"
            )
        self._alloc_size[addr] = offset
        self._alloc_size[addr + offset] = size - offset
        bisect.insort(self._alloc_starts, addr + offset)

    def join(self, addr: int, right: int) -> None:
        """Glue the allocation at ``right`` onto the one at ``addr``, which must end
        where it starts (the inverse of :meth:`split`)."""
        addr = check_int("", "address", addr, minimum=None)
        right = check_int("", "address", right, minimum=None)
        size = self._alloc_size.get(addr)
        rest = self._alloc_size.get(right)
        if size is None or rest is None or addr + size != right:
            raise StateError(
                f"join({addr:#x}, {right:#x}): these must be two live allocations, the "
                "second starting where the first ends"
            )
        del self._alloc_size[right]
        del self._alloc_starts[bisect.bisect_left(self._alloc_starts, right)]
        self._alloc_size[addr] = size + rest

    # -- queries -----------------------------------------------------------------

    def lookup(self, addr: int) -> AddressRange | None:
        """The live allocation containing ``addr`` (any address inside), or ``None``."""
        addr = check_int("", "address", addr, minimum=None)
        i = bisect.bisect_right(self._alloc_starts, addr) - 1
        if i < 0:
            return None
        start = self._alloc_starts[i]
        size = self._alloc_size[start]
        return AddressRange(start, size) if addr < start + size else None

    def allocated(self) -> list[AddressRange]:
        """Live allocations, lowest address first."""
        return [AddressRange(s, self._alloc_size[s]) for s in self._alloc_starts]

    def free_ranges(self) -> list[AddressRange]:
        """Free extents, lowest address first (maximal: neighbours are always merged)."""
        return [
            AddressRange(s, e - s) for s, e in zip(self._free_starts, self._free_ends, strict=True)
        ]

    def largest_free(self) -> int:
        """Size of the largest free extent (0 when full)."""
        return max(
            (e - s for s, e in zip(self._free_starts, self._free_ends, strict=True)), default=0
        )

    def snapshot(self) -> RangeAllocatorSnapshot:
        return RangeAllocatorSnapshot(
            free=tuple(zip(self._free_starts, self._free_ends, strict=True)),
            allocated=tuple((s, self._alloc_size[s]) for s in self._alloc_starts),
        )

    def __repr__(self) -> str:
        return (
            f"RangeAllocator({self._range}, granule={self._granule:#x}, "
            f"{len(self._alloc_starts)} allocations, {format_size(self._free_bytes)} free)"
        )
