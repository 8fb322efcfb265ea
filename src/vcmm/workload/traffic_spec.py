"""The ``[[traffic]]`` record of a scenario: one network-like flow through the DMA API.

Declared here, apart from :mod:`vcmm.workload.traffic` (which runs flows), so the
scenario reader can check a file without importing the DMA API's runner.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcmm.attrs import DmaDirection
from vcmm.platform.codecs import Integer, Size, Text
from vcmm.platform.fields import Invalid, check_fields, key, one_of
from vcmm.sizes import SZ_64K
from vcmm.workload.scenario_keys import ScenarioError

#: Directions of a flow: the device receives (writes) or transmits (reads) packets.
DIRECTIONS: Final = ("rx", "tx")
#: Packets per flow, and its ring depth, are bounded so a typo cannot run for hours.
MAX_PACKETS: Final = 1_000_000


def _traffic_limits(value: int) -> None:
    if value > MAX_PACKETS:
        raise Invalid(f"value {value} is above the maximum {MAX_PACKETS}")


def _packet_size(value: int) -> None:
    if not 1 <= value <= SZ_64K:
        raise Invalid(f"packet size {value:#x} must be in 1..64K")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficSpec:
    """A network-like flow through the DMA API (``[[traffic]]``; run by
    :mod:`vcmm.workload.traffic`): ``packets`` buffers of ``packet_size`` bytes mapped,
    moved by ``device`` (``rx``: it writes them, ``tx``: it reads them) and unmapped
    ``ring`` packets later, ``gap_ns`` of simulated time apart; every ``stray_every``-th
    unmapped buffer (0: none) takes one late device read."""

    device: str = field(metadata=key(Text()))
    direction: str = field(default="rx", metadata=key(Text(), one_of(DIRECTIONS)))
    packets: int = field(default=2000, metadata=key(Integer(minimum=1), _traffic_limits))
    packet_size: int = field(default=1536, metadata=key(Size(minimum=1), _packet_size))
    ring: int = field(default=64, metadata=key(Integer(minimum=1), _traffic_limits))
    gap_ns: int = field(default=2000, metadata=key(Integer()))
    stray_every: int = field(default=0, metadata=key(Integer()))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)

    @property
    def dma_direction(self) -> DmaDirection:
        return DmaDirection.FROM_DEVICE if self.direction == "rx" else DmaDirection.TO_DEVICE
