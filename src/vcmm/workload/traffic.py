"""Network-like DMA traffic: packets mapped, moved and unmapped through the DMA API.

A scenario's ``[[traffic]]`` flows model what a network driver does to its IOMMU:
every packet buffer is ``map_page``d, the device reads it (transmit) or writes it
(receive) in 64-byte bursts, and the buffer is unmapped once ``ring`` newer packets
were posted (the descriptor ring's depth), so the DMA API sees a steady stream of
small map/unmap pairs, the workload that makes IOTLB invalidation expensive.  The
flows run concurrently on the DMA API's simulated clock, each posting a packet every
``gap_ns``; that clock is what drives lazy invalidation's 10 ms timer.

``stray_every = n`` makes every n-th reclaimed buffer a late completion: the device
reads it once more just before the driver unmaps it (so its IOTLB holds the
translation) and again just after (a device finishing a descriptor the driver already
reclaimed).  Strict invalidation faults the second read (counted, not logged: the
flow's result says how many), lazy invalidation lets it through while the IOVA waits
in the flush queue, and the DMA-debug checker (on, in warn mode, when strays are asked
for) reports it.  The result counts both, and each domain's invalidation counters
(:class:`~vcmm.dma.invalidation.InvalidationStats`) give commands, syncs and the
modelled time spent invalidating.
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from vcmm.attrs import Access
from vcmm.core.flags import PhysAttr
from vcmm.dma import DmaApi, ReportKind
from vcmm.errors import DeviceFaultError, InvalidArgumentError
from vcmm.hw.bus import SmmuDevice
from vcmm.sizes import SZ_4K, align_up
from vcmm.workload.traffic_spec import TrafficSpec

if TYPE_CHECKING:
    from vcmm.system import System

#: Burst size of the device's packet accesses.
PACKET_BURST: Final = 64


@dataclass
class TrafficResult:
    """What one flow did."""

    device: str
    domain: str
    direction: str
    packets: int
    packet_size: int
    ring: int
    #: Late device reads after unmap, and how they ended.
    strays: int = 0
    stray_faults: int = 0
    stray_stale: int = 0


@dataclass
class InvalidationResult:
    """One domain's IOTLB invalidation over the run (its counters at the end)."""

    domain: str
    mode: str
    unmaps: int
    commands: int
    syncs: int
    cycles: int
    time_ns: float
    peak_held: int
    flushes: dict[str, int]
    #: Simulated time the run took, and the share of it spent invalidating.
    simulated_ns: int
    share: float


class _Flow:
    """A flow's buffers and the mappings in flight."""

    def __init__(self, system: System, dma: DmaApi, spec: TrafficSpec) -> None:
        self.spec = spec
        device = system.device(spec.device)
        domain = dma.domain(spec.device)
        if domain is None or not isinstance(device, SmmuDevice):
            raise InvalidArgumentError(
                f"traffic device {spec.device!r} is not behind an IOMMU; a flow needs one"
            )
        self.device = device
        self.result = TrafficResult(
            spec.device, domain.name, spec.direction, 0, spec.packet_size, spec.ring
        )
        size = align_up(spec.packet_size, SZ_4K)
        kernel = system.memory_roles.kernel
        self.buffers = [
            int(system.vcm_phys_alloc(kernel, size, PhysAttr.CONTIGUOUS).chunk_ranges[0].start)
            for _ in range(spec.ring + 1)
        ]
        self.in_flight: deque[int] = deque()
        self.bursts = np.arange(0, spec.packet_size, PACKET_BURST, dtype=np.uint64)

    def packet(self, dma: DmaApi, n: int) -> None:
        """Post packet ``n``: map, move, and reclaim the oldest beyond the ring."""
        spec, direction = self.spec, self.spec.dma_direction
        pa = self.buffers[n % len(self.buffers)]
        handle = dma.map_page(spec.device, pa, 0, spec.packet_size, direction)
        if dma.mapping_error(spec.device, handle):
            raise InvalidArgumentError(
                f"traffic on {spec.device!r}: map_page failed at packet {n}: {dma.last_error}"
            )
        access = Access.WRITE if spec.direction == "rx" else Access.READ
        self.device.access_batch(self.bursts + np.uint64(handle), access, PACKET_BURST)
        self.in_flight.append(handle)
        self.result.packets += 1
        if len(self.in_flight) > spec.ring:
            self.reclaim(dma, stray=bool(spec.stray_every) and n % spec.stray_every == 0)

    def reclaim(self, dma: DmaApi, *, stray: bool) -> None:
        spec = self.spec
        handle = self.in_flight.popleft()
        if stray:
            self.device.read(handle, PACKET_BURST)  # the late completion, still mapped
        dma.unmap_page(spec.device, handle, spec.packet_size, spec.dma_direction)
        if not stray:
            return
        self.result.strays += 1
        checker = dma.checker
        smmu_log = logging.getLogger("vcmm.hw.smmu")
        quiet = smmu_log.disabled
        smmu_log.disabled = True  # the fault is counted in the result instead
        try:
            self.device.read(handle, PACKET_BURST)
        except DeviceFaultError:
            self.result.stray_faults += 1
        finally:
            smmu_log.disabled = quiet
        if checker is not None:
            stale = checker.take(ReportKind.DEVICE_ACCESS_STALE_IOTLB)
            self.result.stray_stale += len(stale)
            checker.take()

    def drain(self, dma: DmaApi) -> None:
        while self.in_flight:
            self.reclaim(dma, stray=False)


def run_traffic(system: System, flows: tuple[TrafficSpec, ...]) -> list[TrafficResult]:
    """Run ``flows`` concurrently on ``system``'s DMA API (created if it has none): each
    posts a packet every ``gap_ns`` of simulated time, the earliest due first (ties in
    file order), the clock advanced to each packet's time; every buffer is unmapped at
    the end and the flush queues are left to the clock."""
    dma = DmaApi.of(system)
    if any(f.stray_every for f in flows) and dma.checker is None:
        dma.enable_debug("warn")
    running = [_Flow(system, dma, spec) for spec in flows]
    start = dma.clock.now
    due = [(start, index, 0) for index in range(len(running))]
    heapq.heapify(due)
    while due:
        when, index, n = heapq.heappop(due)
        dma.advance(when - dma.clock.now)
        flow = running[index]
        flow.packet(dma, n)
        if n + 1 < flow.spec.packets:
            heapq.heappush(due, (when + flow.spec.gap_ns, index, n + 1))
    for flow in running:
        flow.drain(dma)
    return [flow.result for flow in running]


def invalidation_results(system: System) -> list[InvalidationResult]:
    """Each DMA domain's invalidation counters (none when no DMA API was used)."""
    dma = DmaApi.current(system)
    if dma is None:
        return []
    now = dma.clock.now
    out = []
    for name, stats in dma.invalidation_stats().items():
        if not stats.unmaps:
            continue
        out.append(
            InvalidationResult(
                domain=name,
                mode=stats.mode,
                unmaps=stats.unmaps,
                commands=stats.commands,
                syncs=stats.syncs,
                cycles=stats.cycles,
                time_ns=stats.time_ns,
                peak_held=stats.peak_held,
                flushes=dict(stats.flushes),
                simulated_ns=now,
                share=stats.time_ns / now if now else 0.0,
            )
        )
    return out
