"""The seed document's walk-throughs (000 L321-427), written as close to it as Python allows.

Each test follows the document's call sequence on the default platform and then checks
what the document promises with independent evidence: bytes read back by other bus
masters, and page-table descriptors decoded from physical memory with the ARMv7
short-descriptor layout written out below.
"""

from __future__ import annotations

import vcmm
from vcmm import SZ_1M, SZ_2M, SZ_4K, SZ_16M
from vcmm.core import Attr, PhysAttr, VcmKind

# ARMv7 short-descriptor, first level (ARM ARM B3.5.1):
#   bits[1:0] = 0b10 section (bit18 = 0) / supersection (bit18 = 1); 0b01 page table
#   section base address = bits[31:20]
# second level: bits[1] = 1 small page (bits[31:12] base), bits[1:0] = 0b01 large page
L1_TYPE_MASK = 0b11
L1_SECTION = 0b10
L1_PAGE_TABLE = 0b01
SUPERSECTION_BIT = 1 << 18


def decode_l1(system: vcmm.System, ttbr: int, va: int) -> int:
    return system.memory.read_u32(ttbr + (va >> 20) * 4)


def test_stage_1_and_stage_2_kernel_reads_what_the_device_wrote() -> None:
    system = vcmm.System.default()
    dev = system.device("vcodec_a_mm1")

    # Stage 1: map and allocate memory for a device.
    vcm = system.vcm_create(SZ_4K, SZ_16M)
    avcm = system.vcm_assoc(vcm, dev, 0)
    system.vcm_activate(avcm)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.READ | Attr.WRITE)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.vcm_back(res, physmem)

    frame = bytes(range(256)) * (SZ_1M // 256)
    dev.write(res.dev_addr, frame)

    # Stage 2: map the device's memory into the VMM's VCM region.
    vcm_vmm = system.vcm_create_from_prebuilt(0)
    avcm_vmm = system.vcm_assoc(vcm_vmm, system.cpu, 0)
    system.vcm_activate(avcm_vmm)
    res_vmm = system.vcm_reserve(vcm_vmm, SZ_1M, Attr.READ | Attr.WRITE)
    system.vcm_back(res_vmm, physmem)

    assert vcm_vmm.kind is VcmKind.VMM
    assert system.cpu.read(res_vmm.dev_addr, SZ_1M) == frame
    # ... and the bytes really sit at the physical address of the allocation.
    (pa, size) = physmem.chunks[0]
    assert size == SZ_1M
    assert system.memory.read(pa, SZ_1M) == frame


def test_triple_mapping_one_allocation_three_bus_masters() -> None:
    system = vcmm.System.default()
    dev_iommu = system.device("vcodec_a_mm1")
    dev_onetoone = system.device("dsp")
    dev_cpu = system.cpu

    physmem = system.vcm_phys_alloc("contig", SZ_2M + SZ_4K, PhysAttr.CONTIGUOUS)
    ((phys_addr, phys_size),) = physmem.chunks
    assert phys_size == SZ_2M + SZ_4K

    # The document writes vcm_create(SZ_1K, SZ_16M); SZ_1K breaks its own 4K rule.
    vcm_iommu = system.vcm_create(SZ_4K, SZ_16M)
    vcm_onetoone = system.vcm_create(phys_addr, phys_size)
    vcm_vmm = system.vcm_create_from_prebuilt(0)
    assert vcm_onetoone.kind is VcmKind.ONE_TO_ONE and vcm_iommu.kind is VcmKind.IOMMU

    avcm_iommu = system.vcm_assoc(vcm_iommu, dev_iommu, 0)
    avcm_onetoone = system.vcm_assoc(vcm_onetoone, dev_onetoone, 0)
    avcm_vmm = system.vcm_assoc(vcm_vmm, dev_cpu, 0)
    system.vcm_activate(avcm_iommu)
    system.vcm_activate(avcm_onetoone)
    system.vcm_activate(avcm_vmm)

    attr = Attr.READ | Attr.WRITE
    res_iommu = system.vcm_reserve(vcm_iommu, SZ_2M + SZ_4K, attr)
    res_onetoone = system.vcm_reserve(vcm_onetoone, SZ_2M + SZ_4K, attr)
    res_vmm = system.vcm_reserve(vcm_vmm, SZ_2M + SZ_4K, attr)
    system.vcm_back(res_iommu, physmem)
    system.vcm_back(res_onetoone, physmem)
    system.vcm_back(res_vmm, physmem)

    # Bytes written by the IOMMU device are read back by the one-to-one device and the CPU.
    payload = (b"VCMM" * ((SZ_2M + SZ_4K) // 4))[: SZ_2M + SZ_4K]
    dev_iommu.write(res_iommu.dev_addr, payload)
    assert dev_onetoone.read(res_onetoone.dev_addr, len(payload)) == payload
    assert dev_cpu.read(res_vmm.dev_addr, len(payload)) == payload

    # The one-to-one device sees RAM through its dma-ranges window (000 L1352-1356):
    # its dev_addr is the physical address minus the 0x80000000 -> 0x40000000 offset.
    assert res_onetoone.dev_addr == phys_addr - 0x8000_0000 + 0x4000_0000

    # The IOMMU table holds two 1 MiB sections and one 4 KiB page.
    ttbr = vcm_iommu.table.root
    va = res_iommu.dev_addr
    assert va % SZ_1M == 0
    for i in range(2):
        desc = decode_l1(system, ttbr, va + i * SZ_1M)
        assert desc & L1_TYPE_MASK == L1_SECTION and not desc & SUPERSECTION_BIT
        assert desc & 0xFFF0_0000 == phys_addr + i * SZ_1M
    pt = decode_l1(system, ttbr, va + SZ_2M)
    assert pt & L1_TYPE_MASK == L1_PAGE_TABLE
    l2_base = pt & 0xFFFF_FC00
    small = system.memory.read_u32(l2_base + ((va + SZ_2M) >> 12 & 0xFF) * 4)
    assert small & 0b10 == 0b10  # small page
    assert small & 0xFFFF_F000 == phys_addr + SZ_2M
    # Nothing else is mapped in that second-level table.
    l2 = [system.memory.read_u32(l2_base + i * 4) for i in range(256)]
    assert sum(1 for d in l2 if d & 0b11) == 1
