"""Reserved memory: the RAM a devicetree's ``reserved-memory`` node keeps from the kernel.

Each child of ``/reserved-memory`` takes a window of RAM away from the page allocator
(docs/PLATFORM.md, "Reserved memory"):

- ``no-map`` regions also leave the kernel's linear map (firmware, secure world, a
  remote processor's image): no target and no CPU mapping reach them;
- ``shared-dma-pool`` regions become ``contiguous`` targets (a device's coherent pool
  when its ``memory-region`` names them), ``reusable`` ones ``cma`` targets;
- the rest stay mapped but belong to nobody vcmm allocates for.

A region is written down once, where the bootloader's or the kernel's placement put it
(``dynamic`` regions were placed at import as Linux places them), so a platform file
keeps the map the import computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcmm.platform.codecs import Boolean, FlatWindow, Strings, Text
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import check_fields, is_dt_name, key
from vcmm.ranges import AddressRange

#: The compatible string of a reserved region the DMA layers use as a pool.
SHARED_DMA_POOL: Final = "shared-dma-pool"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReservedSpec:
    """One reserved region: ``range`` of RAM, how the kernel treats it, what uses it.

    ``target`` names the memory target made of it (a ``shared-dma-pool``), ``None``
    for a region nothing allocates from.  ``dynamic`` says it was placed at boot
    (``size``/``alignment``/``alloc-ranges``) rather than given a ``reg``.
    """

    name: str = field(metadata=key(Text(), is_dt_name))
    range: AddressRange = field(metadata=key(FlatWindow()))
    node: str | None = field(default=None, metadata=key(Text()))
    no_map: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    reusable: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    dynamic: bool = field(default=False, metadata=key(Boolean(), omit_default=True))
    compatible: tuple[str, ...] = field(default=(), metadata=key(Strings(), omit_default=True))
    target: str | None = field(default=None, metadata=key(Text(), is_dt_name))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if self.no_map and self.reusable:
            raise PlatformError(
                f"reserved region {self.name!r} is both no-map and reusable: memory lent to "
                "the page allocator must stay in the linear map",
                key="reusable",
            )

    @property
    def is_pool(self) -> bool:
        """Whether the DMA layers may allocate from it (``shared-dma-pool``)."""
        return SHARED_DMA_POOL in self.compatible
