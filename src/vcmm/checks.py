"""Argument checks every public call shares, so a bad value reads the same everywhere.

The rule of the project is that a failing call names the value and the rule broken;
these helpers phrase the commonest rules once (``call: name value must be ...``).
``bool`` is refused where an integer is wanted (Python would take ``True`` for 1), and
numpy integers are accepted and returned as plain ``int``.
"""

from __future__ import annotations

from typing import TypeGuard

import numpy as np

from vcmm.errors import InvalidArgumentError


def show(number: int) -> str:
    """Small numbers (counts, orders) in decimal, addresses and sizes in hex."""
    return str(number) if -4096 < number < 4096 else f"{number:#x}"


def _prefix(call: str) -> str:
    return f"{call}: " if call else ""


_INTEGERS = (int, np.integer)


def is_int(value: object) -> TypeGuard[int]:
    """Whether ``value`` is an integer (a numpy one too), and not a ``bool``: the test
    behind :func:`check_int`, for callers that raise an error of their own layer."""
    # A plain int answers at the first test (every small call checks a few).
    return type(value) is int or (not isinstance(value, bool) and isinstance(value, _INTEGERS))


def check_int(call: str, name: str, value: object, *, minimum: int | None = 0) -> int:
    """``value`` as an ``int``, refusing non-integers and values below ``minimum``."""
    if type(value) is int:
        number = value
    elif is_int(value):
        number = int(value)
    else:
        raise InvalidArgumentError(f"{_prefix(call)}{name} {value!r} is not an integer")
    if minimum is not None and number < minimum:
        raise InvalidArgumentError(
            f"{_prefix(call)}{name} {show(number)} must be >= {show(minimum)}"
        )
    return number
