"""The error a trace that cannot be replayed at all raises."""

from __future__ import annotations

from vcmm.errors import InvalidArgumentError


class TraceError(InvalidArgumentError):
    """A trace file that cannot be read as a text trace, or a replay that is refused.

    Lines that cannot be used are not errors: they are reported as
    :class:`~vcmm.trace.events.Skipped` with their number and reason, unless the
    caller asked for strictness, when the first of them becomes this error.
    """
