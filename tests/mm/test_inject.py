"""Fault injection (``vcmm.inject.fail_nth``): the n-th allocation fails, as Linux's
fail-nth makes the n-th fault-injection point of a task fail.

Each allocator must count once per allocation call, fail with the error it raises
when really exhausted, and leave itself exactly as before; invalid arguments are
refused before the point (they are not allocations); other threads are not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

import vcmm
from vcmm import inject
from vcmm.errors import (
    InvalidArgumentError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
)
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.tablemem import TableMemory
from vcmm.inject import AllocSite, fail_nth
from vcmm.mm.buddy import BuddyAllocator
from vcmm.mm.genalloc import RangeAllocator
from vcmm.mm.iova import IovaDomain
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_policy import new_iova_domain
from vcmm.mm.pools import BlockPool, ContiguousPool, SystemRamTarget
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1K, SZ_1M, SZ_4K, SZ_16M, SZ_64K

RAM = 0x8000_0000


def _tables() -> TableMemory:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    return TableMemory(mem, AddressRange(RAM, SZ_64K))


def _space() -> RangeAllocator:
    return RangeAllocator(AddressRange(SZ_16M, SZ_16M), granule=SZ_4K)


def _buddy() -> BuddyAllocator:
    return BuddyAllocator(AddressRange(RAM, SZ_16M), max_order=10)


# (name, allocator factory, one allocation, the site, the error it raises)
CASES: list[tuple[str, Callable[[], Any], Callable[[Any], object], AllocSite, type]] = [
    ("table", _tables, lambda t: t.alloc(SZ_1K), AllocSite.TABLE, OutOfMemoryError),
    ("range", _space, lambda r: r.alloc(SZ_64K, SZ_64K), AllocSite.ADDRESS, OutOfAddressSpaceError),
    (
        "range at",
        _space,
        lambda r: r.alloc_at(r.free_ranges()[-1].start, SZ_4K),
        AllocSite.ADDRESS,
        OutOfAddressSpaceError,
    ),
    ("buddy order", _buddy, lambda b: b.alloc_pages(3), AllocSite.PHYS, OutOfMemoryError),
    (
        "buddy exact",
        _buddy,
        lambda b: b.alloc_pages_exact(3 * SZ_4K),
        AllocSite.PHYS,
        OutOfMemoryError,
    ),
    (
        "buddy largest first",
        _buddy,
        lambda b: b.alloc_pages_largest_first(SZ_64K + SZ_4K),
        AllocSite.PHYS,
        OutOfMemoryError,
    ),
    (
        "block pool",
        lambda: BlockPool.carve("blocks", RAM, {SZ_1M: 2, SZ_64K: 4, SZ_4K: 8}),
        lambda p: p.allocate(SZ_1M + SZ_64K),
        AllocSite.PHYS,
        OutOfMemoryError,
    ),
    (
        "contiguous pool",
        lambda: ContiguousPool("contig", AddressRange(RAM, SZ_16M)),
        lambda p: p.allocate(3 * SZ_4K),
        AllocSite.PHYS,
        OutOfMemoryError,
    ),
    (
        "system RAM",
        lambda: SystemRamTarget.from_range(AddressRange(RAM, SZ_16M)),
        lambda t: t.allocate(5 * SZ_4K),
        AllocSite.PHYS,
        OutOfMemoryError,
    ),
    (
        "iova",
        lambda: IovaDomain(SZ_4K),
        lambda d: d.alloc(SZ_64K),
        AllocSite.IOVA,
        OutOfAddressSpaceError,
    ),
    (
        "iova linux",
        lambda: LinuxIovaDomain(SZ_4K),
        lambda d: d.alloc(SZ_64K),
        AllocSite.IOVA,
        OutOfAddressSpaceError,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "alloc", "site", "error"), CASES, ids=[c[0] for c in CASES]
)
def test_each_allocator_fails_the_nth_call_like_a_shortage_and_changes_nothing(
    name: str, make: Callable[[], Any], alloc: Callable[[Any], object], site: AllocSite, error: type
) -> None:
    allocator = make()
    with fail_nth(2) as injector:
        first = alloc(allocator)  # the first call passes, the second fails
        before = allocator.snapshot()
        with pytest.raises(error) as raised:
            alloc(allocator)
    assert type(raised.value) is error  # exactly what a real shortage raises
    # ...saying it was injected (a pool that words its own refusal keeps it as the cause)
    assert "fault injection" in str(raised.value.__cause__ or raised.value)
    assert allocator.snapshot() == before
    assert injector.fired and injector.failed is not None and injector.failed[0] is site
    assert [s for s, _ in injector.seen] == [site, site]  # one point per allocation call
    assert alloc(allocator) != first  # outside the block nothing fails


def test_the_count_runs_over_every_allocator_and_only_the_nth_fails() -> None:
    tables, space, iova = _tables(), _space(), IovaDomain(SZ_4K)
    with fail_nth(3) as injector:
        tables.alloc(SZ_1K)
        space.alloc(SZ_4K)
        with pytest.raises(OutOfAddressSpaceError):
            iova.alloc(SZ_4K)
        tables.alloc(SZ_1K)  # the 4th passes
    assert [s for s, _ in injector.seen] == [
        AllocSite.TABLE,
        AllocSite.ADDRESS,
        AllocSite.IOVA,
        AllocSite.TABLE,
    ]
    assert injector.failed == (AllocSite.IOVA, "IovaDomain")
    assert len(iova) == 0 and len(tables.blocks()) == 2 and space.allocated_bytes == SZ_4K


def test_sites_restrict_what_is_counted() -> None:
    tables, space = _tables(), _space()
    with fail_nth(1, sites={AllocSite.TABLE}) as injector:
        space.alloc(SZ_4K)  # not counted
        with pytest.raises(OutOfMemoryError, match="page-table page allocation #1"):
            tables.alloc(SZ_1K)
    assert injector.seen == [(AllocSite.TABLE, "TableMemory")]


def test_refused_arguments_are_not_allocations_and_fewer_calls_do_not_fire() -> None:
    space = _space()
    with fail_nth(1) as injector, pytest.raises(InvalidArgumentError):
        space.alloc(123)  # not a granule multiple: refused before the point
    assert injector.seen == [] and not injector.fired


def test_split_and_join_are_not_allocations() -> None:
    space = _space()
    addr = space.alloc(4 * SZ_4K)
    with fail_nth(1) as injector:
        space.split(addr, SZ_4K)
        space.join(addr, addr + SZ_4K)
    assert injector.seen == []
    assert space.allocated() == [AddressRange(addr, 4 * SZ_4K)]


def test_the_injector_belongs_to_the_thread_that_armed_it() -> None:
    space = _space()
    results: list[object] = []
    with fail_nth(1) as injector:
        worker = threading.Thread(target=lambda: results.append(space.alloc(SZ_4K)))
        worker.start()
        worker.join()
        with pytest.raises(OutOfAddressSpaceError):
            space.alloc(SZ_4K)
    assert results == [SZ_16M]  # the other thread's allocation was neither failed nor counted
    assert len(injector.seen) == 1


def test_a_caller_that_falls_back_gets_its_next_allocation_counted() -> None:
    """vcm_phys_alloc tries targets in order: failing the first makes it use the next."""
    system = vcmm.System.default()
    with fail_nth(1) as injector:
        physmem = system.vcm_phys_alloc(["blocks", "contig"], SZ_64K)
    assert physmem.target == "contig"
    assert injector.seen == [(AllocSite.PHYS, "BlockPool"), (AllocSite.PHYS, "RangeAllocator")]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"n": 0}, InvalidArgumentError),
        ({"n": True}, InvalidArgumentError),
        ({"n": 1, "sites": []}, InvalidArgumentError),
        ({"n": 1, "sites": ["table"]}, InvalidArgumentError),
    ],
)
def test_bad_injector_arguments_are_refused(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error), fail_nth(**kwargs):
        pass


def test_a_range_allocator_counts_as_the_site_it_is_given() -> None:
    pool = RangeAllocator(AddressRange(RAM, SZ_1M), granule=SZ_4K, site=AllocSite.PHYS)
    with fail_nth(1) as injector, pytest.raises(OutOfAddressSpaceError):  # what it raises
        pool.alloc(SZ_4K)
    assert injector.failed == (AllocSite.PHYS, "RangeAllocator")
    with pytest.raises(InvalidArgumentError, match=r"not an inject\.AllocSite"):
        RangeAllocator(AddressRange(RAM, SZ_1M), granule=SZ_4K, site="phys")  # type: ignore[arg-type]


def test_injectors_do_not_nest() -> None:
    with fail_nth(5), pytest.raises(StateError, match="already armed"), fail_nth(1):
        pass
    space = _space()
    space.alloc(SZ_4K)  # disarmed after both blocks


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_a_range_cache_hit_is_an_injection_point_too(policy: str) -> None:
    """The IOVA domains test ``inject.armed`` before calling the point on their cache
    hit path: an armed injector still fails a hit, and the range stays cached."""
    iovad = new_iova_domain(policy, SZ_4K)
    cached = iovad.alloc(SZ_4K)
    iovad.free(cached)
    before = iovad.snapshot()
    with fail_nth(1) as injector, pytest.raises(OutOfAddressSpaceError, match="fault injection"):
        iovad.alloc(SZ_4K)
    assert injector.failed == (AllocSite.IOVA, type(iovad).__name__)
    assert iovad.snapshot() == before and iovad.cached_count == 1
    assert iovad.alloc(SZ_4K) == cached  # disarmed: the same call hits the cache
    assert iovad.counters.rcache_hits == 1


def test_the_armed_count_is_zero_again_after_a_block_that_raised() -> None:
    assert inject.armed == 0
    with pytest.raises(RuntimeError), fail_nth(1):
        assert inject.armed == 1
        raise RuntimeError("boom")
    assert inject.armed == 0
