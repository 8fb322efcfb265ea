"""ARM page-table formats stored byte-exact in simulated physical memory.

:mod:`.format` describes a format as data; :mod:`.armv7s` (ARMv7 short-descriptor),
:mod:`.armv8` (VMSAv8-64 4K) and :mod:`.lpae` (ARMv7 LPAE long-descriptor) are the
descriptions, the last two built from what :mod:`.longdesc` says once for the
long-descriptor family; :mod:`.table` holds the generic operations (map, unmap, walk...).
"""

from vcmm.hw.pgtable.armv7s import ARMV7S
from vcmm.hw.pgtable.armv8 import VMSAV8_4K
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
from vcmm.hw.pgtable.longdesc import MAIR
from vcmm.hw.pgtable.lpae import ARMV7_LPAE
from vcmm.hw.pgtable.table import (
    MapEntry,
    PageTable,
    PageTableSnapshot,
    decode_tables,
    walk_tables,
)

__all__ = [
    "ARMV7S",
    "ARMV7_LPAE",
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
