"""Progress on stderr: on a terminal only, and only for work that takes a while.

A bar that flashes for a tenth of a second is noise, and one that never appears
while a few slow frames run for seven seconds leaves the user guessing; so the
bar appears once the work has run for :data:`DELAY` seconds, however many units it
has, and disappears when it ends.  Nothing is drawn when stderr is not a terminal
(a pipe, a file, CI logs): stdout and stderr stay clean for programs.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

#: Seconds of work before the bar appears (``VCMM_PROGRESS_DELAY`` overrides it).
DELAY = 1.0

Update = Callable[[int], None]


def _delay() -> float:
    try:
        return max(0.0, float(os.environ.get("VCMM_PROGRESS_DELAY", DELAY)))
    except ValueError:
        return DELAY


@contextmanager
def progress(
    total: int, label: str, *, show: bool = True, console: Console | None = None
) -> Iterator[Update]:
    """Yield ``update(n)`` to call as ``n`` more units are done; a bar on a terminal's
    stderr appears after :data:`DELAY` seconds (a no-op elsewhere or with ``show``
    off)."""
    console = console or Console(stderr=True)
    if not show or not console.is_terminal or total < 1:
        yield lambda n: None
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=total)
    guard = threading.Lock()
    ended = False

    def appear() -> None:
        with guard:
            if not ended:
                bar.start()

    timer = threading.Timer(_delay(), appear)
    timer.daemon = True
    timer.start()
    try:
        yield lambda n: bar.advance(task, n)
    finally:
        timer.cancel()
        with guard:
            ended = True
            bar.stop()
