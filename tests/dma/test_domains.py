"""Per-device DMA ops and parameters, IOMMU domains shared by devices, and device
removal with mappings still alive."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, SZ_64K
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, ReportKind
from vcmm.errors import BusyError, DeviceFaultError, InvalidArgumentError, NotFoundError


def test_the_platform_chooses_the_ops_and_parameters(system: vcmm.System, dma: DmaApi) -> None:
    assert {n: dma.ops(n) for n in ("vcodec_a_mm1", "mdp", "dsp", "camera")} == {
        "vcodec_a_mm1": "iommu",
        "mdp": "iommu",
        "dsp": "direct",
        "camera": "direct",
    }
    assert dma.domain("dsp") is None
    p = dma.params("vcodec_a_mm1")
    assert (p.mask, p.max_segment_size, p.segment_boundary_mask, p.coherent) == (
        (1 << 32) - 1,
        SZ_64K,
        (1 << 32) - 1,
        False,
    )
    assert dma.params("vcodec_stream").max_segment_size == 4 << 20
    # Without a shared domain in the platform, every IOMMU device has its own.
    assert sorted(dma.domains) == ["mdp", "vcodec_a_mm1", "vcodec_b_mm2", "vcodec_stream"]
    # params() is a copy: changing it changes nothing.
    p.mask = 0xFFF
    assert dma.params("vcodec_a_mm1").mask == (1 << 32) - 1


def test_separate_domains_do_not_see_each_others_mappings(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf, other = kbuf(SZ_4K), kbuf(SZ_4K)
    top = dma.map_page("vcodec_a_mm1", buf.pa, 0, SZ_4K, D.TO_DEVICE)
    handle = dma.map_page("vcodec_a_mm1", buf.pa, 0, SZ_4K, D.TO_DEVICE)
    # vcodec_b_mm2's domain takes its context at its own first mapping; its allocator
    # starts at the top of its own space, so its IOVA repeats a's first one.
    mine = dma.map_page("vcodec_b_mm2", other.pa, 0, SZ_4K, D.TO_DEVICE)
    assert mine == top and handle == top - SZ_4K
    with pytest.raises(DeviceFaultError):
        system.device("vcodec_b_mm2").read(handle, 4)
    for dev, h in (("vcodec_b_mm2", mine), ("vcodec_a_mm1", handle), ("vcodec_a_mm1", top)):
        dma.unmap_page(dev, h, SZ_4K, D.TO_DEVICE)


def test_devices_sharing_a_domain_share_iova_space_and_mappings(make_system: Callable) -> None:
    system = make_system(domains={"vcodec_a_mm1": "video", "vcodec_b_mm2": "video"})
    dma = DmaApi(system, debug="raise")
    a, b = system.device("vcodec_a_mm1"), system.device("vcodec_b_mm2")
    assert dma.domain(a) is dma.domain(b) is dma.domains["video"]
    physmem = system.vcm_phys_alloc("ebi", 2 * SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    pa = physmem.chunk_ranges[0].start
    system.cpu.write(system.cpu.phys_to_virt(pa), b"two ports")
    ha = dma.map_page(a, pa, 0, SZ_4K, D.TO_DEVICE)
    hb = dma.map_page(b, pa + SZ_4K, 0, SZ_4K, D.TO_DEVICE)
    assert hb == ha - SZ_4K  # one allocator: the next range down
    # The codec's second port reads what was mapped for the first (seed 003's codec).
    assert b.read(ha, 9) == b"two ports"
    assert a.ctx.ttbr0 == b.ctx.ttbr0 == dma.domains["video"].vcm.table.root
    dma.unmap_page(a, ha, SZ_4K, D.TO_DEVICE)
    dma.unmap_page(b, hb, SZ_4K, D.TO_DEVICE)


def test_domains_can_be_given_to_the_api_too(system: vcmm.System) -> None:
    dma = DmaApi(system, domains={"mdp": "display", "vcodec_stream": "display"})
    assert dma.domain("mdp") is dma.domain("vcodec_stream")
    with pytest.raises(NotFoundError):
        DmaApi(vcmm.System.default(), domains={"nosuch": "x"})


def test_only_the_listed_devices_get_ops(system: vcmm.System) -> None:
    dma = DmaApi(system, devices=["mdp"])
    assert dma.ops("mdp") == "iommu"
    with pytest.raises(NotFoundError, match="not attached"):
        dma.ops("vcodec_a_mm1")
    # The other contexts stay free for the raw VCMM.
    vcm = system.vcm_create(0, 1 << 24)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1"))


def test_removing_a_device_with_live_mappings_is_reported_and_refused(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(SZ_4K)
    handle = dma.map_page("mdp", buf.pa, 0x20, 64, D.TO_DEVICE)
    coherent = dma.alloc_coherent("mdp", SZ_4K)
    before = state()
    with pytest.raises(BusyError, match="1 mapping\\(s\\) and 1 coherent buffer"):
        dma.remove_device("mdp")
    assert state() == before
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.LEAK_ON_REMOVE and report.device == "mdp"
    assert report.mapped_by is not None and report.mapped_by.call == "map_page"
    assert f"{handle:#x}" in report.message
    dma.unmap_page("mdp", handle, 64, D.TO_DEVICE)
    dma.free_coherent("mdp", SZ_4K, coherent.cpu_addr, coherent.dma_handle)
    vcm = dma.domain("mdp").vcm
    dma.remove_device("mdp")
    assert vcm not in system.vcms and not system.device("mdp").ctx.is_active
    with pytest.raises(NotFoundError):
        dma.map_page("mdp", buf.pa, 0, 64, D.TO_DEVICE)
    dma.attach_device("mdp")
    handle = dma.map_page("mdp", buf.pa, 0, 64, D.TO_DEVICE)
    assert handle == (1 << 32) - SZ_4K
    dma.unmap_page("mdp", handle, 64, D.TO_DEVICE)


def test_constructor_validates(system: vcmm.System) -> None:
    with pytest.raises(InvalidArgumentError):
        DmaApi(system, rcache="yes")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        DmaApi(system, debug="loud")
    with pytest.raises(InvalidArgumentError, match="linear map"):
        DmaApi(vcmm.System.default(), coherent_pool=("ebi", 1 << 20))


def test_construction_programs_no_device_and_close_gives_everything_back(
    system: vcmm.System,
) -> None:
    # A context running a VCM of the seed calls does not stop the DMA API: it only
    # refuses to map for that very device, saying what to do, and changes nothing.
    vcm = system.vcm_create(0, 1 << 24)
    avcm = system.vcm_assoc(vcm, "mdp")
    system.vcm_activate(avcm)
    before = system.snapshot()
    api = DmaApi(system)
    kernel_page = system.vcm_phys_alloc("ebi", SZ_4K)
    page = kernel_page.chunk_ranges[0].start
    inside = (system.snapshot(), api.snapshot())
    with pytest.raises(BusyError, match=rf"vcm_deactivate\({avcm.name}\) first") as info:
        api.map_page("mdp", page, 0, SZ_4K, D.TO_DEVICE)
    assert vcm.name in str(info.value) and "through the DMA API" in str(info.value)
    with pytest.raises(BusyError, match=rf"mdp's context runs {vcm.name}"):
        api.alloc_coherent("mdp", SZ_4K)
    assert (system.snapshot(), api.snapshot()) == inside
    assert system.device("mdp").ctx.ttbr0 == vcm.table.root  # still the seed's VCM
    api.close()
    dma = DmaApi(system, devices=["vcodec_a_mm1", "dsp"])
    buf = dma.alloc_coherent("dsp", SZ_4K)
    with pytest.raises(BusyError, match="still alive"):
        dma.close()
    dma.free_coherent("dsp", SZ_4K, buf.cpu_addr, buf.dma_handle)
    dma.close()
    system.vcm_phys_free(kernel_page)
    after = system.snapshot()
    assert after[0] == before[0]  # VCMs, allocations, targets, graph
    assert after[2:] == before[2:]  # tables, TLBs, cache, SMMUs
