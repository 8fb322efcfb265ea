"""ARMv7 short-descriptor translation tables (VMSAv7, TEX remap off, AFE=0).

The format the seed's Qualcomm SMMU used: a first level of 4096 32-bit entries, each
covering 1 MiB (16 KiB table, 16 KiB aligned), and second-level tables of 256 entries
covering 4 KiB each (1 KiB tables, 1 KiB aligned).  Leaves:

======================  =====  ===========================================================
kind                    level  bits (ARM ARM B3.5.1)
======================  =====  ===========================================================
page table              1      [31:10] L2 base, [8:5] domain, 3 NS, [1:0]=01
section (1 MiB)         1      [31:20] PA, 19 NS, 18=0, 17 nG, 16 S, 15 AP[2], [14:12] TEX,
                               [11:10] AP[1:0], [8:5] domain, 4 XN, 3 C, 2 B, [1:0]=10
supersection (16 MiB)   1      [31:24] PA[31:24], [23:20] PA[35:32], 19 NS, 18=1, 17 nG,
                               16 S, 15 AP[2], [14:12] TEX, [11:10] AP[1:0],
                               [8:5] PA[39:36], 4 XN, 3 C, 2 B, [1:0]=10; 16 copies
large page (64 KiB)     2      [31:16] PA, 15 XN, [14:12] TEX, 11 nG, 10 S, 9 AP[2],
                               [5:4] AP[1:0], 3 C, 2 B, [1:0]=01; 16 copies
small page (4 KiB)      2      [31:12] PA, 11 nG, 10 S, 9 AP[2], [8:6] TEX, [5:4] AP[1:0],
                               3 C, 2 B, 1=1, 0 XN
======================  =====  ===========================================================

Domains are always 0 and PXN is never set.  Second-level descriptors have no NS bit:
the NS bit of the first-level page-table descriptor applies to every page of that
table, so all pages sharing a second-level table must agree on ``ns``.

Permissions use the full AP[2:0] model with the access flag disabled (SCTLR.AFE=0),
so AP[0] is a plain permission bit:

=====  ===================  =========================================================
AP     access               PageAttrs (read, write, user)
=====  ===================  =========================================================
000    none                 (False, False, False); user=True with read=False is refused
001    priv RW, user none   (True, True, False)
010    priv RW, user RO     decoded as (True, True, False): PageAttrs cannot say
                            "user reads, only privileged writes"; it never encodes it
011    RW both              (True, True, True)
100    reserved             decoded as no access
101    priv RO, user none   (True, False, False)
110    RO both (deprecated) decoded as (True, False, True)
111    RO both              (True, False, True)
=====  ===================  =========================================================

Memory types (TEX remap off): Strongly-ordered TEX=000 C=0 B=0, shareable Device 000/0/1,
Normal WT 000/1/0, Normal WB no write-allocate 000/1/1, Normal NC 001/0/0, Normal WB
write-allocate 001/1/1.  Decoding also accepts the other architected encodings:
TEX=010 C=0 B=0 (non-shareable Device) decodes as DEVICE, TEX=1xx (outer policy in
TEX[1:0], inner in C/B) decodes by the inner policy, which is what the CPU cache model
acts on; reserved combinations decode as STRONGLY_ORDERED, the most conservative type.
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
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K

NAME = "ARMv7 short-descriptor"

#: (TEX, C, B) per memory type, TEX remap off.
TEXCB: Mapping[MemType, tuple[int, int, int]] = {
    MemType.STRONGLY_ORDERED: (0b000, 0, 0),
    MemType.DEVICE: (0b000, 0, 1),
    MemType.NORMAL_WT: (0b000, 1, 0),
    MemType.NORMAL_WB_NWA: (0b000, 1, 1),
    MemType.NORMAL_NC: (0b001, 0, 0),
    MemType.NORMAL_WB_WA: (0b001, 1, 1),
}

#: AP[2:0] per (read, write, user), AFE=0.
AP_BITS: Mapping[tuple[bool, bool, bool], int] = {
    (False, False, False): 0b000,
    (True, True, False): 0b001,
    (True, True, True): 0b011,
    (True, False, False): 0b101,
    (True, False, True): 0b111,
}

_AP_DECODE: Mapping[int, tuple[bool, bool, bool]] = {
    0b000: (False, False, False),
    0b001: (True, True, False),
    0b010: (True, True, False),
    0b011: (True, True, True),
    0b100: (False, False, False),
    0b101: (True, False, False),
    0b110: (True, False, True),
    0b111: (True, False, True),
}

# Inner (or outer) cache policy of TEX=1xx encodings: 00 NC, 01 WB-WA, 10 WT, 11 WB-no-WA.
_POLICY = (MemType.NORMAL_NC, MemType.NORMAL_WB_WA, MemType.NORMAL_WT, MemType.NORMAL_WB_NWA)
_TEXCB_DECODE = {v: k for k, v in TEXCB.items()}


def memtype_from_texcb(tex: int, c: int, b: int) -> MemType:
    """The memory type of a TEX/C/B triple with TEX remap off."""
    known = _TEXCB_DECODE.get((tex, c, b))
    if known is not None:
        return known
    if tex == 0b010 and c == 0 and b == 0:
        return MemType.DEVICE
    if tex & 0b100:
        return _POLICY[(c << 1) | b]
    return MemType.STRONGLY_ORDERED


def encode_attrs(attrs: PageAttrs) -> dict[str, int]:
    """PageAttrs -> short-descriptor field values (field names as in the kinds below)."""
    if attrs.write and not attrs.read:
        raise InvalidArgumentError(f"{NAME}: write without read has no AP encoding")
    if not attrs.read and attrs.user:
        raise InvalidArgumentError(
            f"{NAME}: PageAttrs(read=False, user=True) has no encoding: AP=000 denies "
            "all access, so a no-access mapping cannot grant user access"
        )
    ap = AP_BITS[(attrs.read, attrs.write, attrs.user)]
    tex, c, b = TEXCB[attrs.memtype]
    return {
        "XN": 0 if attrs.exec else 1,
        "B": b,
        "C": c,
        "TEX": tex,
        "AP10": ap & 0b11,
        "AP2": ap >> 2,
        "S": int(attrs.shareable),
        "nG": 0 if attrs.global_ else 1,
        "NS": int(attrs.ns),
    }


def decode_attrs(values: Mapping[str, int]) -> PageAttrs:
    """Short-descriptor field values -> PageAttrs (see the AP table in the module doc)."""
    read, write, user = _AP_DECODE[(values["AP2"] << 2) | values["AP10"]]
    return PageAttrs(
        read=read,
        write=write,
        exec=not values["XN"],
        user=user,
        memtype=memtype_from_texcb(values["TEX"], values["C"], values["B"]),
        shareable=bool(values["S"]),
        global_=not values["nG"],
        ns=bool(values["NS"]),
    )


def _l1_leaf_fields() -> tuple[BitField, ...]:
    return (
        BitField("B", 2),
        BitField("C", 3),
        BitField("XN", 4),
        BitField("AP10", 10, 2),
        BitField("TEX", 12, 3),
        BitField("AP2", 15),
        BitField("S", 16),
        BitField("nG", 17),
        BitField("NS", 19),
    )


PAGE_TABLE = DescriptorKind(
    name="page table",
    role=Role.TABLE,
    level=1,
    size=SZ_1M,
    type_mask=0b11,
    type_value=0b01,
    address=(AddressSlice(10, 22, 10),),
    fields=(BitField("NS", 3),),
)

# bit 0 (PXN where implemented) is outside the type mask so PXN sections still decode.
SUPERSECTION = DescriptorKind(
    name="supersection",
    role=Role.LEAF,
    level=1,
    size=SZ_16M,
    type_mask=(1 << 18) | 0b10,
    type_value=(1 << 18) | 0b10,
    address=(AddressSlice(24, 8, 24), AddressSlice(32, 4, 20), AddressSlice(36, 4, 5)),
    fields=_l1_leaf_fields(),
    copies=16,
)

SECTION = DescriptorKind(
    name="section",
    role=Role.LEAF,
    level=1,
    size=SZ_1M,
    type_mask=(1 << 18) | 0b10,
    type_value=0b10,
    address=(AddressSlice(20, 12, 20),),
    fields=_l1_leaf_fields(),
)

LARGE_PAGE = DescriptorKind(
    name="large page",
    role=Role.LEAF,
    level=2,
    size=SZ_64K,
    type_mask=0b11,
    type_value=0b01,
    address=(AddressSlice(16, 16, 16),),
    fields=(
        BitField("B", 2),
        BitField("C", 3),
        BitField("AP10", 4, 2),
        BitField("AP2", 9),
        BitField("S", 10),
        BitField("nG", 11),
        BitField("TEX", 12, 3),
        BitField("XN", 15),
    ),
    copies=16,
    inherits=("NS",),
)

SMALL_PAGE = DescriptorKind(
    name="small page",
    role=Role.LEAF,
    level=2,
    size=SZ_4K,
    type_mask=0b10,
    type_value=0b10,
    address=(AddressSlice(12, 20, 12),),
    fields=(
        BitField("XN", 0),
        BitField("B", 2),
        BitField("C", 3),
        BitField("AP10", 4, 2),
        BitField("TEX", 6, 3),
        BitField("AP2", 9),
        BitField("S", 10),
        BitField("nG", 11),
    ),
    inherits=("NS",),
)

#: The ARMv7 short-descriptor format.  ``va_bits`` 32-N selects TTBCR.N = N (0..7).
ARMV7S = PageTableFormat(
    name=NAME,
    entry_bytes=4,
    levels=(
        LevelSpec(level=1, shift=20, index_bits=12),
        LevelSpec(level=2, shift=12, index_bits=8),
    ),
    kinds=(PAGE_TABLE, SUPERSECTION, SECTION, LARGE_PAGE, SMALL_PAGE),
    valid_mask=0b11,
    min_va_bits=25,
    max_va_bits=32,
    encode_attrs=encode_attrs,
    decode_attrs=decode_attrs,
)
