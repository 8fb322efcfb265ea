"""The aliasing rules the reviewers demanded (000 L1978-1992, L2075-2094, L2673-2757).

- Every alias of a physical page agrees on memory type and cache policy; permissions
  may differ.  The kernel's cacheable linear map of RAM counts as an alias.
- Shareable once two address spaces map a chunk, cleared when one is left; kernel RAM
  always shareable.
- With the check switched off, speculative prefetch through the cacheable alias makes
  the CPU read stale data: the corruption the rule prevents.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, Access, MemType
from vcmm.core import Attr, PhysAttr
from vcmm.errors import AttributeConflictError, NotMappedError
from vcmm.platform import load_default
from vcmm.ranges import AddressRange


def _iommu(system: vcmm.System, dev: str, start: int = SZ_16M):
    vcm = system.vcm_create(start, 64 * SZ_1M)
    avcm = system.vcm_assoc(vcm, dev, 0)
    system.vcm_activate(avcm)
    return vcm


def test_uncached_alias_of_kernel_ram_is_refused_naming_both_mappings(system) -> None:
    vcm = _iommu(system, "vcodec_a_mm1")
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW | Attr.NONCACHED)
    physmem = system.vcm_phys_alloc("ebi", SZ_1M, PhysAttr.NONE)
    pa = physmem.chunks[0][0]
    before = system.snapshot()
    with pytest.raises(AttributeConflictError) as err:
        system.vcm_back(res, physmem)
    message = str(err.value)
    assert res.name in message and "normal-nc" in message
    assert "linear map" in message and "normal-wb-wa" in message
    assert f"{system.cpu.phys_to_virt(pa):#x}" in message  # the linear map's address
    assert system.snapshot() == before
    assert not res.backed and physmem.backing == []


def test_uncached_mapping_of_a_carve_out_is_fine(system, armv7) -> None:
    vcm = _iommu(system, "vcodec_a_mm1")
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW | Attr.NONCACHED)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    leaf = armv7.leaf(vcm.table.root, res.dev_addr)
    # Normal non-cacheable: TEX=001, C=0, B=0 (ARM ARM table B3-10, TEX remap off).
    assert (leaf.tex, leaf.c, leaf.b) == (0b001, 0, 0)
    assert leaf.pa == physmem.chunks[0][0] and not leaf.shareable  # one address space only


def test_two_cache_policies_on_one_carve_out_allocation_are_refused(system) -> None:
    a = _iommu(system, "vcodec_a_mm1")
    b = _iommu(system, "vcodec_b_mm2")
    physmem = system.vcm_phys_alloc("contig", SZ_1M, PhysAttr.CONTIGUOUS)
    first = system.vcm_reserve(a, SZ_1M, Attr.RW | Attr.WT)
    system.vcm_back(first, physmem)
    for policy in (Attr.NONCACHED, Attr.WB_WA, Attr.WB_NWA):
        second = system.vcm_reserve(b, SZ_1M, Attr.RW | policy)
        before = system.snapshot()
        with pytest.raises(AttributeConflictError, match=rf"{second.name}.*{first.name}"):
            system.vcm_back(second, physmem)
        assert system.snapshot() == before
        system.vcm_unreserve(second)
    # The same policy is accepted.
    same = system.vcm_reserve(b, SZ_1M, Attr.RW | Attr.WT)
    system.vcm_back(same, physmem)


def test_permissions_may_differ_between_aliases(system) -> None:
    a = _iommu(system, "vcodec_a_mm1")
    b = _iommu(system, "vcodec_b_mm2")
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    ro = system.vcm_reserve(b, SZ_1M, Attr.READ)
    rw = system.vcm_reserve(a, SZ_1M, Attr.READ | Attr.WRITE)
    system.vcm_back(rw, physmem)
    system.vcm_back(ro, physmem)
    writer, reader = system.device("vcodec_a_mm1"), system.device("vcodec_b_mm2")
    writer.write(rw.dev_addr, b"shared frame")
    assert reader.read(ro.dev_addr, 12) == b"shared frame"
    with pytest.raises(vcmm.errors.DeviceFaultError) as err:
        reader.write(ro.dev_addr, b"x")
    assert err.value.kind is vcmm.FaultKind.PERMISSION


def test_shareable_bit_follows_the_number_of_address_spaces(system, armv7) -> None:
    dev_a, dev_b = system.device("vcodec_a_mm1"), system.device("vcodec_b_mm2")
    a = _iommu(system, "vcodec_a_mm1")
    b = _iommu(system, "vcodec_b_mm2", start=512 * SZ_1M)
    # One 1 MiB block (a section) and one 4 KiB block (a small page).
    physmem = system.vcm_phys_alloc("blocks", SZ_1M + SZ_4K, PhysAttr.NONE)
    res_a = system.vcm_reserve(a, SZ_1M + SZ_4K, Attr.RW)
    system.vcm_back(res_a, physmem)

    def s_bits(vcm, res):
        sec = armv7.leaf(vcm.table.root, res.dev_addr)
        page = armv7.leaf(vcm.table.root, res.dev_addr + SZ_1M)
        assert (sec.kind, page.kind) == ("section", "small")
        # S is bit 16 of a section descriptor and bit 10 of a small-page descriptor.
        return bool(sec.desc >> 16 & 1), bool(page.desc >> 10 & 1)

    assert s_bits(a, res_a) == (False, False)
    # Device A touches both pages: the SMMU TLB now caches them (non-shareable).
    dev_a.read(res_a.dev_addr, 16)
    dev_a.read(res_a.dev_addr + SZ_1M, 16)
    tlb, bank = dev_a.ctx.smmu.tlb, dev_a.ctx.bank
    cached = tlb.probe(bank, res_a.dev_addr)
    assert cached is not None and not cached.attrs.shareable

    res_b = system.vcm_reserve(b, SZ_1M + SZ_4K, Attr.RW)
    system.vcm_back(res_b, physmem)
    assert s_bits(a, res_a) == (True, True)
    assert s_bits(b, res_b) == (True, True)
    # The stale non-shareable entries of A are gone; the next walk sees S=1.
    assert tlb.probe(bank, res_a.dev_addr) is None
    assert tlb.probe(bank, res_a.dev_addr + SZ_1M) is None
    assert dev_a.ctx.translate_access(res_a.dev_addr, Access.READ).attrs.shareable
    dev_b.write(res_b.dev_addr + SZ_1M, b"from b")
    assert dev_a.read(res_a.dev_addr + SZ_1M, 6) == b"from b"

    system.vcm_unback(res_b)
    assert s_bits(a, res_a) == (False, False)
    assert tlb.probe(bank, res_a.dev_addr) is None  # the shareable entry went too
    assert not dev_a.ctx.translate_access(res_a.dev_addr, Access.READ).attrs.shareable


def test_second_reservation_in_the_same_vcm_is_not_another_address_space(system, armv7) -> None:
    a = _iommu(system, "vcodec_a_mm1")
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    r1 = system.vcm_reserve(a, SZ_1M, Attr.RW)
    r2 = system.vcm_reserve(a, SZ_1M, Attr.READ)
    system.vcm_back(r1, physmem)
    system.vcm_back(r2, physmem)
    assert not armv7.leaf(a.table.root, r1.dev_addr).shareable
    assert not armv7.leaf(a.table.root, r2.dev_addr).shareable


def test_kernel_ram_is_always_shareable(system, armv7) -> None:
    a = _iommu(system, "vcodec_a_mm1")
    physmem = system.vcm_phys_alloc("ebi", SZ_1M, PhysAttr.CONTIGUOUS)
    res = system.vcm_reserve(a, SZ_1M, Attr.RW)
    system.vcm_back(res, physmem)
    assert armv7.leaf(a.table.root, res.dev_addr).shareable
    system.vcm_unback(res)
    system.vcm_back(res, physmem)
    assert armv7.leaf(a.table.root, res.dev_addr).shareable


def test_vmm_alias_is_a_second_address_space(system) -> None:
    """The kernel mapping of a device buffer (stage 2 of the walk-through) makes the
    buffer shared between the device's space and the CPU's: both become shareable."""
    a = _iommu(system, "vcodec_a_mm1")
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, "cpu", 0))
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    res_dev = system.vcm_reserve(a, SZ_1M, Attr.RW)
    res_cpu = system.vcm_reserve(vmm, SZ_1M, Attr.RW)
    system.vcm_back(res_dev, physmem)
    system.vcm_back(res_cpu, physmem)
    walk = system.cpu.kernel_table.walk(res_cpu.dev_addr & ((1 << 48) - 1))
    assert walk.attrs.shareable and walk.attrs.memtype is MemType.NORMAL_WB_WA
    assert a.table.walk(res_dev.dev_addr).attrs.shareable


def test_speculative_prefetch_corrupts_an_uncached_alias_when_the_check_is_off(system) -> None:
    """King's scenario: kernel RAM mapped uncached for a device while the linear map
    keeps it cacheable.  The driver trusts the uncached mapping and does no cache
    maintenance; the CPU speculatively loads the buffer through the linear map; the
    device writes the buffer; the kernel reads stale bytes."""
    dev = system.device("vcodec_a_mm1")
    vcm = _iommu(system, "vcodec_a_mm1")
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    ((pa, _),) = physmem.chunks
    system.memory.write(pa, b"old contents" * 8)
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW | Attr.NONCACHED)

    with pytest.raises(AttributeConflictError):
        system.vcm_back(res, physmem)

    system.graph.check_attributes = False
    system.vcm_back(res, physmem)
    # Speculation may fill anything the CPU maps cacheable, and the linear map does map
    # this page cacheable: here it does so.
    assert any(AddressRange(pa, SZ_4K) in r for r in system.cpu.cacheable_ranges())
    assert system.cpu.cache.fill_range(pa, SZ_4K) > 0
    dev.write(res.dev_addr, b"new frame!!!" * 8)
    assert system.memory.read(pa, 12) == b"new frame!!!"  # DRAM has the device's data
    kernel_va = system.cpu.phys_to_virt(pa)
    assert system.cpu.read(kernel_va, 12) == b"old contents"  # the CPU does not


def test_same_scenario_with_a_cacheable_mapping_and_sync_is_correct(system) -> None:
    """With agreeing attributes the rule lets the mapping through, and the sync call
    (which the uncached alias tempted the driver to skip) keeps the CPU's view right."""
    dev = system.device("vcodec_a_mm1")
    vcm = _iommu(system, "vcodec_a_mm1")
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    ((pa, _),) = physmem.chunks
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    system.vcm_back(res, physmem)
    system.cpu.cache.fill_range(pa, SZ_4K)
    dev.write(res.dev_addr, b"new frame!!!")
    assert system.vcm_sync_for_cpu(res, vcmm.DmaDirection.FROM_DEVICE)
    assert system.cpu.read(system.cpu.phys_to_virt(pa), 12) == b"new frame!!!"


def test_with_agreeing_aliases_speculation_never_reaches_the_uncached_buffer() -> None:
    """The hazard is absent when the rule holds: a non-coherent buffer from a carve-out
    outside the linear map, mapped uncached by the CPU (VMM VCM) and the device alike.
    No cacheable mapping reaches it, so neither random nor forced speculation can load
    a line of it, and the uncached alias reads what the device wrote."""
    spec = load_default()
    system = vcmm.System(replace(spec, cpu=replace(spec.cpu, prefetch_seed=2010)))
    dev = system.device("vcodec_a_mm1")
    physmem = system.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE)
    ((pa, _),) = physmem.chunks
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, system.cpu, 0))
    res_cpu = system.vcm_reserve(vmm, SZ_4K, Attr.RW | Attr.NONCACHED)
    res_dev = system.vcm_reserve(_iommu(system, "vcodec_a_mm1"), SZ_4K, Attr.RW | Attr.NONCACHED)
    system.vcm_back(res_cpu, physmem)  # accepted: every alias agrees
    system.vcm_back(res_dev, physmem)
    system.cpu.write(res_cpu.dev_addr, b"old contents" * 8)
    prefetcher = system.cpu.prefetcher
    assert prefetcher is not None
    with pytest.raises(NotMappedError, match="not mapped cacheable"):
        prefetcher.prefetch_range(AddressRange(pa, 64))
    for _ in range(200):
        prefetcher.tick()
    assert not any(line in AddressRange(pa, SZ_4K) for line, _ in system.cpu.cache.lines())
    dev.write(res_dev.dev_addr, b"new frame!!!" * 8)
    assert system.cpu.read(res_cpu.dev_addr, 96) == b"new frame!!!" * 8
    assert system.cpu.cache.counters.uncached_hits == 0
