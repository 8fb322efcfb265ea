"""Per-device DMA parameters: what Linux keeps in ``dev->dma_mask``,
``coherent_dma_mask`` and ``dev->dma_parms``, plus whether the master snoops the CPU
cache.

The platform file gives the starting values (``DmaSpec``); drivers may change them
(``dma_set_mask`` and friends) and the DMA API reads them on every call: the masks cap
the IOVAs it hands out (top-down from the mask), the segment limits shape what
``map_sg`` merges.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import SZ_4K


@dataclass(slots=True)
class DmaParams:
    """The DMA parameters of one device (mutable through :class:`DmaApi` setters)."""

    mask: int
    coherent_mask: int
    max_segment_size: int
    segment_boundary_mask: int
    coherent: bool

    @staticmethod
    def of(device: object) -> DmaParams:
        """Defaults from the device's platform ``DmaSpec`` (or the kernel's 32-bit
        defaults when it has none) and its ``coherent`` flag."""
        spec = getattr(device, "dma", None)
        mask = getattr(spec, "mask", (1 << 32) - 1)
        return DmaParams(
            mask=mask,
            coherent_mask=getattr(spec, "coherent_mask", mask),
            max_segment_size=getattr(spec, "max_segment_size", 1 << 16),
            segment_boundary_mask=getattr(spec, "segment_boundary_mask", (1 << 32) - 1),
            coherent=bool(getattr(device, "coherent", False)),
        )

    def snapshot(self) -> tuple[int, int, int, int, bool]:
        return (
            self.mask,
            self.coherent_mask,
            self.max_segment_size,
            self.segment_boundary_mask,
            self.coherent,
        )


def check_mask(call: str, name: str, mask: object) -> int:
    """A DMA mask is ``DMA_BIT_MASK(n)``: n low bits set, at least one page's worth."""
    if not is_int(mask):
        raise InvalidArgumentError(f"{call}: {name} {mask!r} is not an integer")
    if mask < SZ_4K - 1 or mask >= 1 << 64 or mask & (mask + 1):
        raise InvalidArgumentError(
            f"{call}: {name} {mask:#x} is not DMA_BIT_MASK(n) for 12 <= n <= 64 "
            "(a run of low one bits covering at least one 4 KiB page)"
        )
    return mask


def check_max_segment_size(call: str, size: object) -> int:
    if not is_int(size) or not 0 < size < 1 << 32:
        raise InvalidArgumentError(
            f"{call}: max segment size {size!r} must be an integer in 1..2**32-1 "
            "(the kernel keeps it in an unsigned int)"
        )
    return size


def check_boundary_mask(call: str, mask: object, granule: int = SZ_4K) -> int:
    """A segment boundary mask is 2**n - 1 with 2**n at least one IOMMU granule."""
    if not is_int(mask):
        raise InvalidArgumentError(f"{call}: segment boundary mask {mask!r} is not an integer")
    if mask < granule - 1 or mask >= 1 << 64 or mask & (mask + 1):
        raise InvalidArgumentError(
            f"{call}: segment boundary mask {mask:#x} must be 2**n - 1 with 2**n >= the "
            f"{granule:#x}-byte granule"
        )
    return mask
