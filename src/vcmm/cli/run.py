"""``vcmm run SCENARIO`` and ``vcmm scenarios``."""

from __future__ import annotations

import json

import click

from vcmm.cli.common import run_with_progress, scenario_with_overrides, set_option
from vcmm.report.tables import render_result
from vcmm.workload.scenario import packaged_scenarios


@click.command("run")
@click.argument("scenario")
@set_option
@click.option("--json", "as_json", is_flag=True, help="Print the full result as JSON.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on stderr.")
def run_command(scenario: str, overrides: tuple[str, ...], as_json: bool, progress: bool) -> None:
    """Run SCENARIO and report TLB, walk, fault and traffic counters.

    The default output is tables for people: buffers and how each device maps them,
    IOTLB misses per frame for every step, per-context and per-device counters.
    `--json` prints the same numbers for programs.
    """
    sc = scenario_with_overrides(scenario, overrides)
    result = run_with_progress(sc, show=progress)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(render_result(result))


@click.command("scenarios")
def scenarios_command() -> None:
    """List the example scenarios shipped with vcmm (usable by name)."""
    for name, description in packaged_scenarios().items():
        click.echo(f"{name:<14} {description}")


COMMANDS = [run_command, scenarios_command]
