"""No test reads a clock: the README's test command must pass on a busy 2-core machine.

A duration asserted in a test (``elapsed < 5.0``) fails whenever the machine is
shared, and proves little when it is not.  Tests count work instead (calls, table
writes, walks; see ``count_calls`` in conftest.py) and bound hangs by counting polls;
the timings live in ``benchmarks/``, which print ratios measured side by side.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
#: Clock readers of the standard library (``time.sleep`` is fine: it reads nothing).
CLOCKS = {
    "time": {
        "time",
        "time_ns",
        "monotonic",
        "monotonic_ns",
        "perf_counter",
        "perf_counter_ns",
        "process_time",
        "process_time_ns",
        "thread_time",
        "thread_time_ns",
    },
    "timeit": {"timeit", "repeat", "default_timer", "Timer"},
    "datetime": {"now", "utcnow", "today"},
}


def clock_reads(source: str, filename: str = "<test>") -> list[str]:
    """``file:line: call`` for every clock read in ``source``: calls such as
    ``time.perf_counter()`` / ``datetime.now()`` and imports of a clock function."""
    found: list[tuple[int, str]] = []
    tree = ast.parse(source, filename)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in CLOCKS:
            for alias in node.names:
                if alias.name in CLOCKS[node.module]:
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if name in CLOCKS and node.func.attr in CLOCKS[name]:
                found.append((node.lineno, f"{name}.{node.func.attr}()"))
    return [f"{filename}:{line}: {what}" for line, what in sorted(found)]


def test_the_checker_finds_the_clock_reads_that_made_tests_flaky() -> None:
    flaky = (
        "import time\n"
        "from time import perf_counter\n"
        "def test_fast():\n"
        "    began = time.perf_counter()\n"
        "    time.sleep(0)\n"
        "    assert time.monotonic() - began < 5.0\n"
    )
    assert clock_reads(flaky, "t.py") == [
        "t.py:2: from time import perf_counter",
        "t.py:4: time.perf_counter()",
        "t.py:6: time.monotonic()",
    ]


def test_no_test_reads_a_clock() -> None:
    # Every clock read names one of CLOCKS' modules, and each of their names contains
    # "time": a file without that text has none, and is not parsed (most files).
    assert all("time" in module for module in CLOCKS)
    texts = {path: path.read_text(encoding="utf-8") for path in sorted(TESTS.rglob("*.py"))}
    found = [
        hit
        for path, text in texts.items()
        if "time" in text
        for hit in clock_reads(text, str(path.relative_to(TESTS)))
    ]
    assert found == [], "tests must count work, not time it:\n" + "\n".join(found)
