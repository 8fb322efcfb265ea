"""Workloads: access patterns, scenario files, running them, and sweeps.

- :mod:`vcmm.workload.patterns`: address streams (linear, raster, tiled, random) over
  buffers and frame formats such as ``1920x1080 nv12``.
- :mod:`vcmm.workload.scenario`: scenario files (TOML) naming a platform, buffers and
  pipeline steps, validated with file/key/problem errors.
- :mod:`vcmm.workload.runner`: sets a scenario up through the VCMM calls and drives its
  streams through the real translation path; results come from hardware counters.
- :mod:`vcmm.workload.sweep`: the same scenario over a grid of parameters, on the
  executors of :mod:`vcmm.workload.executors` (worker processes, a Dask cluster),
  longest first (:mod:`vcmm.workload.cost`), resumable (:mod:`vcmm.workload.resume`).
"""

from vcmm.workload.patterns import (
    DEFAULT_BURST,
    PATTERNS,
    FrameFormat,
    Plane,
    cover,
    distinct_pages,
    linear,
    random_bursts,
    raster,
    repeat_frames,
    tiled,
)
from vcmm.workload.runner import ScenarioResult, ScenarioRunner, run_scenario
from vcmm.workload.scenario import (
    POLICIES,
    BufferSpec,
    Scenario,
    ScenarioError,
    StepSpec,
    load_scenario,
    loads_scenario,
    packaged_scenarios,
)
from vcmm.workload.sweep import (
    SweepPlan,
    SweepResult,
    parse_grid,
    plan_sweep,
    run_plan,
    run_sweep,
    write_sweep,
)

__all__ = [
    "DEFAULT_BURST",
    "PATTERNS",
    "POLICIES",
    "BufferSpec",
    "FrameFormat",
    "Plane",
    "Scenario",
    "ScenarioError",
    "ScenarioResult",
    "ScenarioRunner",
    "StepSpec",
    "SweepPlan",
    "SweepResult",
    "cover",
    "distinct_pages",
    "linear",
    "load_scenario",
    "loads_scenario",
    "packaged_scenarios",
    "parse_grid",
    "plan_sweep",
    "random_bursts",
    "raster",
    "repeat_frames",
    "run_plan",
    "run_scenario",
    "run_sweep",
    "tiled",
    "write_sweep",
]
