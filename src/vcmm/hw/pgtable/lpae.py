"""ARMv7 LPAE long-descriptor stage 1 tables, 4 KiB granule (Linux's ARM_32_LPAE_S1).

The format of SMMUv1 (Arm MMU-400/MMU-401, as on Arm's Juno board) and of ARMv7 CPUs
with the Large Physical Address Extension (TTBCR.EAE=1): 32-bit input addresses,
40-bit output addresses, three lookup levels of 64-bit descriptors (ARM DDI 0406C
B3.6):

=====  ===========  =======  ============================================================
level  input bits   entries  valid descriptors
=====  ===========  =======  ============================================================
1      [31:30]      4        table ([39:12] next level, bits[1:0]=11), 1 GiB block
                             ([39:30] output address, bits[1:0]=01)
2      [29:21]      512      table, 2 MiB block ([39:21], bits[1:0]=01)
3      [20:12]      512      4 KiB page ([39:12], bits[1:0]=11); 01 is reserved (faults)
=====  ===========  =======  ============================================================

Descriptor bits[47:40] would be output-address bits above 40: a walk finding one set
takes an Address size fault at that level.  Leaf attributes are the long-descriptor
family's (:mod:`.longdesc`: AttrIndx through MAIR0/MAIR1, NS, AP[2:1], SH, AF, nG,
PXN), with bit 54 named XN.  Table descriptors' NSTable/APTable/XNTable/PXNTable stay
0 as Linux's io-pgtable leaves them.

Input-address width: ``va_bits`` = 32 - TTBCR.T0SZ.  T0SZ 0 and 1 start the walk at
level 1 with a 4- or 2-entry table; T0SZ 2..7 (``va_bits`` 30..25) start it at level 2
with a table of 2**(va_bits - 21) entries, so 1 GiB blocks do not exist there.  Stage 1
never concatenates tables (only ARMv7 stage 2 does, which vcmm does not model).

Execute: bit 54 (XN) forbids execution at every privilege level and PXN at PL1 only.
``exec=False`` sets both (as io-pgtable's IOMMU_NOEXEC does); ``exec=True,
user=False`` sets neither (kernel code: unprivileged code cannot fetch from it anyway,
AP[1]=0 denies it access); ``exec=True, user=True`` sets PXN only, like the VMSAv8-64
choice for user text.  Decoding: executable when XN is 0 and either PXN is 0 or the
page is user-accessible.
"""

from __future__ import annotations

from vcmm.attrs import PageAttrs
from vcmm.hw.pgtable.longdesc import LongDescriptorVariant

NAME = "ARMv7 LPAE long-descriptor stage 1 4K"

#: Output-address width: descriptors hold PA[39:12].
OA_BITS = 40


def _exec_bits(attrs: PageAttrs) -> tuple[int, int]:
    """(PXN, XN) for ``attrs`` (see the module notes)."""
    if not attrs.exec:
        return 1, 1
    return (1, 0) if attrs.user else (0, 0)


def _is_exec(pxn: int, xn: int, user: bool) -> bool:
    return not xn and (user or not pxn)


_VARIANT = LongDescriptorVariant(
    name=NAME, xn="XN", oa_bits=OA_BITS, exec_bits=_exec_bits, is_exec=_is_exec
)

#: ARMv7 LPAE stage 1 with a 4 KiB granule; ``va_bits`` is 32 - T0SZ (25..32).
ARMV7_LPAE = _VARIANT.page_table_format(
    first_level=1, min_va_bits=25, max_va_bits=32, ttbcr_eae=True
)

#: PageAttrs -> LPAE leaf field values.
encode_attrs = _VARIANT.encode_attrs
#: LPAE leaf field values -> PageAttrs, memory type through MAIR.
decode_attrs = _VARIANT.decode_attrs

BLOCK_1G = ARMV7_LPAE.kind("1G block")
BLOCK_2M = ARMV7_LPAE.kind("2M block")
PAGE_4K = ARMV7_LPAE.kind("4K page")
