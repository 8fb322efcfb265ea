"""Pause Python's cycle collector while a call makes many small objects at once.

Reading and replaying a trace, or backing a buffer of 16,384 separate pages, makes
tens or hundreds of thousands of small objects (events, tuples, mapping edges and
their keys), none in a reference cycle.  The cycle collector still walks them: a
young-generation pass every 700 new objects and, as the survivors pile up, passes
over all of them (a third of such a backing's time, in 90 passes).  Reference
counting frees these objects whether the collector runs or not, so pausing it
changes nothing but the time; a cycle made meanwhile waits for the first pass after
the pause.  The pause nests and restores the state it found.
"""

from __future__ import annotations

import gc
from types import TracebackType


class CollectorPause:
    """``with CollectorPause():`` the body runs with the cycle collector off (back on
    after, if it was on).  A plain class: entering and leaving cost a third of a
    microsecond, so even a one-page backing can afford it."""

    __slots__ = ("_was_on",)

    def __init__(self) -> None:
        self._was_on = False

    def __enter__(self) -> None:
        self._was_on = gc.isenabled()
        gc.disable()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._was_on:
            gc.enable()


def collector_paused() -> CollectorPause:
    """A pause of the cycle collector, for a ``with`` statement."""
    return CollectorPause()
