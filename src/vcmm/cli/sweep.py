"""``vcmm sweep SCENARIO --grid KEY=V1,V2 ...``: a parameter grid in worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcmm.cli.common import load_for_cli
from vcmm.cli.outcome import EXIT_INTERRUPTED, faults_option, finish
from vcmm.cli.progress import progress as progress_bar
from vcmm.report.tables import Table
from vcmm.workload.executors import sigint_deferred
from vcmm.workload.sweep import SweepInterrupted, SweepResult, parse_grid, run_sweep, write_sweep


def _write(result: SweepResult, out_dir: str, plots: bool) -> list[Path]:
    written = write_sweep(result, out_dir)
    if plots and len(result.failed) < len(result.summary_rows):
        from vcmm.report.plots import plot_sweep

        written += plot_sweep(
            result.summary_rows, result.keys, Path(out_dir) / "miss_rate", title=result.scenario
        )
    return written


def _table(result: SweepResult, jobs: int) -> Table:
    table = Table(
        f"sweep of {result.scenario}: {len(result.points)} points, {result.seconds:.2f} s "
        f"on {jobs} worker(s)",
        [
            *result.keys,
            "lookups",
            "misses",
            "miss rate",
            "walk reads",
            "pt bytes",
            "faults",
            "error",
        ],
    )
    for row in result.summary_rows:
        table.add(
            [
                *(row[k] for k in result.keys),
                row["lookups"],
                row["misses"],
                row["miss_rate"],
                row["walk_reads"],
                row["table_bytes"],
                row["faults"],
                row["error"] or "",
            ]
        )
    return table


@click.command("sweep")
@click.argument("scenario")
@click.option(
    "--grid",
    "grid_specs",
    multiple=True,
    required=True,
    metavar="KEY=V1,V2",
    help="A parameter and its values (repeatable): policy, tlb_entries, ways, replacement, "
    "pattern, frames, burst.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Worker processes.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default="sweep",
    show_default=True,
    help="Directory for sweep.csv, sweep.json and the plots.",
)
@click.option("--plots/--no-plots", default=True, help="Draw miss_rate.png/.svg.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@click.option("--progress/--no-progress", default=True, help="Progress on a terminal's stderr.")
@faults_option
def sweep_command(
    scenario: str,
    grid_specs: tuple[str, ...],
    jobs: int,
    out_dir: str,
    plots: bool,
    as_json: bool,
    progress: bool,
    fault_policy: str,
) -> None:
    """Run SCENARIO once per point of a parameter grid.

    Example: --grid policy=4k,64k,1m --grid tlb_entries=16,64,256 --grid ways=1,4.
    Every point boots a fresh system.  Writes sweep.csv and sweep.json (one row per
    point and context, plus a context=all row per point) and plots miss rate against
    block policy, one line per TLB size, as PNG and SVG.  Exit status 3 when a point
    failed or (see --faults) faulted; a Ctrl-C stops the workers, writes the points
    finished so far and exits 130.
    """
    sc = load_for_cli(scenario)
    grid = parse_grid(grid_specs)
    points = 1
    for values in grid.values():
        points *= len(values)
    label = f"sweeping {sc.name}: {points} points on {jobs} worker(s)"
    try:
        with progress_bar(points, label, show=progress) as update:
            result = run_sweep(sc, grid, jobs=jobs, progress=update)
    except SweepInterrupted as stop:
        with sigint_deferred():
            # The finished points, quickly: plots of a partial grid can wait for a rerun.
            written = write_sweep(stop.result, out_dir) if stop.result.finished else []
            saved = f"; wrote {', '.join(map(str, written))}" if written else ""
            click.echo(
                f"vcmm: interrupted: {stop.result.finished} of {points} points finished, "
                f"the workers are stopped{saved}",
                err=True,
            )
        click.get_current_context().exit(EXIT_INTERRUPTED)
    written = _write(result, out_dir, plots)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(_table(result, jobs).to_text())
        click.echo("wrote " + ", ".join(str(p) for p in written))
    finish(_problems(result, points, fault_policy))


def _problems(result: SweepResult, points: int, fault_policy: str) -> list[str | None]:
    """Why the sweep's exit status is 3: failed points, and faults per ``--faults``
    (each point is judged as a run would be)."""
    failed, faulted = len(result.failed), len(result.faulted)
    ran = points - failed
    return [
        f"{failed} of {points} point(s) failed; see the error column" if failed else None,
        f"{faulted} of {points} point(s) had device faults (--faults allow accepts them)"
        if fault_policy == "fail" and faulted
        else None,
        f"{ran - faulted} point(s) ran without a device fault, but --faults expect was given"
        if fault_policy == "expect" and faulted < ran
        else None,
    ]


COMMANDS = [sweep_command]
