"""``vcmm sweep SCENARIO --grid KEY=V1,V2 ...``: a parameter grid in worker processes
or on a Dask cluster (``--executor``), resumable from a stopped sweep (``--resume``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from vcmm.cli.common import load_for_cli
from vcmm.cli.outcome import EXIT_INTERRUPTED, faults_option, finish
from vcmm.cli.progress import progress as progress_bar
from vcmm.report.tables import Table
from vcmm.workload.executors import DEFAULT_WORKERS, parse_executor, sigint_deferred
from vcmm.workload.rows import describe_point
from vcmm.workload.sweep import (
    SweepInterrupted,
    SweepResult,
    parse_grid,
    plan_sweep,
    run_plan,
    write_sweep,
)

#: Failed points named in the exit-status line; the error column has them all.
NAMED_FAILURES = 3


def _write(result: SweepResult, out_dir: str, plots: bool) -> list[Path]:
    written = write_sweep(result, out_dir)
    if plots and len(result.failed) < len(result.summary_rows):
        from vcmm.report.plots import plot_sweep

        written += plot_sweep(
            result.summary_rows, result.keys, Path(out_dir) / "miss_rate", title=result.scenario
        )
    return written


def _where(executor: str, workers: int | None) -> str:
    """``2 worker(s)``, ``dask, 2 worker(s)``, ``dask=tcp://...``: where points run."""
    kind, address = parse_executor(executor)
    if address is not None:
        return executor if workers is None else f"{executor}, {workers} worker(s)"
    count = f"{workers or DEFAULT_WORKERS[kind]} worker(s)"
    return count if kind == "local" else f"{kind}, {count}"


def _table(result: SweepResult) -> Table:
    table = Table(
        f"sweep of {result.scenario}: {len(result.points)} points, {result.seconds:.2f} s "
        f"on {_where(result.executor, result.jobs)}"
        + (f" ({result.resumed} resumed)" if result.resumed else ""),
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
    default=None,
    help="Worker processes: of the local pool (default 1: in this process) or of the "
    "Dask LocalCluster (default 2).",
)
@click.option(
    "--executor",
    default="local",
    show_default=True,
    metavar="local|dask[=ADDRESS]",
    help="Where points run: local processes; dask, a Dask LocalCluster on 127.0.0.1; "
    "dask=ADDRESS, a running Dask scheduler (tcp://host:8786).  Dask: pip install "
    "'vcmm[dask]'.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="CSV",
    help="The sweep.csv of a stopped sweep: its finished points are kept, not run again.",
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
    jobs: int | None,
    executor: str,
    resume: str | None,
    out_dir: str,
    plots: bool,
    as_json: bool,
    progress: bool,
    fault_policy: str,
) -> None:
    """Run SCENARIO once per point of a parameter grid.

    Example: --grid policy=4k,64k,1m --grid tlb_entries=16,64,256 --grid ways=1,4.
    Every point boots a fresh system; points start longest first.  Writes sweep.csv
    and sweep.json (one row per point and context, plus a context=all row per point,
    in grid order) and plots miss rate against block policy, one line per TLB size, as
    PNG and SVG.  A point that fails is reported and the sweep goes on.  Exit status 3
    when a point failed or (see --faults) faulted; a Ctrl-C cancels the points not
    finished, stops the workers, writes the points finished so far and exits 130
    (--resume with that sweep.csv runs the rest).
    """
    sc = load_for_cli(scenario)
    grid = parse_grid(grid_specs)
    parse_executor(executor)
    plan = plan_sweep(sc, grid, resume=resume)
    points = len(plan.points)
    resumed = f" ({len(plan.resumed)} resumed)" if plan.resumed else ""
    label = f"sweeping {sc.name}: {len(plan.order)} points{resumed} on {_where(executor, jobs)}"
    try:
        with progress_bar(len(plan.order), label, show=progress) as update:
            result = run_plan(
                plan, jobs=jobs, executor=executor, progress=update, on_failure=_report_failure
            )
    except SweepInterrupted as stop:
        _interrupted(stop.result, out_dir)
    written = _write(result, out_dir, plots)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(_table(result).to_text())
        click.echo("wrote " + ", ".join(str(p) for p in written))
    finish(_problems(result, points, fault_policy))


def _report_failure(row: dict[str, Any]) -> None:
    """Say on stderr, as it happens, that a point failed (the sweep goes on)."""
    click.echo(
        f"vcmm: point {describe_point(_params(row))} failed: {row['error']}; the sweep goes on",
        err=True,
    )


def _params(row: dict[str, Any]) -> dict[str, Any]:
    """The grid keys of a row: the columns before ``context``."""
    keys = list(row)
    return {k: row[k] for k in keys[: keys.index("context")]}


def _interrupted(result: SweepResult, out_dir: str) -> None:
    """Write the finished points (quickly: plots of a partial grid can wait for a
    rerun), say so, exit 130."""
    with sigint_deferred():
        written = write_sweep(result, out_dir) if result.finished else []
        saved = f"; wrote {', '.join(map(str, written))}" if written else ""
        stopped = (
            "the outstanding points are cancelled"
            if parse_executor(result.executor)[1] is not None
            else "the workers are stopped"
        )
        click.echo(
            f"vcmm: interrupted: {result.finished} of {len(result.points)} points finished, "
            f"{stopped}{saved}",
            err=True,
        )
    click.get_current_context().exit(EXIT_INTERRUPTED)


def _problems(result: SweepResult, points: int, fault_policy: str) -> list[str | None]:
    """Why the sweep's exit status is 3: failed points, and faults per ``--faults``
    (each point is judged as a run would be)."""
    failed, faulted = len(result.failed), len(result.faulted)
    ran = points - failed
    named = ", ".join(describe_point(_params(row)) for row in result.failed[:NAMED_FAILURES])
    more = f" and {failed - NAMED_FAILURES} more" if failed > NAMED_FAILURES else ""
    return [
        f"{failed} of {points} point(s) failed ({named}{more}); see the error column"
        if failed
        else None,
        f"{faulted} of {points} point(s) had device faults (--faults allow accepts them)"
        if fault_policy == "fail" and faulted
        else None,
        f"{ran - faulted} point(s) ran without a device fault, but --faults expect was given"
        if fault_policy == "expect" and faulted < ran
        else None,
    ]


COMMANDS = [sweep_command]
