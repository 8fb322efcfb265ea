"""The typed contracts the core hands out or checks: custom VCM allocators against
vcmm.mm.interfaces, and the front-end slots of a system."""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_4K, SZ_16M
from vcmm.core import Attr, FrontEndSlots
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.ranges import AddressRange


class PlacesItself:
    """A custom allocator with alloc/free/snapshot only (the reviewers' hook, 000
    L4053): it decides every address, so it has no alloc_at."""

    def __init__(self, window: AddressRange) -> None:
        self.next = window.start
        self.live: dict[int, int] = {}

    def alloc(self, size: int, align: int | None = None) -> int:
        addr = self.next
        self.live[addr] = size
        self.next += size
        return addr

    def free(self, addr: int) -> None:
        del self.live[addr]

    def snapshot(self) -> object:
        return (self.next, tuple(sorted(self.live.items())))


def test_an_allocator_that_places_itself_refuses_a_fixed_address() -> None:
    system = vcmm.System.default()
    window = AddressRange(SZ_16M, SZ_16M)
    vcm = system.vcm_create(window.start, window.size, allocator=PlacesItself(window))
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    assert res.addr == SZ_16M
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="no alloc_at"):
        system.vcm_reserve(vcm, SZ_4K, Attr.RW, addr=SZ_16M + 8 * SZ_4K)
    assert system.snapshot() == before


def test_a_one_to_one_vcm_needs_an_allocator_with_alloc_at() -> None:
    system = vcmm.System.default()
    ram = system.target("ebi").regions[0]
    before = system.snapshot()
    with pytest.raises(
        InvalidArgumentError, match="lacks one of the methods alloc, free, snapshot, alloc_at"
    ):
        system.vcm_create(ram.start, SZ_16M, allocator=PlacesItself(ram))
    assert system.snapshot() == before


class Counter:
    pass


def test_front_end_slots_hold_one_state_per_type() -> None:
    slots = FrontEndSlots()
    assert slots.get(Counter) is None
    made = slots.setdefault(Counter, Counter)
    assert slots.setdefault(Counter, Counter) is made and slots.get(Counter) is made
    with pytest.raises(StateError, match="already holds"):
        slots.put(Counter())
    slots.remove(Counter())  # not the one held: nothing happens
    assert slots.get(Counter) is made
    slots.remove(made)
    assert slots.get(Counter) is None
    with pytest.raises(InvalidArgumentError, match="make\\(\\) returned"):
        slots.setdefault(Counter, lambda: "not a Counter")  # type: ignore[arg-type,return-value]
    assert slots.get(Counter) is None
