"""PageTable.map_many: many pieces in one edit, byte for byte what map per piece writes.

The reference is the table itself mapping the pieces one call at a time: the same
memory bytes, the same table pages (allocated in the same order), the same leaves.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import RO_WB, RW_NC, RW_WB, PageAttrs
from vcmm.errors import AlignmentError, AlreadyMappedError, InvalidArgumentError, VcmmError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_64K

RAM = 0x8000_0000
FORMATS = [ARMV7S, VMSAV8_4K, ARMV7_LPAE]

Piece = tuple[int, int, int, PageAttrs]
#: The other security state: on ARMv7 short descriptors the NS bit is in the level-1
#: table descriptor, so pieces sharing a level-2 table must agree on it.
OTHER_NS = RW_WB.with_(ns=not RW_WB.ns)


def make(fmt: PageTableFormat) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, 0x1000_0000))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(fmt, mem, tm)


def state(mem: PhysicalMemory, tm: TableMemory, pt: PageTable) -> tuple[object, ...]:
    return pt.snapshot(), tm.snapshot(), mem.digest()


@st.composite
def pieces(draw: st.DrawFn) -> list[Piece]:
    """Disjoint pieces over 64 MiB of input space, sizes and alignments mixed."""
    out: list[Piece] = []
    va = draw(st.integers(0, 64)) * SZ_4K
    single = draw(st.booleans())  # every piece one 4K page: the vectorised path
    for _ in range(draw(st.integers(1, 40 if single else 12))):
        size = (
            SZ_4K
            if single
            else draw(st.sampled_from([SZ_4K, 3 * SZ_4K, SZ_64K, SZ_1M + SZ_4K, SZ_2M]))
        )
        pa = RAM + SZ_4M + draw(st.integers(0, 255)) * SZ_64K
        out.append((va, pa, size, draw(st.sampled_from([RW_WB, RO_WB, RW_NC, OTHER_NS]))))
        va += size + draw(st.sampled_from([0, 0, SZ_4K, SZ_1M, 2 * SZ_2M]))
    return out


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.sampled_from(FORMATS), pieces(), st.booleans())
def test_map_many_writes_what_map_per_piece_writes(
    fmt: PageTableFormat, ps: list[Piece], premapped: bool
) -> None:
    one, many = make(fmt), make(fmt)
    if premapped:  # tables that exist already, next to the pieces
        for t in (one, many):
            t[2].map(ps[0][0] + 8 * SZ_2M, RAM + SZ_4M, SZ_4K, RW_WB)
    before = state(*many)
    try:
        expected = [e for va, pa, size, attrs in ps for e in one[2].map(va, pa, size, attrs)]
    except VcmmError as exc:  # e.g. two security states in one ARMv7 level-2 table
        with pytest.raises(type(exc)):
            many[2].map_many(ps)
        assert state(*many) == before  # all or nothing
        return
    assert many[2].map_many(ps) == expected
    assert state(*many) == state(*one)


@pytest.mark.parametrize("fmt", FORMATS, ids=["v7s", "v8", "lpae"])
def test_a_piece_overlapping_an_earlier_piece_maps_nothing(fmt: PageTableFormat) -> None:
    mem, tm, pt = make(fmt)
    pt.map(0x4000_0000, RAM + SZ_4M, SZ_64K, RW_WB)
    before = state(mem, tm, pt)
    ps = [
        (0x1000_0000, RAM + SZ_4M, SZ_1M, RW_WB),  # new tables for this one
        (0x2000_0000, RAM + SZ_4M, SZ_4K, RW_WB),
        (0x1008_0000, RAM + SZ_4M, SZ_4K, RW_WB),  # inside the first piece
    ]
    with pytest.raises(AlreadyMappedError, match=r"0x10080000.*nothing was mapped"):
        pt.map_many(ps)
    assert state(mem, tm, pt) == before
    with pytest.raises(AlreadyMappedError):  # and one that meets an older mapping
        pt.map_many([(0x1000_0000, RAM, SZ_4K, RW_WB), (0x4000_1000, RAM, SZ_4K, RW_WB)])
    assert state(mem, tm, pt) == before


@pytest.mark.parametrize("fmt", FORMATS, ids=["v7s", "v8", "lpae"])
def test_single_pages_refused_exactly_as_one_by_one(fmt: PageTableFormat) -> None:
    """The vectorised path proves nothing wrong or leaves it to the exact one: the same
    error as map per piece gives, and nothing changed."""
    mem, tm, pt = make(fmt)
    pt.map(0x4000_0000, RAM + SZ_4M, SZ_2M, RW_WB)  # a block in the way
    pt.map(0x5000_0000, RAM + SZ_4M, SZ_4K, RW_WB)  # a page in the way
    before = state(mem, tm, pt)
    for clash in (0x4000_3000, 0x5000_0000, 0x6000_0000):
        ps = [(0x6000_0000 + k * SZ_4K, RAM + SZ_4M, SZ_4K, RW_WB) for k in range(8)]
        ps.append((clash, RAM, SZ_4K, RW_WB))
        with pytest.raises(AlreadyMappedError, match=f"{clash:#x}"):
            pt.map_many(ps)
        assert state(mem, tm, pt) == before
    assert (
        len(pt.map_many([(0x7000_0000 + k * SZ_4K, RAM, SZ_4K, RO_WB) for k in range(600)])) == 600
    )
    assert pt.walk(0x7000_0000 + 599 * SZ_4K).pa == RAM


def test_a_bad_piece_is_refused_before_any_write() -> None:
    mem, tm, pt = make(ARMV7S)
    before = state(mem, tm, pt)
    good = (0x1000_0000, RAM + SZ_4M, SZ_4K, RW_WB)
    with pytest.raises(AlignmentError, match="piece 1: pa 0x80400800"):
        pt.map_many([good, (0x2000_0000, RAM + SZ_4M + 0x800, SZ_4K, RW_WB)])
    with pytest.raises(InvalidArgumentError, match="piece 1 is"):
        pt.map_many([good, (0x2000_0000, RAM, SZ_4K)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="attrs must be a PageAttrs"):
        pt.map_many([good, (0x2000_0000, RAM, SZ_4K, "rw")])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="sequence"):
        pt.map_many(iter([good]))  # type: ignore[arg-type]
    assert state(mem, tm, pt) == before
    assert pt.map_many([]) == []
    assert state(mem, tm, pt) == before
