"""The DMA API maps only pages a driver may hand over (issue 10 item 4): pages of live
allocations (pinned until the unmap) or memory no target owns; never pages free in a
memory target or page-table pages, which are refused before anything is mapped."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, AddressRange
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, ScatterList
from vcmm.errors import BusyError, OwnershipError


@pytest.mark.parametrize("dev", ["dsp", "vcodec_a_mm1"])
def test_a_live_page_table_page_is_never_mapped_for_a_device(
    system: vcmm.System, dma: DmaApi, state: Callable, dev: str
) -> None:
    """The repro: map_page of the device's own table page let it rewrite its
    translations and reach any physical memory."""
    domain = dma.domain("vcodec_a_mm1")
    assert domain is not None and domain.vcm.table is not None
    root = domain.vcm.table.root
    assert root in system.spec.page_tables
    before = state()
    with pytest.raises(OwnershipError, match=r"map_page: .* page-table allocator's window"):
        dma.map_page(dev, root - root % SZ_4K, 0, SZ_4K, D.BIDIRECTIONAL)
    with pytest.raises(OwnershipError, match=r"map_sg: .* page-table allocator's window"):
        dma.map_sg(dev, ScatterList([(root, 64)]), 1, D.FROM_DEVICE)
    assert state() == before


def test_free_memory_of_a_target_is_never_mapped_for_a_device(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    free = buf.pa + SZ_4K  # the page after the allocation: still in ebi's free list
    before = state()
    for dev in ("dsp", "vcodec_a_mm1"):
        with pytest.raises(OwnershipError, match="free memory of target 'ebi'"):
            dma.map_page(dev, free, 0, 16, D.TO_DEVICE)
        # A list whose second entry strays into free memory maps nothing at all.
        sgl = ScatterList([(buf.pa, SZ_4K), (free, SZ_4K)])
        with pytest.raises(OwnershipError, match="free memory of target 'ebi'"):
            dma.map_sg(dev, sgl, 2, D.TO_DEVICE)
        assert sgl.snapshot()[0][2:] == (vcmm.dma.DMA_MAPPING_ERROR, 0)
    assert state() == before


def test_a_mapping_pins_the_allocation_its_pages_lie_in(system: vcmm.System, dma: DmaApi) -> None:
    """Freeing a buffer under a live mapping would hand its pages to the next
    allocation while the device still reaches them."""
    buf = system.vcm_phys_alloc("ebi", 2 * SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    pa = buf.chunk_ranges[0].start
    handle = dma.map_page("dsp", pa, 0x80, 256, D.TO_DEVICE)
    with pytest.raises(BusyError, match=rf"{buf.name} is pinned by wrap\d+ \(map_page for dsp\)"):
        system.vcm_phys_free(buf)
    dma.unmap_page("dsp", handle, 256, D.TO_DEVICE)
    system.vcm_phys_free(buf)
    assert buf.freed


def test_memory_no_target_owns_is_mapped_without_a_pin(system: vcmm.System, dma: DmaApi) -> None:
    page = AddressRange(system.spec.page_tables.end, SZ_4K)  # RAM left to drivers
    assert system.vcm_phys_owners([page]) == ()
    system.memory.write(page.start, b"carve-out")
    handle = dma.map_page("vcodec_a_mm1", page.start, 0, SZ_4K, D.TO_DEVICE)
    assert system.device("vcodec_a_mm1").read(handle, 9) == b"carve-out"
    dma.unmap_page("vcodec_a_mm1", handle, SZ_4K, D.TO_DEVICE)
