"""VMSAv8-64 stage 1 translation tables, 4 KiB granule (the CPU's and modern SMMUs').

Four levels of 512 64-bit entries index input address bits [47:39], [38:30], [29:21]
and [20:12].  Level 0-2 entries may point at the next table (bits[1:0]=11, next-level
address in [47:12]); level 1 and 2 entries may be 1 GiB / 2 MiB blocks (bits[1:0]=01)
and level 3 entries are 4 KiB pages (bits[1:0]=11).  The descriptor layout, the
attribute fields (ARM ARM D8.3, D8.4), MAIR and the AP/SH choices are those of the
whole long-descriptor family, described once in :mod:`.longdesc`; bit 54 is UXN here.

Execute (the VMSAv8-64 choice): ``exec=False`` sets UXN and PXN.  ``exec=True,
user=False`` sets UXN only (kernel code).  ``exec=True, user=True`` sets PXN only, as
Linux maps user text: a user-executable page is never executable at EL1 (the
architecture also forbids EL1 execution of EL0-writable memory).  Decoding:
executable unless both are set.
"""

from __future__ import annotations

from vcmm.attrs import PageAttrs
from vcmm.hw.pgtable.longdesc import (
    AP_BITS,
    MAIR,
    MAIR_ATTRS,
    SH_INNER,
    SH_NON,
    SH_OUTER,
    LongDescriptorVariant,
    memtype_from_mair_byte,
)

__all__ = [
    "AP_BITS",
    "BLOCK_1G",
    "BLOCK_2M",
    "MAIR",
    "MAIR_ATTRS",
    "NAME",
    "PAGE_4K",
    "SH_INNER",
    "SH_NON",
    "SH_OUTER",
    "VMSAV8_4K",
    "decode_attrs",
    "encode_attrs",
    "memtype_from_mair_byte",
]

NAME = "VMSAv8-64 stage 1 4K"


def _exec_bits(attrs: PageAttrs) -> tuple[int, int]:
    """(PXN, UXN) for ``attrs`` (see the module notes)."""
    if not attrs.exec:
        return 1, 1
    return (1, 0) if attrs.user else (0, 1)


def _is_exec(pxn: int, uxn: int, user: bool) -> bool:
    return not (pxn and uxn)


_VARIANT = LongDescriptorVariant(
    name=NAME, xn="UXN", oa_bits=48, exec_bits=_exec_bits, is_exec=_is_exec
)

#: VMSAv8-64 stage 1 with a 4 KiB granule; ``va_bits`` is 64 - T0SZ (25..48).
VMSAV8_4K = _VARIANT.page_table_format(first_level=0, min_va_bits=25, max_va_bits=48)

#: PageAttrs -> VMSAv8-64 leaf field values.
encode_attrs = _VARIANT.encode_attrs
#: VMSAv8-64 leaf field values -> PageAttrs, memory type through :data:`MAIR`.
decode_attrs = _VARIANT.decode_attrs

BLOCK_1G = VMSAV8_4K.kind("1G block")
BLOCK_2M = VMSAV8_4K.kind("2M block")
PAGE_4K = VMSAV8_4K.kind("4K page")
