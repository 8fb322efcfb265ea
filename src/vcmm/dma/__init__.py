"""The DMA mapping API on the VCMM (seed 002's dma-iommu, dma-direct, dma-debug).

Start with :class:`DmaApi`; docs/DMA.md describes the design and the decisions.
"""

from vcmm.dma.api import DEFAULT_ATOMIC_POOL, DmaApi
from vcmm.dma.attrs import DMA_MAPPING_ERROR, DmaAttr
from vcmm.dma.callsite import CallSite
from vcmm.dma.clock import SimClock
from vcmm.dma.debug import DebugChecker, DmaReport, ReportKind
from vcmm.dma.domain import DmaDomain
from vcmm.dma.invalidation import InvalidationStats
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.dma.params import DmaParams
from vcmm.dma.records import CoherentBuffer, DmaMapping, MapKind, Owner
from vcmm.dma.sg import MappedScatterList, ScatterList, SgEntry

__all__ = [
    "DEFAULT_ATOMIC_POOL",
    "DMA_MAPPING_ERROR",
    "CallSite",
    "CoherentBuffer",
    "DebugChecker",
    "DmaApi",
    "DmaAttr",
    "DmaDomain",
    "DmaMapping",
    "DmaParams",
    "DmaReport",
    "InvalidationStats",
    "IovaVcmAllocator",
    "MapKind",
    "MappedScatterList",
    "Owner",
    "ReportKind",
    "ScatterList",
    "SgEntry",
    "SimClock",
]
