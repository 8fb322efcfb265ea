"""Memory targets (000 L247-292, L1413, L4075-4089) and the three VCM kinds (L137-212)."""

from __future__ import annotations

import pytest

from vcmm import SZ_1M, SZ_2M, SZ_4K, SZ_16M, SZ_64K
from vcmm.core import Attr, PhysAttr, VcmKind
from vcmm.errors import InvalidArgumentError, OutOfMemoryError
from vcmm.hw.cpu import VMALLOC_AREA, KernelFault
from vcmm.mm.genalloc import RangeAllocator
from vcmm.ranges import AddressRange


def test_priority_order_falls_back_target_by_target(system) -> None:
    assert system.target_priority == ("blocks", "contig", "ebi")
    # Fits the block pools: served there, largest block first, never split.
    pm = system.vcm_phys_alloc(None, SZ_16M + SZ_1M + SZ_64K + SZ_4K, PhysAttr.NONE)
    assert pm.target == "blocks"
    assert [s for _, s in pm.chunks] == [SZ_16M, SZ_1M, SZ_64K, SZ_4K]
    # 32 MiB in one piece: no block is that large, the contiguous carve-out is.
    big = system.vcm_phys_alloc(None, 32 * SZ_1M, PhysAttr.CONTIGUOUS)
    assert big.target == "contig" and len(big.chunks) == 1
    # An explicit list is tried in its own order: on-chip SRAM is too small here.
    pm2 = system.vcm_phys_alloc(["smi", "ebi"], SZ_2M, PhysAttr.NONE)
    assert pm2.target == "ebi"
    with pytest.raises(OutOfMemoryError) as err:
        system.vcm_phys_alloc(["smi"], SZ_2M, PhysAttr.NONE)
    assert "smi" in str(err.value) and "2M" in str(err.value)


def test_block_pool_uses_smaller_blocks_when_large_ones_run_out(system) -> None:
    first = system.vcm_phys_alloc("blocks", 2 * SZ_16M, PhysAttr.NONE)  # both 16M blocks
    assert [s for _, s in first.chunks] == [SZ_16M, SZ_16M]
    second = system.vcm_phys_alloc("blocks", SZ_16M, PhysAttr.NONE)
    assert [s for _, s in second.chunks] == [SZ_1M] * 16  # "use 1 MB, then 64 KB..."
    system.vcm_phys_free(first)
    third = system.vcm_phys_alloc("blocks", SZ_16M, PhysAttr.NONE)
    assert [s for _, s in third.chunks] == [SZ_16M]


def test_alignment_and_contiguity_are_honoured(system) -> None:
    aligned = system.vcm_phys_alloc("blocks", 4 * SZ_64K, PhysAttr.align(SZ_1M))
    assert all(pa % SZ_1M == 0 for pa, _ in aligned.chunks)
    contiguous = system.vcm_phys_alloc(
        "ebi", 3 * SZ_1M, PhysAttr.CONTIGUOUS | PhysAttr.align(SZ_1M)
    )
    ((pa, size),) = contiguous.chunks
    assert size == 3 * SZ_1M and pa % SZ_1M == 0
    scattered = system.vcm_phys_alloc("ebi", 3 * SZ_4K, PhysAttr.blocks(SZ_4K))
    assert [s for _, s in scattered.chunks] == [SZ_4K] * 3


def test_one_allocation_backs_reservations_in_many_vcms(system) -> None:
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    devices = ["vcodec_a_mm1", "vcodec_b_mm2", "mdp"]
    reservations = []
    for i, name in enumerate(devices):
        vcm = system.vcm_create(SZ_16M * (i + 1), SZ_16M)
        system.vcm_activate(system.vcm_assoc(vcm, name, 0))
        res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
        system.vcm_back(res, physmem)
        reservations.append(res)
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, system.cpu, 0))
    res_cpu = system.vcm_reserve(vmm, SZ_1M, Attr.RW)
    system.vcm_back(res_cpu, physmem)
    assert physmem.backing == [*reservations, res_cpu]
    system.device("mdp").write(reservations[2].dev_addr + 0x1234, b"one buffer")
    for name, res in zip(devices, reservations, strict=True):
        assert system.device(name).read(res.dev_addr + 0x1234, 10) == b"one buffer"
    assert system.cpu.read(res_cpu.dev_addr + 0x1234, 10) == b"one buffer"


def test_iommu_reservations_are_aligned_for_their_largest_page(system) -> None:
    vcm = system.vcm_create(SZ_4K, 256 * SZ_1M)
    small = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    assert small.dev_addr == SZ_4K  # first fit at the bottom of the VCM
    mid = system.vcm_reserve(vcm, SZ_64K + SZ_4K, Attr.RW)
    assert mid.dev_addr % SZ_64K == 0
    big = system.vcm_reserve(vcm, SZ_2M + SZ_4K, Attr.RW)
    assert big.dev_addr % SZ_1M == 0
    huge = system.vcm_reserve(vcm, SZ_16M, Attr.RW)
    assert huge.dev_addr % SZ_16M == 0
    odd = system.vcm_reserve(vcm, SZ_4K, Attr.RW, align=SZ_2M)
    assert odd.dev_addr % SZ_2M == 0
    ranges = [r.range for r in (small, mid, big, huge, odd)]
    assert all(not a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])


def test_custom_allocator_hook(system) -> None:
    """The reviewers' custom-allocator hook (000 L4053): the VCM asks it for addresses."""

    class TopDown(RangeAllocator):
        def alloc(self, size: int, align: int | None = None) -> int:
            top = self.range.end - size
            addr = top - top % (align or self.granule)
            return self.alloc_at(addr, size)

    window = AddressRange(SZ_16M, SZ_16M)
    vcm = system.vcm_create(window.start, window.size, allocator=TopDown(window, granule=SZ_4K))
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    assert res.dev_addr == window.end - SZ_1M

    class Liar(RangeAllocator):
        def alloc(self, size: int, align: int | None = None) -> int:
            return self.alloc_at(self.range.start + SZ_4K, size)  # ignores the alignment

    liar = system.vcm_create(SZ_16M, SZ_16M, allocator=Liar(window, granule=SZ_4K))
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="allocator returned"):
        system.vcm_reserve(liar, SZ_1M, Attr.RW)
    assert system.snapshot() == before


def test_vmm_reservations_are_kernel_virtual_areas(system) -> None:
    vmm = system.vcm_create_from_prebuilt(0)
    assert vmm.kind is VcmKind.VMM and vmm.range == AddressRange(
        VMALLOC_AREA.start, system.spec.cpu.vmalloc.size
    )
    res = system.vcm_reserve(vmm, SZ_64K, Attr.RW)
    assert res.dev_addr in vmm.range
    physmem = system.vcm_phys_alloc("smi", SZ_64K, PhysAttr.NONE)  # on-chip SRAM
    system.vcm_back(res, physmem)
    system.cpu.write(res.dev_addr, b"sram")
    system.cpu.cache.clean_all()
    assert system.memory.read(physmem.chunks[0][0], 4) == b"sram"
    system.vcm_unback(res)
    with pytest.raises(KernelFault):
        system.cpu.read(res.dev_addr, 4)


def test_free_returns_table_memory(system) -> None:
    baseline = system.table_memory.used_bytes
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    assert system.table_memory.used_bytes == baseline + 16 * 1024  # a 16 KiB first level
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    system.vcm_back(res, system.vcm_phys_alloc("blocks", SZ_4K, 0))
    assert system.table_memory.used_bytes == baseline + 16 * 1024 + 1024  # + one L2 table
    system.vcm_unback(res)
    system.vcm_unreserve(res)
    system.vcm_free(vcm)
    assert system.table_memory.used_bytes == baseline
