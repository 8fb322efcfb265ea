"""``vcmm graph [SCENARIO]``: the mapping graph as text, DOT, SVG or JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcmm.cli.common import run_with_progress
from vcmm.report.graph import build_graph, graph_json, render_svg, to_dot, to_text
from vcmm.system import System
from vcmm.workload.scenario import load_scenario

_FORMATS = ("text", "dot", "svg", "json")


def system_for(scenario: str | None) -> tuple[System, str]:
    """The end state of ``scenario``, or the demo's triple mapping when none is given."""
    if scenario is None:
        from vcmm.cli.demo import demo_topology

        return demo_topology(), "demo"
    sc = load_scenario(scenario)
    result = run_with_progress(sc)
    assert result.system is not None
    return result.system, sc.name


@click.command("graph")
@click.argument("scenario", required=False)
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(_FORMATS),
    default=None,
    help="Output format (default: from the -o extension, else text).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default=None,
    help="File to write (default: stdout; svg needs a file).",
)
def graph_command(scenario: str | None, fmt: str | None, output: str | None) -> None:
    """The mapping graph of SCENARIO's end state (or of the demo's triple mapping).

    Text, DOT and SVG show the compact graph: bus masters, VCMs, reservations,
    physical allocations and memory targets, backing edges labelled with the page
    sizes decoded from the tables in memory.  JSON is the core's full export
    (chunks and every mapping edge too) with those page sizes added to each
    reservation.  SVG needs graphviz's `dot`; without it the DOT file is written.
    """
    if fmt is None:
        suffix = Path(output).suffix.lstrip(".").lower() if output else ""
        fmt = suffix if suffix in _FORMATS else ("text" if suffix in ("", "txt") else "dot")
    if fmt == "svg" and output is None:
        raise click.UsageError("--format svg needs --output FILE")
    system, name = system_for(scenario)
    data = build_graph(system)
    if fmt == "svg":
        assert output is not None
        dot = to_dot(data, name)
        if render_svg(dot, output):
            click.echo(f"wrote {output}")
            return
        dot_path = Path(output).with_suffix(".dot")
        dot_path.write_text(dot, encoding="utf-8")
        click.echo(
            f"graphviz is not installed (no 'dot' on PATH), so no SVG was drawn; wrote the DOT file {dot_path}"
        )
        return
    if fmt == "json":
        text = json.dumps(graph_json(system), indent=2)
    else:
        text = to_text(data) if fmt == "text" else to_dot(data, name)
    if output is None:
        click.echo(text)
    else:
        Path(output).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        click.echo(f"wrote {output}")


COMMANDS = [graph_command]
