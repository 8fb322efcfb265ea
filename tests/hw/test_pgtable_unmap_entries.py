"""``PageTable.unmap(entries=False)``: the same unmap, without decoding what it removed.

``vcm_unback`` does not read the leaves an unmap removed; decoding 16384 of them was
most of its time.  The quiet unmap must change exactly what the reporting one changes
(table bytes, table pages kept or released, errors), with the reporting unmap on a
twin table as the oracle.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from vcmm.errors import VcmmError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, SZ_4M

from .test_pgtable_map_many import FORMATS, RAM, Piece, pieces, state


def _make(fmt: PageTableFormat, keep: bool) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, 0x1000_0000))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(fmt, mem, tm, keep_tables=keep)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(
    fmt=st.sampled_from(FORMATS),
    ps=pieces(),
    keep=st.booleans(),
    cut=st.tuples(st.integers(0, 39), st.integers(0, 2), st.integers(-1, 1)),
)
def test_a_quiet_unmap_changes_what_a_reporting_unmap_changes(
    fmt: PageTableFormat, ps: list[Piece], keep: bool, cut: tuple[int, int, int]
) -> None:
    told, quiet = _make(fmt, keep), _make(fmt, keep)
    try:
        told[2].map_many(ps)
    except VcmmError:  # e.g. two security states in one ARMv7 level-2 table
        return
    quiet[2].map_many(ps)
    # a range from one piece's start to another's end, a page short or long: whole
    # pieces, blocks cut in two, or a hole (an error that must leave both unchanged)
    first = cut[0] % len(ps)
    last = min(first + cut[1], len(ps) - 1)
    va = ps[first][0]
    size = ps[last][0] + ps[last][2] - va + cut[2] * SZ_4K
    try:
        removed = told[2].unmap(va, size)
    except VcmmError as exc:
        event("refused")
        before = state(*quiet)
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            quiet[2].unmap(va, size, entries=False)
        assert state(*quiet) == before
        return
    event("unmapped")
    assert removed
    assert quiet[2].unmap(va, size, entries=False) == []
    assert state(*quiet) == state(*told)
