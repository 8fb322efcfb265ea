"""IOVA placement through the DMA API: Linux's iova.c rules as seed 002 uses them.

Independent facts: the kernel allocates top-down from the device's mask limit, aligned
to the size rounded up to a power of two, never page frame 0 and never beyond the
IOMMU aperture (the review's "allocations ignored the aperture"); so the expected
addresses are computed here by hand from those rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, SZ_64K
from vcmm import DmaDirection as D
from vcmm.core import VcmKind
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError
from vcmm.ranges import AddressRange

DEV = "vcodec_a_mm1"


def roundup_pow2(n: int) -> int:
    return 1 << (n - 1).bit_length()


def test_first_allocations_sit_just_under_the_mask_and_are_size_aligned(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    limit = 1 << 32  # the platform gives vcodec_a_mm1 a 32-bit mask
    expected_end = limit
    for pages in (1, 1, 5, 3, 16):
        size = pages * SZ_4K
        handle = dma.map_page(DEV, buf.pa, 0, size, D.TO_DEVICE)
        align = roundup_pow2(pages) * SZ_4K
        # Top-down: the highest address below everything so far that is size-aligned.
        want = (expected_end - size) // align * align
        assert handle == want
        assert handle % align == 0
        expected_end = want
    assert expected_end < limit


def test_mask_limits_streaming_and_coherent_mask_limits_coherent(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_64K)
    dma.set_mask(DEV, (1 << 28) - 1)
    dma.set_coherent_mask(DEV, (1 << 24) - 1)
    assert dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE) == (1 << 28) - SZ_4K
    coherent = dma.alloc_coherent(DEV, 3 * SZ_4K)
    # 3 pages round up to a 4-page (16 KiB) alignment below 16 MiB.
    assert coherent.dma_handle == (1 << 24) - 4 * SZ_4K
    assert dma.params(DEV).mask == (1 << 28) - 1


def test_a_mask_wider_than_the_aperture_is_clamped_to_it(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    dma.set_mask(DEV, (1 << 64) - 1)
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.FROM_DEVICE)
    assert handle == (1 << 32) - SZ_4K  # the ARMv7 short-descriptor input is 32 bits


def test_iova_zero_is_never_handed_out(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    dma.set_mask(DEV, 0x1FFF)  # two granules: page frame 0 and 1
    first = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    assert first == 0x1000
    before = state()
    second = dma.map_page(DEV, buf.pa + SZ_4K, 0, SZ_4K, D.TO_DEVICE)
    assert second == DMA_MAPPING_ERROR and dma.mapping_error(DEV, second)
    assert isinstance(dma.last_error, OutOfAddressSpaceError)
    assert "0x1fff" in str(dma.last_error)
    assert state() == before


def test_lookup_by_any_address_inside_and_free(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(4 * SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0x123, 3 * SZ_4K, D.BIDIRECTIONAL)
    domain = dma.domain(DEV)
    assert domain is not None
    base = handle - 0x123
    # 3 pages + an offset need 4 granules; the range is what the allocator gave.
    for probe in (handle, base, base + 4 * SZ_4K - 1):
        assert domain.allocator.find(probe) == AddressRange(base, 4 * SZ_4K)
    assert domain.allocator.find(base + 4 * SZ_4K) is None
    dma.unmap_page(DEV, handle, 3 * SZ_4K, D.BIDIRECTIONAL)
    assert domain.allocator.find(handle) is None


def test_every_mapping_is_a_reservation_in_the_domain_vcm_and_the_graph(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, 2 * SZ_4K, D.TO_DEVICE)
    domain = dma.domain(DEV)
    assert domain is not None and domain.vcm.kind is VcmKind.IOMMU
    assert domain.vcm.range == AddressRange(0, 1 << 32)
    (res,) = domain.vcm.reservations
    assert res.addr == handle and res.len == 2 * SZ_4K
    edges = system.graph.of_reservation(res.id)
    assert sum(m.phys.size for m in edges) == 2 * SZ_4K
    assert edges[0].phys.start == buf.pa
    # Kernel RAM: the alias agrees with the cacheable linear map and is shareable.
    assert all(m.attrs.memtype is vcmm.MemType.NORMAL_WB_WA and m.attrs.shareable for m in edges)
    # TO_DEVICE: the device may only read.
    assert all(m.attrs.read and not m.attrs.write for m in edges)
    # The device reads through its SMMU context, which runs the domain's table.
    assert system.device(DEV).ctx.ttbr0 == domain.vcm.table.root


@pytest.mark.parametrize("rcache", [True, False])
def test_rcache_switch(system: vcmm.System, kbuf: Callable, rcache: bool) -> None:
    dma = DmaApi(system, rcache=rcache)
    buf = kbuf(SZ_4K)
    domain = dma.domain(DEV)
    assert domain is not None and domain.iova.rcache_enabled is rcache
    first = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    dma.unmap_page(DEV, first, SZ_4K, D.TO_DEVICE)
    # With the cache the freed range stays occupied in the tree, parked for reuse.
    assert domain.iova.cached_count == (1 if rcache else 0)
    again = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    assert again == first
    assert domain.iova.counters.rcache_hits == (1 if rcache else 0)


def test_mask_setters_validate(system: vcmm.System, dma: DmaApi, state: Callable) -> None:
    before = state()
    for bad in (0, 0xFFF0, 0x1234_FFFF, -1, 1 << 64, True, "0xffffffff"):
        with pytest.raises(InvalidArgumentError):
            dma.set_mask(DEV, bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        dma.set_seg_boundary(DEV, 0x7FF)  # below the 4 KiB granule
    with pytest.raises(InvalidArgumentError):
        dma.set_max_seg_size(DEV, 0)
    assert state() == before
