"""The one range walk (walk_range + Visitor) and the PageTable calls built on it.

The expected tables are worked out from the ARMv7 short-descriptor layout: a 4 GiB
space of 4096 first-level slots of 1 MiB, second-level tables of 256 slots of 4 KiB,
so the table a walk visits for an address follows from VA[31:20] and VA[19:12].
"""

from __future__ import annotations

import pytest

from vcmm.attrs import PageAttrs
from vcmm.errors import InvalidArgumentError, NotMappedError, StateError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, VMSAV8_4K, PageTable, Slots, Visitor, walk_range
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_16M, SZ_64K

RAM = 0x8000_0000
A = PageAttrs()


def make(fmt: object = ARMV7S) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, 0x1000_0000))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(fmt, mem, tm)  # type: ignore[arg-type]


class Recorder(Visitor):
    """Writes down every call, and refuses to descend below ``skip``."""

    def __init__(self, skip: int | None = None) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.skip = skip

    def table(self, slots: Slots) -> None:
        self.calls.append(("table", slots.level.level, slots.start, slots.end, slots.i0))
        self.calls.append(("words", len(slots.words), int(slots.tables.sum())))

    def descend(self, slots: Slots, j: int, desc: int, va: int) -> bool:
        self.calls.append(("descend", slots.va(j), va))
        return va != self.skip

    def ascend(self, slots: Slots, j: int, child: int) -> None:
        self.calls.append(("ascend", slots.va(j)))

    def leave(self, slots: Slots) -> None:
        self.calls.append(("leave", slots.level.level))


def test_walk_visits_the_tables_of_the_range_parents_first_in_address_order() -> None:
    mem, _, pt = make()
    pt.map(0x10_0000, RAM, SZ_4K, A)  # a second-level table under slot 1
    pt.map(0x20_0000, RAM, SZ_1M, A)  # a section in slot 2
    pt.map(0x30_3000, RAM, 2 * SZ_4K, A)  # a second-level table under slot 3
    rec = Recorder()
    walk_range(pt.geometry, mem, pt.root, 0x10_0000, 0x30_5000, rec)
    assert rec.calls == [
        ("table", 1, 0x10_0000, 0x30_5000, 1),  # slots 1..3 of the first level
        ("words", 3, 2),  # two of them table descriptors
        ("descend", 0x10_0000, 0x10_0000),
        ("table", 2, 0x10_0000, 0x20_0000, 0),  # the whole second-level table of slot 1
        ("words", 256, 0),
        ("leave", 2),
        ("ascend", 0x10_0000),
        ("descend", 0x30_0000, 0x30_0000),
        ("table", 2, 0x30_0000, 0x30_5000, 0),  # slots 0..4: the range ends inside it
        ("words", 5, 0),
        ("leave", 2),
        ("ascend", 0x30_0000),
        ("leave", 1),
    ]


def test_a_visitor_can_skip_a_subtree() -> None:
    mem, _, pt = make()
    pt.map(0x10_0000, RAM, SZ_4K, A)
    pt.map(0x30_3000, RAM, SZ_4K, A)
    rec = Recorder(skip=0x10_0000)
    walk_range(pt.geometry, mem, pt.root, 0x10_0000, 0x40_0000, rec)
    tables = [call for call in rec.calls if call[0] == "table"]
    assert tables == [("table", 1, 0x10_0000, 0x40_0000, 1), ("table", 2, 0x30_0000, 0x40_0000, 0)]
    assert ("ascend", 0x10_0000) not in rec.calls  # nothing walked, nothing to come back from


def test_find_answers_for_mapped_and_unmapped_addresses() -> None:
    _, _, pt = make()
    pt.map(0x20_0000, RAM, SZ_1M, A)
    pt.map(0x30_4000, RAM, SZ_64K, A)
    assert pt.find(0, SZ_16M, mapped=True) == 0x20_0000
    assert pt.find(0x20_0000, SZ_1M, mapped=False) is None
    assert pt.find(0x20_0000, 2 * SZ_1M, mapped=False) == 0x30_0000
    assert pt.find(0x30_0000, SZ_1M, mapped=True) == 0x30_4000
    assert pt.find(0x30_4000, SZ_64K, mapped=False) is None
    assert pt.find(0x30_4000, SZ_64K + SZ_4K, mapped=False) == 0x31_4000
    assert pt.find(0x40_0000, SZ_4K, mapped=True) is None


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda pt: pt.find(0x1000, 0, mapped=True), InvalidArgumentError),
        (lambda pt: pt.find(0x1001, SZ_4K, mapped=True), InvalidArgumentError),
        (lambda pt: pt.find(0x1000, SZ_4K, mapped=1), InvalidArgumentError),
        (lambda pt: pt.find(-SZ_4K, SZ_4K, mapped=True), InvalidArgumentError),
        (lambda pt: pt.find((1 << 32) - SZ_4K, 2 * SZ_4K, mapped=False), InvalidArgumentError),
    ],
)
def test_find_misuse_is_refused(call: object, error: type[Exception]) -> None:
    _, _, pt = make()
    with pytest.raises(error):
        call(pt)  # type: ignore[operator]


def test_find_on_a_destroyed_table_is_refused() -> None:
    _, _, pt = make(VMSAV8_4K)
    pt.destroy()
    with pytest.raises(StateError, match="destroyed"):
        pt.find(0, SZ_4K, mapped=True)


def test_a_hole_is_reported_before_a_split_that_cannot_be_made() -> None:
    """Unmapping from inside a supersection above 4 GiB would need sections that cannot
    reach it; a hole later in the range is still the error reported, as the rule
    "the whole range must be mapped" comes first, and nothing changes."""
    mem, tm, pt = make()
    pt.map(SZ_16M, 0x1_0000_0000, SZ_16M, A)
    before = (pt.snapshot(), tm.snapshot(), mem.digest())
    with pytest.raises(NotMappedError, match=f"{2 * SZ_16M:#x} is not mapped"):
        pt.unmap(SZ_16M + SZ_1M, SZ_16M)
    assert (pt.snapshot(), tm.snapshot(), mem.digest()) == before
    with pytest.raises(InvalidArgumentError, match="split"):
        pt.unmap(SZ_16M + SZ_1M, SZ_1M)  # no hole: the split is what fails


def test_a_hole_after_a_split_rolls_the_split_back() -> None:
    mem, tm, pt = make()
    pt.map(0, RAM, SZ_1M, A)
    pt.map(SZ_1M + SZ_64K, RAM, SZ_64K, A)
    before = (pt.snapshot(), tm.snapshot(), mem.digest())
    with pytest.raises(NotMappedError, match=f"{SZ_1M:#x} is not mapped"):
        pt.unmap(SZ_4K, SZ_1M + SZ_64K)  # splits the section at 4K, then meets the hole
    assert (pt.snapshot(), tm.snapshot(), mem.digest()) == before


def test_set_attrs_reports_a_hole_before_a_shared_table_field() -> None:
    mem, tm, pt = make()
    pt.map(0, RAM, 2 * SZ_4K, A)  # NS lives in the table descriptor of both pages
    before = (pt.snapshot(), tm.snapshot(), mem.digest())
    with pytest.raises(NotMappedError, match=f"{2 * SZ_4K:#x} is not mapped"):
        pt.set_attrs(SZ_4K, 2 * SZ_4K, A.with_(ns=True))
    assert (pt.snapshot(), tm.snapshot(), mem.digest()) == before
