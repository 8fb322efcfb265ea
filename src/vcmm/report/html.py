"""One static HTML page per scenario run: tables, plots, the mapping graph, the tables.

The page is self-describing and has no scripts or external assets: images sit next to
it in the output folder (PNG for the plots, SVG for the graph when graphviz is
installed, else the DOT text is shown), so the folder can be archived or served as is.
"""

from __future__ import annotations

import html
from pathlib import Path

from vcmm.core.export import graph_data
from vcmm.report.graph import render_svg, to_dot, to_text
from vcmm.report.pagetables import bank_view, device_tables, render_dump
from vcmm.report.plots import plot_frames, plot_policies
from vcmm.report.tables import Table, fmt_chunks, result_tables
from vcmm.system import System
from vcmm.workload.runner import ScenarioResult

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }
caption { text-align: left; font-weight: bold; padding: 0.3em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; font-size: 0.8em; }
img { max-width: 100%; } .note { color: #555; font-size: 0.85em; }
"""


def _section(title: str, body: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n{body}\n"


def _graph_html(result: ScenarioResult, system: System, out: Path) -> str:
    """The mapping graph (buffers named): SVG when graphviz draws it, else DOT text;
    ``graph.dot`` is written either way."""
    data = graph_data(system.vcmm, chunks=False)
    dot = to_dot(data, result.scenario, result.labels)
    (out / "graph.dot").write_text(dot, encoding="utf-8")
    if render_svg(dot, out / "graph.svg"):
        graph_html = '<p><img src="graph.svg" alt="mapping graph"></p>'
    else:
        graph_html = (
            '<p class="note">graphviz is not installed, so the graph is shown as DOT text '
            "(graph.dot); render it with <code>dot -Tsvg graph.dot</code>.</p>"
            f"<pre>{html.escape(dot)}</pre>"
        )
    return graph_html + f"<pre>{html.escape(to_text(data, result.labels))}</pre>"


def write_report(
    result: ScenarioResult,
    out_dir: str | Path,
    *,
    policies: dict[str, ScenarioResult] | None = None,
    description: str = "",
) -> Path:
    """Write ``index.html`` and its images into ``out_dir``; returns the page's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>vcmm report: {html.escape(result.scenario)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>vcmm report: {html.escape(result.scenario)}</h1>",
    ]
    params = ", ".join(f"{k}={v}" for k, v in result.params.items())
    summary = (
        f"Platform <b>{html.escape(result.platform)}</b>, source <code>{html.escape(result.source)}</code>, "
        f"{result.burst}-byte bursts{', ' + html.escape(params) if params else ''}; "
        f"run took {result.elapsed:.2f} s."
    )
    parts.append(
        f"<p>{html.escape(description)}</p><p>{summary}</p>" if description else f"<p>{summary}</p>"
    )
    parts.append(_section("Results", "\n".join(t.to_html() for t in result_tables(result))))

    plot_frames(result, out / "frames")
    figures = ['<p><img src="frames.png" alt="IOTLB misses per frame"></p>']
    if policies:
        plot_policies(policies, out / "policies", title=result.scenario)
        figures.append('<p><img src="policies.png" alt="IOTLB misses by block policy"></p>')
        table = Table(
            "The same scenario under each block policy",
            ["policy", "chunks", "lookups", "misses", "miss rate", "walk reads", "pt bytes"],
        )
        for policy, r in policies.items():
            tot = r.totals()
            table.add(
                [
                    policy,
                    "; ".join(fmt_chunks(b.chunks) for b in r.buffers),
                    tot["lookups"],
                    tot["misses"],
                    tot["miss_rate"],
                    tot["walk_reads"],
                    tot["table_bytes"],
                ]
            )
        figures.append(table.to_html())
    parts.append(_section("Plots", "\n".join(figures)))

    system = result.system
    if system is not None:
        parts.append(_section("Mapping graph", _graph_html(result, system, out)))
        dumps = []
        for dev in result.devices:
            if dev.context is None:
                continue
            text = render_dump(dev.name, device_tables(system, dev.name))
            view = bank_view(system, dev.name)
            if view is not None:
                text += "\n" + view.describe()
            dumps.append(
                f"<details><summary>{html.escape(dev.name)} ({html.escape(dev.context)})</summary>"
                f"<pre>{html.escape(text)}</pre></details>"
            )
        if dumps:
            parts.append(_section("Page tables (decoded from simulated memory)", "\n".join(dumps)))
    parts.append("</body></html>")
    page = out / "index.html"
    page.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return page
