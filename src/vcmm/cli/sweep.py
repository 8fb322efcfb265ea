"""``vcmm sweep SCENARIO --grid KEY=V1,V2 ...``: a parameter grid in worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from vcmm.cli.common import load_for_cli, progress
from vcmm.report.tables import Table
from vcmm.workload.sweep import parse_grid, run_sweep, write_sweep


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
def sweep_command(
    scenario: str,
    grid_specs: tuple[str, ...],
    jobs: int,
    out_dir: str,
    plots: bool,
    as_json: bool,
) -> None:
    """Run SCENARIO once per point of a parameter grid.

    Example: --grid policy=4k,64k,1m --grid tlb_entries=16,64,256 --grid ways=1,4.
    Every point boots a fresh system.  Writes sweep.csv and sweep.json (one row per
    point and context, plus a context=all row per point) and plots miss rate against
    block policy, one line per TLB size, as PNG and SVG.
    """
    sc = load_for_cli(scenario)
    grid = parse_grid(grid_specs)
    points = 1
    for values in grid.values():
        points *= len(values)
    with progress(
        points, f"sweeping {points} points on {jobs} worker(s)", show=points > 1
    ) as update:
        result = run_sweep(sc, grid, jobs=jobs, progress=update)
    written = write_sweep(result, out_dir)
    if plots:
        from vcmm.report.plots import plot_sweep

        if len(result.failed) < len(result.summary_rows):
            written += plot_sweep(result.summary_rows, result.keys, Path(out_dir) / "miss_rate")
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    table = Table(
        f"sweep of {sc.name}: {len(result.points)} points, {result.seconds:.2f} s on {jobs} worker(s)",
        [*result.keys, "lookups", "misses", "miss rate", "walk reads", "pt bytes", "error"],
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
                row["error"] or "",
            ]
        )
    click.echo(table.to_text())
    if result.failed:
        click.echo(f"{len(result.failed)} point(s) failed; see the error column", err=True)
    click.echo("wrote " + ", ".join(str(p) for p in written))


COMMANDS = [sweep_command]
