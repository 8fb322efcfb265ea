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
from typing import TYPE_CHECKING, Any

from vcmm.errors import InvalidArgumentError
from vcmm.workload.runner import ScenarioResult
from vcmm.workload.scenario_keys import POLICY_ORDER

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Extensions every plot is written with.
FORMATS = ("png", "svg")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, base: Path) -> list[Path]:
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


#: Marker, line style and marker size of successive series: series that coincide
#: stay visible (shrinking markers inside bigger ones, different dashes).
STYLES = (
    ("o", "-", 10),
    ("s", "--", 8),
    ("^", ":", 7),
    ("D", "-.", 6),
    ("v", (0, (5, 1)), 5),
    ("P", (0, (1, 1)), 5),
    ("X", (0, (3, 1, 1, 1)), 4),
    ("*", "-", 4),
)


def style(index: int) -> dict[str, Any]:
    """Matplotlib keywords of series ``index``: marker, dashes and size all differ."""
    marker, line, size = STYLES[index % len(STYLES)]
    return {"marker": marker, "linestyle": line, "markersize": size}


def dodge(index: int, count: int, width: float = 0.5) -> float:
    """Horizontal offset of series ``index`` of ``count`` around a category, so
    points of equal value sit side by side instead of on top of each other."""
    if count <= 1:
        return 0.0
    return (index - (count - 1) / 2) * width / count


def is_categorical(values: Sequence[object]) -> bool:
    """Policies, patterns, replacement policies: names, not quantities."""
    return not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _numeric_axis(ax: Axes, xs: Sequence[object]) -> None:
    """Ticks exactly at the swept values; a log2 scale when they are spread powers of two."""
    values = [float(x) for x in xs]  # type: ignore[arg-type]
    powers = all(v > 0 and float(v).is_integer() and int(v) & (int(v) - 1) == 0 for v in values)
    if powers and len(values) > 2 and max(values) / min(values) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(values)
    ax.set_xticklabels([str(x) for x in xs])
    ax.minorticks_off()


def _y_scale(ax: Axes, ys: Sequence[float]) -> None:
    """Log scale only when the values span more than a decade (then it shows all of
    them); otherwise linear from zero, with plain ticks."""
    positive = [y for y in ys if y == y and y > 0]
    if (
        positive
        and len(positive) == len([y for y in ys if y == y])
        and max(positive) / min(positive) > 10
    ):
        ax.set_yscale("log")
        return
    ax.set_ylim(bottom=0, top=max([y for y in ys if y == y] or [1.0]) * 1.15 or 1.0)


def plot_sweep(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    base: str | Path,
    *,
    metric: str = "miss_rate",
    title: str = "",
) -> list[Path]:
    """Draw :func:`sweep_figure` into ``base``.png and ``base``.svg."""
    return _save(sweep_figure(rows, keys, metric=metric, title=title), Path(base))


def sweep_figure(
    rows: Sequence[dict[str, Any]],
    keys: Sequence[str],
    *,
    metric: str = "miss_rate",
    title: str = "",
) -> Figure:
    """Miss rate (or ``metric``) against the block policy, one series per TLB size.

    ``rows`` are the sweep's whole-run rows (``context == "all"``), ``keys`` the grid's
    parameter names, ``title`` the scenario's name.  The x axis is ``policy`` when it
    varies (else the first key), the series ``tlb_entries`` when it varies (else the
    next key); every other varying key gets its own panel.  A categorical x (policy,
    pattern, replacement) gets points side by side per category, not lines between
    categories; a numeric x gets lines and ticks at the swept values.  Series that
    coincide stay visible (markers, dashes, offsets differ).  Failed points (an
    ``error`` cell) are left out.
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
    categorical = is_categorical(xs)
    cols = min(len(facets), 3)
    nrows = -(-len(facets) // cols)
    fig = _figure(4.2 * cols + 0.8, 3.4 * nrows + 0.8)
    axes = fig.subplots(nrows, cols, squeeze=False)
    label = metric.replace("_", " ")
    for index, facet in enumerate(facets):
        ax = axes[index // cols][index % cols]
        chosen = [r for r in good if all(r[k] == v for k, v in zip(facet_keys, facet, strict=True))]
        drawn: list[float] = []
        for n, line in enumerate(lines):
            points = [r for r in chosen if line_key is None or r[line_key] == line]
            ys = []
            for x in xs:
                match = [float(r[metric]) for r in points if r[x_key] == x]
                ys.append(match[0] if match else float("nan"))
            drawn += ys
            kw = style(n) | {"label": f"{line_key}={line}" if line_key else label}
            if categorical:
                at = [i + dodge(n, len(lines)) for i in range(len(xs))]
                ax.plot(at, ys, **(kw | {"linestyle": "none"}))
            else:
                ax.plot([float(x) for x in xs], ys, **kw)  # type: ignore[arg-type]
        if categorical:
            ax.set_xticks(range(len(xs)))
            ax.set_xticklabels([str(x) for x in xs])
            ax.set_xlim(-0.6, len(xs) - 0.4)
        else:
            _numeric_axis(ax, xs)
        _y_scale(ax, drawn)
        ax.set_xlabel(x_key)
        ax.set_ylabel(label)
        facet_title = ", ".join(f"{k}={v}" for k, v in zip(facet_keys, facet, strict=True))
        if facet_title or not title:
            ax.set_title(facet_title or f"{label} by {x_key}", fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    for index in range(len(facets), nrows * cols):
        axes[index // cols][index % cols].set_visible(False)
    if title:
        fig.suptitle(f"{title}: {label} by {x_key}", fontsize=11)
    return fig


def plot_frames(result: ScenarioResult, base: str | Path) -> list[Path]:
    """Draw :func:`frames_figure` into ``base``.png and ``base``.svg."""
    return _save(frames_figure(result), Path(base))


def frames_figure(result: ScenarioResult) -> Figure:
    """IOTLB misses per frame, one series per step (physically addressed steps
    skipped).  Steps often miss exactly alike: each series has its own marker, dashes
    and a small sideways offset, and its legend entry says which step it repeats."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.4, 3.8)
    ax = fig.subplots()
    series = [
        (step, [int(f.misses) for f in step.frames if f.misses is not None])
        for step in result.steps
        if step.frames and all(f.misses is not None for f in step.frames)
    ]
    for n, (step, misses) in enumerate(series):
        where = step.buffer if step.plane == "all" else f"{step.buffer}.{step.plane}"
        label = f"{step.index}: {step.device} {step.access}s {where} ({step.pattern})"
        same = [other.index for other, m in series[:n] if m == misses]
        if same:
            label += f", same as {same[0]}"
        at = [i + dodge(n, len(series), 0.3) for i in range(len(misses))]
        ax.plot(at, misses, label=label, **style(n))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if not series:
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
    ax.set_ylim(bottom=0, top=max([max(m) for _, m in series if m] or [1]) * 1.15 or 1)
    ax.set_title(f"{result.scenario}: IOTLB misses per frame", fontsize=10)
    ax.grid(True, alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    return fig


def plot_policies(
    results: dict[str, ScenarioResult], base: str | Path, *, title: str = ""
) -> list[Path]:
    """IOTLB misses per context for each allocation policy (grouped bars, log scale);
    ``title`` is the scenario's name."""
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
    ax.set_title(f"{title + ': ' if title else ''}IOTLB misses by block policy", fontsize=10)
    ax.set_axisbelow(True)
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if contexts:
        ax.legend(fontsize=8)
    return _save(fig, Path(base))
