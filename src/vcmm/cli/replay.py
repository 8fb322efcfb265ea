"""``vcmm replay TRACE``: replay a Linux iommu/dma ftrace into a simulated SoC."""

from __future__ import annotations

import json

import click

from vcmm.cli.outcome import finish
from vcmm.platform import PlatformSpec, load_default, load_platform
from vcmm.trace import Timeline, render_text, replay_file
from vcmm.trace.report import PROBLEM_KINDS, ReplayReport


def _problem_line(report: ReplayReport) -> str | None:
    """The ``vcmm: failed:`` text for a trace with problems, or None for a clean one."""
    counts = report.counts()
    if not counts:
        return None
    kinds = ", ".join(f"{counts[k]} {k}" for k in PROBLEM_KINDS if k in counts)
    return f"{len(report.problems)} problem(s) in the trace: {kinds}"


def _platform(platform: str | None) -> PlatformSpec | None:
    if platform is None:
        return None
    if platform == "default":
        return load_default()
    return load_platform(platform)


@click.command("replay")
@click.argument("trace", metavar="TRACE")
@click.option(
    "--platform",
    metavar="FILE",
    default=None,
    help="Platform: TOML, .dtb or .dts, or 'default' (without it: a generic platform "
    "with one IOMMU'd device per device name in the trace).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--perfetto",
    metavar="OUT.json",
    default=None,
    help="Write Chrome/Perfetto trace-event JSON: a track per device, mappings as spans.",
)
@click.option("--strict", is_flag=True, help="Any line that cannot be used is an error.")
@click.option(
    "--reallocate",
    is_flag=True,
    help="Let vcmm's IOVA allocator place the mappings and compare with the trace's.",
)
@click.option(
    "--no-tables",
    is_flag=True,
    help="Find problems only; leave the page tables alone (faster, no table_bytes_peak).",
)
def replay_command(
    trace: str,
    platform: str | None,
    as_json: bool,
    perfetto: str | None,
    strict: bool,
    reallocate: bool,
    no_tables: bool,
) -> None:
    """Replay TRACE (the text of /sys/kernel/tracing/trace with iommu:* and dma:*
    events) into a simulated SoC and report what went wrong.

    Maps and unmaps go into each device's real page table at the trace's IOVAs (or
    vcmm's, with --reallocate); double unmaps, unmaps of unmapped addresses,
    overlapping maps, faults after unmap or on unmapped addresses and leaks are
    reported with their 1-based line numbers.  Lines that cannot be used are listed
    with the reason (--strict makes the first one an error).  Exit status 0 for a
    clean trace, 3 when problems were found, 1 for an unreadable or binary file.
    """
    timeline = Timeline() if perfetto else None
    report = replay_file(
        trace,
        platform=_platform(platform),
        reallocate=reallocate,
        tables=not no_tables,
        strict=strict,
        timeline=timeline,
    )
    if timeline is not None and perfetto is not None:
        timeline.write(perfetto)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        click.echo(render_text(report))
    finish([_problem_line(report)])


COMMANDS = [replay_command]
