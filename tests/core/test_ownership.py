"""Who may map what memory (docs/DESIGN.md, "Ownership"): wraps refuse pages the
caller does not own, naming the owner, and pins keep memory alive while something
shares it (issue 10, items 3 and 4).

The owners are read from the platform description (page-table window, target
regions), not from the code under test."""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K, AddressRange
from vcmm.core import Attr, PhysAttr
from vcmm.errors import BusyError, InvalidArgumentError, OwnershipError, StateError


def _outside_everything(system: vcmm.System) -> AddressRange:
    """A page of RAM no target and no page-table window covers (a carve-out the
    platform leaves to drivers): the first page after the page-table window."""
    page = AddressRange(system.spec.page_tables.end, SZ_4K)
    assert system.memory.is_backed(page.start, page.size)
    for t in system.targets.values():
        assert not any(page.overlaps(r) for r in t.regions)
    return page


def test_wrapping_a_free_block_of_a_target_is_refused(system: vcmm.System) -> None:
    """Issue 10 item 4: the target would hand the block out again, and the wrap would
    reach the next owner's data."""
    block = system.vcm_phys_alloc("blocks", SZ_64K, PhysAttr.blocks(SZ_64K))
    # The platform file lays the pools out largest first: 2 x 16M, 64 x 1M, then 64K.
    (spec,) = [t for t in system.spec.targets if t.name == "blocks"]
    assert block.chunk_ranges[0].start == spec.base + 2 * SZ_16M + 64 * SZ_1M
    free_page = AddressRange(block.chunk_ranges[0].end, SZ_4K)  # the next 64K block: free
    before = system.snapshot()
    with pytest.raises(OwnershipError, match=r"free memory of target 'blocks'"):
        system.vcm_phys_wrap([free_page], owner="thief")
    assert system.snapshot() == before
    # The allocation that now takes that block gets it: it was never someone's wrap.
    nxt = system.vcm_phys_alloc("blocks", SZ_64K, PhysAttr.blocks(SZ_64K))
    assert free_page.start in nxt.chunk_ranges[0]


def test_wrapping_a_live_page_table_page_is_refused(system: vcmm.System) -> None:
    """Issue 10 item 4: a device that maps its own table can rewrite its translations."""
    vcm = system.vcm_create(0x100_0000, 0x100_0000)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    assert vcm.table is not None
    root = AddressRange(vcm.table.root - vcm.table.root % SZ_4K, SZ_4K)
    assert root in system.spec.page_tables
    before = system.snapshot()
    with pytest.raises(OwnershipError, match=r"page-table allocator's window"):
        system.vcm_phys_wrap([root], owner="escape")
    with pytest.raises(OwnershipError, match=r"page-table allocator's window"):
        system.vcm_phys_owners([root])
    # A free page of the window is the tables' as well (the next table lands there).
    last = AddressRange(system.spec.page_tables.end - SZ_4K, SZ_4K)
    with pytest.raises(OwnershipError, match=r"page-table allocator"):
        system.vcm_phys_wrap([last], owner="escape")
    assert system.snapshot() == before


def test_pages_of_a_live_allocation_are_wrapped_only_by_who_names_it(
    system: vcmm.System,
) -> None:
    mine = system.vcm_phys_alloc("ebi", 2 * SZ_4K, PhysAttr.CONTIGUOUS)
    theirs = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    page = mine.chunk_ranges[0]
    before = system.snapshot()
    with pytest.raises(
        OwnershipError, match=rf"belongs to {mine.name} \(an allocation from 'ebi'\)"
    ):
        system.vcm_phys_wrap([page], owner="someone")
    with pytest.raises(OwnershipError, match=rf"belongs to {mine.name}"):
        system.vcm_phys_wrap([page], owner="someone", of=theirs)  # names the wrong one
    with pytest.raises(OwnershipError, match=rf"names {theirs.name}, but none"):
        system.vcm_phys_wrap([page], owner="someone", of=[mine, theirs])
    with pytest.raises(InvalidArgumentError, match="must be a PhysMem"):
        system.vcm_phys_wrap([page], owner="someone", of="physmem1")  # type: ignore[arg-type]
    assert system.snapshot() == before
    # Named: accepted, and the wrap pins the allocation until it is freed.
    wrap = system.vcm_phys_wrap([page], owner="driver", of=mine)
    with pytest.raises(BusyError, match=rf"{mine.name} is pinned by {wrap.name} \(driver\)"):
        system.vcm_phys_free(mine)
    assert not mine.freed
    system.vcm_phys_free(wrap)
    system.vcm_phys_free(mine)
    assert mine.freed


def test_a_view_names_the_pages_it_shows_and_is_pinned_by_the_wrap(
    system: vcmm.System,
) -> None:
    whole = system.vcm_phys_alloc("contig", 4 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(whole, SZ_4K, SZ_4K)
    wrap = system.vcm_phys_wrap(list(view.chunk_ranges), owner="driver", of=view)
    with pytest.raises(BusyError, match=rf"pinned by {wrap.name}"):
        system.vcm_phys_free(view)
    outside = AddressRange(whole.chunk_ranges[0].start, SZ_4K)  # in whole, not in view
    with pytest.raises(OwnershipError, match=rf"belongs to {whole.name}"):
        system.vcm_phys_wrap([outside], owner="driver", of=view)
    system.vcm_phys_free(wrap)
    system.vcm_phys_free(view)
    system.vcm_phys_free(whole)


def test_memory_no_target_owns_is_wrapped_freely(system: vcmm.System) -> None:
    page = _outside_everything(system)
    assert system.vcm_phys_owners([page]) == ()
    wrap = system.vcm_phys_wrap([page], owner="carve-out driver")
    vcm = system.vcm_create(0x100_0000, 0x100_0000)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW | Attr.NONCACHED)
    system.vcm_back(res, wrap)
    system.memory.write(page.start, b"carve")
    assert system.device("vcodec_a_mm1").read(res.dev_addr, 5) == b"carve"


def test_owners_are_the_allocations_holding_the_pages(system: vcmm.System) -> None:
    a = system.vcm_phys_alloc("blocks", 2 * SZ_64K, PhysAttr.blocks(SZ_64K))
    b = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    first, second = a.chunk_ranges
    pages = [b.chunk_ranges[0], AddressRange(second.start, SZ_4K), first, b.chunk_ranges[0]]
    assert system.vcm_phys_owners(pages) == (b, a)
    free = AddressRange(b.chunk_ranges[0].end, SZ_4K)
    with pytest.raises(OwnershipError, match="free memory of target 'ebi'"):
        system.vcm_phys_owners([b.chunk_ranges[0], free])
    system.vcm_phys_free(b)
    with pytest.raises(OwnershipError, match="free memory of target 'ebi'"):
        system.vcm_phys_owners([b.chunk_ranges[0]])


def test_a_pin_keeps_memory_from_being_freed_and_names_its_holder(
    system: vcmm.System,
) -> None:
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="holder"):
        system.vcm_phys_pin(physmem, holder="")
    assert system.snapshot() == before
    pin = system.vcm_phys_pin(physmem, holder="dma-buf shared")
    pinned = system.snapshot()
    with pytest.raises(BusyError, match=r"physmem\d+ is pinned by dma-buf shared"):
        system.vcm_phys_free(physmem)
    assert system.snapshot() == pinned
    system.vcm_phys_unpin(pin)
    with pytest.raises(StateError, match="already given back"):
        system.vcm_phys_unpin(pin)
    assert system.snapshot() == before
    system.vcm_phys_free(physmem)
    with pytest.raises(StateError, match="already freed"):
        system.vcm_phys_pin(physmem, holder="late")


def test_a_wraps_pins_go_with_the_wrap_only(system: vcmm.System) -> None:
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    wrap = system.vcm_phys_wrap(list(physmem.chunk_ranges), owner="driver", of=physmem)
    (pin,) = physmem.pins
    with pytest.raises(InvalidArgumentError, match=rf"belongs to {wrap.name}"):
        system.vcm_phys_unpin(pin)
    system.vcm_phys_free(wrap)
    assert physmem.pins == [] and pin.released
