"""ARM page-table formats stored byte-exact in simulated physical memory.

:mod:`.format` describes a format as data; :mod:`.armv7s` (ARMv7 short-descriptor),
:mod:`.armv8` (VMSAv8-64 4K) and :mod:`.lpae` (ARMv7 LPAE long-descriptor) are the
descriptions, the last two built from what :mod:`.longdesc` says once for the
long-descriptor family.  The generic operations: :mod:`.walker` (the hardware walk of
one address and the one range walk, driven by a visitor), :mod:`.visitors` (the range
operations as visitors, and decoding), :mod:`.plan` (cutting a mapping into runs of
equal leaves), :mod:`.tableset` (the table pages a tree owns and the undo log of a
change) and :mod:`.table` (:class:`PageTable`: map, unmap, set_attrs, walk...).
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
from vcmm.hw.pgtable.snapshot import PageTableSnapshot
from vcmm.hw.pgtable.table import PageTable
from vcmm.hw.pgtable.tableset import Journal
from vcmm.hw.pgtable.visitors import MapEntry, decode_tables
from vcmm.hw.pgtable.walker import Slots, Visitor, walk_range, walk_tables

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
    "Journal",
    "LevelSpec",
    "MapEntry",
    "PageTable",
    "PageTableFormat",
    "PageTableSnapshot",
    "Role",
    "Slots",
    "Visitor",
    "decode_tables",
    "walk_range",
    "walk_tables",
]
