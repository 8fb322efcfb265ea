"""The CPU's part of a platform: its data cache, its TLB and the kernel's view of memory.

A TLB description serves the SMMUs too (their global IOTLB), so it lives here beside
the CPU's.  Fields are declared once (:mod:`vcmm.platform.fields`); the rules that tie
several fields together are each class's ``_check``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, cast

from vcmm.errors import InvalidArgumentError
from vcmm.platform.codecs import (
    ADDRESS_LIMIT,
    PAGE_SIZE,
    Address,
    Integer,
    Record,
    Size,
    Text,
    Window,
    Windows,
)
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import check_fields, key, one_of
from vcmm.platform.toml_table import Reading
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, format_size, is_power_of_two

if TYPE_CHECKING:
    from vcmm.platform.targets import TargetSpec

TLB_REPLACEMENTS: Final = ("lru", "fifo", "random")
#: Kernel VA where the linear map of RAM starts (arm64 PAGE_OFFSET with 48-bit VAs).
LINEAR_MAP_VA: Final = 0xFFFF_0000_0000_0000
#: The VMM VCM's window for kernel virtual areas (arm64 vmalloc space starts here).
VMALLOC_WINDOW: Final = AddressRange(0xFFFF_8000_0000_0000, SZ_1G)


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """A set-associative data cache; sets must be a power of two to index by address."""

    size: int = field(default=32 * 1024, metadata=key(Size(minimum=1)))
    ways: int = field(default=4, metadata=key(Integer(minimum=1)))
    line: int = field(default=64, metadata=key(Size(minimum=4)))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if not is_power_of_two(self.line):
            raise PlatformError(f"line size {self.line} is not a power of two", key="line")
        if self.size % (self.ways * self.line):
            raise PlatformError(
                f"cache size {self.size} is not a multiple of ways x line = "
                f"{self.ways} x {self.line}",
                key="size",
            )
        if not is_power_of_two(self.sets):
            raise PlatformError(
                f"cache of {self.size} bytes, {self.ways} ways, {self.line}-byte lines has "
                f"{self.sets} sets, not a power of two",
                key="size",
            )

    @property
    def sets(self) -> int:
        return self.size // (self.ways * self.line)


@dataclass(frozen=True, slots=True)
class TlbSpec:
    """A finite set-associative TLB: ``entries`` split into ``entries / ways`` sets."""

    entries: int = field(default=64, metadata=key(Integer(minimum=1)))
    ways: int = field(default=4, metadata=key(Integer(minimum=1)))
    replacement: str = field(default="lru", metadata=key(Text(), one_of(TLB_REPLACEMENTS)))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if self.entries % self.ways:
            raise PlatformError(
                f"ways {self.ways} does not divide entries {self.entries}", key="ways"
            )

    @property
    def sets(self) -> int:
        return self.entries // self.ways


def _system_windows(reading: Reading) -> tuple[AddressRange, ...]:
    """A file's default linear map: kernel-managed RAM is exactly what the kernel maps,
    so the windows of the platform's ``system`` targets."""
    platform = reading.parent
    targets = cast("tuple[TargetSpec, ...]", platform.value("targets") if platform else ())
    return tuple(t.range for t in targets if t.kind == "system")


def _check_disjoint(windows: tuple[AddressRange, ...]) -> None:
    for index, window in enumerate(windows):
        for earlier in range(index):
            if window.overlaps(windows[earlier]):
                raise PlatformError(
                    f"window {window} overlaps linear_map[{earlier}] {windows[earlier]}",
                    key=f"linear_map[{index}]",
                )


@dataclass(frozen=True, slots=True, kw_only=True)
class CpuSpec:
    """The CPU: its data cache, its TLB and the kernel's view of memory.

    ``linear_map`` lists the physical windows the kernel maps cacheable (system RAM
    only; carve-outs stay outside so that no uncached device mapping conflicts with a
    cacheable kernel alias, King 000 L2075-2094).  Physical address ``pa`` in the map
    appears at kernel VA ``linear_map_va + pa - phys_offset``.  ``vmalloc`` is where the
    VMM VCM hands out kernel virtual areas.  ``prefetch_seed`` seeds the model of
    speculative prefetching; ``None`` leaves speculation off.
    """

    cache: CacheSpec = field(default=CacheSpec(), metadata=key(Record(CacheSpec)))
    tlb: TlbSpec = field(default=TlbSpec(), metadata=key(Record(TlbSpec)))
    linear_map: tuple[AddressRange, ...] = field(
        default=(), metadata=key(Windows(), derive=_system_windows)
    )
    linear_map_va: int = field(default=LINEAR_MAP_VA, metadata=key(Address()))
    vmalloc: AddressRange = field(default=VMALLOC_WINDOW, metadata=key(Window()))
    prefetch_seed: int | None = field(default=None, metadata=key(Integer()))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        _check_disjoint(self.linear_map)
        if self.linear_map_va % PAGE_SIZE:
            raise PlatformError(
                f"linear map VA {self.linear_map_va:#x} is not {format_size(PAGE_SIZE)} aligned",
                key="linear_map_va",
            )
        span = self.linear_map_virtual
        if span is None:
            return
        if span.end > ADDRESS_LIMIT:
            raise PlatformError(
                f"linear map at VA {self.linear_map_va:#x} spanning {span.size:#x} bytes "
                "reaches past the 64-bit address space",
                key="linear_map_va",
            )
        if span.overlaps(self.vmalloc):
            raise PlatformError(
                f"vmalloc window {self.vmalloc} overlaps the linear map's VAs {span}",
                key="vmalloc",
            )

    @property
    def phys_offset(self) -> int:
        """Lowest physical address of the linear map (Linux's PHYS_OFFSET)."""
        if not self.linear_map:
            raise PlatformError("the CPU has no linear map", key="linear_map")
        return min(window.start for window in self.linear_map)

    @property
    def linear_map_virtual(self) -> AddressRange | None:
        """The kernel VA span the linear map covers (holes included), or ``None``."""
        if not self.linear_map:
            return None
        end = max(window.end for window in self.linear_map)
        return AddressRange(self.linear_map_va, end - self.phys_offset)

    def linear_va(self, pa: int) -> int:
        """Kernel VA of physical address ``pa`` through the linear map."""
        if not any(pa in window for window in self.linear_map):
            raise InvalidArgumentError(
                f"physical address {pa:#x} is outside the CPU's linear map "
                f"{', '.join(str(w) for w in self.linear_map) or '(empty)'}"
            )
        return self.linear_map_va + pa - self.phys_offset
