"""``vcmm report SCENARIO -o DIR``: a static HTML page of one run."""

from __future__ import annotations

import click

from vcmm.cli.common import (
    PlatformChoice,
    platform_options,
    scenario_with_overrides,
    set_option,
)
from vcmm.cli.outcome import fault_problem, faults_option, finish, run_faults
from vcmm.cli.progress import progress
from vcmm.errors import VcmmError
from vcmm.workload.runner import ScenarioRunner, run_scenario
from vcmm.workload.scenario_keys import POLICY_ORDER


@click.command("report")
@click.argument("scenario")
@click.option(
    "--output",
    "-o",
    "out_dir",
    type=click.Path(file_okay=False),
    required=True,
    help="Directory for index.html and its images.",
)
@set_option
@platform_options
@click.option(
    "--policies/--no-policies",
    default=True,
    help="Also run the scenario under each block policy and plot the comparison.",
)
@faults_option
def report_command(
    scenario: str,
    out_dir: str,
    overrides: tuple[str, ...],
    platform: PlatformChoice,
    policies: bool,
    fault_policy: str,
) -> None:
    """Run SCENARIO and write an HTML report (tables, plots, graph, page tables).

    Exit status 3 when a device faulted in the run (see --faults), 130 on Ctrl-C.
    """
    from vcmm.report.html import write_report

    sc = scenario_with_overrides(scenario, overrides, platform)
    chosen = [p for p in POLICY_ORDER if p != "16m"] if policies else []
    runner = ScenarioRunner(sc)
    per_policy = runner.work_units
    total = runner.work_units + per_policy * len(chosen)
    with progress(total, f"report on {sc.name}") as update:
        result = runner.run(update)
        compared = {}
        for policy in chosen:
            try:
                compared[policy] = run_scenario(sc.with_params(policy=policy), update)
            except VcmmError as err:  # a policy the platform cannot serve: say so, go on
                click.echo(f"policy {policy}: skipped ({err})", err=True)
    page = write_report(result, out_dir, policies=compared or None, description=sc.description)
    click.echo(f"wrote {page}")
    finish([fault_problem(run_faults(result), fault_policy)])


COMMANDS = [report_command]
