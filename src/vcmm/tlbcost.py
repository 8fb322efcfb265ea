"""IOTLB invalidation as values: the two modes Linux offers and what a command costs.

Linux's DMA layer invalidates an IOMMU's TLB in one of two ways (``iommu.strict``):

- ``"strict"`` (arm64's default): every unmap invalidates what it unmapped before it
  returns, one invalidate-by-address command per page or block removed, then a sync
  that waits for them to complete;
- ``"lazy"`` (``iommu.strict=0``): the unmap clears the page-table entries at once
  but queues the IOVA in a flush queue; a full queue or a 10 ms timer invalidates the
  whole domain with one command and one sync, and only then can the queued IOVAs be
  handed out again.

:class:`InvalidationCost` prices the commands, per SMMU (the platform file's
``[smmus.invalidation]``).  The defaults are illustrative orders of magnitude, not a
datasheet's figures: a command is a register write (SMMUv2 TLBIVA/TLBIASID) or a
queued command (SMMUv3) of a few tens of cycles, a sync waits for the walkers and
TLBs of the whole SMMU and costs hundreds; set them from your SoC's measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError

STRICT: Final = "strict"
LAZY: Final = "lazy"
#: The invalidation modes, default first.
INVALIDATION_MODES: Final = (STRICT, LAZY)
DEFAULT_INVALIDATION: Final = STRICT

#: Default cost of one invalidation command, in SMMU clock cycles.
DEFAULT_COMMAND_CYCLES: Final = 40
#: Default cost of one sync (wait for every command issued before it to complete).
DEFAULT_SYNC_CYCLES: Final = 600
#: Default clock the cycles are counted in, in Hz.
DEFAULT_CLOCK_HZ: Final = 400_000_000


def check_mode(mode: object, what: str = "invalidation") -> str:
    """``mode`` if it is one of :data:`INVALIDATION_MODES`; ``what`` names it in errors."""
    if not isinstance(mode, str) or mode not in INVALIDATION_MODES:
        raise InvalidArgumentError(f"{what} {mode!r} is not one of {', '.join(INVALIDATION_MODES)}")
    return mode


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidationCost:
    """Cycles per invalidation command and per sync, and the clock they run at."""

    command_cycles: int = DEFAULT_COMMAND_CYCLES
    sync_cycles: int = DEFAULT_SYNC_CYCLES
    clock_hz: int = DEFAULT_CLOCK_HZ

    def __post_init__(self) -> None:
        for name, minimum in (("command_cycles", 0), ("sync_cycles", 0), ("clock_hz", 1)):
            value = getattr(self, name)
            if not is_int(value) or value < minimum:
                raise InvalidArgumentError(
                    f"InvalidationCost: {name} {value!r} must be an integer >= {minimum}"
                )

    def cycles(self, commands: int, syncs: int) -> int:
        """Cycles ``commands`` commands and ``syncs`` syncs take."""
        return commands * self.command_cycles + syncs * self.sync_cycles

    def nanoseconds(self, commands: int, syncs: int) -> float:
        """The same, in nanoseconds at :attr:`clock_hz`."""
        return self.cycles(commands, syncs) * 1e9 / self.clock_hz
