"""The VCMM core: VCMs, reservations, associations, physical allocations, the graph.

:class:`Vcmm` implements the seed's calls (``vcm_create`` ... ``vcm_hook``) plus cache
maintenance; :class:`MappingGraph` tracks every mapping of every physical page and
enforces the aliasing rules; :mod:`vcmm.core.mappers` is the hardware side and
:mod:`vcmm.core.export` the graph as data.
"""

from vcmm.core.flags import AssocAttr, Attr, PhysAttr
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.manager import VMM_EXT_ID, FaultHandler, Vcmm
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmFault, VcmKind

__all__ = [
    "VMM_EXT_ID",
    "AssocAttr",
    "Association",
    "Attr",
    "FaultHandler",
    "Mapping",
    "MappingGraph",
    "PhysAttr",
    "PhysMem",
    "Reservation",
    "Vcm",
    "VcmFault",
    "VcmKind",
    "Vcmm",
]
