"""vcmm: the Virtual Contiguous Memory Manager on a simulated SoC."""

from vcmm.attrs import Access, FaultKind, MemType, PageAttrs
from vcmm.errors import VcmmError
from vcmm.ranges import AddressRange
from vcmm.sizes import (
    SZ_1G,
    SZ_1K,
    SZ_1M,
    SZ_2M,
    SZ_4K,
    SZ_16M,
    SZ_64K,
    format_size,
    parse_size,
)

__all__ = [
    "SZ_1G",
    "SZ_1K",
    "SZ_1M",
    "SZ_2M",
    "SZ_4K",
    "SZ_16M",
    "SZ_64K",
    "Access",
    "AddressRange",
    "FaultKind",
    "MemType",
    "PageAttrs",
    "VcmmError",
    "format_size",
    "parse_size",
]

__version__ = "0.1.0"
