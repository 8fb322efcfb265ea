"""VMSAv8-64 stage 1 translation tables, 4 KiB granule (the CPU's and modern SMMUs').

Four levels of 512 64-bit entries index input address bits [47:39], [38:30], [29:21]
and [20:12].  Level 0-2 entries may point at the next table (bits[1:0]=11, next-level
address in [47:12]); level 1 and 2 entries may be 1 GiB / 2 MiB blocks (bits[1:0]=01)
and level 3 entries are 4 KiB pages (bits[1:0]=11).  Leaf attribute fields (ARM ARM
D8.3):

=======  =======  ===============================================================
bits     field    meaning
=======  =======  ===============================================================
[4:2]    AttrIndx index of the memory attribute byte in MAIR_ELx
5        NS       non-secure output address
[7:6]    AP[2:1]  00 EL1 RW / EL0 none, 01 RW both, 10 EL1 RO / EL0 none, 11 RO both
[9:8]    SH       00 non-shareable, 10 outer, 11 inner shareable
10       AF       access flag; vcmm sets it on map, a walk that finds 0 faults
11       nG       not global (ASID-tagged in the TLB)
53       PXN      privileged execute never
54       UXN      unprivileged execute never
=======  =======  ===============================================================

Choices where PageAttrs and the architecture differ:

- ``read=False`` is refused: AP[2:1] always grants EL1 read, there is no "no access"
  encoding (leave the range unmapped instead).
- ``shareable=True`` encodes inner shareable (0b11); decoding takes outer (0b10) as
  shareable too.
- Execute: ``exec=False`` sets UXN and PXN.  ``exec=True, user=False`` sets UXN only
  (kernel code).  ``exec=True, user=True`` sets PXN only, as Linux maps user text:
  a user-executable page is never executable at EL1 (the architecture also forbids
  EL1 execution of EL0-writable memory).  Decoding: executable unless both are set.

Memory types go through MAIR.  :data:`MAIR` is Linux-like:

====  ======  =====================================  ====================
idx   byte    attribute                              MemType
====  ======  =====================================  ====================
0     0x00    Device-nGnRnE                          STRONGLY_ORDERED
1     0x04    Device-nGnRE                           DEVICE
2     0x44    Normal, inner/outer non-cacheable      NORMAL_NC
3     0xbb    Normal, WT non-transient, R+W alloc    NORMAL_WT
4     0xff    Normal, WB non-transient, R+W alloc    NORMAL_WB_WA
5     0xee    Normal, WB non-transient, R alloc      NORMAL_WB_NWA
====  ======  =====================================  ====================
"""

from __future__ import annotations

from collections.abc import Mapping

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

NAME = "VMSAv8-64 stage 1 4K"

#: Attribute bytes, index 0..7 (6 and 7 unused, 0x00).
MAIR_ATTRS: tuple[int, ...] = (0x00, 0x04, 0x44, 0xBB, 0xFF, 0xEE, 0x00, 0x00)
#: The MAIR_ELx value the CPU/SMMU must hold for these tables.
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


def memtype_from_mair_byte(attr: int) -> MemType:
    """Decode one MAIR attribute byte (Attr<n>) into a MemType.

    Device bytes (high nibble 0): 0x00 nGnRnE is strongly ordered, the other Device
    kinds are DEVICE.  Normal bytes use the inner nibble (the CPU cache acts on it):
    0b0100 non-cacheable; 0b00RW (RW != 00) / 0b10RW write-through; 0b01RW
    (RW != 00) / 0b11RW write-back, with write-allocate when W=1.
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
    raise InvalidArgumentError(f"{NAME}: MAIR has no entry for {memtype}")  # pragma: no cover


_ATTR_INDEX: Mapping[MemType, int] = {m: _index_of(m) for m in MemType}


def encode_attrs(attrs: PageAttrs) -> dict[str, int]:
    """PageAttrs -> VMSAv8-64 leaf field values."""
    if attrs.write and not attrs.read:
        raise InvalidArgumentError(f"{NAME}: write without read has no AP[2:1] encoding")
    if not attrs.read:
        raise InvalidArgumentError(
            f"{NAME}: PageAttrs(read=False) cannot be encoded: AP[2:1] has no no-access "
            "value (EL1 can always read a valid entry); leave the range unmapped instead"
        )
    if not attrs.exec:
        pxn, uxn = 1, 1
    elif attrs.user:
        pxn, uxn = 1, 0
    else:
        pxn, uxn = 0, 1
    return {
        "AttrIndx": _ATTR_INDEX[attrs.memtype],
        "NS": int(attrs.ns),
        "AP": AP_BITS[(attrs.write, attrs.user)],
        "SH": SH_INNER if attrs.shareable else SH_NON,
        "AF": 1,
        "nG": 0 if attrs.global_ else 1,
        "PXN": pxn,
        "UXN": uxn,
    }


def decode_attrs(values: Mapping[str, int]) -> PageAttrs:
    """VMSAv8-64 leaf field values -> PageAttrs, memory type through :data:`MAIR`."""
    ap = values["AP"]
    return PageAttrs(
        read=True,
        write=not ap & 0b10,
        exec=not (values["PXN"] and values["UXN"]),
        user=bool(ap & 0b01),
        memtype=memtype_from_mair_byte(MAIR_ATTRS[values["AttrIndx"]]),
        shareable=values["SH"] in (SH_OUTER, SH_INNER),
        global_=not values["nG"],
        ns=bool(values["NS"]),
    )


_LEAF_FIELDS = (
    BitField("AttrIndx", 2, 3),
    BitField("NS", 5),
    BitField("AP", 6, 2),
    BitField("SH", 8, 2),
    BitField("AF", 10),
    BitField("nG", 11),
    BitField("PXN", 53),
    BitField("UXN", 54),
)

_NEXT_TABLE = (AddressSlice(12, 36, 12),)


def _table(level: int, span: int) -> DescriptorKind:
    return DescriptorKind(
        name=f"L{level} table",
        role=Role.TABLE,
        level=level,
        size=span,
        type_mask=0b11,
        type_value=0b11,
        address=_NEXT_TABLE,
    )


BLOCK_1G = DescriptorKind(
    name="1G block",
    role=Role.LEAF,
    level=1,
    size=SZ_1G,
    type_mask=0b11,
    type_value=0b01,
    address=(AddressSlice(30, 18, 30),),
    fields=_LEAF_FIELDS,
)

BLOCK_2M = DescriptorKind(
    name="2M block",
    role=Role.LEAF,
    level=2,
    size=SZ_2M,
    type_mask=0b11,
    type_value=0b01,
    address=(AddressSlice(21, 27, 21),),
    fields=_LEAF_FIELDS,
)

PAGE_4K = DescriptorKind(
    name="4K page",
    role=Role.LEAF,
    level=3,
    size=SZ_4K,
    type_mask=0b11,
    type_value=0b11,
    address=(AddressSlice(12, 36, 12),),
    fields=_LEAF_FIELDS,
)

#: VMSAv8-64 stage 1 with a 4 KiB granule; ``va_bits`` is 64 - T0SZ (25..48).
VMSAV8_4K = PageTableFormat(
    name=NAME,
    entry_bytes=8,
    levels=(
        LevelSpec(level=0, shift=39, index_bits=9),
        LevelSpec(level=1, shift=30, index_bits=9),
        LevelSpec(level=2, shift=21, index_bits=9),
        LevelSpec(level=3, shift=12, index_bits=9),
    ),
    kinds=(
        _table(0, 1 << 39),
        _table(1, SZ_1G),
        BLOCK_1G,
        _table(2, SZ_2M),
        BLOCK_2M,
        PAGE_4K,
    ),
    valid_mask=0b1,
    min_va_bits=25,
    max_va_bits=48,
    encode_attrs=encode_attrs,
    decode_attrs=decode_attrs,
    access_flag="AF",
    mair=MAIR,
)
