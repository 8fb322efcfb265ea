"""Exit statuses: what a script running ``vcmm`` learns without reading the output.

======  ==============================================================================
0       done, and the run went as it should
1       a user mistake (bad file, key, option value); one line on stderr
2       a usage error (click: missing argument, unknown option)
3       done, but it did not go as it should: a sweep point failed, or devices
        faulted (or did not fault under ``--faults expect``); the output is complete
130     interrupted (Ctrl-C); a sweep has written the points finished so far
======  ==============================================================================

Whether a device fault is a failure depends on the experiment: usually it is a bug
in the set-up, but a scenario may exist to show the fault.  ``--faults`` says which.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from vcmm.workload.runner import ScenarioResult

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_INTERRUPTED = 130

FAULT_POLICIES = ("fail", "allow", "expect")

faults_option = click.option(
    "--faults",
    "fault_policy",
    type=click.Choice(FAULT_POLICIES),
    default="fail",
    show_default=True,
    help="What device faults mean for the exit status: fail (exit 3 if any device "
    "faulted), allow (report them, exit 0), expect (exit 3 unless a device faulted: "
    "for experiments whose point is the fault).",
)


def fault_problem(faults: int, policy: str, where: str = "the run") -> str | None:
    """Why ``faults`` device faults make the exit status 3 under ``policy``, or None."""
    if policy == "fail" and faults:
        return f"{faults} device fault(s) in {where} (--faults allow accepts them)"
    if policy == "expect" and not faults:
        return f"no device faulted in {where}, but --faults expect was given"
    return None


def run_faults(result: ScenarioResult) -> int:
    """Faults of a run: the devices' fault counters, at least one per faulted step."""
    counted = sum(d.faults for d in result.devices)
    return max(counted, sum(1 for s in result.steps if s.fault is not None))


def finish(problems: Sequence[str | None]) -> None:
    """Exit with status 3 naming the problems on stderr, if there are any."""
    found = [p for p in problems if p]
    if found:
        click.echo(f"vcmm: failed: {'; '.join(found)}", err=True)
        click.get_current_context().exit(EXIT_FAILED)
