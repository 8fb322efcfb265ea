"""The VCMM core: VCMs, reservations, associations, physical allocations, the graph."""

from vcmm.core.flags import AssocAttr, Attr, PhysAttr
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.manager import VMM_EXT_ID, Vcmm
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmKind

__all__ = [
    "VMM_EXT_ID",
    "AssocAttr",
    "Association",
    "Attr",
    "Mapping",
    "MappingGraph",
    "PhysAttr",
    "PhysMem",
    "Reservation",
    "Vcm",
    "VcmKind",
    "Vcmm",
]
