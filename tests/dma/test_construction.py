"""Creating the DMA API: all or nothing, one per system, pools where the platform says.

Issue 10 item 7: ``DmaApi()`` used to leak its 256K atomic-pool carve-out when the
kernel alias of the pool found vmalloc space full (the carve-out was taken before the
reservation and outside the undo), and so did the first dma-buf attach, which creates
the DMA API.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import Attr
from vcmm.dma import DmaApi
from vcmm.errors import BusyError, OutOfAddressSpaceError, OutOfMemoryError
from vcmm.share import VcmExporter
from vcmm.share.state import state_of
from vcmm.sizes import SZ_1G, SZ_4K, SZ_32M, SZ_256K

#: What is left of the 1 GiB vmalloc window: less than the atomic pool's alias needs.
LEFT = 128 * 1024


def crowded() -> vcmm.System:
    """The default platform with all but 128K of vmalloc space reserved."""
    system = vcmm.System.default()
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_reserve(vmm, SZ_1G - LEFT, Attr.READ | Attr.WRITE)
    return system


def test_a_dma_api_that_finds_vmalloc_full_leaves_no_carve_out_behind() -> None:
    system = crowded()
    contig = system.target("contig")
    before, free = system.snapshot(), contig.free_bytes
    with pytest.raises(OutOfAddressSpaceError, match="no free 256K range"):
        DmaApi(system)
    assert contig.free_bytes == free  # the 256K atomic carve-out went back
    assert not [p for p in system.physmems if p.holder]
    assert system.snapshot() == before
    assert DmaApi.current(system) is None


def test_the_first_attach_that_cannot_create_the_dma_api_changes_nothing() -> None:
    system = crowded()
    buf = VcmExporter(system).allocate(SZ_4K)
    before = (system.snapshot(), buf.snapshot())
    with pytest.raises(OutOfMemoryError, match="cannot set up the system's DMA API"):
        buf.attach("mdp")
    assert (system.snapshot(), buf.snapshot()) == before
    assert state_of(system).api is None


def test_the_pools_are_the_platforms_and_visible_as_held_allocations() -> None:
    system = vcmm.System.default()
    contig = system.target("contig").free_bytes
    api = DmaApi(system)
    assert system.target("contig").free_bytes == contig - SZ_32M - SZ_256K
    held = {p.holder: (p.target, p.size) for p in system.physmems if p.holder}
    assert held == {
        "the DMA API (coherent pool)": ("contig", SZ_32M),
        "the DMA API (atomic pool)": ("contig", SZ_256K),
    }
    api.close()
    assert system.target("contig").free_bytes == contig
    assert not [p for p in system.physmems if p.holder]


def test_one_dma_api_per_system() -> None:
    system = vcmm.System.default()
    api = DmaApi.of(system)
    assert DmaApi.of(system) is api and DmaApi.current(system) is api
    before = (system.snapshot(), api.snapshot())
    with pytest.raises(BusyError, match="already has an open DMA API"):
        DmaApi(system, rcache=False)
    assert (system.snapshot(), api.snapshot()) == before
    api.close()
    assert api.closed and DmaApi.current(system) is None
    assert DmaApi.of(system) is not api
