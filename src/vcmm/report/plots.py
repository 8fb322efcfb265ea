"""Plots of sweeps and runs, drawn with matplotlib's Agg canvas (no display needed).

Figures are built with :class:`matplotlib.figure.Figure` and an explicit Agg canvas
rather than ``pyplot``, so plotting keeps no global state and works the same in worker
processes, tests and headless CI.  Every plot is written as PNG (for the HTML page and
quick looks) and SVG (for papers and zooming).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vcmm.errors import InvalidArgumentError
from vcmm.workload.runner import ScenarioResult
from vcmm.workload.scenario import POLICY_ORDER

#: Extensions every plot is written with.
FORMATS = ("png", "svg")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, base: Path) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in FORMATS:
        path = base.with_suffix(f".{ext}")
        fig.savefig(path, format=ext)
        paths.append(path)
    return paths


def _ordered(values: Sequence[object]) -> list[object]:
    """Grid values in a meaningful order: policies by block size, numbers ascending."""
    unique = list(dict.fromkeys(values))
    if all(v in POLICY_ORDER for v in unique):
        return sorted(unique, key=lambda v: POLICY_ORDER.index(str(v)))
    if all(isinstance(v, int | float) for v in unique):
        return sorted(unique, key=lambda v: float(v))  # type: ignore[arg-type]
    return unique


def plot_sweep(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    base: str | Path,
    *,
    metric: str = "miss_rate",
) -> list[Path]:
    """Miss rate (or ``metric``) against the block policy, one line per TLB size.

    ``rows`` are the sweep's whole-run rows (``context == "all"``), ``keys`` the grid's
    parameter names.  The x axis is ``policy`` when it varies (else the first key), the
    lines ``tlb_entries`` when it varies (else the next key); every other varying key
    gets its own panel.  Failed points (an ``error`` cell) are left out.
    """
    if not keys:
        raise InvalidArgumentError("plot_sweep needs at least one grid key")
    good = [r for r in rows if not r.get("error")]
    if not good:
        raise InvalidArgumentError("plot_sweep: every point of the sweep failed; nothing to plot")
    x_key = "policy" if "policy" in keys else keys[0]
    rest = [k for k in keys if k != x_key]
    line_key = "tlb_entries" if "tlb_entries" in rest else (rest[0] if rest else None)
    facet_keys = [k for k in rest if k != line_key]
    xs = _ordered([r[x_key] for r in good])
    lines = _ordered([r[line_key] for r in good]) if line_key else [None]
    facets = list(itertools.product(*[_ordered([r[k] for r in good]) for k in facet_keys])) or [()]
    cols = min(len(facets), 3)
    nrows = -(-len(facets) // cols)
    fig = _figure(4.2 * cols + 0.8, 3.4 * nrows + 0.4)
    axes = fig.subplots(nrows, cols, squeeze=False)
    positive = all(float(r[metric]) > 0 for r in good)
    for index, facet in enumerate(facets):
        ax = axes[index // cols][index % cols]
        chosen = [r for r in good if all(r[k] == v for k, v in zip(facet_keys, facet, strict=True))]
        for line in lines:
            points = [r for r in chosen if line_key is None or r[line_key] == line]
            ys = []
            for x in xs:
                match = [float(r[metric]) for r in points if r[x_key] == x]
                ys.append(match[0] if match else float("nan"))
            label = f"{line_key}={line}" if line_key else metric
            ax.plot([str(x) for x in xs], ys, marker="o", label=label)
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel(x_key)
        ax.set_ylabel(metric.replace("_", " "))
        title = ", ".join(f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True))
        ax.set_title(title or f"{metric.replace('_', ' ')} by {x_key}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    for index in range(len(facets), nrows * cols):
        axes[index // cols][index % cols].set_visible(False)
    return _save(fig, Path(base))


def plot_frames(result: ScenarioResult, base: str | Path) -> list[Path]:
    """IOTLB misses per frame, one line per step (physically addressed steps skipped)."""
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    from matplotlib.ticker import MaxNLocator

    drawn = 0
    styles = [("o", "-", 9), ("s", "--", 7), ("^", ":", 5), ("D", "-.", 4)]
    for step in result.steps:
        misses = [f.misses for f in step.frames]
        if not misses or any(m is None for m in misses):
            continue
        # Steps often miss exactly alike: decreasing marker sizes keep overlaps visible.
        marker, line, size = styles[drawn % len(styles)]
        ax.plot(
            range(len(misses)),
            misses,
            marker=marker,
            linestyle=line,
            markersize=size,
            label=f"{step.index}: {step.device} {step.access}s {step.buffer}",
        )
        drawn += 1
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not drawn:
        ax.text(
            0.5,
            0.5,
            "no step runs behind an SMMU",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("frame")
    ax.set_ylabel("IOTLB misses")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{result.scenario}: misses per frame", fontsize=10)
    ax.grid(True, alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    return _save(fig, Path(base))


def plot_policies(results: dict[str, ScenarioResult], base: str | Path) -> list[Path]:
    """IOTLB misses per context for each allocation policy (grouped bars, log scale)."""
    if not results:
        raise InvalidArgumentError("plot_policies needs at least one result")
    policies = _ordered(list(results))
    contexts = list(dict.fromkeys(c.name for r in results.values() for c in r.contexts))
    fig = _figure(6.4, 3.6)
    ax = fig.subplots()
    width = 0.8 / max(len(contexts), 1)
    for j, ctx in enumerate(contexts):
        ys = []
        for p in policies:
            found = [c.tlb["misses"] for c in results[str(p)].contexts if c.name == ctx]
            ys.append(found[0] if found else 0)
        ax.bar([i + j * width for i in range(len(policies))], ys, width=width, label=ctx)
    ax.set_xticks([i + width * (len(contexts) - 1) / 2 for i in range(len(policies))])
    ax.set_xticklabels([str(p) for p in policies])
    if all(c.tlb["misses"] > 0 for r in results.values() for c in r.contexts):
        ax.set_yscale("log")
    ax.set_xlabel("allocation policy")
    ax.set_ylabel("IOTLB misses (whole run)")
    ax.set_title("misses by block policy", fontsize=10)
    ax.set_axisbelow(True)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if contexts:
        ax.legend(fontsize=8)
    return _save(fig, Path(base))
