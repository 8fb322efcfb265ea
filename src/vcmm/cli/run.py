"""``vcmm run SCENARIO`` and ``vcmm scenarios``."""

from __future__ import annotations

import json
import shutil

import click

from vcmm.cli.common import (
    PlatformChoice,
    output_width,
    platform_options,
    run_with_progress,
    scenario_with_overrides,
    set_option,
    stdout_is_terminal,
)
from vcmm.cli.outcome import fault_problem, faults_option, finish, run_faults
from vcmm.report.tables import render_result
from vcmm.tlbcost import INVALIDATION_MODES
from vcmm.trace.scenario import scenario_timeline
from vcmm.workload.examples import example, examples


@click.command("run")
@click.argument("scenario")
@set_option
@platform_options
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--progress/--no-progress", default=True, help="Progress on a terminal's stderr.")
@click.option(
    "--perfetto",
    metavar="OUT.json",
    default=None,
    help="Also write the run as Chrome/Perfetto trace-event JSON (a track per device).",
)
@click.option(
    "--invalidation",
    type=click.Choice(INVALIDATION_MODES),
    default=None,
    help="IOTLB invalidation of the DMA API's domains (default: the platform's); "
    "the same as --set invalidation=MODE.",
)
@faults_option
def run_command(
    scenario: str,
    overrides: tuple[str, ...],
    platform: PlatformChoice,
    as_json: bool,
    progress: bool,
    perfetto: str | None,
    invalidation: str | None,
    fault_policy: str,
) -> None:
    """Run SCENARIO and report TLB, walk, fault and traffic counters.

    The default output is tables for people: buffers and how each device maps them,
    IOTLB misses per frame for every step, per-context and per-device counters.
    Scenarios with `[[traffic]]` also report the DMA flows and each domain's IOTLB
    invalidation (commands, syncs, modelled time; `--invalidation strict|lazy`).
    `--json` prints the same numbers for programs; `--perfetto out.json` also writes
    the run for ui.perfetto.dev (logical time: a microsecond per burst).  Exit status
    3 when a device faulted (see --faults), 130 on Ctrl-C.  `--platform` runs it on
    another platform (an imported board: the scenario names that board's devices and
    targets).
    """
    if invalidation is not None:
        overrides = (*overrides, f"invalidation={invalidation}")
    sc = scenario_with_overrides(scenario, overrides, platform)
    result = run_with_progress(sc, show=progress)
    if perfetto is not None:
        scenario_timeline(result).write(perfetto)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_result(result, output_width(), colour=stdout_is_terminal()))
    finish([fault_problem(run_faults(result), fault_policy)])


@click.command("scenarios")
@click.option(
    "--print",
    "show",
    metavar="NAME",
    default=None,
    help="Print the packaged scenario or platform NAME (TOML), to copy and edit.",
)
def scenarios_command(show: str | None) -> None:
    """List the scenarios and platforms shipped with vcmm, with their files.

    A scenario runs by name (`vcmm run video_1080p`), but a file of that name in the
    current folder (`video_1080p` or `video_1080p.toml`) wins.  To start your own:
    `vcmm scenarios --print video_1080p > mine.toml`.
    """
    if show is not None:
        click.echo(example(show).text(), nl=False)
        return
    width = shutil.get_terminal_size().columns
    for kind, title in (
        ("scenario", "Scenarios (run one by name; a file of that name in this folder wins):"),
        ("platform", 'Platforms (platform = "default" in a scenario, or a file path):'),
    ):
        click.echo(title)
        for item in examples(kind):
            text = f"  {item.name:<14} {item.description}"
            click.echo(text if len(text) <= width else text[: max(width - 3, 20)] + "...")
            click.echo(f"  {'':<14} {item.path}")
    click.echo("Copy one to edit it: vcmm scenarios --print NAME > my.toml")


COMMANDS = [run_command, scenarios_command]
