"""Plots a person can read: every series visible, categories as categories, titles
that name the scenario, ticks at the values that were swept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vcmm.report.plots import frames_figure, sweep_figure
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import load_scenario

POLICIES = ["4k", "64k", "1m", "largest"]


def _rows(**grid: list[Any]) -> list[dict[str, Any]]:
    """Whole-run rows whose miss rate depends on the policy only (every TLB size the
    same): the case where one series hid the others."""
    out = []
    for policy in grid.get("policy", ["4k"]):
        for entries in grid.get("tlb_entries", [64]):
            rate = 0.5 / (1 + POLICIES.index(policy))
            out.append({"policy": policy, "tlb_entries": entries, "miss_rate": rate, "error": ""})
    return out


def test_identical_series_over_policies_are_separate_points_not_lines() -> None:
    fig = sweep_figure(
        _rows(policy=POLICIES, tlb_entries=[16, 64, 256]),
        ["policy", "tlb_entries"],
        title="video_1080p",
    )
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    # Categories are not joined by lines ...
    assert all(line.get_linestyle() == "None" for line in lines)
    assert [t.get_text() for t in ax.get_xticklabels()] == POLICIES
    # ... and equal values sit side by side, each series with its own marker.
    for category in range(len(POLICIES)):
        xs = [line.get_xdata()[category] for line in lines]
        ys = [line.get_ydata()[category] for line in lines]
        assert len(set(ys)) == 1 and len(set(xs)) == 3
        assert all(abs(x - category) < 0.5 for x in xs)
    assert len({line.get_marker() for line in lines}) == 3
    assert "video_1080p" in fig.get_suptitle()


def test_a_one_key_numeric_sweep_has_ticks_at_the_values_and_a_plain_scale() -> None:
    rows = [{"ways": w, "miss_rate": 2.0e-5, "error": ""} for w in (1, 2, 4)]
    fig = sweep_figure(rows, ["ways"], title="video_1080p")
    (ax,) = fig.axes
    assert list(ax.get_xticks()) == [1, 2, 4]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    # One value cannot span decades: a log axis would only show meaningless ticks.
    assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
    (line,) = ax.get_lines()
    assert list(line.get_xdata()) == [1, 2, 4] and line.get_linestyle() != "None"


def test_steps_that_miss_alike_are_both_visible_and_say_so(tiny: Path) -> None:
    # Both steps raster over the 12 pages of the frame, 8 TLB entries: 12 misses each.
    scenario = load_scenario(tiny).with_params(pattern="raster", frames=3, tlb_entries=8)
    result = run_scenario(scenario)
    assert [s.misses_per_frame for s in result.steps] == [[12, 12, 12], [12, 12, 12]]
    fig = frames_figure(result)
    (ax,) = fig.axes
    first, second = ax.get_lines()
    assert list(first.get_ydata()) == list(second.get_ydata())
    assert all(a != b for a, b in zip(first.get_xdata(), second.get_xdata(), strict=True))
    assert first.get_marker() != second.get_marker()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "0: vcodec_a_mm1 writes frame (raster)"
    assert labels[1] == "1: mdp reads frame (raster), same as 0"
    assert ax.get_title().startswith("tiny: ")
