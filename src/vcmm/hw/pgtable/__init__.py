"""ARM page-table formats stored byte-exact in simulated physical memory.

:mod:`.format` describes a format as data, :mod:`.armv7s` and :mod:`.armv8` are the two
descriptions, :mod:`.table` holds the generic operations (map, unmap, walk...).
"""

from vcmm.hw.pgtable.armv7s import ARMV7S
from vcmm.hw.pgtable.armv8 import MAIR, VMSAV8_4K
from vcmm.hw.pgtable.format import (
    AddressSlice,
    BitField,
    DescriptorKind,
    GeoLevel,
    Geometry,
    LevelSpec,
    PageTableFormat,
    Role,
)
from vcmm.hw.pgtable.table import (
    MapEntry,
    PageTable,
    PageTableSnapshot,
    decode_tables,
    walk_tables,
)

__all__ = [
    "ARMV7S",
    "MAIR",
    "VMSAV8_4K",
    "AddressSlice",
    "BitField",
    "DescriptorKind",
    "GeoLevel",
    "Geometry",
    "LevelSpec",
    "MapEntry",
    "PageTable",
    "PageTableFormat",
    "PageTableSnapshot",
    "Role",
    "decode_tables",
    "walk_tables",
]
