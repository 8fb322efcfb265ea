"""A page-table format described once, as data.

Like Linux's io-pgtable, the generic table code (:mod:`vcmm.hw.pgtable.table`) knows
nothing about ARMv7 or ARMv8: a format is a list of lookup levels (which input-address
bits index each level), a list of descriptor kinds (how a table pointer, a block or a
page is recognised, where its output address bits sit, where each attribute field
sits) and a pair of functions translating :class:`~vcmm.attrs.PageAttrs` to and from
named field values.  Adding a format means writing one more such description.

Descriptor kinds are matched by ``desc & type_mask == type_value``.  Output addresses
may be scattered over several slices of the descriptor (ARMv7 supersections keep
PA[39:32] in two 4-bit fields), so an address is a tuple of :class:`AddressSlice`.
Some leaves repeat in consecutive slots (ARMv7 large pages and supersections are 16
identical entries): ``copies`` says how many.  A leaf may also take a field from the
table descriptor above it (``inherits``): ARMv7 second-level pages have no NS bit,
the first-level table descriptor's NS bit applies to all of them.  A descriptor may
have bits that would extend its output address beyond what the format allows
(``size_fault_mask``: ARMv7 LPAE descriptors' bits[47:40]); a walk finding one set
takes an Address size fault instead of translating.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import format_size

U64 = npt.NDArray[np.uint64]


class Role(enum.Enum):
    """What a valid descriptor does: point at a next-level table or map memory."""

    TABLE = "table"
    LEAF = "leaf"


@dataclass(frozen=True, slots=True)
class BitField:
    """A named attribute field: ``width`` bits starting at bit ``lsb``."""

    name: str
    lsb: int
    width: int = 1

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    def get(self, desc: int) -> int:
        return (desc >> self.lsb) & ((1 << self.width) - 1)


@dataclass(frozen=True, slots=True)
class AddressSlice:
    """Output address bits ``[pa_lsb, pa_lsb+width)`` stored at descriptor bit ``desc_lsb``."""

    pa_lsb: int
    width: int
    desc_lsb: int

    @property
    def desc_mask(self) -> int:
        return ((1 << self.width) - 1) << self.desc_lsb


@dataclass(frozen=True, eq=False)
class DescriptorKind:
    """One descriptor encoding at one level (a section, a small page, a table pointer)."""

    name: str
    role: Role
    level: int
    #: Bytes of input address one descriptor of this kind maps (all ``copies`` together)
    #: for a leaf, or one slot spans for a table pointer.
    size: int
    type_mask: int
    type_value: int
    address: tuple[AddressSlice, ...]
    fields: tuple[BitField, ...] = ()
    #: Consecutive identical entries a leaf occupies (16 for v7 large pages/supersections).
    copies: int = 1
    #: Field names this leaf takes from the table descriptor pointing at its table.
    inherits: tuple[str, ...] = ()
    #: Bits that must read 0, else the walk takes an Address size fault at this level.
    size_fault_mask: int = 0
    attr_mask: int = field(init=False)
    oa_limit: int = field(init=False)
    oa_align: int = field(init=False)
    #: ``type_mask`` and ``type_value`` as numpy scalars, for :meth:`match_many`.
    np_type: tuple[np.uint64, np.uint64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        attr_mask = 0
        for f in self.fields:
            if f.mask & (self.type_mask | attr_mask):
                raise InvalidArgumentError(f"{self.name}: field {f.name} overlaps other bits")
            attr_mask |= f.mask
        used = self.type_mask | attr_mask
        for s in self.address:
            if s.desc_mask & used:
                raise InvalidArgumentError(f"{self.name}: address slice {s} overlaps other bits")
            used |= s.desc_mask
        if self.size_fault_mask & used:
            raise InvalidArgumentError(f"{self.name}: size_fault_mask overlaps other bits")
        object.__setattr__(self, "attr_mask", attr_mask)
        object.__setattr__(self, "oa_limit", 1 << max(s.pa_lsb + s.width for s in self.address))
        object.__setattr__(self, "oa_align", 1 << min(s.pa_lsb for s in self.address))
        object.__setattr__(self, "np_type", (np.uint64(self.type_mask), np.uint64(self.type_value)))

    @property
    def field_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def matches(self, desc: int) -> bool:
        return desc & self.type_mask == self.type_value

    def output_address(self, desc: int) -> int:
        """The output (physical or next-table) address the descriptor holds."""
        pa = 0
        for s in self.address:
            pa |= ((desc >> s.desc_lsb) & ((1 << s.width) - 1)) << s.pa_lsb
        return pa

    def check_output(self, pa: int) -> None:
        """Refuse an output address this kind cannot hold (too high or misaligned)."""
        if pa < 0 or pa >= self.oa_limit:
            raise InvalidArgumentError(
                f"output address {pa:#x} does not fit a {self.name}: it holds addresses "
                f"below {self.oa_limit:#x}"
            )
        if pa % self.oa_align:
            raise InvalidArgumentError(
                f"output address {pa:#x} of a {self.name} must be aligned to {self.oa_align:#x}"
            )

    def attr_bits(self, values: Mapping[str, int]) -> int:
        """Pack the fields this kind carries; names it does not carry are ignored."""
        bits = 0
        for f in self.fields:
            value = values.get(f.name, 0)
            if not 0 <= value < 1 << f.width:
                raise InvalidArgumentError(
                    f"{self.name}: value {value} does not fit the {f.width}-bit field {f.name}"
                )
            bits |= value << f.lsb
        return bits

    def field_values(self, desc: int) -> dict[str, int]:
        return {f.name: f.get(desc) for f in self.fields}

    def address_bits(self, pa: int) -> int:
        """The descriptor bits holding output address ``pa`` (unchecked: see
        :meth:`check_output`)."""
        bits = 0
        for s in self.address:
            bits |= ((pa >> s.pa_lsb) & ((1 << s.width) - 1)) << s.desc_lsb
        return bits

    def encode(self, pa: int, values: Mapping[str, int]) -> int:
        """One descriptor of this kind pointing at ``pa`` with the given field values."""
        self.check_output(pa)
        return self.type_value | self.attr_bits(values) | self.address_bits(pa)

    def encode_many(self, pas: U64, attr_bits: int) -> U64:
        """Vectorised :meth:`encode` of many output addresses sharing attribute bits.

        Output addresses are assumed checked by the caller (range and alignment).
        """
        desc = np.full(pas.shape, self.type_value | attr_bits, dtype=np.uint64)
        for s in self.address:
            piece = (pas >> np.uint64(s.pa_lsb)) & np.uint64((1 << s.width) - 1)
            desc |= piece << np.uint64(s.desc_lsb)
        return desc

    def output_many(self, descs: U64) -> U64:
        """Vectorised :meth:`output_address` of descriptors of this kind."""
        pas = np.zeros(descs.shape, dtype=np.uint64)
        for s in self.address:
            piece = (descs >> np.uint64(s.desc_lsb)) & np.uint64((1 << s.width) - 1)
            pas |= piece << np.uint64(s.pa_lsb)
        return pas

    def match_many(self, words: U64) -> npt.NDArray[np.bool_]:
        """Which of ``words`` are descriptors of this kind (vectorised :meth:`matches`)."""
        mask, value = self.np_type
        return (words & mask) == value

    def __repr__(self) -> str:
        return f"<{self.name} L{self.level} {format_size(self.size)}>"


@dataclass(frozen=True, slots=True)
class LevelSpec:
    """A lookup level: ``index_bits`` of the input address starting at bit ``shift``."""

    level: int
    shift: int
    index_bits: int


@dataclass(frozen=True, eq=False)
class GeoLevel:
    """A lookup level as one table of one geometry uses it (top level may be narrower)."""

    level: int
    shift: int
    index_bits: int
    entry_bytes: int
    valid_mask: int
    kinds: tuple[DescriptorKind, ...]
    table_kind: DescriptorKind | None
    leaf_kinds: tuple[DescriptorKind, ...]

    @property
    def entries(self) -> int:
        return 1 << self.index_bits

    @property
    def index_mask(self) -> int:
        return (1 << self.index_bits) - 1

    @property
    def table_bytes(self) -> int:
        return self.entry_bytes << self.index_bits

    @property
    def slot_span(self) -> int:
        """Input bytes one entry of this level covers."""
        return 1 << self.shift

    @property
    def table_span(self) -> int:
        """Input bytes one table of this level covers."""
        return 1 << (self.shift + self.index_bits)

    def index(self, va: int) -> int:
        return (va >> self.shift) & ((1 << self.index_bits) - 1)  # index_mask, inlined

    def classify(self, desc: int) -> DescriptorKind | None:
        """The kind of a descriptor read at this level, or None when it faults."""
        if not desc & self.valid_mask:
            return None
        for kind in self.kinds:
            if desc & kind.type_mask == kind.type_value:
                return kind
        return None

    def classified_as(self, words: U64, kind: DescriptorKind) -> npt.NDArray[np.bool_]:
        """Which of ``words`` :meth:`classify` reads as ``kind``, vectorised: valid,
        of ``kind``'s type and of no kind listed before it."""
        hit: npt.NDArray[np.bool_] = (words & np.uint64(self.valid_mask)) != 0
        for other in self.kinds:
            if other is kind:
                return hit & kind.match_many(words)
            hit &= ~other.match_many(words)
        return np.zeros(words.shape, dtype=np.bool_)  # not a kind of this level


@dataclass(frozen=True, eq=False)
class Geometry:
    """A format cut to one input-address width (TTBCR.N / TxSZ)."""

    fmt: PageTableFormat
    va_bits: int
    levels: tuple[GeoLevel, ...]
    #: Leaf sizes available, largest first.
    sizes: tuple[int, ...]
    #: size -> (index into ``levels``, leaf kind).
    leaf: Mapping[int, tuple[int, DescriptorKind]]

    @property
    def va_limit(self) -> int:
        return 1 << self.va_bits

    @property
    def root_bytes(self) -> int:
        return self.levels[0].table_bytes

    def smaller_size(self, size: int) -> int:
        """The next leaf size below ``size`` (what a split block breaks into)."""
        i = self.sizes.index(size)
        return self.sizes[i + 1]


AttrEncoder = Callable[[PageAttrs], Mapping[str, int]]
AttrDecoder = Callable[[Mapping[str, int]], PageAttrs]


@dataclass(frozen=True, eq=False)
class PageTableFormat:
    """A page-table format: levels, descriptor kinds and the attribute codec."""

    name: str
    entry_bytes: int
    levels: tuple[LevelSpec, ...]
    kinds: tuple[DescriptorKind, ...]
    #: Bits of which at least one is set in every valid descriptor.
    valid_mask: int
    min_va_bits: int
    max_va_bits: int
    #: PageAttrs -> field values (raises InvalidArgumentError naming the format).
    encode_attrs: AttrEncoder
    #: Field values (leaf fields plus inherited ones) -> PageAttrs.
    decode_attrs: AttrDecoder
    #: Name of a leaf field that must read 1, else the walk takes an Access Flag fault.
    access_flag: str | None = None
    #: Value the MAIR register must hold for AttrIndx to mean what the codec says.
    mair: int | None = None
    #: Whether an ARMv7-style translation control register selects this format with
    #: TTBCR.EAE=1 (the long-descriptor format of LPAE) rather than EAE=0.
    ttbcr_eae: bool = False
    _geometries: dict[int, Geometry] = field(default_factory=dict, init=False, repr=False)
    _attr_cache: dict[tuple[str, int, int], PageAttrs] = field(
        default_factory=dict, init=False, repr=False
    )
    _af_masks: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _values_cache: dict[PageAttrs, Mapping[str, int]] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        names = [k.name for k in self.kinds]
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"format {self.name}: descriptor kind names repeat")
        for k in self.kinds:
            masks = [f.mask for f in k.fields if f.name == self.access_flag]
            self._af_masks[k.name] = masks[0] if masks else 0
        self.geometry(self.max_va_bits)  # validates the description once

    def access_flag_mask(self, kind: DescriptorKind) -> int:
        """Bit that must be set in a ``kind`` leaf for the walk to succeed (0: none)."""
        return self._af_masks[kind.name]

    @property
    def min_page(self) -> int:
        return 1 << self.levels[-1].shift

    @property
    def sizes(self) -> tuple[int, ...]:
        """Every leaf size of the full-width format, largest first."""
        return self.geometry().sizes

    def kind(self, name: str) -> DescriptorKind:
        for k in self.kinds:
            if k.name == name:
                return k
        raise InvalidArgumentError(f"format {self.name} has no descriptor kind {name!r}")

    def geometry(self, va_bits: int | None = None) -> Geometry:
        """The format cut to ``va_bits`` of input address (default: the full width).

        Levels whose index would start at or above ``va_bits`` are dropped and the top
        remaining level keeps only ``va_bits - shift`` index bits, which is what
        TTBCR.N (ARMv7) and TxSZ (ARMv8) do to the first lookup.
        """
        if va_bits is None:
            va_bits = self.max_va_bits
        cached = self._geometries.get(va_bits)
        if cached is not None:
            return cached
        if (
            not isinstance(va_bits, int)
            or isinstance(va_bits, bool)
            or not self.min_va_bits <= va_bits <= self.max_va_bits
        ):
            raise InvalidArgumentError(
                f"{self.name}: va_bits {va_bits!r} must be between {self.min_va_bits} and "
                f"{self.max_va_bits}"
            )
        specs = [s for s in self.levels if s.shift < va_bits]
        levels = []
        for i, spec in enumerate(specs):
            bits = min(spec.index_bits, va_bits - spec.shift) if i == 0 else spec.index_bits
            kinds = tuple(k for k in self.kinds if k.level == spec.level)
            tables = [k for k in kinds if k.role is Role.TABLE]
            leaves = tuple(sorted((k for k in kinds if k.role is Role.LEAF), key=lambda k: -k.size))
            levels.append(
                GeoLevel(
                    level=spec.level,
                    shift=spec.shift,
                    index_bits=bits,
                    entry_bytes=self.entry_bytes,
                    valid_mask=self.valid_mask,
                    kinds=kinds,
                    table_kind=tables[0] if tables else None,
                    leaf_kinds=leaves,
                )
            )
        leaf: dict[int, tuple[int, DescriptorKind]] = {}
        for i, lv in enumerate(levels):
            for k in lv.leaf_kinds:
                leaf[k.size] = (i, k)
        geo = Geometry(
            fmt=self,
            va_bits=va_bits,
            levels=tuple(levels),
            sizes=tuple(sorted(leaf, reverse=True)),
            leaf=leaf,
        )
        _validate_geometry(geo)
        self._geometries[va_bits] = geo
        return geo

    def attr_values(self, attrs: PageAttrs) -> Mapping[str, int]:
        """Field values for ``attrs``, or InvalidArgumentError if the format cannot say it."""
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(
                f"attrs must be a PageAttrs, got {type(attrs).__name__} ({attrs!r})"
            )
        # Memoised: a table keeps meeting the same few attribute sets, and encoding is a
        # dozen lookups.  Only encodings that succeed are kept; a refusal raises each time.
        values = self._values_cache.get(attrs)
        if values is None:
            values = self._values_cache[attrs] = MappingProxyType(self.encode_attrs(attrs))
        return values

    def leaf_attrs(
        self,
        kind: DescriptorKind,
        desc: int,
        parent: DescriptorKind | None = None,
        parent_desc: int = 0,
    ) -> PageAttrs:
        """Decode a leaf's attributes (with inherited table fields), memoised by bits."""
        inherited = parent_desc & parent.attr_mask if parent is not None and kind.inherits else 0
        key = (kind.name, desc & kind.attr_mask, inherited)
        attrs = self._attr_cache.get(key)
        if attrs is None:
            values = kind.field_values(desc)
            if kind.inherits:
                table_values = parent.field_values(parent_desc) if parent is not None else {}
                for name in kind.inherits:
                    values[name] = table_values.get(name, 0)
            attrs = self.decode_attrs(values)
            self._attr_cache[key] = attrs
        return attrs

    def __repr__(self) -> str:
        return f"PageTableFormat({self.name})"


def _validate_geometry(geo: Geometry) -> None:
    """Check the description is one the generic code can drive (splits, tables)."""
    fmt = geo.fmt
    for i, lv in enumerate(geo.levels):
        last = i == len(geo.levels) - 1
        if not last and lv.table_kind is None:
            raise InvalidArgumentError(f"{fmt.name}: level {lv.level} has no table descriptor")
        for k in lv.leaf_kinds:
            if k.size != k.copies << lv.shift:
                raise InvalidArgumentError(
                    f"{fmt.name}: {k.name} size {k.size:#x} is not copies x slot span"
                )
    for size in geo.sizes[:-1]:
        li, kind = geo.leaf[size]
        smaller = geo.smaller_size(size)
        li2, _ = geo.leaf[smaller]
        if li2 == li:
            continue
        if li2 != li + 1 or kind.copies != 1 or size != geo.levels[li2].table_span:
            raise InvalidArgumentError(
                f"{fmt.name}: a {kind.name} cannot be split into one next-level table"
            )
