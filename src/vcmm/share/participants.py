"""What vcmm knows about a participant that sysmem cannot: its place on the platform.

A device states constraints about what it *wants*; the platform says what it *can*:

- a device the DMA API serves with **direct** ops (no IOMMU) sees memory only through
  its bus window (``dma-ranges``) and below its DMA mask, and it has no translation to
  gather pieces, so it needs each buffer **physically contiguous** and in a memory
  target whose every byte it reaches;
- a device behind an **IOMMU** needs neither (its DMA domain maps any pages at IOVAs
  below its mask), and its SMMU's **page sizes** say which physical blocks it can map
  as one IOTLB entry;
- the **CPU** maps the bytes, so it cannot use the inaccessible (secure) domain.

:func:`implied` turns that into a :class:`~vcmm.share.constraints.Constraints` that
is folded with the participant's own statement, plus the reasons a report shows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from vcmm.errors import InvalidArgumentError, NotMappedError
from vcmm.hw.bus import PhysicalDevice
from vcmm.share.constraints import Constraints, Domain
from vcmm.sizes import format_size

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi
    from vcmm.dma.api import DmaApi
    from vcmm.ranges import AddressRange

#: The name the CPU joins a collection under.
CPU: Final = "cpu"


@dataclass(frozen=True, slots=True)
class Facts:
    """A participant's platform facts: ``kind`` is ``"cpu"``, ``"iommu"`` or ``"direct"``."""

    name: str
    kind: str
    implied: Constraints
    #: Why each implied constraint holds, for reports.
    reasons: tuple[str, ...] = field(default=())


def reaches(device: PhysicalDevice, mask: int, regions: tuple[AddressRange, ...]) -> bool:
    """Whether a direct ``device`` reaches every byte of ``regions`` as one bus run
    each, below ``mask``."""
    for region in regions:
        try:
            first, last = device.phys_to_bus(region.start), device.phys_to_bus(region.last)
        except NotMappedError:
            return False
        if last > mask or last - first != region.size - 1:
            return False
    return True


def facts_of(system: VcmmApi, api: DmaApi | None, name: str) -> Facts:
    """The platform facts of participant ``name`` (a device the DMA API serves, or
    ``"cpu"``)."""
    if name == CPU:
        return Facts(
            CPU,
            "cpu",
            Constraints(domains=frozenset({Domain.CPU, Domain.RAM})),
            ("cpu: maps the bytes, so not the inaccessible domain",),
        )
    if api is None:
        raise InvalidArgumentError(f"participant {name!r}: a device joins through the DMA API")
    if api.ops(name) == "iommu":
        sizes = api.page_sizes(name)
        text = ", ".join(format_size(s) for s in sizes)
        return Facts(
            name,
            "iommu",
            Constraints(page_sizes=frozenset(sizes)),
            (f"{name}: behind an IOMMU (pages {text}): any pages, no contiguity needed",),
        )
    device = system.device(name)
    if not isinstance(device, PhysicalDevice):  # direct DMA ops serve only these
        raise InvalidArgumentError(f"participant {name!r} is neither IOMMU nor direct")
    mask = api.params(name).mask
    reachable = frozenset(
        target
        for target, memory in system.targets.items()
        if reaches(device, mask, tuple(memory.regions))
    )
    reason = (
        f"{name}: no IOMMU, so one physical chunk per buffer, in targets its "
        f"dma-ranges reach below DMA mask {mask:#x}: {', '.join(sorted(reachable)) or 'none'}"
    )
    return Facts(name, "direct", Constraints(contiguous=True, targets=reachable), (reason,))


def check_participant(system: VcmmApi, name: object) -> str:
    """A participant is ``"cpu"`` or a bus master of the system (not the CPU object)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError(f"participant {name!r} must be a device name or 'cpu'")
    if name != CPU:
        system.device(name)  # NotFoundError naming the known devices
    return name
