"""The ``vcmm`` command: demo, run, sweep, graph, pt dump, report, scenarios, platform,
replay.

User mistakes (a missing file, a misspelt key, an unknown device, a bad option) end
with ONE line on stderr and a non-zero exit status, never a traceback: the group's
``main`` catches :class:`vcmm.errors.VcmmError`, click's usage errors and file errors
and prints ``vcmm: error: <message>``.  A Ctrl-C ends with ``vcmm: interrupted`` and
status 130.  Anything else is a bug and keeps its traceback.  The exit statuses are
listed in :mod:`vcmm.cli.outcome`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from vcmm.cli.outcome import EXIT_ERROR, EXIT_INTERRUPTED
from vcmm.errors import VcmmError


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


class VcmmGroup(click.Group):
    """A click group whose errors are one clear line each."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name or "vcmm",
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except click.exceptions.NoArgsIsHelpError as err:
            # `vcmm` or `vcmm pt` alone: what the user needs is the help, as --help shows it.
            click.echo(err.ctx.get_help() if err.ctx is not None else err.format_message())
            sys.exit(0)
        except click.exceptions.Abort as err:
            if isinstance(err.__cause__, KeyboardInterrupt):  # click's wrap of a Ctrl-C
                click.echo("vcmm: interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("vcmm: aborted", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("vcmm: interrupted", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except click.ClickException as err:
            hint = ""
            if isinstance(err, click.UsageError) and err.ctx is not None:
                hint = f" (see '{err.ctx.command_path} --help')"
            click.echo(f"vcmm: error: {_one_line(err.format_message())}{hint}", err=True)
            sys.exit(err.exit_code)
        except VcmmError as err:
            click.echo(f"vcmm: error: {_one_line(str(err))}", err=True)
            sys.exit(EXIT_ERROR)
        except BrokenPipeError:  # `vcmm run ... | head`: the reader left; nothing to say
            sys.exit(EXIT_ERROR)
        except OSError as err:
            where = f" {err.filename}" if err.filename else ""
            click.echo(f"vcmm: error:{where}: {err.strerror or err}", err=True)
            sys.exit(EXIT_ERROR)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


@click.group("vcmm", cls=VcmmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vcmm", prog_name="vcmm")
def cli() -> None:
    """vcmm: the Virtual Contiguous Memory Manager on a simulated SoC.

    Start with `vcmm demo`.  Scenario arguments are TOML files or the names of the
    examples shipped with vcmm (`vcmm scenarios` lists them).
    """


def _register() -> None:
    from vcmm.cli import demo, graph, iova, platform, pt, replay, report, run, sweep

    for module in (demo, run, sweep, graph, pt, report, iova, platform, replay):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``vcmm = "vcmm.cli:main"``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="vcmm")


__all__ = ["cli", "main"]
