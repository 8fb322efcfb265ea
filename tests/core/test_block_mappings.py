"""Why the VCMM allocates in 1M/64K blocks (000 L283-292): fewer, larger IOTLB entries.

A device sweeping a buffer linearly misses in the TLB once per page it enters (the
entry just filled stays most recently used until the sweep leaves the page), so a
single pass over N bytes mapped with pages of S bytes costs exactly ceil(N / S)
misses, whatever the TLB size: 12 MiB is 12 misses with 1 MiB sections and
12 MiB / 4 KiB = 3072 misses with small pages.
"""

from __future__ import annotations

import numpy as np
import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K, Access
from vcmm.core import Attr, PhysAttr

SWEEP = 12 * SZ_1M


def _device_vcm(system: vcmm.System, name: str = "vcodec_a_mm1"):
    dev = system.device(name)
    vcm = system.vcm_create(SZ_16M, 256 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    return dev, vcm


def _sweep_misses(dev, addr: int) -> int:
    before = dev.ctx.stats().tlb
    vas = np.arange(addr, addr + SWEEP, 64, dtype=np.uint64)
    dev.access_batch(vas, Access.READ, burst=64)
    after = dev.ctx.stats().tlb
    assert after.walks - before.walks == after.misses - before.misses
    return after.misses - before.misses


def test_twelve_mib_from_blocks_is_twelve_sections_and_twelve_misses(system, armv7) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SWEEP, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SWEEP, PhysAttr.NONE)
    # Largest block first without splitting: 12 MiB is twelve 1 MiB blocks (a 16 MiB
    # block would be split, which the seed's allocator never does).
    assert [size for _, size in physmem.chunks] == [SZ_1M] * 12
    system.vcm_back(res, physmem)

    root = vcm.table.root
    for i, (pa, _) in enumerate(physmem.chunks):
        va = res.dev_addr + i * SZ_1M
        desc = armv7.l1(root, va)
        assert desc & 0b11 == 0b10 and not desc & (1 << 18), f"{va:#x}: {desc:#010x} no section"
        assert desc & 0xFFF0_0000 == pa
        # TEX=001 C=1 B=1: normal write-back write-allocate (the default cache policy)
        assert (desc >> 12) & 7 == 0b001 and desc & 0b1100 == 0b1100
    assert armv7.l1(root, res.dev_addr + SWEEP) == 0  # nothing mapped past the buffer

    assert _sweep_misses(dev, res.dev_addr) == 12  # ceil(12 MiB / 1 MiB)


def test_four_kib_blocks_cost_one_miss_per_page(system, armv7) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SWEEP, Attr.RW)
    # "blocks" holds only 4 MiB of 4 KiB blocks, so the priority list falls back to the
    # contiguous carve-out; the block size still caps the page size of the mapping.
    physmem = system.vcm_phys_alloc(None, SWEEP, PhysAttr.blocks(SZ_4K))
    assert physmem.target == "contig"
    system.vcm_back(res, physmem)
    root = vcm.table.root
    for offset in (0, SZ_4K, SZ_1M + 5 * SZ_4K, SWEEP - SZ_4K):
        leaf = armv7.leaf(root, res.dev_addr + offset)
        assert leaf.kind == "small" and leaf.pa == physmem.chunks[0][0] + offset

    assert _sweep_misses(dev, res.dev_addr) == SWEEP // SZ_4K == 3072


def test_buddy_pages_as_4k_blocks_also_cost_3072(system) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SWEEP, Attr.RW)
    physmem = system.vcm_phys_alloc("ebi", SWEEP, PhysAttr.blocks(SZ_4K))
    assert len(physmem.chunks) == 3072
    system.vcm_back(res, physmem)
    assert _sweep_misses(dev, res.dev_addr) == 3072


def test_mixed_blocks_get_their_own_page_sizes(system, armv7) -> None:
    """16M + 1M + 64K + 4K from the pools: one supersection, one section, one large page,
    one small page, each at the physical address of its block."""
    dev, vcm = _device_vcm(system)
    length = SZ_16M + SZ_1M + SZ_64K + SZ_4K
    res = system.vcm_reserve(vcm, length, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", length, PhysAttr.NONE)
    assert [s for _, s in physmem.chunks] == [SZ_16M, SZ_1M, SZ_64K, SZ_4K]
    system.vcm_back(res, physmem)
    assert res.dev_addr % SZ_16M == 0  # reserved at the alignment of its largest page
    offset = 0
    for (pa, size), kind in zip(
        physmem.chunks, ["supersection", "section", "large", "small"], strict=True
    ):
        leaf = armv7.leaf(vcm.table.root, res.dev_addr + offset)
        assert (leaf.kind, leaf.size, leaf.pa) == (kind, size, pa)
        offset += size
    # The device reads through all four and gets what is in memory.
    data = np.arange(length, dtype=np.uint32).tobytes()[:length]
    dev.write(res.dev_addr, data)
    assert b"".join(system.memory.read(pa, size) for pa, size in physmem.chunks) == data


def test_block_size_cap_applies_to_the_kernel_mapping_too(system) -> None:
    """The VMM VCM maps into the CPU's 4K/2M/1G tables: a 2 MiB-aligned contiguous
    chunk uses one 2 MiB block unless the allocation asked for 4 KiB blocks."""
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, system.cpu, 0))
    for attr, size in ((PhysAttr.align(2 * SZ_1M), 2 * SZ_1M), (PhysAttr.blocks(SZ_4K), SZ_4K)):
        physmem = system.vcm_phys_alloc("contig", 2 * SZ_1M, attr | PhysAttr.align(2 * SZ_1M))
        res = system.vcm_reserve(vmm, 2 * SZ_1M, Attr.RW)
        system.vcm_back(res, physmem)
        walk = system.cpu.kernel_table.walk(res.dev_addr & ((1 << 48) - 1))
        assert walk.page_size == size and walk.pa == physmem.chunks[0][0]


def test_backing_a_live_vcm_goes_through_the_update_bracket(system) -> None:
    """Every table write of a live VCM happens between smmu_update_start and
    smmu_update_done (000 L486-491) on every context running it."""
    a, b = system.device("vcodec_a_mm1"), system.device("mdp")
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    for dev in (a, b):
        system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    seen: list[tuple[str, bool, bool]] = []
    table = vcm.table
    for op in ("map", "map_many", "unmap", "set_attrs"):
        real = getattr(table, op)

        def spy(*args, _real=real, _op=op, **kwargs):
            seen.append((_op, a.ctx.in_update, b.ctx.in_update))
            return _real(*args, **kwargs)

        setattr(table, op, spy)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    other = system.vcm_create(512 * SZ_1M, SZ_16M)  # a second space: S bit rewritten
    system.vcm_back(system.vcm_reserve(other, SZ_1M, Attr.RW), physmem)
    system.vcm_unback(res)
    # the backing's runs go to the table in one call (issue 12): one run (a 1 MiB
    # section) takes the plain map, several the batched map_many
    assert [op for op, _, _ in seen] == ["map", "set_attrs", "unmap"]
    assert all(in_a and in_b for _, in_a, in_b in seen)
    assert not a.ctx.in_update and not b.ctx.in_update


def test_secure_and_non_secure_pages_cannot_share_a_second_level_table(system) -> None:
    """ARMv7 keeps NS in the first-level page-table descriptor: 4 KiB pages of one MiB
    must agree on it.  The table refuses the page before writing it, and the error
    says which call failed."""
    vcm = system.vcm_create(SZ_16M, SZ_16M)
    normal = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    secure = system.vcm_reserve(vcm, SZ_4K, Attr.RW | Attr.SECURE)
    system.vcm_back(normal, system.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE))
    physmem = system.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE)
    before = system.snapshot()
    with pytest.raises(vcmm.errors.AttributeConflictError) as err:
        system.vcm_back(secure, physmem)
    assert f"vcm_back: backing {secure.name} with {physmem.name}" in str(err.value)
    assert "NS" in str(err.value)
    assert system.snapshot() == before


@pytest.mark.parametrize(
    ("attr", "tex_c_b", "ap", "xn"),
    [
        # ARM ARM B3.8.2 (TEX remap off) and B3.7.1 (AP[2:0] with SCTLR.AFE=0).
        (Attr.RW, (0b001, 1, 1), 0b001, 1),  # Normal WB-WA, privileged RW, never execute
        (Attr.RW | Attr.WT, (0b000, 1, 0), 0b001, 1),  # Normal write-through
        (Attr.RW | Attr.WB_NWA, (0b000, 1, 1), 0b001, 1),  # Normal WB, no write-allocate
        (Attr.RW | Attr.NONCACHED, (0b001, 0, 0), 0b001, 1),  # Normal non-cacheable
        (Attr.READ, (0b001, 1, 1), 0b101, 1),  # privileged read-only
        (Attr.READ | Attr.USER, (0b001, 1, 1), 0b111, 1),  # read-only for user too
        (Attr.RW | Attr.USER | Attr.EXEC, (0b001, 1, 1), 0b011, 0),  # RW for all, executable
    ],
)
def test_reservation_attributes_become_section_bits(system, armv7, attr, tex_c_b, ap, xn) -> None:
    vcm = system.vcm_create(SZ_16M, SZ_16M)
    res = system.vcm_reserve(vcm, SZ_1M, attr)
    system.vcm_back(res, system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE))
    leaf = armv7.leaf(vcm.table.root, res.dev_addr)
    assert leaf.kind == "section"
    assert (leaf.tex, leaf.c, leaf.b) == tex_c_b
    # AP[2] is bit 15, AP[1:0] bits 11:10, XN bit 4 of a section descriptor.
    assert ((leaf.desc >> 15 & 1) << 2 | (leaf.desc >> 10 & 3)) == ap
    assert leaf.desc >> 4 & 1 == xn
    assert leaf.desc >> 19 & 1 == 1  # NS: non-secure unless Attr.SECURE
