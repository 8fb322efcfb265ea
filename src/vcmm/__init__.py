"""vcmm: the Virtual Contiguous Memory Manager on a simulated SoC."""

from vcmm.attrs import Access, DmaDirection, FaultKind, MemType, PageAttrs
from vcmm.core import AssocAttr, Attr, PhysAttr, VcmKind
from vcmm.errors import VcmmError
from vcmm.ranges import AddressRange
from vcmm.system import System
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
    "AssocAttr",
    "Attr",
    "DmaDirection",
    "PhysAttr",
    "System",
    "VcmKind",
    "AddressRange",
    "FaultKind",
    "MemType",
    "PageAttrs",
    "VcmmError",
    "format_size",
    "parse_size",
]

__version__ = "0.1.0"
