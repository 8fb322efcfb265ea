"""Pieces every command shares: loading scenarios, running them with progress, `--set`."""

from __future__ import annotations

import functools
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import click

from vcmm.cli.progress import progress
from vcmm.platform import PlatformSpec, load_platform
from vcmm.workload.runner import ScenarioResult, ScenarioRunner
from vcmm.workload.scenario import Scenario, ScenarioError, load_scenario, packaged_scenarios
from vcmm.workload.sweep import parse_grid


@dataclass(frozen=True)
class PlatformChoice:
    """``--platform FILE`` and ``--ram SIZE``: a platform that replaces the scenario's
    (a TOML file or a devicetree) and the RAM size of a devicetree bank of size 0."""

    file: str | None = None
    ram: str | None = None

    def load(self) -> PlatformSpec | None:
        """The ``--platform`` file's platform (``--ram`` sizing its banks), if given."""
        return None if self.file is None else load_platform(self.file, ram=self.ram)


def platform_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--platform FILE`` and ``--ram SIZE`` for a command that runs a scenario; the
    command receives them as ``platform=PlatformChoice(...)``."""

    def merged(*args: Any, platform_file: str | None, ram: str | None, **kw: Any) -> Any:
        return command(*args, platform=PlatformChoice(platform_file, ram), **kw)

    functools.update_wrapper(merged, command)
    merged = click.option(
        "--ram",
        default=None,
        metavar="SIZE",
        help="RAM size for a devicetree platform whose memory banks have size 0 (the "
        "scenario's platform, or --platform's).",
    )(merged)
    return click.option(
        "--platform",
        "platform_file",
        type=click.Path(dir_okay=False),
        default=None,
        help="Run on this platform (TOML, .dtb or .dts) instead of the scenario's.",
    )(merged)


def load_for_cli(path: str, platform: PlatformChoice | None = None) -> Scenario:
    """Load ``path`` (a file or a packaged scenario name), on ``--platform`` when given;
    when a local file shadows a packaged scenario of the same name, say on stderr
    which one runs."""
    platform = platform or PlatformChoice()
    spec = platform.load()
    scenario = load_scenario(path, platform=spec, ram=None if spec else platform.ram)
    if scenario.file and not scenario.source.startswith("<") and path in packaged_scenarios():
        click.echo(
            f"vcmm: note: running the file {scenario.file}, not the packaged scenario {path!r} "
            "(a file that exists wins)",
            err=True,
        )
    return scenario


def scenario_with_overrides(
    path: str, overrides: Sequence[str], platform: PlatformChoice | None = None
) -> Scenario:
    """Load ``path`` (a file or a packaged scenario name) and apply ``--set k=v``."""
    scenario = load_for_cli(path, platform)
    if not overrides:
        return scenario
    try:
        grid = parse_grid(overrides)
    except ScenarioError as err:
        raise ScenarioError(err.problem, key=err.key.replace("--grid", "--set")) from None
    params: dict[str, object] = {}
    for key, values in grid.items():
        if len(values) != 1:
            raise ScenarioError(f"give one value, not {len(values)}", key=f"--set {key}")
        params[key] = values[0]
    try:
        return scenario.with_params(**params)
    except ScenarioError as err:
        raise ScenarioError(
            err.problem, key=err.key.replace("--grid", "--set"), source=err.source
        ) from None


def run_with_progress(scenario: Scenario, *, show: bool = True) -> ScenarioResult:
    """Run a scenario, drawing a progress bar over its step-frames."""
    runner = ScenarioRunner(scenario)
    with progress(runner.work_units, f"running {scenario.name}", show=show) as update:
        return runner.run(update)


set_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a parameter for this run: policy, tlb_entries, ways, replacement, "
    "pattern, frames, burst or invalidation (repeatable).",
)


def stdout_is_terminal() -> bool:
    """Whether stdout is a terminal: then output may be coloured and fitted to it."""
    return sys.stdout.isatty()


def output_width() -> int | None:
    """The width text output must fit: the terminal's; ``None`` (no limit) when stdout
    is a file or a pipe, which get every column whatever ``COLUMNS`` says (CI runners
    and test tools set it)."""
    return shutil.get_terminal_size().columns if stdout_is_terminal() else None
