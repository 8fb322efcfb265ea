"""Resuming a sweep: the points a previous ``sweep.csv`` already holds.

A sweep of thousands of points stopped half way (a Ctrl-C, a lost cluster) should not
start again from nothing.  ``--resume sweep/sweep.csv`` reads the rows the stopped
sweep wrote and runs only the points missing from them; the final files hold both,
in grid order, exactly as one uninterrupted sweep would have written them (timing
aside).  A point whose row has an error is run again: the error may have been the
cluster's (a worker lost), and a point that fails for its own reasons fails again.

The file must be a ``sweep.csv`` of the same grid keys (the columns are checked); the
``sweep.json`` beside it, when there is one, must name the same scenario.  Rows of
points that are not in the current grid are left out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from vcmm.workload.rows import METRICS, typed_row
from vcmm.workload.scenario import ScenarioError

PointRows = dict[int, list[dict[str, Any]]]


def read_finished(
    path: str | Path, scenario: str, keys: list[str], points: list[dict[str, object]]
) -> PointRows:
    """Rows of the points of ``points`` that finished without error in the sweep file
    ``path``, by point index (see the module notes).  Problems with the file raise
    :class:`ScenarioError` naming it under ``--resume``."""
    file = Path(path)
    columns = [*keys, *METRICS]
    _check_scenario(file, scenario)
    try:
        with file.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            if header != columns:
                raise _problem(
                    file,
                    f"its columns are {', '.join(header) or 'none'}, but a sweep of "
                    f"{', '.join(keys)} writes {', '.join(columns)}",
                )
            raw_rows = list(reader)
    except (OSError, UnicodeDecodeError) as err:
        raise _problem(file, f"cannot be read ({err})") from None
    index = {tuple(str(p[k]) for k in keys): i for i, p in enumerate(points)}
    found: PointRows = {}
    failed: set[int] = set()
    for line, raw in enumerate(raw_rows, start=2):
        where = index.get(tuple(raw.get(k) or "" for k in keys))
        if where is None:
            continue
        try:
            row = typed_row(raw, columns)
        except ValueError as err:
            raise _problem(file, f"line {line}: {err}") from None
        if row["error"]:
            failed.add(where)
        found.setdefault(where, []).append(row)
    return {
        i: rows
        for i, rows in sorted(found.items())
        if i not in failed and rows[0]["context"] == "all"
    }


def _check_scenario(file: Path, scenario: str) -> None:
    """The ``sweep.json`` next to ``file`` (if any) must come from ``scenario``."""
    meta = file.with_suffix(".json")
    if not meta.is_file():
        return
    try:
        written_by = json.loads(meta.read_text(encoding="utf-8")).get("scenario")
    except (OSError, ValueError, AttributeError):
        return  # not a sweep's JSON: the columns are still checked
    if isinstance(written_by, str) and written_by != scenario:
        raise _problem(
            file, f"it holds a sweep of scenario {written_by!r} (see {meta.name}), not {scenario!r}"
        )


def _problem(file: Path, problem: str) -> ScenarioError:
    return ScenarioError(problem, key=f"--resume {file}")
