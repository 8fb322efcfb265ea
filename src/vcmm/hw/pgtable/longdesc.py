"""The long-descriptor family: what VMSAv8-64 and ARMv7 LPAE tables have in common.

ARMv7's Large Physical Address Extension introduced the 64-bit "long-descriptor"
format, and VMSAv8-64 kept it: with a 4 KiB granule both index 9 input-address bits
per level, encode a table pointer or a level-3 page as bits[1:0]=11 and a level-1/2
block as bits[1:0]=01, and carry the same attribute fields in the same bits:

=======  =========  ==========================================================
bits     field      meaning
=======  =========  ==========================================================
[4:2]    AttrIndx   index of the attribute byte in MAIR (MAIR0/MAIR1 on ARMv7)
5        NS         non-secure output address
[7:6]    AP[2:1]    00 priv RW / user none, 01 RW both, 10 priv RO / user none,
                    11 RO both
[9:8]    SH         00 non-shareable, 10 outer, 11 inner shareable
10       AF         access flag; vcmm sets it on map, a walk that finds 0 faults
11       nG         not global (ASID-tagged in the TLB)
53       PXN        privileged execute never
54       UXN / XN   VMSAv8-64: unprivileged execute never; ARMv7: execute never
=======  =========  ==========================================================

What differs is declared by each format with a :class:`LongDescriptorVariant`: the
output-address width (48 bits for VMSAv8-64 here, 40 for ARMv7 LPAE, whose bits[47:40]
must then be zero), the name and meaning of bit 54, and which levels exist (see
:mod:`.armv8` and :mod:`.lpae`).  Table descriptors' NSTable/APTable/XNTable/PXNTable
bits are left 0, as Linux's io-pgtable leaves them: the leaves alone give permissions.

Memory types go through MAIR.  :data:`MAIR` is the same for both formats:

====  ======  =====================================  ====================
idx   byte    attribute                              MemType
====  ======  =====================================  ====================
0     0x00    Device-nGnRnE / Strongly-ordered       STRONGLY_ORDERED
1     0x04    Device-nGnRE / Device                  DEVICE
2     0x44    Normal, inner/outer non-cacheable      NORMAL_NC
3     0xbb    Normal, WT non-transient, R+W alloc    NORMAL_WT
4     0xff    Normal, WB non-transient, R+W alloc    NORMAL_WB_WA
5     0xee    Normal, WB non-transient, R alloc      NORMAL_WB_NWA
====  ======  =====================================  ====================

Permission choices shared by both formats:

- ``read=False`` is refused: AP[2:1] always grants privileged read, there is no "no
  access" encoding (leave the range unmapped instead).
- ``shareable=True`` encodes inner shareable (0b11); decoding takes outer (0b10) as
  shareable too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from vcmm.attrs import MemType, PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.hw.pgtable.format import (
    AddressSlice,
    BitField,
    DescriptorKind,
    LevelSpec,
    PageTableFormat,
    Role,
)
from vcmm.sizes import SZ_1G, SZ_2M, SZ_4K

#: Attribute bytes, index 0..7 (6 and 7 unused, 0x00).
MAIR_ATTRS: tuple[int, ...] = (0x00, 0x04, 0x44, 0xBB, 0xFF, 0xEE, 0x00, 0x00)
#: The MAIR value the CPU/SMMU must hold for these tables (ARMv7: MAIR0 is the low
#: word, Attr0..3, and MAIR1 the high word, Attr4..7).
MAIR: int = sum(byte << (8 * i) for i, byte in enumerate(MAIR_ATTRS))

SH_NON = 0b00
SH_OUTER = 0b10
SH_INNER = 0b11

#: AP[2:1] per (write, user) for readable mappings.
AP_BITS: Mapping[tuple[bool, bool], int] = {
    (True, False): 0b00,
    (True, True): 0b01,
    (False, False): 0b10,
    (False, True): 0b11,
}

#: Input-address bits one lookup level resolves with a 4 KiB granule, and the
#: shift of level 3 (the page offset).
LEVEL_BITS = 9
PAGE_SHIFT = 12


def level_shift(level: int) -> int:
    """Lowest input-address bit level ``level`` (0..3) indexes with a 4 KiB granule."""
    return PAGE_SHIFT + LEVEL_BITS * (3 - level)


def memtype_from_mair_byte(attr: int) -> MemType:
    """Decode one MAIR attribute byte (Attr<n>) into a MemType.

    Device bytes (high nibble 0): 0x00 (nGnRnE, ARMv7 Strongly-ordered) is strongly
    ordered, the other Device kinds are DEVICE (ARMv7 calls only 0x04 Device and leaves
    the rest UNPREDICTABLE; DEVICE is the closest).  Normal bytes use the inner nibble
    (the CPU cache acts on it): 0b0100 non-cacheable; 0b00RW (RW != 00) / 0b10RW
    write-through; 0b01RW (RW != 00) / 0b11RW write-back, with write-allocate when W=1.
    """
    if not 0 <= attr <= 0xFF:
        raise InvalidArgumentError(f"MAIR attribute {attr:#x} is not a byte")
    if attr >> 4 == 0:
        return MemType.STRONGLY_ORDERED if attr & 0x0C == 0 else MemType.DEVICE
    inner = attr & 0x0F
    if inner in (0b0100, 0b0000):
        # 0b0100 is non-cacheable; 0b0000 in a Normal byte is UNPREDICTABLE: treat as NC.
        return MemType.NORMAL_NC
    if inner & 0b0100:
        return MemType.NORMAL_WB_WA if inner & 0b0001 else MemType.NORMAL_WB_NWA
    return MemType.NORMAL_WT


def _index_of(memtype: MemType) -> int:
    for i, byte in enumerate(MAIR_ATTRS[:6]):
        if memtype_from_mair_byte(byte) is memtype:
            return i
    raise InvalidArgumentError(f"MAIR has no entry for {memtype}")  # pragma: no cover


_ATTR_INDEX: Mapping[MemType, int] = {m: _index_of(m) for m in MemType}

#: PageAttrs -> (PXN, bit-54 field) for a readable mapping.
ExecEncoder = Callable[[PageAttrs], tuple[int, int]]
#: (PXN, bit-54 field, user) -> whether anyone may execute.
ExecDecoder = Callable[[int, int, bool], bool]


@dataclass(frozen=True, eq=False)
class LongDescriptorVariant:
    """What one long-descriptor format does differently from the others.

    ``xn`` names bit 54 (``UXN`` or ``XN``); ``exec_bits`` and ``is_exec`` say how
    PageAttrs' one ``exec`` flag maps onto PXN and that bit.  ``oa_bits`` is the
    output-address width: descriptor address bits [47:oa_bits] must be zero, else the
    walk takes an Address size fault.
    """

    name: str
    xn: str
    oa_bits: int
    exec_bits: ExecEncoder
    is_exec: ExecDecoder

    @property
    def size_fault_mask(self) -> int:
        """Descriptor bits [47:oa_bits]: output-address bits this format does not have."""
        return ((1 << 48) - 1) ^ ((1 << self.oa_bits) - 1)

    def encode_attrs(self, attrs: PageAttrs) -> dict[str, int]:
        """PageAttrs -> leaf field values (names as in :meth:`leaf_fields`)."""
        if attrs.write and not attrs.read:
            raise InvalidArgumentError(f"{self.name}: write without read has no AP[2:1] encoding")
        if not attrs.read:
            raise InvalidArgumentError(
                f"{self.name}: PageAttrs(read=False) cannot be encoded: AP[2:1] has no "
                "no-access value (privileged code can always read a valid entry); leave "
                "the range unmapped instead"
            )
        pxn, xn = self.exec_bits(attrs)
        return {
            "AttrIndx": _ATTR_INDEX[attrs.memtype],
            "NS": int(attrs.ns),
            "AP": AP_BITS[(attrs.write, attrs.user)],
            "SH": SH_INNER if attrs.shareable else SH_NON,
            "AF": 1,
            "nG": 0 if attrs.global_ else 1,
            "PXN": pxn,
            self.xn: xn,
        }

    def decode_attrs(self, values: Mapping[str, int]) -> PageAttrs:
        """Leaf field values -> PageAttrs, memory type through :data:`MAIR`."""
        ap = values["AP"]
        user = bool(ap & 0b01)
        return PageAttrs(
            read=True,
            write=not ap & 0b10,
            exec=self.is_exec(values["PXN"], values[self.xn], user),
            user=user,
            memtype=memtype_from_mair_byte(MAIR_ATTRS[values["AttrIndx"]]),
            shareable=values["SH"] in (SH_OUTER, SH_INNER),
            global_=not values["nG"],
            ns=bool(values["NS"]),
        )

    def leaf_fields(self) -> tuple[BitField, ...]:
        return (
            BitField("AttrIndx", 2, 3),
            BitField("NS", 5),
            BitField("AP", 6, 2),
            BitField("SH", 8, 2),
            BitField("AF", 10),
            BitField("nG", 11),
            BitField("PXN", 53),
            BitField(self.xn, 54),
        )

    def table(self, level: int) -> DescriptorKind:
        """The table descriptor of ``level``: next-level address in [oa_bits-1:12]."""
        return DescriptorKind(
            name=f"L{level} table",
            role=Role.TABLE,
            level=level,
            size=1 << level_shift(level),
            type_mask=0b11,
            type_value=0b11,
            address=(AddressSlice(PAGE_SHIFT, self.oa_bits - PAGE_SHIFT, PAGE_SHIFT),),
            size_fault_mask=self.size_fault_mask,
        )

    def leaf(self, level: int) -> DescriptorKind:
        """The block (level 1: 1G, level 2: 2M) or page (level 3: 4K) descriptor."""
        shift = level_shift(level)
        names = {1: ("1G block", SZ_1G), 2: ("2M block", SZ_2M), 3: ("4K page", SZ_4K)}
        name, size = names[level]
        return DescriptorKind(
            name=name,
            role=Role.LEAF,
            level=level,
            size=size,
            type_mask=0b11,
            type_value=0b11 if level == 3 else 0b01,
            address=(AddressSlice(shift, self.oa_bits - shift, shift),),
            fields=self.leaf_fields(),
            size_fault_mask=self.size_fault_mask,
        )

    def page_table_format(
        self, *, first_level: int, min_va_bits: int, max_va_bits: int, ttbcr_eae: bool = False
    ) -> PageTableFormat:
        """The whole format: lookup levels ``first_level``..3 with a 4 KiB granule.

        Levels 0-2 hold table descriptors, level 1 also 1 GiB blocks, level 2 2 MiB
        blocks, level 3 4 KiB pages.  The first level indexes at most the input bits
        up to ``max_va_bits`` (ARMv7 LPAE's level 1: VA[31:30], four entries).
        """
        levels = []
        kinds: list[DescriptorKind] = []
        for level in range(first_level, 4):
            shift = level_shift(level)
            levels.append(LevelSpec(level, shift, min(LEVEL_BITS, max_va_bits - shift)))
            if level < 3:
                kinds.append(self.table(level))
            if level > 0:
                kinds.append(self.leaf(level))
        return PageTableFormat(
            name=self.name,
            entry_bytes=8,
            levels=tuple(levels),
            kinds=tuple(kinds),
            valid_mask=0b1,
            min_va_bits=min_va_bits,
            max_va_bits=max_va_bits,
            encode_attrs=self.encode_attrs,
            decode_attrs=self.decode_attrs,
            access_flag="AF",
            mair=MAIR,
            ttbcr_eae=ttbcr_eae,
        )
