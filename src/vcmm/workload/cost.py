"""How long a sweep point will take, estimated from its parameters before it runs.

A sweep schedules its points longest first, so a long point does not start last and
keep one worker busy while the others idle.  The estimate only has to rank points, so
it models what dominates a run: the batch translator (:mod:`vcmm.hw.translate`) takes
one Python step per *page visit* (a run of bursts inside one page: the hits of a run
are counted in bulk), a visit that misses the TLB also walks the page table, costing
about :data:`WALK_WEIGHT` visits (measured on ``video_1080p``: about 18 µs per walk
against 1.5 µs per visit that hits), and numpy handles the bursts themselves, about
:data:`BURSTS_PER_UNIT` to a visit.  Per step and frame:

- pages: the buffer in blocks of its policy's size (``largest``: the largest blocks
  first, as the allocator hands them out);
- page visits: ``linear`` and ``raster`` visit each page once; ``tiled`` visits each
  tile row, fewer when several rows share a page (stride below the page size);
  ``random`` visits a page per burst;
- walks: none when the step's pages fit its SMMU's TLB (after the first frame, which
  walks every page once); otherwise every page once per frame (an LRU TLB smaller than
  a scan never hits; a band of tiles fits), and for ``random`` the share of visits the
  TLB cannot hold, ``1 - entries / pages``;
- plus :data:`FRAME_WEIGHT` for the frame's fixed work, and a unit per 4 KiB moved
  when the step moves data.

Physically addressed devices translate nothing: only the fixed, burst and data costs
count.  The unit is one visit that hits; only the order of the estimates matters.
"""

from __future__ import annotations

from vcmm.errors import InvalidArgumentError
from vcmm.platform import PlatformSpec
from vcmm.sizes import SZ_4K, align_up
from vcmm.workload.patterns import Plane
from vcmm.workload.scenario import BufferSpec, Scenario, StepSpec
from vcmm.workload.scenario_keys import POLICIES

#: Cost of a page-table walk in visits that hit.
WALK_WEIGHT = 12
#: Bursts numpy generates and scans in the time of one visit.
BURSTS_PER_UNIT = 100
#: Fixed cost of one frame of one step (stream set-up, counters), in visits.
FRAME_WEIGHT = 20
_BLOCK_SIZES = sorted(size for sizes in POLICIES.values() if sizes for size in sizes)


def estimate_cost(scenario: Scenario) -> int:
    """Relative cost of running ``scenario`` (see the module notes); larger runs longer."""
    if not isinstance(scenario, Scenario):
        raise InvalidArgumentError(f"estimate_cost needs a Scenario, got {type(scenario).__name__}")
    platform = scenario.effective_platform()
    total = 0.0
    for step in scenario.steps:
        buf = scenario.step_buffer(step.buffer)
        planes = _planes(buf, step)
        span = sum(p.extent for p in planes)
        bursts = (
            step.count if step.pattern == "random" and step.count else _ceil(span, scenario.burst)
        )
        per_frame = FRAME_WEIGHT + bursts / BURSTS_PER_UNIT
        if step.data:
            per_frame += _ceil(span, SZ_4K)
        entries = _tlb_entries(platform, step.device)
        if entries is not None:
            pages = _pages(buf, span)
            visits, walks = _visits_and_walks(step, planes, span / pages, pages, bursts, entries)
            per_frame += visits + walks * WALK_WEIGHT
            total += max(0, pages - walks) * WALK_WEIGHT  # the first frame's walks
        total += step.frames * per_frame
    return round(total)


def _ceil(n: int, d: int) -> int:
    return -(-n // d)


def _planes(buf: BufferSpec, step: StepSpec) -> tuple[Plane, ...]:
    if step.plane == "all":
        return buf.planes
    return tuple(p for p in buf.planes if p.name == step.plane)


def _pages(buf: BufferSpec, span: int) -> int:
    """Pages mapping ``span`` bytes of ``buf``: blocks of the policy's size, or for
    ``largest`` the largest blocks first."""
    sizes = POLICIES[buf.policy]
    if sizes is not None:
        return _ceil(span, max(sizes))
    pages, left = 0, align_up(span, SZ_4K)
    for size in reversed(_BLOCK_SIZES):
        pages += left // size
        left %= size
    return pages


def _visits_and_walks(
    step: StepSpec,
    planes: tuple[Plane, ...],
    page: float,
    pages: int,
    bursts: int,
    entries: int,
) -> tuple[float, float]:
    """Page visits and walks of one frame after the first (see the module notes)."""
    if step.pattern == "random":
        return bursts, bursts * max(0.0, 1 - entries / pages)
    walks = pages if pages > entries else 0
    if step.pattern == "tiled":
        width = step.tile[0]
        rows = sum(_ceil(p.width, width) * p.rows * min(1.0, p.stride / page) for p in planes)
        return max(pages, rows), walks
    return pages, walks


def _tlb_entries(platform: PlatformSpec, device: str) -> int | None:
    """Entries of the TLB ``device`` translates through; None when it has no SMMU."""
    for spec in platform.devices:
        if spec.name == device and spec.smmu is not None:
            return platform.smmu(spec.smmu).tlb.entries
    return None
