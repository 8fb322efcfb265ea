"""Bus masters as the layers above see them: a name, coherence and a translation path.

Three kinds of master issue memory transactions on the simulated SoC and each reaches
memory a different way: the CPU through its own MMU, a device behind an SMMU through
its context, a physically addressed device through its ``dma-ranges`` windows.  The
core matches VCM kinds to them (an IOMMU VCM needs an SMMU device), the DMA API picks
IOMMU or direct ops by them, the sharing layer gives ``/dev`` nodes only to SMMU
devices.  Each master states its :class:`TranslationPath` as a class attribute, so
those decisions ask the master instead of probing its attributes; code that then
needs the context narrows with an ``isinstance`` on the hardware class
(:class:`~vcmm.hw.bus.SmmuDevice`), which a type checker can follow.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol, TypeAlias

if TYPE_CHECKING:
    from vcmm.hw.bus import PhysicalDevice, SmmuDevice
    from vcmm.hw.cpu import Cpu


class TranslationPath(enum.Enum):
    """How a master's addresses become physical ones."""

    #: The CPU's MMU: kernel TTBR1 table and a TTBR0 table per process.
    CPU = "cpu"
    #: An SMMU context's page tables (an IOMMU device).
    IOMMU = "iommu"
    #: The address is physical, possibly offset by ``dma-ranges`` windows.
    PHYSICAL = "physical"


class Master(Protocol):
    """What every bus master offers the layers above: a name for messages and graphs,
    whether it snoops the CPU cache, and how it translates."""

    @property
    def name(self) -> str: ...
    @property
    def path(self) -> TranslationPath: ...
    def read(self, addr: int, length: int) -> bytes: ...
    def write(self, addr: int, data: bytes) -> None: ...


#: The concrete masters a machine holds (for code that needs more than :class:`Master`).
AnyMaster: TypeAlias = "Cpu | SmmuDevice | PhysicalDevice"


if TYPE_CHECKING:  # the type checker proves each concrete master is a Master

    def _conforms(cpu: Cpu, iommu: SmmuDevice, physical: PhysicalDevice) -> list[Master]:
        return [cpu, iommu, physical]
