"""Calls that fail part way are undone without touching TLBs or counters (issue 10,
items 8 and 9).

The failures are made with ``vcmm.inject.fail_nth``: the n-th page-table page (or
address range) allocation of the call fails exactly as if table memory had run out.
"""

from __future__ import annotations

from typing import Any

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M
from vcmm.core import AssocAttr, Attr, PhysAttr
from vcmm.errors import OutOfMemoryError
from vcmm.inject import AllocSite, fail_nth
from vcmm.proc import MAP_SHARED, PROT_READ, ProcessTable

TABLES = {AllocSite.TABLE}


def _section(system: vcmm.System, physmem: Any) -> tuple[Any, Any]:
    """``physmem`` (1 MiB) mapped by vcodec_a_mm1 with one section."""
    a = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(a, "vcodec_a_mm1", 0))
    ra = system.vcm_reserve(a, SZ_1M, Attr.RW)
    system.vcm_back(ra, physmem)
    return a, ra


def _one_page_alias(system: vcmm.System, physmem: Any) -> None:
    """Page 0 of ``physmem`` mapped by vcodec_b_mm2.  Once a third space maps all of
    it (so the section is shareable as a whole), unmapping that third alias
    un-shares all of the section but this page: the section must be split, which
    needs a second-level table."""
    c = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(c, "vcodec_b_mm2", 0))
    rc = system.vcm_reserve(c, SZ_4K, Attr.RW)
    system.vcm_back(rc, system.vcm_phys_view(physmem, 0, SZ_4K))


def test_a_failed_unback_keeps_every_iotlb_entry_and_counter(system, armv7) -> None:
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    a, ra = _section(system, physmem)
    b = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(b, "mdp", 0))
    rb = system.vcm_reserve(b, SZ_1M, Attr.RW)
    system.vcm_back(rb, physmem)
    _one_page_alias(system, physmem)
    mdp = system.device("mdp")
    mdp.read(rb.dev_addr, 4)  # smmu1's IOTLB now holds mdp's section
    assert armv7.leaf(a.table.root, ra.dev_addr).kind == "section"
    before = system.snapshot()
    with fail_nth(1, sites=TABLES) as injector, pytest.raises(OutOfMemoryError) as err:
        system.vcm_unback(rb)
    assert injector.failed == (AllocSite.TABLE, "TableMemory")
    assert f"vcm_unback: unbacking {rb.name} failed and was undone" in str(err.value)
    assert system.snapshot() == before  # IOTLB entries and counters included
    # The entry is still cached: the next read hits without a walk.
    hits = mdp.ctx.smmu.stats().hits
    mdp.read(rb.dev_addr, 4)
    assert mdp.ctx.smmu.stats().hits == hits + 1
    # Without the injection it succeeds, and the step that failed was the split.
    system.vcm_unback(rb)
    assert armv7.leaf(a.table.root, ra.dev_addr).kind == "small"


class _Buffer(vcmm.proc.File):
    """A driver file whose mmap hands out one allocation (remap_pfn_range)."""

    def __init__(self, physmem: Any) -> None:
        super().__init__("buffer")
        self.physmem = physmem

    def mmap(self, vma: Any) -> None:
        vma.remap(self.physmem)


def test_a_failed_munmap_keeps_the_processs_tlb_entries(system) -> None:
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    _section(system, physmem)
    table = ProcessTable(system)
    proc = table.spawn("viewer")
    fd = proc.open(_Buffer(physmem))
    va = proc.mmap(SZ_1M, PROT_READ, MAP_SHARED, fd)
    _one_page_alias(system, physmem)
    proc.read(va, 4)  # the CPU TLB holds the page under the process's ASID
    before = system.snapshot(), [(v.start, v.length) for v in proc.vmas]
    with fail_nth(1, sites=TABLES), pytest.raises(OutOfMemoryError):
        proc.munmap(va, SZ_1M)
    assert (system.snapshot(), [(v.start, v.length) for v in proc.vmas]) == before
    hits = system.cpu.tlb.stats.hits
    proc.read(va, 4)
    assert system.cpu.tlb.stats.hits == hits + 1
    proc.munmap(va, SZ_1M)
    assert proc.vmas == []


def test_one_call_rewriting_both_halves_of_a_split_context_brackets_it_once(system, armv7) -> None:
    """The low and the high VCM of one split context map the same memory: backing the
    second rewrites the first (shareable) and changes both tables in one bracket of
    their common context; unbacking it clears the bit again."""
    dev = system.device("vcodec_b_mm2")
    low = system.vcm_create(SZ_16M, 64 * SZ_1M)
    high = system.vcm_create(0xC000_0000, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(low, dev, AssocAttr.SPLIT | AssocAttr.USE_LOW))
    system.vcm_activate(system.vcm_assoc(high, dev, AssocAttr.SPLIT | AssocAttr.USE_HIGH))
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    r_low = system.vcm_reserve(low, SZ_1M, Attr.RW)
    system.vcm_back(r_low, physmem)
    dev.read(r_low.dev_addr, 4)
    r_high = system.vcm_reserve(high, SZ_1M, Attr.RW)
    system.vcm_back(r_high, physmem)
    assert not dev.ctx.in_update
    assert armv7.leaf(low.table.root, r_low.dev_addr).shareable
    assert armv7.leaf(high.table.root, r_high.dev_addr).shareable
    # The context's TLB entry of the low half was invalidated: the device sees S=1.
    assert dev.ctx.translate(r_low.dev_addr) == physmem.chunk_ranges[0].start
    system.vcm_unback(r_high)
    assert not armv7.leaf(low.table.root, r_low.dev_addr).shareable
    assert not dev.ctx.in_update


def test_split_and_merge_take_no_allocation_so_they_cannot_fail_half_way(system) -> None:
    """vcm_split once freed the range and placed its two parts again: a failure of the
    second placement lost the range.  Now the allocator cuts it in place."""
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    system.vcm_back(res, physmem)
    rest_view = system.vcm_phys_view(physmem, SZ_4K, SZ_1M - SZ_4K)
    before = system.snapshot()
    with fail_nth(1) as injector:
        rest = system.vcm_split(res, SZ_4K, rest_view)
    assert injector.seen == []  # no allocation: nothing can fail after the checks
    assert vcm.allocator.allocated() == [
        vcmm.AddressRange(res.dev_addr, SZ_4K),
        vcmm.AddressRange(res.dev_addr + SZ_4K, SZ_1M - SZ_4K),
    ]
    with fail_nth(1) as injector:
        system.vcm_merge(res, rest)
    assert injector.seen == []
    assert system.snapshot() == before


def test_an_outer_transaction_takes_a_backing_back_once_with_vcm_unback(system) -> None:
    """vcm_back logs its table writes in a transaction of its own: a caller's
    transaction that fails later undoes the backing with vcm_unback alone.  (Were the
    table writes joined into the caller's undo as well, the pages would be unmapped
    twice and the second unmap refused.)"""
    from vcmm.undo import Transaction

    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    before = system.snapshot()
    with pytest.raises(RuntimeError, match="later step"), Transaction("driver") as txn:
        system.vcm_back(res, physmem)
        txn.on_undo(system.vcm_unback, res)
        raise RuntimeError("a later step of the caller failed")
    assert res.physmem is None
    assert system.snapshot() == before
