"""TLB maintenance through one gather: merging, the 64-range policy, and its targets
(an SMMU context's bank, the CPU per ASID and for the kernel's global mappings)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import RW_WB, Access, PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import VMALLOC_AREA, Cpu
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import PRECISE_INVALIDATION_LIMIT, Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.hw.tlbgather import TlbGather
from vcmm.ranges import AddressRange, coalesce
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_64K, SZ_64M

RAM = 0x8000_0000


class Recorder:
    """A flush target that writes down what it is asked to invalidate."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int] | str] = []

    def flush_range(self, va: int, size: int) -> int:
        self.calls.append((va, size))
        return 1

    def flush_all(self) -> int:
        self.calls.append("all")
        return 100


def test_ranges_that_overlap_or_touch_are_invalidated_once() -> None:
    target = Recorder()
    gather = TlbGather(target)
    gather.add_range(0x3000, 0x1000)
    gather.add_page(0x1000, SZ_4K)
    gather.add_range(0x2000, 0x1000)  # touches both neighbours
    gather.add_range(0x10_0000, SZ_64K)
    gather.add_page(0x10_0000, SZ_4K)  # inside the 64K one
    assert gather.pending() == [(0x1000, 0x3000), (0x10_0000, SZ_64K)]
    assert gather.sync() == 2
    assert target.calls == [(0x1000, 0x3000), (0x10_0000, SZ_64K)]
    assert len(gather) == 0 and gather.sync() == 0  # a sync starts afresh


@pytest.mark.parametrize(
    ("count", "expected"),
    [(PRECISE_INVALIDATION_LIMIT, PRECISE_INVALIDATION_LIMIT), (PRECISE_INVALIDATION_LIMIT + 1, 1)],
)
def test_past_the_limit_the_whole_address_space_is_flushed(count: int, expected: int) -> None:
    target = Recorder()
    gather = TlbGather(target)
    for k in range(count):
        gather.add_page(k * 2 * SZ_4K, SZ_4K)  # disjoint: nothing merges
    gather.sync()
    assert len(target.calls) == expected
    assert (target.calls == ["all"]) == (count > PRECISE_INVALIDATION_LIMIT)


def test_discard_forgets_what_an_undo_restored() -> None:
    target = Recorder()
    gather = TlbGather(target, limit=2)
    gather.add_range(0, SZ_4K)
    gather.discard()
    assert gather.sync() == 0 and target.calls == []


@pytest.mark.parametrize(
    "call",
    [
        lambda g: g.add_range(-SZ_4K, SZ_4K),
        lambda g: g.add_range(0, 0),
        lambda g: g.add_range(0, "4K"),
        lambda g: g.add_range((1 << 64) - SZ_4K, 2 * SZ_4K),
        lambda g: g.add_page(0x1000, 0x3000),  # not a power of two
        lambda g: g.add_page(0x1000, SZ_64K),  # does not align va
    ],
)
def test_misuse_is_refused_and_leaves_the_gather_as_it_was(call: object) -> None:
    gather = TlbGather(Recorder())
    gather.add_range(0x5000, SZ_4K)
    with pytest.raises(InvalidArgumentError):
        call(gather)  # type: ignore[operator]
    assert gather.pending() == [(0x5000, SZ_4K)]


def test_a_target_and_a_limit_are_checked() -> None:
    with pytest.raises(InvalidArgumentError, match="flush_range"):
        TlbGather(object())  # type: ignore[arg-type]
    for limit in (0, True, 1.5):
        with pytest.raises(InvalidArgumentError, match="limit"):
            TlbGather(Recorder(), limit=limit)  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 64), st.integers(1, 8)), max_size=20))
def test_coalesce_covers_exactly_the_same_addresses(spans: list[tuple[int, int]]) -> None:
    merged = coalesce(spans)
    covered = {a for start, size in spans for a in range(start, start + size)}
    assert {a for start, size in merged for a in range(start, start + size)} == covered
    # canonical: sorted, and no two merged spans overlap or touch
    assert all(a[0] + a[1] < b[0] for a, b in itertools.pairwise(merged))


# -- the hardware targets --------------------------------------------------------------------


def test_smmu_update_done_past_the_limit_drops_the_banks_tag_only() -> None:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_64M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu("smmu0", memory, tables, context_banks=2, tlb=TLBConfig(128, 128))
    ctxs = []
    for name in ("a", "b"):
        ctx = smmu.context_init(name)
        ctx.bind(smmu)
        ctx.activate()
        ctx.update_start()
        ctx.map_range(0, RAM + SZ_4M, SZ_1M, RW_WB, page_size=SZ_4K)
        ctx.update_done()
        ctx.translate_access(0x8_0000, Access.READ)  # one entry each, far from the change
        ctxs.append(ctx)
    a, b = ctxs
    a.update_start()
    for k in range(PRECISE_INVALIDATION_LIMIT + 1):  # disjoint pages: 65 ranges
        a.unmap(k * 2 * SZ_4K, SZ_4K)
    assert a.update_done() == 1  # the whole tag of a's bank, although nothing overlapped
    assert [e.tag for e in smmu.tlb.entries()] == [b.bank]


def _cpu() -> Cpu:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_64M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    return Cpu(memory, tables, cache=CacheConfig(), tlb=TLBConfig(256, 256))


def test_cpu_user_gather_past_the_limit_flushes_its_asid_only() -> None:
    cpu = _cpu()
    for asid in (1, 2):
        cpu.create_address_space(asid)
        cpu.map_user(asid, 0x40_0000, RAM + SZ_4M, SZ_1M, PageAttrs(user=True))
        cpu.translate(0x40_0000, asid=asid, user=True)
    kernel_va = cpu.phys_to_virt(RAM + SZ_4M)
    cpu.translate(kernel_va)  # a global kernel entry
    gather = cpu.tlb_gather(1)
    for k in range(PRECISE_INVALIDATION_LIMIT + 1):
        gather.add_page(0x100_0000 + k * 2 * SZ_4K, SZ_4K)  # nothing cached there
    assert gather.sync() == 1  # TLBIASID 1: its entry went, though it did not overlap
    left = {(e.tag, e.global_) for e in cpu.tlb.entries()}
    assert (1, False) not in left and (2, False) in left
    assert any(g for _, g in left)  # the kernel's global entry stays


def test_cpu_kernel_gather_past_the_limit_flushes_everything() -> None:
    cpu = _cpu()
    cpu.create_address_space(1)
    cpu.map_user(1, 0x40_0000, RAM + SZ_4M, SZ_1M, PageAttrs(user=True))
    cpu.translate(0x40_0000, asid=1, user=True)
    cpu.translate(cpu.phys_to_virt(RAM + SZ_4M))
    held = len(cpu.tlb)
    gather = cpu.tlb_gather()
    for k in range(PRECISE_INVALIDATION_LIMIT + 1):
        gather.add_page(VMALLOC_AREA.start + k * 2 * SZ_4K, SZ_4K)
    assert gather.sync() == held == 2 and len(cpu.tlb) == 0  # TLBIALL


def test_cpu_gather_refuses_a_bad_asid() -> None:
    cpu = _cpu()
    for asid in (0, -1, 1 << 16, "1"):
        with pytest.raises(InvalidArgumentError, match="ASID"):
            cpu.tlb_gather(asid)  # type: ignore[arg-type]


def test_queued_ranges_stay_cached_and_the_rest_is_invalidated() -> None:
    """Linux's lazy mode: a gather marked queued skips the invalidation of the unmapped
    range (a flush queue does it later); anything else reported still goes, and a merged
    range reaching outside the queued ones is invalidated whole."""
    target = Recorder()
    gather = TlbGather(target)
    queued = (AddressRange(0x10_0000, 0x2000),)
    with gather.queued(queued):
        gather.add_range(0x10_0000, 0x1000)  # inside the queued range
        gather.add_range(0x40_0000, 0x1000)  # elsewhere
        assert gather.sync() == 1
    assert target.calls == [(0x40_0000, 0x1000)]
    with gather.queued(queued):
        gather.add_range(0x10_1000, 0x2000)  # reaches past the queued range
        gather.sync()
    assert target.calls[-1] == (0x10_1000, 0x2000)
    gather.add_range(0x10_0000, 0x1000)  # the block ended: invalidated as usual
    gather.sync()
    assert target.calls[-1] == (0x10_0000, 0x1000)
    bad = ((0, 1),)
    with pytest.raises(InvalidArgumentError, match="not AddressRanges"), gather.queued(bad):  # type: ignore[arg-type]
        pass
