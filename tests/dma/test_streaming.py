"""map_page/unmap_page: sub-granule offsets, the size taken from the allocator, and
every way of unmapping wrongly (seed 002's review: a double unmap crashed the kernel;
here it is an error that names both calls and changes nothing)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi, ReportKind, ScatterList
from vcmm.errors import (
    DeviceFaultError,
    DmaApiError,
    InvalidArgumentError,
    NotFoundError,
    OutOfAddressSpaceError,
)

DEV = "vcodec_a_mm1"


def test_sub_granule_offset_is_kept_in_the_handle(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(3 * SZ_4K)
    data = bytes(range(256)) * 24
    system.cpu.write(buf.va + 0xF80, data)
    # 0xF80 into the first page, 6 KiB long: it touches three granules.
    handle = dma.map_page(DEV, buf.pa, 0xF80, len(data), D.TO_DEVICE)
    assert handle % SZ_4K == 0xF80
    assert system.device(DEV).read(handle, len(data)) == data
    domain = dma.domain(DEV)
    assert domain is not None
    found = domain.allocator.find(handle)
    # Three granules, aligned to the next power of two (16 KiB).
    assert found is not None and found.size == 3 * SZ_4K and found.start % (4 * SZ_4K) == 0
    dma.unmap_page(DEV, handle, len(data), D.TO_DEVICE)


def test_map_single_takes_a_linear_map_address(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    system.cpu.write(buf.va + 0x40, b"single")
    handle = dma.map_single(DEV, buf.va + 0x40, 6, D.TO_DEVICE)
    assert handle % SZ_4K == 0x40
    assert system.device(DEV).read(handle, 6) == b"single"
    dma.unmap_single(DEV, handle, 6, D.TO_DEVICE)


def test_to_device_mapping_is_read_only_for_the_device(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    assert dma.checker is not None
    before = system.memory.read(buf.pa, 16)
    with dma.checker.warning(), pytest.raises(DeviceFaultError):
        system.device(DEV).write(handle, b"x" * 16)
    assert system.memory.read(buf.pa, 16) == before
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_WRITE_READ_ONLY
    dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)


def test_double_unmap_is_an_error_naming_both_calls(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0x10, 0x100, D.FROM_DEVICE)
    dma.unmap_page(DEV, handle, 0x100, D.FROM_DEVICE)
    before = state()
    with pytest.raises(DmaApiError, match="double unmap") as err:
        dma.unmap_page(DEV, handle, 0x100, D.FROM_DEVICE)
    assert f"{handle:#x}" in str(err.value)
    assert state() == before
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DOUBLE_UNMAP and report.device == DEV
    assert report.mapped_by is not None and report.mapped_by.call == "map_page"
    assert report.unmapped_by is not None and report.unmapped_by.call == "unmap_page"
    assert "test_streaming.py" in str(report.mapped_by)


def test_double_unmap_is_caught_without_the_checker_too(
    system: vcmm.System, kbuf: Callable
) -> None:
    dma = DmaApi(system)
    buf = kbuf(SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)
    before = (system.snapshot(), dma.snapshot())
    with pytest.raises(DmaApiError, match="double unmap"):
        dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)
    assert (system.snapshot(), dma.snapshot()) == before


def test_unmap_of_an_address_never_mapped_or_inside_a_mapping(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, 2 * SZ_4K, D.TO_DEVICE)
    before = state()
    with pytest.raises(DmaApiError, match="has not mapped"):
        dma.unmap_page(DEV, 0x1234_5000, SZ_4K, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="inside"):
        dma.unmap_page(DEV, handle + SZ_4K, SZ_4K, D.TO_DEVICE)
    assert state() == before
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.UNMAP_NOT_MAPPED, ReportKind.UNMAP_NOT_MAPPED]
    dma.unmap_page(DEV, handle, 2 * SZ_4K, D.TO_DEVICE)


def test_wrong_size_or_direction_is_refused_in_raise_mode(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, 0x800, D.TO_DEVICE)
    before = state()
    with pytest.raises(DmaApiError, match=r"map size=2048 bytes\] \[unmap size=4096"):
        dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match=r"mapped with TO_DEVICE\] \[unmapped with FROM_DEVICE"):
        dma.unmap_page(DEV, handle, 0x800, D.FROM_DEVICE)
    assert state() == before
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.UNMAP_WRONG_SIZE, ReportKind.UNMAP_WRONG_DIRECTION]
    dma.unmap_page(DEV, handle, 0x800, D.TO_DEVICE)


def test_wrong_size_in_warn_mode_still_unmaps_what_the_allocator_gave(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(4 * SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0, 4 * SZ_4K, D.TO_DEVICE)
    domain = dma.domain(DEV)
    assert domain is not None and dma.checker is not None
    with dma.checker.warning():
        dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)  # says 4 KiB, mapped 16 KiB
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.UNMAP_WRONG_SIZE
    assert domain.iova.allocated() == [] and list(domain.vcm.table.mappings()) == []


def test_unmap_with_the_other_function_or_device(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    sgl = ScatterList([(buf.pa, SZ_4K), (buf.pa + SZ_4K, SZ_4K)])
    assert dma.map_sg(DEV, sgl, 2, D.TO_DEVICE) == 1
    coherent = dma.alloc_coherent(DEV, SZ_4K)
    before = state()
    with pytest.raises(DmaApiError, match="unmap_sg"):
        dma.unmap_page(DEV, sgl[0].dma_address, 2 * SZ_4K, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="free_coherent"):
        dma.unmap_page(DEV, coherent.dma_handle, SZ_4K, D.BIDIRECTIONAL)
    # vcodec_b_mm2 has a domain of its own: the address means nothing there.
    with pytest.raises(DmaApiError, match="has not mapped"):
        dma.unmap_page("vcodec_b_mm2", sgl[0].dma_address, 2 * SZ_4K, D.TO_DEVICE)
    assert state() == before
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [
        ReportKind.UNMAP_WRONG_FUNCTION,
        ReportKind.UNMAP_WRONG_FUNCTION,
        ReportKind.UNMAP_NOT_MAPPED,
    ]
    dma.unmap_sg(DEV, sgl, 2, D.TO_DEVICE)
    dma.free_coherent(DEV, SZ_4K, coherent.cpu_addr, coherent.dma_handle)


def test_direct_device_handle_is_the_bus_address(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    system.cpu.write(buf.va + 8, b"bus")
    handle = dma.map_page("dsp", buf.pa, 8, 3, D.TO_DEVICE)
    assert handle == buf.pa + 8 - 0x8000_0000 + 0x4000_0000
    assert system.device("dsp").read(handle, 3) == b"bus"
    # The mapping is a one-to-one VCM of its own in the graph.
    (rec,) = dma.mappings("dsp")
    (teardown,) = rec.teardown
    assert teardown.vcm.kind is vcmm.VcmKind.ONE_TO_ONE
    assert teardown.vcm.range == vcmm.AddressRange(buf.pa, SZ_4K)
    assert system.graph.of_reservation(teardown.res.id)
    # Two mappings of the same page (two buffers in one page) are fine.
    other = dma.map_page("dsp", buf.pa, 0x100, 4, D.TO_DEVICE)
    assert other == handle - 8 + 0x100
    dma.unmap_page("dsp", other, 4, D.TO_DEVICE)
    dma.unmap_page("dsp", handle, 3, D.TO_DEVICE)
    assert not [v for v in system.vcms if v.kind is vcmm.VcmKind.ONE_TO_ONE]


def test_direct_device_mask_too_small_is_a_mapping_error(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    dma.set_mask("camera", (1 << 31) - 1)  # RAM is at 0x8000_0000, identity mapped
    before = state()
    handle = dma.map_page("camera", buf.pa, 0, SZ_4K, D.TO_DEVICE)
    assert handle == DMA_MAPPING_ERROR
    assert isinstance(dma.last_error, OutOfAddressSpaceError)
    assert "above its DMA mask 0x7fffffff" in str(dma.last_error)
    assert state() == before


def test_bad_arguments_raise_and_change_nothing(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    before = state()
    bad_calls = [
        lambda: dma.map_page(DEV, buf.pa + 1, 0, 4, D.TO_DEVICE),  # not a page
        lambda: dma.map_page(DEV, buf.pa, 0, 0, D.TO_DEVICE),  # empty
        lambda: dma.map_page(DEV, buf.pa, 0, 4, D.NONE),  # no direction
        lambda: dma.map_page(DEV, buf.pa, 0, 4, "to"),  # not a direction
        lambda: dma.map_page(DEV, buf.pa, 0, 4, D.TO_DEVICE, attrs=1 << 9),
        lambda: dma.map_page(DEV, 0x1000_0000, 0, 4, D.TO_DEVICE),  # not RAM
        lambda: dma.map_sg(DEV, ScatterList([(buf.pa, 4)]), 2, D.TO_DEVICE),  # nents > len
        lambda: dma.map_sg(DEV, [(buf.pa, 4)], 1, D.TO_DEVICE),  # not a ScatterList
    ]
    for call in bad_calls:
        with pytest.raises(InvalidArgumentError):
            call()
    with pytest.raises(NotFoundError):
        dma.map_page("nosuch", buf.pa, 0, 4, D.TO_DEVICE)
    with pytest.raises(InvalidArgumentError):
        dma.map_page(system.cpu, buf.pa, 0, 4, D.TO_DEVICE)
    assert state() == before


@pytest.mark.parametrize("rcache", [True, False], ids=["rcache", "no-rcache"])
def test_a_mapping_failing_after_its_iova_leaves_the_domain_exactly_as_before(
    system: vcmm.System, kbuf: Callable, rcache: bool
) -> None:
    """Table memory runs out after the IOVA was allocated: the IOVA allocation is taken
    back exactly (with the range cache on, a range that came from the cache goes back
    to its bin; a plain free would leave the new range parked there)."""
    dma = DmaApi(system, rcache=rcache)
    buf = kbuf(2 * SZ_4K)
    # A first mapping and unmapping: its range is cached.
    dma.unmap_page(DEV, dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE), SZ_4K, D.TO_DEVICE)
    domain = dma.domain(DEV)
    assert domain is not None and domain.iova.cached_count == (1 if rcache else 0)
    # the unmap kept its empty level-2 table (Linux's rule): give it back, so the next
    # mapping needs table memory again
    assert domain.vcm.table is not None
    domain.vcm.table.release_empty([pa for pa, _ in domain.vcm.table.table_pages()])
    tm = system.table_memory
    for size in (4096, 1024, 256, 64):
        while True:
            try:
                tm.alloc(size)
            except vcmm.errors.OutOfMemoryError:
                break
    before = (system.snapshot(), dma.snapshot(), domain.iova.snapshot())
    handle = dma.map_page(DEV, buf.pa + SZ_4K, 0, SZ_4K, D.TO_DEVICE)
    assert handle == DMA_MAPPING_ERROR
    assert "table memory" in str(dma.last_error)
    assert (system.snapshot(), dma.snapshot(), domain.iova.snapshot()) == before
    assert domain.iova.cached_count == (1 if rcache else 0)
