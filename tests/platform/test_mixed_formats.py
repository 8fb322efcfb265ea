"""One booted system whose SMMUs walk three table formats (an M4U with ARMv7 short
descriptors, an MMU-500 with VMSAv8-64, an MMU-401 with LPAE): IOMMU VCMs and DMA
domains take the format of the SMMU their device sits behind, as Linux's arm-smmu
settles a domain's io-pgtable at its first attach.  Every translation is checked
against a reference walker per format written from the ARM manuals."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vcmm import SZ_1G, SZ_2M, SZ_64K, Attr, DmaDirection, PhysAttr, System
from vcmm.dma import DmaApi
from vcmm.errors import InvalidArgumentError
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K
from vcmm.platform.build import FORMATS
from vcmm.share import VcmExporter
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import loads_scenario

from .mixed_board import mixed_tree, reference_walk

MakeDtb = Callable[..., str]
V7S, V8, LPAE = "1400c000.ovl", "aa00000.video", "7ff50000.hdlcd"
SHORT_NAMES = {fmt.name: short for short, fmt in FORMATS.items()}


@pytest.fixture
def system(make_dtb: MakeDtb) -> System:
    return System.from_file(make_dtb(mixed_tree()))


def walked(system: System, device: str, va: int) -> int:
    """Where ``device`` reaches ``va``, by the reference walker of its SMMU's format
    over the table its context's TTBR0 points at."""
    dev = system.device(device)
    root = dev.ctx.ttbr0
    assert root is not None
    return reference_walk(SHORT_NAMES[dev.ctx.smmu.fmt.name], system.memory, root, va)


def test_each_smmu_walks_its_own_format(system: System) -> None:
    formats = {name: system.device(name).ctx.smmu.fmt for name in (V7S, V8, LPAE)}
    assert formats == {V7S: ARMV7S, V8: VMSAV8_4K, LPAE: ARMV7_LPAE}
    assert system.iommu_formats == (ARMV7S, VMSAV8_4K, ARMV7_LPAE)
    assert system.iommu_format is ARMV7S  # the first SMMU's, for VCMs made without one


@pytest.mark.parametrize("device", [V7S, V8, LPAE])
def test_a_seed_vcm_takes_the_format_of_its_first_device(system: System, device: str) -> None:
    vcm = system.vcm_create(0x1000_0000, SZ_1G)
    avcm = system.vcm_assoc(vcm, device, 0)
    assert vcm.table is not None and vcm.table.fmt is system.device(device).ctx.smmu.fmt
    system.vcm_activate(avcm)
    res = system.vcm_reserve(vcm, SZ_2M, Attr.READ | Attr.WRITE)
    physmem = system.vcm_phys_alloc(None, SZ_2M, PhysAttr.CONTIGUOUS)
    system.vcm_back(res, physmem)
    system.device(device).write(res.dev_addr + 0x1234, b"mixed")
    pa = physmem.chunks[0][0]
    assert system.memory.read(pa + 0x1234, 5) == b"mixed"
    assert walked(system, device, res.dev_addr + 0x1234) == pa + 0x1234


def test_a_settled_vcm_refuses_an_smmu_of_another_format(system: System) -> None:
    vcm = system.vcm_create(0x1000_0000, SZ_1G)
    system.vcm_assoc(vcm, V8, 0)
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match=r"walks ARMv7 LPAE.*VMSAv8-64.*settled"):
        system.vcm_assoc(vcm, LPAE, 0)
    assert system.snapshot() == before
    # so is one made with fmt=, and one that maps memory before any association
    fixed = system.vcm_create(0x1000_0000, SZ_1G, fmt=VMSAV8_4K)
    with pytest.raises(InvalidArgumentError, match=r"1400c000.ovl's SMMU .* settled"):
        system.vcm_assoc(fixed, V7S, 0)
    backed = system.vcm_create(0x1000_0000, SZ_1G)
    res = system.vcm_reserve(backed, SZ_64K, Attr.READ)
    system.vcm_back(res, system.vcm_phys_alloc(None, SZ_64K, PhysAttr.NONE))
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="already maps memory"):
        system.vcm_assoc(backed, V8, 0)
    assert system.snapshot() == before


def test_vmsav8_vcms_reach_past_32_bits_and_v7_ones_do_not(system: System) -> None:
    high = 1 << 40
    vcm = system.vcm_create(high, SZ_1G)  # only VMSAv8-64 has a 48-bit input
    assert vcm.table is not None and vcm.table.fmt is VMSAV8_4K
    avcm = system.vcm_assoc(vcm, V8, 0)
    system.vcm_activate(avcm)
    res = system.vcm_reserve(vcm, SZ_64K, Attr.READ | Attr.WRITE)
    physmem = system.vcm_phys_alloc(None, SZ_64K, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    assert res.dev_addr >= high
    system.device(V8).write(res.dev_addr, b"far")
    pa = physmem.chunks[0][0]
    assert walked(system, V8, res.dev_addr) == pa
    other = system.vcm_create(high, SZ_1G)
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="wider than ARMv7 LPAE"):
        system.vcm_assoc(other, LPAE, 0)
    with pytest.raises(InvalidArgumentError, match=r"beyond the 32-bit input space of ARMv7 short"):
        system.vcm_create(high, SZ_1G, fmt=ARMV7S)
    with pytest.raises(InvalidArgumentError, match=r"beyond the 48-bit input space"):
        system.vcm_create(1 << 48, SZ_1G)
    with pytest.raises(InvalidArgumentError, match=r"fmt .* is not a table format an SMMU"):
        system.vcm_create(0, SZ_1G, fmt="vmsav8")
    assert system.snapshot() == before


def test_default_platform_keeps_iommu_vcms_at_32_bits() -> None:
    system = System.default()
    with pytest.raises(InvalidArgumentError, match="32-bit input space of ARMv7 short"):
        system.vcm_create(1 << 32, SZ_1G)


def test_dma_domains_follow_their_smmu(system: System) -> None:
    api = DmaApi.of(system)
    domains = {name: api.domain(name) for name in (V7S, V8, LPAE)}
    assert {n: (d.fmt, d.vcm.range.end) for n, d in domains.items() if d} == {
        V7S: (ARMV7S, 1 << 32),
        V8: (VMSAV8_4K, 1 << 48),  # arm-smmu's aperture: the input size
        LPAE: (ARMV7_LPAE, 1 << 32),
    }
    page = system.vcm_phys_alloc(system.memory_roles.kernel, SZ_64K, PhysAttr.CONTIGUOUS)
    pa = page.chunks[0][0]
    for name in domains:
        handle = api.map_page(name, pa, 0, SZ_64K, DmaDirection.TO_DEVICE)
        assert handle < 1 << 32  # the 32-bit DMA mask bounds the IOVA, not the aperture
        assert walked(system, name, handle + 0x100) == pa + 0x100
        api.unmap_page(name, handle, SZ_64K, DmaDirection.TO_DEVICE)


def test_a_dma_buf_is_shared_across_three_formats(system: System) -> None:
    frame = VcmExporter(system).allocate(SZ_64K)
    maps = {n: frame.attach(n).map(DmaDirection.BIDIRECTIONAL) for n in (V7S, V8, LPAE)}
    system.device(V8).write(maps[V8].dma_address + 8, b"one buffer")
    pas = set()
    for name, sg in maps.items():
        assert system.device(name).read(sg.dma_address + 8, 10) == b"one buffer"
        pas.add(walked(system, name, sg.dma_address))
    assert len(pas) == 1 and system.memory.read(pas.pop() + 8, 10) == b"one buffer"


def test_a_domain_refuses_a_member_of_another_format(system: System) -> None:
    with pytest.raises(InvalidArgumentError, match=r"7ff50000.hdlcd cannot join DMA domain"):
        DmaApi(system, domains={V8: "shared", LPAE: "shared"})
    assert DmaApi.current(system) is None


def test_a_scenario_runs_across_three_formats(make_dtb: MakeDtb) -> None:
    """What ``vcmm run`` does on the board: one buffer mapped by seed VCMs for devices
    behind SMMUs of three formats, each context walking its own table."""
    text = f"""
platform = "{make_dtb(mixed_tree())}"
buffers = [{{ name = "frame", size = "256x64 nv12" }}]
steps = [
  {{ device = "{V8}", buffer = "frame", access = "write" }},
  {{ device = "{V7S}", buffer = "frame", access = "read" }},
  {{ device = "{LPAE}", buffer = "frame", access = "read" }},
]
"""
    result = run_scenario(loads_scenario(text))
    assert {d.name: d.faults for d in result.devices} == {V8: 0, V7S: 0, LPAE: 0}
    system = result.system
    assert system is not None
    pas = {name: walked(system, name, 0x1000_0000) for name in (V8, V7S, LPAE)}
    assert len(set(pas.values())) == 1, pas
