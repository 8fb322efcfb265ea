"""The DMA API and dma-buf on a platform that names nothing like the default one.

The platform below has no ``ebi`` and no ``contig``: kernel RAM is ``dram``, the
carve-out is ``cma``.  The DMA API takes its pools where the platform's ``[dma]``
defaults say (docs/PLATFORM.md), dma-buf allocates from the platform's exporter
target, and each carve-out the DMA API holds is an allocation labelled with its
holder in the mapping graph.  A platform with no carve-out at all still maps and
shares; only a non-coherent device's coherent buffer is refused, saying why.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm.attrs import DmaDirection
from vcmm.dma import DmaApi, ScatterList
from vcmm.errors import OutOfMemoryError
from vcmm.platform import loads_platform
from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE, ProcessTable
from vcmm.report.graph import to_text
from vcmm.share import VcmExporter, dma_api
from vcmm.sizes import SZ_1M, SZ_256K

D = DmaDirection

TINY = """\
name = "tiny"

[[memory]]
name = "ram"
base = 0x4000_0000
size = "256M"

[page_tables]
base = 0x4000_0000
size = "2M"

[[targets]]
name = "dram"
kind = "system"
base = 0x4100_0000
size = "64M"

[[targets]]
name = "cma"
kind = "contiguous"
base = 0x4800_0000
size = "8M"

[[smmus]]
name = "iommu"
context_banks = 2
contexts = [{ name = "gpu", bank = 0 }, { name = "display", bank = 1 }]

[[devices]]
name = "gpu"
kind = "smmu"
smmu = "iommu"
context = "gpu"

[[devices]]
name = "display"
kind = "smmu"
smmu = "iommu"
context = "display"

[[devices]]
name = "isp"
kind = "physical"
"""

NO_CARVEOUT = TINY.replace('[[targets]]\nname = "cma"\nkind = "contiguous"\n', "").replace(
    'base = 0x4800_0000\nsize = "8M"\n\n', ""
)


def boot(text: str) -> vcmm.System:
    return vcmm.System(loads_platform(text, source="tiny.toml"))


def test_the_dma_api_takes_its_pools_from_the_platforms_carve_out() -> None:
    system = boot(TINY)
    api = DmaApi(system, debug="raise")
    cma = system.target("cma")
    # Half of the 8M carve-out for the coherent pool, 256K for the atomic pool.
    assert (api.pool.region.size, api.atomic_pool.region.size) == (4 * SZ_1M, SZ_256K)
    assert cma.free_bytes == 8 * SZ_1M - 4 * SZ_1M - SZ_256K
    holders = sorted(p.holder for p in system.physmems if p.holder)
    assert holders == [
        "the DMA API (atomic pool)",
        "the DMA API (coherent pool)",
    ]
    text = to_text(system.graph_data())
    assert "4M from cma, held by the DMA API (coherent pool)" in text
    assert "256K from cma, held by the DMA API (atomic pool)" in text
    exported = {n["label"]: n["holder"] for n in system.graph_data()["nodes"] if "holder" in n}
    assert set(exported.values()) >= {"the DMA API (coherent pool)"}

    buf = api.alloc_coherent("gpu", 3 * SZ_4K)  # non-coherent: from the pool
    assert buf.chunks[0].start in api.pool.region
    system.cpu.write(buf.cpu_addr, b"from the cpu")
    assert system.device("gpu").read(buf.dma_handle, 12) == b"from the cpu"
    page = system.vcm_phys_alloc("dram", SZ_4K).chunk_ranges[0].start
    handle = api.map_page("display", page, 0, SZ_4K, D.TO_DEVICE)
    assert handle != api.mapping_error("display", handle)
    api.unmap_page("display", handle, SZ_4K, D.TO_DEVICE)
    api.free_coherent("gpu", 3 * SZ_4K, buf.cpu_addr, buf.dma_handle)
    assert api.checker is not None and api.checker.take() == []


def test_dma_buf_is_shared_by_two_devices_and_a_process_on_that_platform() -> None:
    system = boot(TINY)
    exporter = VcmExporter(system)
    frame = exporter.allocate(2 * SZ_4K)  # the platform's exporter target: dram
    assert frame.priv.physmem.target == "dram"
    gpu = frame.attach("gpu").map(D.BIDIRECTIONAL)
    shown = frame.attach("display").map(D.TO_DEVICE)
    assert dma_api(system).ops("gpu") == "iommu"
    system.device("gpu").write(gpu.dma_address, b"rendered")
    dma_api(system).sync_sg_for_cpu("gpu", gpu.table, len(gpu.table), D.BIDIRECTIONAL)
    assert system.device("display").read(shown.dma_address, 8) == b"rendered"
    procs = ProcessTable(system)  # anonymous memory from the kernel target, dram
    viewer = procs.spawn("viewer")
    fd = frame.install_fd(viewer, O_RDWR)
    va = viewer.mmap(2 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    assert viewer.read(va, 8) == b"rendered"
    anon = viewer.mmap(SZ_4K, PROT_READ, vcmm.proc.MAP_PRIVATE | vcmm.proc.MAP_ANONYMOUS)
    assert viewer.read(anon, 4) == bytes(4)


def test_without_a_carve_out_only_a_non_coherent_coherent_buffer_is_refused() -> None:
    system = boot(NO_CARVEOUT)
    assert system.memory_roles.coherent_pool is None
    api = DmaApi(system, debug="raise")
    assert api.pool is None and api.atomic_pool is None
    before = (system.snapshot(), api.snapshot())
    for atomic, which in ((False, "coherent"), (True, "atomic")):
        with pytest.raises(OutOfMemoryError, match=rf"no {which} pool: declare \[dma\]"):
            api.alloc_coherent("gpu", SZ_4K, atomic=atomic)
    assert (system.snapshot(), api.snapshot()) == before
    pages = system.vcm_phys_alloc("dram", 2 * SZ_4K).chunk_ranges[0].start
    sgl = ScatterList([(pages, SZ_4K), (pages + SZ_4K, SZ_4K)])
    assert api.map_sg("gpu", sgl, 2, D.TO_DEVICE) == 1
    api.unmap_sg("gpu", sgl, 2, D.TO_DEVICE)
    frame = VcmExporter(system).allocate(SZ_4K)
    sg = frame.attach("display").map(D.TO_DEVICE)
    assert system.device("display").read(sg.dma_address, 4) == bytes(4)
