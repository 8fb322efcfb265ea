"""The platform description: frozen values saying what a simulated SoC is made of.

A platform is pure data: memory regions, the CPU's cache/TLB and linear map, the window
page-table pages come from, the memory targets (the seed's named physical pools, tried
in priority order, 000 L247-253), the SMMUs with their context banks (the seed's tree
smmu0{ctx0,ctx1,ctx2}, smmu1{ctx3}, 000 L534-560), and the devices that master the bus.
Building hardware objects from it happens elsewhere; keeping the description separate
lets a file be checked, printed and diffed without simulating anything.

Every class validates itself on construction, so a description built in code is held
to the same rules as one read from a file.  Errors are :class:`PlatformError` carrying
the key (``smmus[0].tlb.ways``) that is wrong; the loader prefixes the file and the
enclosing path, so a message always says where to look and what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from vcmm.errors import InvalidArgumentError, NotFoundError
from vcmm.hw.memory import MemoryRegion
from vcmm.mm.iova_policy import DEFAULT_IOVA_POLICY, IOVA_POLICIES
from vcmm.mm.roles import MemoryRoles
from vcmm.platform.dmamem import DmaMemorySpec
from vcmm.platform.errors import PlatformError
from vcmm.platform.errors import join_key as join_key
from vcmm.ranges import AddressRange
from vcmm.sizes import SEED_BLOCK_SIZES, SZ_1G, SZ_4K, SZ_64K, format_size, is_power_of_two

#: Granule every window of the physical map is aligned to (the smallest page).
PAGE_SIZE: Final = SZ_4K
#: Addresses are 64-bit: nothing may reach past this.
ADDRESS_LIMIT: Final = 1 << 64

REGION_KINDS: Final = ("ram", "sram")
TARGET_KINDS: Final = ("system", "blocks", "contiguous", "onchip")
SMMU_FORMATS: Final = ("armv7s", "vmsav8")
DEVICE_KINDS: Final = ("smmu", "physical")
TLB_REPLACEMENTS: Final = ("lru", "fifo", "random")

#: Kernel VA where the linear map of RAM starts (arm64 PAGE_OFFSET with 48-bit VAs).
LINEAR_MAP_VA: Final = 0xFFFF_0000_0000_0000
#: The VMM VCM's window for kernel virtual areas (arm64 vmalloc space starts here).
VMALLOC_WINDOW: Final = AddressRange(0xFFFF_8000_0000_0000, SZ_1G)
#: Default largest buddy order of a system target: 4K << 10 = 4M, as Linux's MAX_ORDER-1.
DEFAULT_MAX_ORDER: Final = 10
#: Largest buddy order accepted (4K << 20 = 4G): beyond that a "block" is a whole bank.
MAX_ORDER_LIMIT: Final = 20
#: The 32-bit DMA mask most SoC devices of the seed's era had.
DMA_BIT_MASK_32: Final = (1 << 32) - 1
#: Name reserved for the implicit CPU bus master.
CPU_NAME: Final = "cpu"


# -- small checks shared by every class ------------------------------------------------


def _check_int(value: object, key: str, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PlatformError(f"expected an integer, got {value!r}", key=key)
    if value < minimum:
        raise PlatformError(f"value {value} is below the minimum {minimum}", key=key)
    return value


def _check_address(value: object, key: str) -> int:
    _check_int(value, key)
    assert isinstance(value, int)
    if value >= ADDRESS_LIMIT:
        raise PlatformError(f"address {value:#x} does not fit in 64 bits", key=key)
    return value


def _check_name(value: object, key: str) -> str:
    """Names become /dev node names and lookup keys: one path component, no spaces."""
    if not isinstance(value, str):
        raise PlatformError(f"expected a name string, got {value!r}", key=key)
    allowed = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    if not value or not set(value) <= allowed or value in (".", ".."):
        raise PlatformError(
            f"name {value!r} must be non-empty and use only letters, digits, '_', '.', '-'",
            key=key,
        )
    return value


def _check_choice(value: object, key: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise PlatformError(f"{value!r} is not one of {', '.join(choices)}", key=key)
    assert isinstance(value, str)
    return value


def _check_window(window: object, key: str) -> AddressRange:
    """A physical or virtual window: non-empty, page aligned, inside 64-bit space."""
    if not isinstance(window, AddressRange):
        raise PlatformError(f"expected an AddressRange, got {window!r}", key=key)
    if window.size == 0:
        raise PlatformError(f"window {window} is empty", key=key)
    if not window.is_aligned(PAGE_SIZE):
        raise PlatformError(
            f"window base {window.start:#x} and size {window.size:#x} must be multiples of "
            f"{format_size(PAGE_SIZE)}",
            key=key,
        )
    if window.end > ADDRESS_LIMIT:
        raise PlatformError(f"window {window} reaches past the 64-bit address space", key=key)
    return window


def _check_mask(value: object, key: str) -> int:
    """DMA masks are 2^n - 1: the kernel tests addresses with ``addr & ~mask``."""
    _check_int(value, key, minimum=1)
    assert isinstance(value, int)
    if not is_power_of_two(value + 1) or value >= ADDRESS_LIMIT:
        raise PlatformError(f"mask {value:#x} is not of the form 2^n - 1 (n <= 64)", key=key)
    return value


def _check_instance(value: object, cls: type, key: str) -> None:
    if not isinstance(value, cls):
        raise PlatformError(f"expected a {cls.__name__}, got {value!r}", key=key)


def _check_tuple(value: object, cls: type, key: str) -> None:
    if not isinstance(value, tuple):
        raise PlatformError(f"expected a tuple of {cls.__name__}, got {value!r}", key=key)
    for index, item in enumerate(value):
        _check_instance(item, cls, f"{key}[{index}]")


# -- CPU -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CacheSpec:
    """A set-associative data cache; sets must be a power of two to index by address."""

    size: int = 32 * 1024
    ways: int = 4
    line: int = 64

    def __post_init__(self) -> None:
        _check_int(self.size, "size", minimum=1)
        _check_int(self.ways, "ways", minimum=1)
        _check_int(self.line, "line", minimum=4)
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

    entries: int = 64
    ways: int = 4
    replacement: str = "lru"

    def __post_init__(self) -> None:
        _check_int(self.entries, "entries", minimum=1)
        _check_int(self.ways, "ways", minimum=1)
        if self.entries % self.ways:
            raise PlatformError(
                f"ways {self.ways} does not divide entries {self.entries}", key="ways"
            )
        _check_choice(self.replacement, "replacement", TLB_REPLACEMENTS)

    @property
    def sets(self) -> int:
        return self.entries // self.ways


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

    cache: CacheSpec = CacheSpec()
    tlb: TlbSpec = TlbSpec()
    linear_map: tuple[AddressRange, ...] = ()
    linear_map_va: int = LINEAR_MAP_VA
    vmalloc: AddressRange = VMALLOC_WINDOW
    prefetch_seed: int | None = None

    def __post_init__(self) -> None:
        _check_instance(self.cache, CacheSpec, "cache")
        _check_instance(self.tlb, TlbSpec, "tlb")
        _check_tuple(self.linear_map, AddressRange, "linear_map")
        for index, window in enumerate(self.linear_map):
            _check_window(window, f"linear_map[{index}]")
            for earlier in range(index):
                if window.overlaps(self.linear_map[earlier]):
                    raise PlatformError(
                        f"window {window} overlaps linear_map[{earlier}] "
                        f"{self.linear_map[earlier]}",
                        key=f"linear_map[{index}]",
                    )
        _check_address(self.linear_map_va, "linear_map_va")
        if self.linear_map_va % PAGE_SIZE:
            raise PlatformError(
                f"linear map VA {self.linear_map_va:#x} is not {format_size(PAGE_SIZE)} aligned",
                key="linear_map_va",
            )
        _check_window(self.vmalloc, "vmalloc")
        span = self.linear_map_virtual
        if span is not None:
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
        if self.prefetch_seed is not None:
            _check_int(self.prefetch_seed, "prefetch_seed")

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

    def linear_pa(self, va: int) -> int:
        """Physical address behind kernel VA ``va`` of the linear map."""
        if self.linear_map and isinstance(va, int):
            pa = va - self.linear_map_va + self.phys_offset
            if any(pa in window for window in self.linear_map):
                return pa
        shown = f"{va:#x}" if isinstance(va, int) else repr(va)
        raise InvalidArgumentError(f"kernel VA {shown} is not in the CPU's linear map")


# -- memory targets ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockPoolSpec:
    """``count`` blocks of ``block_size`` bytes from ``base``; blocks are never split."""

    block_size: int
    count: int
    base: int

    def __post_init__(self) -> None:
        if self.block_size not in SEED_BLOCK_SIZES:
            raise PlatformError(
                f"block size {self.block_size!r} is not one of "
                f"{', '.join(format_size(s) for s in SEED_BLOCK_SIZES)}",
                key="block_size",
            )
        _check_int(self.count, "count", minimum=1)
        _check_address(self.base, "base")
        if self.base % self.block_size:
            raise PlatformError(
                f"pool of {format_size(self.block_size)} blocks at {self.base:#x} is not "
                f"aligned to {format_size(self.block_size)}",
                key="base",
            )

    @property
    def size(self) -> int:
        return self.block_size * self.count

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.base, self.size)


def layout_block_pools(base: int, counts: dict[int, int]) -> tuple[BlockPoolSpec, ...]:
    """Lay pools out from ``base``, largest blocks first, end to end.

    Largest first means that when ``base`` is aligned to the largest block every later
    pool is aligned too; otherwise :class:`BlockPoolSpec` names the pool that is not.
    """
    pools: list[BlockPoolSpec] = []
    cursor = base
    for block_size in sorted(counts, reverse=True):
        try:
            pool = BlockPoolSpec(block_size, counts[block_size], cursor)
        except PlatformError as err:
            raise err.within(f"blocks.{format_size(block_size)}") from None
        pools.append(pool)
        cursor = pool.range.end
    return tuple(pools)


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A memory target: a named physical pool of one of four kinds.

    - ``system``: kernel-managed RAM handed out by a buddy allocator (orders 0 to
      ``max_order``); it lies inside the CPU's cacheable linear map.
    - ``blocks``: a carve-out of pools of fixed 4K/64K/1M/16M blocks (000 L276-292),
      ``blocks`` laid out from ``base`` largest first; ``size`` is their total.
    - ``contiguous``: a carve-out handing out physically contiguous runs.
    - ``onchip``: a pool over on-chip SRAM (the seed's "special" memory).
    """

    name: str
    kind: str
    base: int
    size: int = 0
    blocks: tuple[BlockPoolSpec, ...] = ()
    max_order: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        _check_choice(self.kind, "kind", TARGET_KINDS)
        _check_address(self.base, "base")
        _check_int(self.size, "size")
        _check_tuple(self.blocks, BlockPoolSpec, "blocks")
        if self.kind == "blocks":
            self._check_pools()
        else:
            if self.blocks:
                raise PlatformError(
                    f"only a target of kind 'blocks' has block pools, not kind {self.kind!r}",
                    key="blocks",
                )
            if self.base % PAGE_SIZE:
                raise PlatformError(
                    f"base {self.base:#x} is not {format_size(PAGE_SIZE)} aligned", key="base"
                )
            _check_window(AddressRange(self.base, self.size), "size")
        if self.kind == "system":
            if self.max_order is None:
                object.__setattr__(self, "max_order", DEFAULT_MAX_ORDER)
            _check_int(self.max_order, "max_order")
            assert self.max_order is not None
            if self.max_order > MAX_ORDER_LIMIT:
                raise PlatformError(
                    f"max_order {self.max_order} is above the limit {MAX_ORDER_LIMIT}",
                    key="max_order",
                )
        elif self.max_order is not None:
            raise PlatformError(
                f"only a target of kind 'system' has a max_order, not kind {self.kind!r}",
                key="max_order",
            )

    def _check_pools(self) -> None:
        if not self.blocks:
            raise PlatformError("a target of kind 'blocks' needs at least one pool", key="blocks")
        for previous, pool in zip(self.blocks, self.blocks[1:], strict=False):
            if pool.block_size >= previous.block_size:
                raise PlatformError(
                    f"pools must be laid out largest block first with one pool per size; "
                    f"{format_size(pool.block_size)} follows {format_size(previous.block_size)}",
                    key=f"blocks.{format_size(pool.block_size)}",
                )
        cursor = self.base
        for pool in self.blocks:
            key = f"blocks.{format_size(pool.block_size)}"
            if pool.base != cursor:
                raise PlatformError(
                    f"pool base {pool.base:#x} should be {cursor:#x}: pools lie end to end "
                    f"from the target base {self.base:#x}",
                    key=key,
                )
            cursor = pool.range.end
        total = cursor - self.base
        if self.size == 0:
            object.__setattr__(self, "size", total)
        elif self.size != total:
            raise PlatformError(
                f"size {self.size:#x} differs from the pools' total {total:#x}", key="size"
            )

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.base, self.size)

    @property
    def is_carveout(self) -> bool:
        """True for pools the kernel does not manage (outside the linear map)."""
        return self.kind in ("blocks", "contiguous")


# -- SMMUs ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContextSpec:
    """A named SMMU context (000 L534-560): looked up by ``name``, bound to ``bank``.

    ``tree_name`` is its node in the seed's device tree (``ctx0``...); ``name`` is what
    users pass to look it up and what its /dev node is called.
    """

    name: str
    bank: int
    tree_name: str

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        _check_int(self.bank, "bank")
        _check_name(self.tree_name, "tree_name")

    @property
    def dev_path(self) -> str:
        """The /dev node user space opens and mmaps (``/dev/vcodec_a_mm1``)."""
        return f"/dev/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class SmmuSpec:
    """One SMMU instance: ``context_banks`` hardware contexts sharing one global TLB."""

    name: str
    format: str = "armv7s"
    context_banks: int
    tlb: TlbSpec = TlbSpec()
    contexts: tuple[ContextSpec, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        _check_choice(self.format, "format", SMMU_FORMATS)
        _check_int(self.context_banks, "context_banks", minimum=1)
        _check_instance(self.tlb, TlbSpec, "tlb")
        _check_tuple(self.contexts, ContextSpec, "contexts")
        banks: dict[int, int] = {}
        for index, ctx in enumerate(self.contexts):
            key = f"contexts[{index}].bank"
            if ctx.bank >= self.context_banks:
                raise PlatformError(
                    f"bank {ctx.bank} of context {ctx.name!r} is not below context_banks "
                    f"{self.context_banks}",
                    key=key,
                )
            if ctx.bank in banks:
                raise PlatformError(
                    f"bank {ctx.bank} of context {ctx.name!r} is already bound to "
                    f"contexts[{banks[ctx.bank]}] {self.contexts[banks[ctx.bank]].name!r}",
                    key=key,
                )
            banks[ctx.bank] = index

    def context(self, name: str) -> ContextSpec:
        for ctx in self.contexts:
            if ctx.name == name:
                return ctx
        raise NotFoundError(f"SMMU {self.name!r} has no context named {name!r}")


# -- devices ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DmaRange:
    """A dma-ranges entry: bus addresses ``[bus, bus+size)`` reach ``[phys, phys+size)``.

    The seed's example (000 L1352-1356): RAM at physical 0x80000000 is seen by a DMA
    device at 0x40000000, so the device's cookie differs from the physical address.
    """

    bus: int
    phys: int
    size: int

    def __post_init__(self) -> None:
        _check_address(self.bus, "bus")
        _check_address(self.phys, "phys")
        _check_int(self.size, "size", minimum=1)
        for key, start in (("bus", self.bus), ("phys", self.phys)):
            if start + self.size > ADDRESS_LIMIT:
                raise PlatformError(
                    f"{key} range {start:#x} + {self.size:#x} reaches past 64 bits", key="size"
                )

    @property
    def bus_range(self) -> AddressRange:
        return AddressRange(self.bus, self.size)

    @property
    def phys_range(self) -> AddressRange:
        return AddressRange(self.phys, self.size)


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaSpec:
    """DMA parameters as Linux keeps them per device (dma_parms and the masks)."""

    mask: int = DMA_BIT_MASK_32
    coherent_mask: int = DMA_BIT_MASK_32
    max_segment_size: int = SZ_64K
    segment_boundary_mask: int = DMA_BIT_MASK_32

    def __post_init__(self) -> None:
        _check_mask(self.mask, "mask")
        _check_mask(self.coherent_mask, "coherent_mask")
        _check_int(self.max_segment_size, "max_segment_size", minimum=1)
        _check_mask(self.segment_boundary_mask, "segment_boundary_mask")

    @property
    def mask_bits(self) -> int:
        return self.mask.bit_length()


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """A bus master other than the CPU (which is implicit and never listed).

    An ``smmu`` device issues IOVAs translated by ``context`` of SMMU ``smmu``; devices
    may share a context only when they share an IOMMU ``domain`` (one page table).  A
    ``physical`` device addresses memory directly, through ``dma_ranges`` when its bus
    addresses differ from physical ones (empty = identity).  ``coherent`` devices snoop
    the CPU cache; the others need cache maintenance around DMA.
    """

    name: str
    kind: str
    smmu: str | None = None
    context: str | None = None
    domain: str | None = None
    coherent: bool = False
    dma_ranges: tuple[DmaRange, ...] = ()
    dma: DmaSpec = DmaSpec()

    def __post_init__(self) -> None:
        _check_name(self.name, "name")
        if self.kind == CPU_NAME:
            raise PlatformError(
                "the CPU is implicit: do not list it as a device of kind 'cpu'", key="kind"
            )
        _check_choice(self.kind, "kind", DEVICE_KINDS)
        if not isinstance(self.coherent, bool):
            raise PlatformError(f"expected true or false, got {self.coherent!r}", key="coherent")
        _check_instance(self.dma, DmaSpec, "dma")
        _check_tuple(self.dma_ranges, DmaRange, "dma_ranges")
        if self.kind == "smmu":
            for key in ("smmu", "context"):
                value = getattr(self, key)
                if value is None:
                    raise PlatformError(f"a device of kind 'smmu' needs {key!r}", key=key)
                _check_name(value, key)
            if self.domain is not None:
                _check_name(self.domain, "domain")
            if self.dma_ranges:
                raise PlatformError(
                    "a device of kind 'smmu' issues IOVAs and takes no dma_ranges",
                    key="dma_ranges",
                )
        else:
            for key in ("smmu", "context", "domain"):
                if getattr(self, key) is not None:
                    raise PlatformError(
                        f"a device of kind 'physical' has no {key} (got {getattr(self, key)!r})",
                        key=key,
                    )
            self._check_ranges()

    def _check_ranges(self) -> None:
        for index, entry in enumerate(self.dma_ranges):
            for earlier in range(index):
                other = self.dma_ranges[earlier]
                for side in ("bus_range", "phys_range"):
                    mine, theirs = getattr(entry, side), getattr(other, side)
                    if mine.overlaps(theirs):
                        raise PlatformError(
                            f"{side.split('_')[0]} range {mine} overlaps "
                            f"dma_ranges[{earlier}] {theirs}",
                            key=f"dma_ranges[{index}]",
                        )

    @property
    def is_identity(self) -> bool:
        """True when bus addresses are physical addresses (no dma_ranges)."""
        return not self.dma_ranges


# -- the platform ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformSpec:
    """A whole SoC. Construction checks every cross-reference and every window.

    ``memory`` uses :class:`vcmm.hw.memory.MemoryRegion` directly (kind ``ram`` or
    ``sram``), so the description feeds ``PhysicalMemory`` as is.  ``target_priority``
    is the fallback order of memory targets; empty means every target in order.
    """

    name: str
    description: str = ""
    memory: tuple[MemoryRegion, ...]
    cpu: CpuSpec = CpuSpec()
    page_tables: AddressRange
    targets: tuple[TargetSpec, ...]
    target_priority: tuple[str, ...] = ()
    smmus: tuple[SmmuSpec, ...] = ()
    devices: tuple[DeviceSpec, ...] = ()
    #: How the kernel's DMA API places IOVAs in every IOMMU domain (docs/DMA.md).
    iova_policy: str = DEFAULT_IOVA_POLICY
    dma: DmaMemorySpec = field(default_factory=DmaMemorySpec)
    source: str = "<code>"

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise PlatformError(f"source {self.source!r} is not a string", key="source")
        try:
            self._validate()
        except PlatformError as err:
            raise err.within(source=self.source) from None

    # Each step below is one family of rules; they run in dependency order.
    def _validate(self) -> None:
        _check_name(self.name, "name")
        if not isinstance(self.description, str):
            raise PlatformError(f"expected a string, got {self.description!r}", key="description")
        _check_instance(self.cpu, CpuSpec, "cpu")
        _check_choice(self.iova_policy, "iova_policy", IOVA_POLICIES)
        self._validate_memory()
        self._validate_windows()
        self._validate_priority()
        _check_instance(self.dma, DmaMemorySpec, "dma")
        self.memory_roles()
        self._validate_smmus()
        self._validate_devices()

    def _validate_memory(self) -> None:
        _check_tuple(self.memory, MemoryRegion, "memory")
        if not self.memory:
            raise PlatformError("the platform has no memory regions", key="memory")
        for index, region in enumerate(self.memory):
            key = f"memory[{index}]"
            _check_name(region.name, f"{key}.name")
            _check_choice(region.kind, f"{key}.kind", REGION_KINDS)
            _check_window(region.range, key)
        _check_unique([r.name for r in self.memory], "memory", "name", "memory region")
        _check_disjoint(
            [(f"memory[{i}]", f"region {r.name!r}", r.range) for i, r in enumerate(self.memory)]
        )

    def _region_holding(self, window: AddressRange, kind: str, key: str, what: str) -> None:
        if any(r.kind == kind and window in r.range for r in self.memory):
            return
        regions = ", ".join(f"{r.name} {r.range}" for r in self.memory if r.kind == kind)
        raise PlatformError(
            f"{what} {window} is not inside one {kind!r} memory region "
            f"(those are: {regions or 'none'})",
            key=key,
        )

    def _validate_windows(self) -> None:
        _check_tuple(self.targets, TargetSpec, "targets")
        _check_unique([t.name for t in self.targets], "targets", "name", "memory target")
        _check_window(self.page_tables, "page_tables")
        for index, target in enumerate(self.targets):
            kind = "sram" if target.kind == "onchip" else "ram"
            what = f"{target.kind} target {target.name!r}"
            self._region_holding(target.range, kind, f"targets[{index}]", what)
        self._region_holding(self.page_tables, "ram", "page_tables", "page-table window")
        for index, window in enumerate(self.cpu.linear_map):
            key = f"cpu.linear_map[{index}]"
            self._region_holding(window, "ram", key, "linear-map window")
        # Physical windows handed to distinct owners must not share a byte.
        owned = [
            (f"targets[{i}]", f"target {t.name!r}", t.range) for i, t in enumerate(self.targets)
        ]
        owned.append(("page_tables", "the page-table window", self.page_tables))
        _check_disjoint(owned)
        # The cacheable linear map covers system RAM and nothing carved out of it.
        carveouts = [
            entry
            for entry, owner in zip(owned, [*self.targets, None], strict=True)
            if owner is None or owner.kind != "system"
        ]
        for index, window in enumerate(self.cpu.linear_map):
            for key, what, other in carveouts:
                if window.overlaps(other):
                    raise PlatformError(
                        f"linear-map window {window} overlaps {what} {other} ({key}): carve-outs "
                        "must stay outside the kernel's cacheable map",
                        key=f"cpu.linear_map[{index}]",
                    )
        for index, target in enumerate(self.targets):
            if target.kind == "system" and not any(
                target.range in window for window in self.cpu.linear_map
            ):
                raise PlatformError(
                    f"system target {target.name!r} {target.range} is not inside the CPU's "
                    "linear map; kernel-managed RAM must be mapped by the kernel",
                    key=f"targets[{index}]",
                )

    def _validate_priority(self) -> None:
        if not isinstance(self.target_priority, tuple):
            raise PlatformError(
                f"expected a tuple of target names, got {self.target_priority!r}",
                key="target_priority",
            )
        names = [t.name for t in self.targets]
        seen: set[str] = set()
        for index, name in enumerate(self.target_priority):
            key = f"target_priority[{index}]"
            if name not in names:
                raise PlatformError(
                    f"target {name!r} does not exist (targets: {', '.join(names)})", key=key
                )
            if name in seen:
                raise PlatformError(f"target {name!r} is listed twice", key=key)
            seen.add(name)
        if not self.target_priority:
            object.__setattr__(self, "target_priority", tuple(names))

    def _validate_smmus(self) -> None:
        _check_tuple(self.smmus, SmmuSpec, "smmus")
        _check_unique([s.name for s in self.smmus], "smmus", "name", "SMMU")
        contexts = [
            (f"smmus[{i}].contexts[{j}]", ctx)
            for i, smmu in enumerate(self.smmus)
            for j, ctx in enumerate(smmu.contexts)
        ]
        for attr in ("name", "tree_name"):
            seen: dict[str, str] = {}
            for key, ctx in contexts:
                value = getattr(ctx, attr)
                if value in seen:
                    raise PlatformError(
                        f"context {attr} {value!r} is already used by {seen[value]}",
                        key=f"{key}.{attr}",
                    )
                seen[value] = key

    def _validate_devices(self) -> None:
        _check_tuple(self.devices, DeviceSpec, "devices")
        _check_unique([d.name for d in self.devices], "devices", "name", "device")
        users: dict[tuple[str, str], int] = {}
        domain_format: dict[str, tuple[str, int]] = {}
        for index, device in enumerate(self.devices):
            key = f"devices[{index}]"
            if device.name == CPU_NAME:
                raise PlatformError(
                    f"device name {CPU_NAME!r} is reserved for the implicit CPU", key=f"{key}.name"
                )
            if device.kind != "smmu":
                continue
            assert device.smmu is not None and device.context is not None
            smmu = self._find_smmu(device, key)
            if all(ctx.name != device.context for ctx in smmu.contexts):
                owner = [s.name for s in self.smmus for c in s.contexts if c.name == device.context]
                where = f"it belongs to SMMU {owner[0]!r}" if owner else "no SMMU has it"
                raise PlatformError(
                    f"context {device.context!r} is not a context of SMMU {smmu.name!r}; {where}",
                    key=f"{key}.context",
                )
            slot = (smmu.name, device.context)
            if slot in users:
                other = self.devices[users[slot]]
                if device.domain is None or device.domain != other.domain:
                    raise PlatformError(
                        f"device {device.name!r} uses context {device.context!r} already used "
                        f"by devices[{users[slot]}] {other.name!r}; devices share a context only "
                        f"when they share a domain (domains: {device.domain!r}, "
                        f"{other.domain!r})",
                        key=f"{key}.context",
                    )
            users.setdefault(slot, index)
            if device.domain is not None:
                first = domain_format.setdefault(device.domain, (smmu.format, index))
                if first[0] != smmu.format:
                    raise PlatformError(
                        f"domain {device.domain!r} spans page-table formats: {smmu.format!r} "
                        f"here, {first[0]!r} for devices[{first[1]}]; one domain is one table",
                        key=f"{key}.domain",
                    )

    def _find_smmu(self, device: DeviceSpec, key: str) -> SmmuSpec:
        for smmu in self.smmus:
            if smmu.name == device.smmu:
                return smmu
        names = ", ".join(s.name for s in self.smmus) or "none"
        raise PlatformError(
            f"device {device.name!r} names SMMU {device.smmu!r}, which does not exist "
            f"(SMMUs: {names})",
            key=f"{key}.smmu",
        )

    # -- lookups -------------------------------------------------------------------------------

    def memory_roles(self) -> MemoryRoles:
        """Which targets the kernel's DMA layers use: the ``[dma]`` table with its
        defaults filled in from the targets (:mod:`vcmm.platform.dmamem`)."""
        return self.dma.resolve(self.targets, self.target_priority)

    def region(self, name: str) -> MemoryRegion:
        return _lookup(self.memory, name, "memory region")

    def target(self, name: str) -> TargetSpec:
        return _lookup(self.targets, name, "memory target")

    def smmu(self, name: str) -> SmmuSpec:
        return _lookup(self.smmus, name, "SMMU")

    def device(self, name: str) -> DeviceSpec:
        return _lookup(self.devices, name, "device")

    def context(self, name: str) -> tuple[SmmuSpec, ContextSpec]:
        """Find a context by name across all SMMUs (the seed's smmu_get_ctx_instance)."""
        for smmu in self.smmus:
            for ctx in smmu.contexts:
                if ctx.name == name:
                    return smmu, ctx
        raise NotFoundError(f"platform {self.name!r} has no SMMU context named {name!r}")


_Named = TypeVar("_Named", MemoryRegion, TargetSpec, SmmuSpec, DeviceSpec)


def _lookup(items: Iterable[_Named], name: str, what: str) -> _Named:
    names = []
    for item in items:
        if item.name == name:
            return item
        names.append(item.name)
    raise NotFoundError(f"no {what} named {name!r} (have: {', '.join(names) or 'none'})")


def _check_unique(names: list[str], table: str, attr: str, what: str) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise PlatformError(
                f"{what} name {name!r} is already used by {table}[{seen[name]}]",
                key=f"{table}[{index}].{attr}",
            )
        seen[name] = index


def _check_disjoint(windows: list[tuple[str, str, AddressRange]]) -> None:
    """Raise for the first pair of overlapping windows, naming both."""
    for index, (key, what, window) in enumerate(windows):
        for other_key, other_what, other in windows[:index]:
            if window.overlaps(other):
                raise PlatformError(
                    f"{what} {window} overlaps {other_what} {other} ({other_key})", key=key
                )
