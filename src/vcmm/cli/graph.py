"""``vcmm graph [SCENARIO]``: the mapping graph as text, DOT, JSON or a drawing."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcmm.cli.common import PlatformChoice, platform_options
from vcmm.cli.topology import system_for
from vcmm.core.export import graph_data
from vcmm.report.graph import DRAWN_FORMATS, render_drawing, to_dot, to_text

_FORMATS = ("text", "dot", "json", *DRAWN_FORMATS)
#: What an output file's extension says about its format.
EXTENSIONS = {
    ".txt": "text",
    ".text": "text",
    ".dot": "dot",
    ".gv": "dot",
    ".json": "json",
    ".svg": "svg",
    ".png": "png",
    ".pdf": "pdf",
}


def output_format(fmt: str | None, output: str | None) -> str:
    """The format to write: ``--format``, else what the ``-o`` extension says, else
    text.  An extension that says nothing, or contradicts ``--format``, is refused
    rather than guessed (DOT text in ``graph.png`` helps nobody)."""
    if output is None:
        chosen = fmt or "text"
        if chosen in DRAWN_FORMATS:
            raise click.UsageError(f"--format {chosen} needs --output FILE")
        return chosen
    suffix = Path(output).suffix.lower()
    implied = EXTENSIONS.get(suffix)
    known = ", ".join(EXTENSIONS)
    if fmt is None:
        if implied is None:
            raise click.UsageError(
                f"cannot tell the format of {output!r} from its extension "
                f"{suffix or '(none)'}; name it {known} or give --format"
            )
        return implied
    if implied is not None and implied != fmt:
        raise click.UsageError(
            f"--format {fmt} does not match {output!r}, whose extension says {implied}; "
            "change one of them"
        )
    return fmt


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
    help="File to write (default: stdout; svg, png and pdf need a file).",
)
@platform_options
def graph_command(
    scenario: str | None, fmt: str | None, output: str | None, platform: PlatformChoice
) -> None:
    """The mapping graph of SCENARIO's end state (or of the demo's triple mapping).

    Text, DOT and the drawings show the compact graph: bus masters, VCMs,
    reservations, physical allocations and memory targets, backing edges labelled
    with the page sizes decoded from the tables in memory.  JSON is the graph itself,
    the core's export these are drawn from (chunks and every mapping edge too; schema
    in docs/CLI.md).  SVG, PNG and PDF need graphviz's `dot`; without it the DOT file is
    written instead and the command fails.  The format comes from the -o extension
    (.txt .dot .gv .json .svg .png .pdf) unless --format says it.  `--platform`
    without SCENARIO shows that board as booted.
    """
    fmt = output_format(fmt, output)
    system, name, labels = system_for(scenario, platform)
    data = graph_data(system.vcmm, chunks=fmt == "json")  # the pictures draw no chunks
    if fmt in DRAWN_FORMATS:
        assert output is not None
        dot = to_dot(data, name, labels)
        if render_drawing(dot, output, fmt):
            click.echo(f"wrote {output}")
            return
        dot_path = Path(output).with_suffix(".dot")
        dot_path.write_text(dot, encoding="utf-8")
        raise click.ClickException(
            f"graphviz is not installed (no 'dot' on PATH), so {output} was not drawn; "
            f"wrote the DOT text to {dot_path} instead (draw it with "
            f"'dot -T{fmt} {dot_path} -o {output}')"
        )
    if fmt == "json":
        text = json.dumps(data, indent=2)
    else:
        text = to_text(data, labels) if fmt == "text" else to_dot(data, name, labels)
    if output is None:
        click.echo(text)
    else:
        Path(output).write_text(text + ("" if text.endswith("\n") else "\n"), encoding="utf-8")
        click.echo(f"wrote {output}")


COMMANDS = [graph_command]
