"""The VCMM core: VCMs, reservations, associations, physical allocations, the graph.

:class:`Vcmm` is the facade of the seed's calls (``vcm_create`` ... ``vcm_hook``) plus
cache maintenance, each run by the part that owns its concern (:mod:`.spaces`,
:mod:`.binding`, :mod:`.allocations`, :mod:`.backer`) over one
:class:`~vcmm.core.state.CoreState`; :class:`MappingGraph` tracks every mapping of
every physical page and enforces the aliasing rules; :mod:`vcmm.core.mappers` is the
hardware side, :mod:`vcmm.core.export` the graph as data and
:mod:`vcmm.core.interfaces` what the front ends are handed (device records,
front-end slots, the API they may use).
"""

from vcmm.core.flags import AssocAttr, Attr, PhysAttr
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.interfaces import DeviceRecord, DmaLimits, FrontEndSlots, VcmmApi
from vcmm.core.manager import VMM_EXT_ID, FaultHandler, Vcmm
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmFault, VcmKind

__all__ = [
    "VMM_EXT_ID",
    "AssocAttr",
    "Association",
    "Attr",
    "DeviceRecord",
    "DmaLimits",
    "FaultHandler",
    "FrontEndSlots",
    "Mapping",
    "MappingGraph",
    "PhysAttr",
    "PhysMem",
    "Reservation",
    "Vcm",
    "VcmFault",
    "VcmKind",
    "Vcmm",
    "VcmmApi",
]
