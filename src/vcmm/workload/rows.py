"""The rows of a sweep: their columns, a failed point's row, and rows read back from CSV.

One point gives a ``context = all`` row (its totals) followed by a row per SMMU
context.  The same rows go to ``sweep.csv`` and ``sweep.json`` whatever ran them, so
a sweep resumed from its CSV (``--resume``) must get back exactly the values the
point produced: the columns' types are fixed here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vcmm.workload.runner import TLB_FIELDS

#: Grid keys whose values are integers (the others are names).
INT_KEYS: tuple[str, ...] = ("tlb_entries", "ways", "frames", "burst")
#: Columns of every sweep row after the grid's own keys.
METRICS: tuple[str, ...] = (
    "context",
    *TLB_FIELDS,
    "miss_rate",
    "table_bytes",
    "faults",
    "bytes_moved",
    "seconds",
    "error",
)
#: Columns that differ between two runs of the same point (wall-clock time).
TIMING_COLUMNS: tuple[str, ...] = ("seconds",)
_INT_COLUMNS = frozenset((*INT_KEYS, *TLB_FIELDS, "table_bytes", "faults", "bytes_moved"))
_FLOAT_COLUMNS = frozenset(("miss_rate", "seconds"))
_TEXT_COLUMNS = frozenset(("context", "error"))


def describe_point(params: Mapping[str, object]) -> str:
    """``policy=4k tlb_entries=16``: how a point is named in messages."""
    return " ".join(f"{key}={value}" for key, value in params.items())


def failed_row(params: Mapping[str, object], message: str) -> dict[str, Any]:
    """The single row of a point that did not run to the end: its parameters, empty
    metrics and ``message`` in the ``error`` column."""
    return dict(params) | {m: None for m in METRICS} | {"context": "all", "error": message}


def csv_cell(value: object) -> object:
    """What ``sweep.csv`` holds for ``value``: empty for a missing value."""
    return "" if value is None else value


def typed_row(raw: Mapping[str, str], columns: Sequence[str]) -> dict[str, Any]:
    """A row of ``sweep.csv`` with the values a point produced (``int``, ``float``,
    ``None`` for an empty metric, ``str``); raises ``ValueError`` naming the column
    whose cell does not parse."""
    row: dict[str, Any] = {}
    for column in columns:
        cell = raw.get(column) or ""
        if column in _TEXT_COLUMNS or column not in (_INT_COLUMNS | _FLOAT_COLUMNS):
            row[column] = cell
        elif cell == "":
            row[column] = None
        else:
            try:
                row[column] = int(cell) if column in _INT_COLUMNS else float(cell)
            except ValueError:
                raise ValueError(f"column {column!r} holds {cell!r}, not a number") from None
    return row
