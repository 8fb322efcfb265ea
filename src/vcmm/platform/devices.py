"""SMMUs, their contexts, and the devices that master the bus, as platform records.

The seed's tree (smmu0{ctx0,ctx1,ctx2}, smmu1{ctx3}, 000 L534-560): an SMMU has
context banks sharing one global TLB, named contexts are bound to banks, and a device
either sits behind a context (``smmu``) or addresses memory directly (``physical``),
possibly through ``dma-ranges`` windows.  Each device carries the DMA parameters
Linux keeps per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcmm.errors import NotFoundError
from vcmm.hw.smmu import DEFAULT_REGISTER_BASE
from vcmm.hw.smmu.mmio import default_numpage
from vcmm.platform.codecs import (
    ADDRESS_LIMIT,
    Address,
    Boolean,
    Integer,
    OptionalInteger,
    Record,
    Records,
    Size,
    Strings,
    Text,
)
from vcmm.platform.cpu import TlbSpec
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import Invalid, check_fields, is_dt_name, is_name, key, one_of
from vcmm.platform.toml_table import Reading
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_64K, is_power_of_two
from vcmm.tlbcost import (
    DEFAULT_CLOCK_HZ,
    DEFAULT_COMMAND_CYCLES,
    DEFAULT_SYNC_CYCLES,
    INVALIDATION_MODES,
    InvalidationCost,
)

#: Page-table formats an SMMU can be built with (vcmm.system maps them to hw formats).
SMMU_FORMATS: Final = ("armv7s", "vmsav8", "lpae")
DEVICE_KINDS: Final = ("smmu", "physical")
#: The 32-bit DMA mask most SoC devices of the seed's era had.
DMA_BIT_MASK_32: Final = (1 << 32) - 1
#: Name reserved for the implicit CPU bus master.
CPU_NAME: Final = "cpu"
#: The default register layout: SMMU ``i`` (file order) at ``DEFAULT_REGISTER_BASE +
#: i * REGISTER_STRIDE``.  The stride holds the largest window an SMMU of at most 128
#: banks has with 4 KiB pages (2 * 128 pages), so default windows never overlap and
#: each stays aligned to its own size, as SMMUv2 requires.
REGISTER_STRIDE: Final = SZ_1M
#: Register windows must end below this (the SMMU's 48-bit physical address space).
REGISTER_LIMIT: Final = 1 << 48


def default_register_base(index: int) -> int:
    """Register base of the ``index``-th SMMU of a platform that names none."""
    return DEFAULT_REGISTER_BASE + index * REGISTER_STRIDE


def _at_most_128_banks(value: int) -> None:
    """The SMMU model has at most 128 banks (SMMU_IDR1.NUMCB counts up to 128 here)."""
    if value > 128:
        raise Invalid(f"value {value} is above the maximum 128")


def _no_bank(reading: Reading) -> object:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidationSpec:
    """An SMMU's ``invalidation`` table: the cost of its IOTLB invalidation commands
    and syncs (the defaults and the arithmetic are :mod:`vcmm.tlbcost`'s)."""

    command_cycles: int = field(default=DEFAULT_COMMAND_CYCLES, metadata=key(Integer(minimum=0)))
    sync_cycles: int = field(default=DEFAULT_SYNC_CYCLES, metadata=key(Integer(minimum=0)))
    clock_hz: int = field(default=DEFAULT_CLOCK_HZ, metadata=key(Integer(minimum=1)))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)

    def cost(self) -> InvalidationCost:
        return InvalidationCost(
            command_cycles=self.command_cycles,
            sync_cycles=self.sync_cycles,
            clock_hz=self.clock_hz,
        )


@dataclass(frozen=True, slots=True)
class ContextSpec:
    """A named SMMU context (000 L534-560): looked up by ``name``, bound to a bank at
    run time (000's ``smmu_ctx_bind``).

    ``bank`` names the hardware bank the context always binds (stealing it from an
    idle context that holds it); ``None`` (the key left out) lets activation take a
    free bank, else the least recently used idle one, so an SMMU may have more
    contexts than banks.  ``tree_name`` is its node in the seed's device tree
    (``ctx0``...); ``name`` is what users pass to look it up and what its /dev node
    is called.  A file that leaves ``tree_name`` out numbers the contexts across all
    SMMUs in file order, as the seed numbers ctx3 on smmu1.
    """

    name: str = field(metadata=key(Text(), is_name))
    bank: int | None = field(metadata=key(OptionalInteger(), derive=_no_bank))
    tree_name: str = field(
        metadata=key(Text(), is_name, derive=lambda reading: f"ctx{reading.ordinal}")
    )

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmmuSpec:
    """One SMMU instance: ``context_banks`` hardware contexts sharing one global TLB.

    ``base`` is the physical address of its register window (the seed's
    ``smmu_get_base_addr``); ``None`` takes the default layout
    (:func:`default_register_base` of its position in the file).  Contexts may
    outnumber ``context_banks``: they take turns on the banks (docs/PLATFORM.md).

    An SMMU imported from a devicetree also records what it was: ``model`` (the
    compatible string that chose its format, ``arm,mmu-500``), ``node`` (its path),
    ``coherent`` (``dma-coherent``: its table walks snoop the CPU cache) and
    ``disabled`` (``status = "disabled"``: the SoC has it, the board does not use it).
    ``invalidation`` prices its IOTLB invalidation commands and syncs (the DMA API's
    strict and lazy modes are compared with it; :mod:`vcmm.tlbcost`).
    """

    name: str = field(metadata=key(Text(), is_name))
    format: str = field(default="armv7s", metadata=key(Text(), one_of(SMMU_FORMATS)))
    context_banks: int = field(metadata=key(Integer(minimum=1), _at_most_128_banks))
    base: int | None = field(default=None, metadata=key(Address()))
    tlb: TlbSpec = field(default=TlbSpec(), metadata=key(Record(TlbSpec)))
    contexts: tuple[ContextSpec, ...] = field(default=(), metadata=key(Records(ContextSpec)))
    model: str = field(default="", metadata=key(Text(), omit_default=True))
    node: str | None = field(default=None, metadata=key(Text()))
    coherent: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    disabled: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    invalidation: InvalidationSpec = field(
        default=InvalidationSpec(),
        metadata=key(Record(InvalidationSpec), omit_default=True),
    )

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        for index, ctx in enumerate(self.contexts):
            if ctx.bank is not None and ctx.bank >= self.context_banks:
                raise PlatformError(
                    f"bank {ctx.bank} of context {ctx.name!r} is not below context_banks "
                    f"{self.context_banks}",
                    key=f"contexts[{index}].bank",
                )
        if self.base is not None:
            size = self.register_window_size
            if self.base % size:
                raise PlatformError(
                    f"register base {self.base:#x} is not aligned to the register window "
                    f"size {size:#x} (2 * NUMPAGE {size // (2 * SZ_4K)} * 4 KiB pages for "
                    f"{self.context_banks} banks)",
                    key="base",
                )
            if self.base + size > REGISTER_LIMIT:
                raise PlatformError(
                    f"register window {self.base:#x} + {size:#x} ends above 2**48", key="base"
                )

    @property
    def register_window_size(self) -> int:
        """Bytes of the register window: the global space and the bank space, NUMPAGE
        4 KiB pages each (NUMPAGE the smallest power of two, at least 2, holding every
        bank)."""
        return 2 * default_numpage(self.context_banks) * SZ_4K

    def register_window(self, index: int) -> AddressRange:
        """The register window of this SMMU when it is the ``index``-th of its platform."""
        base = default_register_base(index) if self.base is None else self.base
        return AddressRange(base, self.register_window_size)

    def context(self, name: str) -> ContextSpec:
        for ctx in self.contexts:
            if ctx.name == name:
                return ctx
        raise NotFoundError(f"SMMU {self.name!r} has no context named {name!r}")


@dataclass(frozen=True, slots=True)
class DmaRange:
    """A dma-ranges entry: bus addresses ``[bus, bus+size)`` reach ``[phys, phys+size)``.

    The seed's example (000 L1352-1356): RAM at physical 0x80000000 is seen by a DMA
    device at 0x40000000, so the device's cookie differs from the physical address.
    """

    bus: int = field(metadata=key(Address()))
    phys: int = field(metadata=key(Address()))
    size: int = field(metadata=key(Size(minimum=1)))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        for side, start in (("bus", self.bus), ("phys", self.phys)):
            if start + self.size > ADDRESS_LIMIT:
                raise PlatformError(
                    f"{side} range {start:#x} + {self.size:#x} reaches past 64 bits", key="size"
                )

    @property
    def bus_range(self) -> AddressRange:
        return AddressRange(self.bus, self.size)

    @property
    def phys_range(self) -> AddressRange:
        return AddressRange(self.phys, self.size)


def _mask(value: int) -> None:
    """DMA masks are 2^n - 1: the kernel tests addresses with ``addr & ~mask``."""
    if value < 1:
        raise Invalid(f"value {value} is below the minimum 1")
    if not is_power_of_two(value + 1):
        raise Invalid(f"mask {value:#x} is not of the form 2^n - 1 (n <= 64)")


def _same_as_mask(reading: Reading) -> object:
    return reading.value("mask")


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaSpec:
    """DMA parameters as Linux keeps them per device (dma_parms and the masks); a file
    that gives no ``coherent_mask`` takes ``mask`` for it."""

    mask: int = field(default=DMA_BIT_MASK_32, metadata=key(Address(), _mask))
    coherent_mask: int = field(
        default=DMA_BIT_MASK_32, metadata=key(Address(), _mask, derive=_same_as_mask)
    )
    max_segment_size: int = field(default=SZ_64K, metadata=key(Size(minimum=1)))
    segment_boundary_mask: int = field(default=DMA_BIT_MASK_32, metadata=key(Address(), _mask))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)


#: Stream IDs, masks and requester IDs are 32-bit cells in a devicetree.
_CELL_LIMIT: Final = 1 << 32


def _cell(value: int) -> None:
    if value >= _CELL_LIMIT:
        raise Invalid(f"value {value:#x} does not fit in a 32-bit cell")


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """One ``iommus`` specifier of a device: the stream ID its transactions carry and
    the SMR mask of ID bits the SMMU ignores (``#iommu-cells = <2>``).  For the
    MediaTek M4U the ID is the larb/port pair, ``larb << 5 | port``."""

    id: int = field(metadata=key(Address(), _cell))
    mask: int = field(default=0, metadata=key(Address(), _cell, omit_default=True))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)

    def matches(self, other: StreamSpec) -> bool:
        """Whether some stream ID matches both entries (their SMRs overlap)."""
        return not (self.id ^ other.id) & ~(self.mask | other.mask)

    def covers(self, other: StreamSpec) -> bool:
        """Whether every stream ID ``other`` matches is matched by this entry too, so
        Linux's arm-smmu reuses this entry (and its group) for ``other``."""
        return (other.mask & self.mask) == other.mask and not (other.id ^ self.id) & ~self.mask


@dataclass(frozen=True, slots=True, kw_only=True)
class IommuMapSpec:
    """A PCIe ``iommu-map`` entry: requester IDs ``[rid_base, rid_base+length)`` reach
    SMMU ``smmu`` as stream IDs from ``sid_base``.  Recorded and shown; the PCIe
    endpoints behind a host are not modelled."""

    rid_base: int = field(metadata=key(Address(), _cell))
    smmu: str = field(metadata=key(Text(), is_name))
    sid_base: int = field(metadata=key(Address(), _cell))
    length: int = field(metadata=key(Integer(minimum=1), _cell))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)


def _not_the_cpu(kind: str) -> None:
    if kind == CPU_NAME:
        raise Invalid("the CPU is implicit: do not list it as a device of kind 'cpu'")


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceSpec:
    """A bus master other than the CPU (which is implicit and never listed).

    An ``smmu`` device issues IOVAs translated by ``context`` of SMMU ``smmu``; devices
    may share a context only when they share an IOMMU ``domain`` (one page table).  A
    ``physical`` device addresses memory directly, through ``dma_ranges`` when its bus
    addresses differ from physical ones (empty = identity).  ``coherent`` devices snoop
    the CPU cache; the others need cache maintenance around DMA.
    """

    name: str = field(metadata=key(Text(), is_dt_name))
    kind: str = field(metadata=key(Text(), _not_the_cpu, one_of(DEVICE_KINDS)))
    smmu: str | None = field(default=None, metadata=key(Text(), is_name))
    context: str | None = field(default=None, metadata=key(Text(), is_name))
    domain: str | None = field(default=None, metadata=key(Text(), is_name))
    #: The IOTLB invalidation of the device's DMA domain, overriding the platform's
    #: (Linux's per-group ``type``, DMA or DMA-FQ); devices of one domain agree.
    invalidation: str | None = field(default=None, metadata=key(Text(), one_of(INVALIDATION_MODES)))
    coherent: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    dma_ranges: tuple[DmaRange, ...] = field(
        default=(), metadata=key(Records(DmaRange), omit_default=True)
    )
    dma: DmaSpec = field(default=DmaSpec(), metadata=key(Record(DmaSpec), omit_default=True))
    #: What a devicetree said (:mod:`vcmm.platform.devicetree`): the node's path, its
    #: ``iommus`` stream IDs, ``status = "disabled"``, a PCIe host's ``iommu-map``
    #: and ``iommu-map-mask``, and the reserved regions its ``memory-region`` names.
    node: str | None = field(default=None, metadata=key(Text()))
    streams: tuple[StreamSpec, ...] = field(
        default=(), metadata=key(Records(StreamSpec), omit_default=True)
    )
    disabled: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    iommu_map: tuple[IommuMapSpec, ...] = field(
        default=(), metadata=key(Records(IommuMapSpec), omit_default=True)
    )
    iommu_map_mask: int | None = field(default=None, metadata=key(Address(), _cell))
    memory_regions: tuple[str, ...] = field(default=(), metadata=key(Strings(), omit_default=True))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if self.streams and self.kind != "smmu":
            raise PlatformError(
                f"a device of kind {self.kind!r} has no SMMU to carry stream IDs", key="streams"
            )
        if self.kind == "smmu":
            self._check_translated()
        else:
            self._check_physical()

    def _check_translated(self) -> None:
        for attr, value in (("smmu", self.smmu), ("context", self.context)):
            if value is None:
                raise PlatformError(f"a device of kind 'smmu' needs {attr!r}", key=attr)
        if self.dma_ranges:
            raise PlatformError(
                "a device of kind 'smmu' issues IOVAs and takes no dma_ranges", key="dma_ranges"
            )

    def _check_physical(self) -> None:
        for attr, value in (
            ("smmu", self.smmu),
            ("context", self.context),
            ("domain", self.domain),
            ("invalidation", self.invalidation),
        ):
            if value is not None:
                raise PlatformError(
                    f"a device of kind 'physical' has no {attr} (got {value!r})", key=attr
                )
        for index, entry in enumerate(self.dma_ranges):
            for earlier, other in enumerate(self.dma_ranges[:index]):
                for side, mine, theirs in (
                    ("bus", entry.bus_range, other.bus_range),
                    ("phys", entry.phys_range, other.phys_range),
                ):
                    if mine.overlaps(theirs):
                        raise PlatformError(
                            f"{side} range {mine} overlaps dma_ranges[{earlier}] {theirs}",
                            key=f"dma_ranges[{index}]",
                        )
