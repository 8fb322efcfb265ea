"""Pause Python's cycle collector while a trace is read or replayed.

Reading and replaying a trace makes a few small objects per line (events, interval
values, tuples), hundreds of thousands of them, none in a reference cycle: see
:mod:`vcmm.collector`, where the pause lives (the core's bulk backings use it too).
"""

from __future__ import annotations

from vcmm.collector import collector_paused

__all__ = ["collector_paused"]
