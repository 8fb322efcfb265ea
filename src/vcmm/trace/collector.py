"""Pause Python's cycle collector while a trace is read or replayed.

Reading and replaying a trace makes a few small objects per line (events, interval
values, tuples), hundreds of thousands of them, none in a reference cycle.  The
cycle collector still walks them: a young-generation pass every 700 new objects
and, as the survivors pile up, passes over all of them, about a tenth of a replay's
time.  Reference counting frees these objects whether the collector runs or not, so
pausing it changes nothing but the time; a cycle made meanwhile waits for the first
pass after the pause.  The pause nests and restores the state it found.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the body with the cycle collector off (back on after, if it was on)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()
