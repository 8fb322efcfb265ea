"""Fixtures for the whole suite.

No test asserts a duration: a machine shared by several test workers runs anything
slower now and then.  Tests that guard against a slow algorithm count its work
instead, which is the same on every machine (``count_calls`` below, or the
hardware model's own counters); the timings live in ``benchmarks/``.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable

import pytest

CallCounter = Callable[[Callable[[], object]], int]


def count_function_calls(fn: Callable[[], object]) -> int:
    """Python and builtin function calls made while ``fn()`` runs, ``fn`` included.

    The count depends only on the code and its input, so a test can compare the
    work of two input sizes: linear work grows with the size, quadratic work with
    its square.
    """
    profile = cProfile.Profile()
    profile.runcall(fn)
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


@pytest.fixture
def count_calls() -> CallCounter:
    return count_function_calls
