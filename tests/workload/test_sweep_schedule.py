"""How a sweep hands out its points: longest first, seeded per point, failures kept.

These run in this process (or behind a recording executor); the Dask tests check the
same contracts on a real cluster.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import vcmm.workload.sweep as sweep_module
from vcmm.errors import InvalidArgumentError
from vcmm.hw.engine import use_engine
from vcmm.workload.cost import WALK_WEIGHT, estimate_cost
from vcmm.workload.executors import ExecutorError, make_executor, parse_executor
from vcmm.workload.scenario import ScenarioError, loads_scenario
from vcmm.workload.sweep import (
    grid_points,
    parse_grid,
    plan_sweep,
    point_seed,
    run_point,
    run_sweep,
    seeded,
)

# -- longest first -----------------------------------------------------------------------


def test_points_are_submitted_longest_first_and_rows_come_back_in_grid_order(
    make_linear: Callable[..., str], recorder: Any
) -> None:
    sc = loads_scenario(make_linear("256K", "4k"))
    grid = parse_grid(["frames=1,8,2", "policy=64k,4k"])
    result = run_sweep(sc, grid, executor=recorder)
    points = grid_points(grid)
    costs = [estimate_cost(sc.with_params(**p)) for p in points]
    # 4k pages cost more than 64k, more frames more than fewer: (8, 4k) first, (1, 64k) last.
    assert points[recorder.order[0]] == {"frames": 8, "policy": "4k"}
    assert points[recorder.order[-1]] == {"frames": 1, "policy": "64k"}
    assert [costs[i] for i in recorder.order] == sorted(costs, reverse=True)
    assert [(r["frames"], r["policy"]) for r in result.summary_rows] == [
        (p["frames"], p["policy"]) for p in points
    ]


def test_equal_estimates_keep_grid_order(make_linear: Callable[..., str]) -> None:
    # The TLB geometry does not change a 16-page scan that fits every TLB here.
    sc = loads_scenario(make_linear("64K", "4k"))
    plan = plan_sweep(sc, parse_grid(["tlb_entries=32,64,128"]))
    assert plan.order == [0, 1, 2]


def _translator_work(scenario: Any, params: dict[str, object], steps: Callable[[], int]) -> int:
    """What a point costs, measured: the batch translator's Python steps (counted on
    the reference engine, where each step is a call of ``Translator._step``) plus
    WALK_WEIGHT per page-table walk (the hardware counter)."""
    before = steps()
    with use_engine("python"):
        rows = run_point(scenario, params)
    return int(steps() - before + WALK_WEIGHT * rows[0]["walks"])


@pytest.mark.parametrize(
    ("size", "policy", "frames", "params"),
    [
        ("256K", "4k", 2, {}),
        ("1M", "4k", 2, {}),  # 256 pages thrash a 64-entry TLB: every frame walks
        ("1M", "4k", 8, {}),
        ("256K", "4k", 2, {"pattern": "random"}),  # 64 pages fit: the visits hit
        ("1M", "4k", 2, {"pattern": "random"}),  # a quarter of the visits hit
        ("1M", "4k", 2, {"pattern": "random", "tlb_entries": 512}),
        ("1M", "64k", 4, {"pattern": "random"}),
        ("frame", "4k", 2, {}),
        ("frame", "4k", 2, {"pattern": "tiled"}),
        ("frame", "4k", 4, {"pattern": "tiled", "tlb_entries": 8}),
        ("frame", "largest", 2, {"pattern": "random"}),
    ],
)
def test_the_estimate_follows_the_translators_measured_work(
    make_linear: Callable[..., str],
    make_frame: Callable[..., str],
    translator_steps: Callable[[], int],
    size: str,
    policy: str,
    frames: int,
    params: dict[str, object],
) -> None:
    """Page visits and walks as the model predicts them, against the counts of a real
    run (the fixed per-frame costs the model adds stay under 2000 units here)."""
    if size == "frame":  # a codec writes a 1024x512 NV12 frame, the display reads it
        text = make_frame("1024x512 nv12", policy, frames=frames)
    else:
        text = make_linear(size, policy, frames=frames)
    sc = loads_scenario(text)
    measured = _translator_work(sc, params, translator_steps)
    estimate = estimate_cost(sc.with_params(**params))
    assert 0.8 * measured <= estimate <= 1.25 * measured + 2000, (measured, estimate)


def test_the_estimate_counts_walks_when_the_pages_outgrow_the_tlb(
    make_linear: Callable[..., str],
) -> None:
    """One 4K-page linear step: 256 pages against a 64-entry TLB walk every page in each
    of the 3 frames; against a 512-entry TLB only in the first.  The visits are the same."""
    sc = loads_scenario(make_linear("1M", "4k", frames=3))
    small = estimate_cost(sc.with_params(tlb_entries=64))
    large = estimate_cost(sc.with_params(tlb_entries=512))
    assert small - large == 2 * 256 * WALK_WEIGHT


# -- seeds -----------------------------------------------------------------------------------


def test_a_point_seed_depends_on_its_parameters_only() -> None:
    a = point_seed({"policy": "4k", "ways": 4})
    assert a == point_seed({"ways": 4, "policy": "4k"})  # order of the keys does not matter
    assert a != point_seed({"policy": "4k", "ways": 2})
    assert a != point_seed({"policy": "64k", "ways": 4})


def test_seeded_draws_are_reproducible_and_leave_the_callers_state_alone() -> None:
    random.seed(123)
    np.random.seed(123)
    expected_py, expected_np = random.random(), np.random.random()
    random.seed(123)
    np.random.seed(123)
    with seeded(7):
        first = (random.random(), np.random.random())
    random.random()  # whatever ran before another point
    with seeded(7):
        again = (random.random(), np.random.random())
    assert first == again
    # Outside, the caller's generators continue as if nothing had drawn from them.
    random.seed(123)
    np.random.seed(123)
    with seeded(7):
        random.random()
    assert (random.random(), np.random.random()) == (expected_py, expected_np)


# -- failures ----------------------------------------------------------------------------


def test_a_point_that_raises_is_recorded_with_its_parameters_and_the_rest_run(
    make_linear: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    real = sweep_module.run_point

    def buggy(scenario: Any, params: dict[str, object]) -> list[dict[str, Any]]:
        if params["ways"] == 2:
            raise KeyError("no such way")
        return real(scenario, params)

    monkeypatch.setattr(sweep_module, "run_point", buggy)
    failures: list[dict[str, Any]] = []
    progressed: list[int] = []
    result = run_sweep(
        sc, parse_grid(["ways=1,2,4"]), on_failure=failures.append, progress=progressed.append
    )
    assert [r["ways"] for r in result.summary_rows] == [1, 2, 4]
    assert [r["ways"] for r in result.failed] == [2]
    assert result.failed[0]["error"] == "KeyError: 'no such way'"
    assert result.failed[0]["misses"] is None
    assert failures == result.failed and progressed == [1, 1, 1]


# -- choosing an executor ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", ("local", None)),
        ("dask", ("dask", None)),
        ("dask=tcp://127.0.0.1:8786", ("dask", "tcp://127.0.0.1:8786")),
        (" dask = 127.0.0.1:8786 ", ("dask", "127.0.0.1:8786")),
    ],
)
def test_executor_names_parse(spec: str, expected: tuple[str, str | None]) -> None:
    assert parse_executor(spec) == expected


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("dusk", "executor 'dusk' is not one of local, dask, dask=ADDRESS"),
        ("local=host:1", "is not one of local, dask, dask=ADDRESS"),
        ("dask=", "needs a scheduler address after 'dask='"),
        ("dask=tcp://a b", "needs a scheduler address"),
    ],
)
def test_bad_executor_names_fail_before_anything_runs(
    spec: str, needle: str, make_linear: Callable[..., str]
) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[int] = []
    with pytest.raises(InvalidArgumentError, match=needle):
        run_sweep(sc, parse_grid(["ways=1,4"]), executor=spec, progress=calls.append)
    assert calls == []


def test_jobs_cannot_be_given_to_a_scheduler_of_its_own(make_linear: Callable[..., str]) -> None:
    sc = loads_scenario(make_linear("64K", "4k"))
    with pytest.raises(InvalidArgumentError, match="jobs 2 cannot be given with executor"):
        run_sweep(sc, parse_grid(["ways=1,4"]), jobs=2, executor="dask=tcp://127.0.0.1:9")
    with pytest.raises(ScenarioError, match="jobs 0 must be an integer >= 1"):
        run_sweep(sc, parse_grid(["ways=1,4"]), jobs=0, executor="dask")


def test_without_dask_the_dask_executor_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, make_linear: Callable[..., str]
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    sc = loads_scenario(make_linear("64K", "4k"))
    calls: list[int] = []
    with pytest.raises(ExecutorError) as info:
        run_sweep(sc, parse_grid(["ways=1,4"]), executor="dask", progress=calls.append)
    assert str(info.value) == (
        "the dask executor needs Dask (dask.distributed), which is not installed: "
        "pip install 'vcmm[dask]'"
    )
    assert calls == []


def test_local_executors_are_in_process_for_one_job_or_one_point() -> None:
    assert make_executor(run_point, None, 5).workers == 1
    assert make_executor(run_point, 4, 1).workers == 1
    pool = make_executor(run_point, 4, 3)
    with pool:
        assert pool.workers == 3


def test_the_estimate_and_resume_refuse_what_they_cannot_use(
    make_linear: Callable[..., str],
) -> None:
    with pytest.raises(InvalidArgumentError, match="estimate_cost needs a Scenario, got str"):
        estimate_cost("video_1080p")  # type: ignore[arg-type]
    sc = loads_scenario(make_linear("64K", "4k"))
    with pytest.raises(ScenarioError, match=r"resume 3 must name a sweep\.csv"):
        plan_sweep(sc, parse_grid(["ways=1,4"]), resume=3)  # type: ignore[arg-type]
