"""The one integer check (``vcmm.checks``): what it accepts, and that the source uses it.

Issue 9 found 52 inline copies of ``isinstance(x, bool) or not isinstance(x, int)``;
they disagreed about numpy integers.  One test now decides, and a source scan keeps
new copies from creeping back.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vcmm import SZ_4K, System
from vcmm.checks import check_int, is_int
from vcmm.errors import InvalidArgumentError, VcmmError

SRC = Path(__file__).resolve().parents[1] / "src" / "vcmm"
INLINE = re.compile(
    r"isinstance\((\w[\w.]*), bool\) or not isinstance\(\1, int(?: \| np\.integer)?\)"
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, True), (-3, True), (np.int64(5), True), (np.uint32(7), True), (True, False),
     (np.bool_(True), False), (1.0, False), ("4", False), (None, False)],
)  # fmt: skip
def test_is_int_takes_python_and_numpy_integers_but_not_bools(
    value: object, expected: bool
) -> None:
    assert is_int(value) is expected


def test_check_int_returns_a_plain_int_and_names_the_rule() -> None:
    number = check_int("vcm_reserve", "len", np.int64(SZ_4K))
    assert type(number) is int and number == SZ_4K
    with pytest.raises(InvalidArgumentError, match=r"vcm_reserve: len -1 must be >= 0"):
        check_int("vcm_reserve", "len", -1)
    with pytest.raises(InvalidArgumentError, match=r"len True is not an integer"):
        check_int("vcm_reserve", "len", True)


def test_no_inline_copies_of_the_integer_check_remain() -> None:
    hits = [
        f"{path.relative_to(SRC)}:{n}"
        for path in sorted(SRC.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if INLINE.search(line)
    ]
    assert hits == []


def test_public_calls_take_numpy_integers_as_integers_and_refuse_bools() -> None:
    system = System.default()
    vcm = system.vcm_create(np.int64(SZ_4K), np.int64(SZ_4K * 16))
    res = system.vcm_reserve(vcm, np.int64(SZ_4K), 0)
    assert res.len == SZ_4K
    before = system.snapshot()
    with pytest.raises(VcmmError):
        system.vcm_reserve(vcm, True, 0)
    assert system.snapshot() == before
