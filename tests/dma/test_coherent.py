"""dma_alloc_coherent/dma_free_coherent: where the pages come from, how the CPU and the
device see them, and every way of freeing wrongly."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_64K, MemType
from vcmm import DmaDirection as D
from vcmm.core import Attr
from vcmm.dma import DmaApi, DmaAttr, ReportKind, ScatterList
from vcmm.errors import (
    AttributeConflictError,
    DmaApiError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
)
from vcmm.ranges import AddressRange

DEV = "vcodec_a_mm1"


def pattern(n: int, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8).tobytes()


def test_non_coherent_buffer_is_zeroed_uncached_and_shared_without_syncs(
    system: vcmm.System, dma: DmaApi
) -> None:
    pool = dma.pool.region
    system.memory.write(pool.start, b"\xee" * (2 * SZ_1M))  # garbage where pages come from
    buf = dma.alloc_coherent(DEV, 5 * SZ_4K + 100)
    cpu, dev = system.cpu, system.device(DEV)
    assert cpu.read(buf.cpu_addr, buf.size) == bytes(buf.size)
    assert dev.read(buf.dma_handle, buf.size) == bytes(buf.size)
    assert buf.memtype is MemType.NORMAL_NC and all(c in pool for c in buf.chunks)
    # No sync calls anywhere: the CPU alias is non-cacheable.
    cpu.write(buf.cpu_addr + 10, b"from cpu")
    assert dev.read(buf.dma_handle + 10, 8) == b"from cpu"
    dev.write(buf.dma_handle + 4 * SZ_4K, b"from device")
    assert cpu.read(buf.cpu_addr + 4 * SZ_4K, 11) == b"from device"
    assert not cpu.cache.contains(buf.chunks[0].start)
    # Both aliases are in the mapping graph, non-cacheable and shareable (two spaces).
    aliases = [m for c in buf.chunks for m in system.graph.of_chunk(c)]
    assert {m.space for m in aliases} == {"cpu", dma.domain(DEV).vcm.space}
    assert all(m.attrs.memtype is MemType.NORMAL_NC and m.attrs.shareable for m in aliases)
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_pages_come_largest_order_first_with_fallback(system: vcmm.System, dma: DmaApi) -> None:
    buf = dma.alloc_coherent(DEV, 4 * SZ_1M + SZ_64K + SZ_4K)
    assert [c.size for c in buf.chunks] == [4 * SZ_1M, SZ_64K, SZ_4K]
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    # Fragment the pool on purpose: only single pages are left; the allocation falls
    # back to them and is still one contiguous range for the device and the CPU.
    held = dma.pool.buddy.fragment("alternate")
    assert dma.pool.buddy.largest_free_order() == 0
    buf = dma.alloc_coherent(DEV, 16 * SZ_4K)
    assert [c.size for c in buf.chunks] == [SZ_4K] * 16
    assert all(b.start - a.end >= SZ_4K for a, b in itertools.pairwise(buf.chunks))
    data = pattern(16 * SZ_4K)
    system.device(DEV).write(buf.dma_handle, data)
    assert system.cpu.read(buf.cpu_addr, len(data)) == data
    for c, i in zip(buf.chunks, range(16), strict=True):
        assert system.memory.read(c.start, SZ_4K) == data[i * SZ_4K : (i + 1) * SZ_4K]
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    for pa in held:
        dma.pool.buddy.free_pages(pa)


def test_force_contiguous(system: vcmm.System, dma: DmaApi) -> None:
    buf = dma.alloc_coherent(DEV, 3 * SZ_4K, attrs=DmaAttr.FORCE_CONTIGUOUS)
    assert len(buf.chunks) == 1 and buf.chunks[0].size == 3 * SZ_4K
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_coherent_device_gets_cacheable_kernel_ram(make_system: Callable) -> None:
    system = make_system(coherent=("mdp",))
    dma = DmaApi(system, debug="raise")
    ebi = system.target("ebi")
    ebi.buddy.fragment("random", seed=3, keep_fraction=0.5)
    buf = dma.alloc_coherent("mdp", 32 * SZ_4K)
    assert buf.memtype is MemType.NORMAL_WB_WA and buf.source == "ebi"
    assert all(c in ebi.regions[0] for c in buf.chunks)
    assert [c.size for c in buf.chunks] == sorted((c.size for c in buf.chunks), reverse=True)
    system.cpu.write(buf.cpu_addr, b"cached")  # stays in the cache, dirty...
    assert system.cpu.cache.is_dirty(buf.chunks[0].start)
    assert system.device("mdp").read(buf.dma_handle, 6) == b"cached"  # ...the device snoops
    edges = [m for c in buf.chunks for m in system.graph.of_chunk(c)]
    assert all(m.attrs.memtype is MemType.NORMAL_WB_WA for m in edges)
    dma.free_coherent("mdp", buf.size, buf.cpu_addr, buf.dma_handle)


def test_an_uncached_alias_of_kernel_ram_is_what_the_graph_refuses(system: vcmm.System) -> None:
    """Why non-coherent buffers come from a carve-out: the linear map is cacheable."""
    physmem = system.vcm_phys_alloc("ebi", SZ_4K)
    vmm = system.vcm_create_from_prebuilt(0)
    res = system.vcm_reserve(vmm, SZ_4K, Attr.RW | Attr.NONCACHED)
    with pytest.raises(AttributeConflictError, match="linear map"):
        system.vcm_back(res, physmem)


def test_atomic_allocations_use_the_premapped_pool(system: vcmm.System, dma: DmaApi) -> None:
    vmm = dma._state.vmm
    reservations = len(vmm.reservations)
    buf = dma.alloc_coherent(DEV, 2 * SZ_4K, atomic=True)
    assert buf.source == "atomic pool" and dma.atomic_pool.contains(buf.cpu_addr)
    assert len(vmm.reservations) == reservations  # no new kernel mapping was needed
    system.cpu.write(buf.cpu_addr, b"atomic")
    assert system.device(DEV).read(buf.dma_handle, 6) == b"atomic"
    direct = dma.alloc_coherent("dsp", SZ_4K, atomic=True)
    assert direct.dma_handle == direct.chunks[0].start - 0x8000_0000 + 0x4000_0000
    dma.free_coherent("dsp", SZ_4K, direct.cpu_addr, direct.dma_handle)
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    assert dma.atomic_pool.space.allocated() == []


def test_an_atomic_buffer_shares_exactly_its_pages_of_the_pool_alias(
    system: vcmm.System, dma: DmaApi
) -> None:
    """The atomic pool is one kernel mapping of the whole carve-out; a buffer is a view
    of a few of its pages.  Only those pages gain a second address space, so only they
    become shareable, on the pool alias as on the device's (the kernel PTEs read back
    from the table), and they lose it again when the buffer goes."""
    pool = dma.atomic_pool
    kernel = system.cpu.kernel_table

    def pool_bits() -> list[bool]:
        out = []
        for page in range(pool.region.size // SZ_4K):
            walk = kernel.walk((pool.cpu_base + page * SZ_4K) & ((1 << 48) - 1))
            assert walk.attrs is not None and walk.pa == pool.region.start + page * SZ_4K
            out.append(walk.attrs.shareable)
        return out

    assert not any(pool_bits())
    buf = dma.alloc_coherent(DEV, 2 * SZ_4K, atomic=True)
    first = (buf.chunks[0].start - pool.region.start) // SZ_4K
    assert pool_bits() == [page in (first, first + 1) for page in range(len(pool_bits()))]
    domain = dma.domain(DEV)
    assert domain is not None
    for offset in (0, SZ_4K):
        walk = domain.vcm.table.walk(buf.dma_handle + offset)
        assert walk.attrs is not None and walk.attrs.shareable
        assert walk.attrs.memtype is MemType.NORMAL_NC
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    assert not any(pool_bits())
    assert system.phys_views == []


def test_coherent_atomic_on_a_coherent_device_uses_the_linear_map(make_system: Callable) -> None:
    system = make_system(coherent=("mdp",))
    dma = DmaApi(system)
    buf = dma.alloc_coherent("mdp", 3 * SZ_4K, atomic=True)
    assert len(buf.chunks) == 1
    assert buf.cpu_addr == system.cpu.phys_to_virt(buf.chunks[0].start)
    dma.free_coherent("mdp", buf.size, buf.cpu_addr, buf.dma_handle)


def test_direct_device_gets_one_block_at_its_bus_address(system: vcmm.System, dma: DmaApi) -> None:
    buf = dma.alloc_coherent("dsp", 5 * SZ_4K)
    (chunk,) = buf.chunks
    assert buf.dma_handle == chunk.start - 0x8000_0000 + 0x4000_0000
    system.device("dsp").write(buf.dma_handle + 5, b"dsp")
    assert system.cpu.read(buf.cpu_addr + 5, 3) == b"dsp"
    dma.free_coherent("dsp", buf.size, buf.cpu_addr, buf.dma_handle)


def test_free_releases_everything(system: vcmm.System, dma: DmaApi, state: Callable) -> None:
    before = state()
    buf = dma.alloc_coherent(DEV, 3 * SZ_1M)
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    after = state()
    # Memory bytes differ (the zeroing), the IOVA cache may keep the range; the rest
    # (pools, kernel address space, reservations, graph) is back as it was.
    assert dma.pool.snapshot() == before[1][4]
    assert after[1][2:4] == before[1][2:4] == ((), ())
    assert system.graph.snapshot() == before[0][0][3]
    assert system.cpu.kernel_table.snapshot() == before[0][5]


def test_allocation_failures_change_nothing(
    system: vcmm.System, dma: DmaApi, state: Callable
) -> None:
    before = state()
    with pytest.raises(OutOfMemoryError, match="coherent pool"):
        dma.alloc_coherent(DEV, dma.pool.region.size + SZ_4K)
    assert state() == before
    dma.set_coherent_mask("camera", (1 << 31) - 1)  # cannot reach RAM at 0x8000_0000
    before = state()
    with pytest.raises(OutOfAddressSpaceError, match="above its DMA mask"):
        dma.alloc_coherent("camera", SZ_4K)
    assert state() == before
    dma.set_coherent_mask(DEV, 0x1FFF)  # one usable granule
    before = state()
    with pytest.raises(OutOfAddressSpaceError):
        dma.alloc_coherent(DEV, 2 * SZ_4K)  # pages and kernel alias made, then undone
    assert state() == before


def test_freeing_wrongly(system: vcmm.System, dma: DmaApi, state: Callable) -> None:
    buf = dma.alloc_coherent(DEV, 2 * SZ_4K)
    before = state()
    with pytest.raises(DmaApiError, match="different size"):
        dma.free_coherent(DEV, 5 * SZ_4K, buf.cpu_addr, buf.dma_handle)
    with pytest.raises(DmaApiError, match="different handle"):
        dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle + SZ_4K)
    with pytest.raises(DmaApiError, match="belongs to vcodec_a_mm1"):
        dma.free_coherent("mdp", buf.size, buf.cpu_addr, buf.dma_handle)
    with pytest.raises(DmaApiError, match="no coherent buffer"):
        dma.free_coherent(DEV, buf.size, buf.cpu_addr + SZ_4K, buf.dma_handle)
    assert state() == before
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [
        ReportKind.FREE_MISMATCH,
        ReportKind.FREE_MISMATCH,
        ReportKind.FREE_MISMATCH,
        ReportKind.FREE_NOT_ALLOCATED,
    ]
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    before = state()
    with pytest.raises(DmaApiError, match="already freed by free_coherent"):
        dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    assert state() == before
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.FREE_NOT_ALLOCATED and report.mapped_by is not None


def test_get_sgtable_shares_the_buffer_with_another_device(
    system: vcmm.System, dma: DmaApi
) -> None:
    dma.pool.buddy.fragment("alternate")
    buf = dma.alloc_coherent(DEV, 3 * SZ_4K + 0x80)
    sgt = dma.get_sgtable(DEV, buf.cpu_addr, buf.dma_handle, buf.size)
    assert [AddressRange(e.phys, e.length) for e in sgt] == [
        *buf.chunks[:3],
        AddressRange(buf.chunks[3].start, 0x80),
    ]
    system.device(DEV).write(buf.dma_handle, b"codec output")
    other = "vcodec_b_mm2"
    n = dma.map_sg(other, sgt, len(sgt), D.TO_DEVICE)
    assert n == 1  # whole pages, one IOVA range: one segment
    assert system.device(other).read(sgt[0].dma_address, 12) == b"codec output"
    # The importer's mapping agrees with the buffer's memory type (non-cacheable).
    domain = dma.domain(other)
    assert domain is not None
    (res,) = domain.vcm.reservations
    assert all(m.attrs.memtype is MemType.NORMAL_NC for m in system.graph.of_reservation(res.id))
    dma.unmap_sg(other, sgt, len(sgt), D.TO_DEVICE)
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_sg_of_a_sub_page_of_a_coherent_buffer_adopts_its_memory_type(
    system: vcmm.System, dma: DmaApi
) -> None:
    buf = dma.alloc_coherent(DEV, 4 * SZ_4K, attrs=DmaAttr.FORCE_CONTIGUOUS)
    inner = ScatterList([(buf.chunks[0].start + SZ_4K, SZ_4K)])
    assert dma.map_sg("mdp", inner, 1, D.FROM_DEVICE) == 1
    (res,) = dma.domain("mdp").vcm.reservations
    assert all(m.attrs.memtype is MemType.NORMAL_NC for m in system.graph.of_reservation(res.id))
    dma.unmap_sg("mdp", inner, 1, D.FROM_DEVICE)
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
