"""vcmm: the Virtual Contiguous Memory Manager on a simulated SoC.

The names users need first are importable from here.  The heavier layers (the core,
the system boot) load on first use, so importing a value module such as
``vcmm.errors`` never drags in the whole stack (and never forms an import cycle).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vcmm.attrs import Access, DmaDirection, FaultKind, MemType, PageAttrs
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

if TYPE_CHECKING:
    from vcmm.core import AssocAttr, Attr, PhysAttr, VcmKind
    from vcmm.system import System

_LAZY = {
    "AssocAttr": "vcmm.core",
    "Attr": "vcmm.core",
    "PhysAttr": "vcmm.core",
    "VcmKind": "vcmm.core",
    "System": "vcmm.system",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vcmm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


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
    "AssocAttr",
    "Attr",
    "DmaDirection",
    "FaultKind",
    "MemType",
    "PageAttrs",
    "PhysAttr",
    "System",
    "VcmKind",
    "VcmmError",
    "format_size",
    "parse_size",
]

__version__ = "0.1.0"
