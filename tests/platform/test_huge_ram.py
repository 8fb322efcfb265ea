"""Platforms with tens of GiB to 1 TiB of RAM boot and cost only what they touch.

Memory is a sparse chunked store and a system target's buddy allocator keeps its top
order as runs, so nothing at boot is sized by the RAM: the checks below count the
store's chunks, the touched pages and the buddy's free-list entries, never time.
"""

from __future__ import annotations

import resource

import pytest

import vcmm
from vcmm import SZ_2M, SZ_4K, Attr, PhysAttr
from vcmm.hw.memory import CHUNK_SIZE
from vcmm.platform import loads_platform

SZ_1G = 1 << 30
RAM_BASE = 0x80_0000_0000
TABLES = "8M"


def _platform(ram: str) -> str:
    """A VMSAv8 SoC: one RAM bank of ``ram``, a page-table window at its start and one
    system target over the rest (its default linear map covers it all)."""
    return f"""
name = "huge-{ram}"
[[memory]]
name = "dram"
base = {RAM_BASE:#x}
size = "{ram}"

[page_tables]
base = {RAM_BASE:#x}
size = "{TABLES}"

[[targets]]
name = "sysram"
kind = "system"
base = {RAM_BASE + SZ_1G:#x}
size = {vcmm.parse_size(ram) - SZ_1G:#x}

[[smmus]]
name = "iommu"
format = "vmsav8"
context_banks = 1
contexts = [{{ name = "gpu", bank = 0 }}]

[[devices]]
name = "gpu"
kind = "smmu"
smmu = "iommu"
context = "gpu"
"""


@pytest.mark.parametrize("ram", ["32G", "64G", "1T"])
def test_a_huge_ram_bank_boots_and_costs_only_the_pages_touched(ram: str) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    system = vcmm.System(loads_platform(_platform(ram), source=f"huge-{ram}"))
    size = vcmm.parse_size(ram)
    top = RAM_BASE + size
    # Booting wrote the kernel's linear-map tables and nothing else.
    assert system.memory.resident_bytes() <= 8 * SZ_4K
    assert system.memory.store_bytes() == CHUNK_SIZE
    buddy = system.target("sysram").buddy
    assert buddy.snapshot().top == ((RAM_BASE + SZ_1G, top),)  # one run, not size/4M
    assert buddy.free_bytes == size - SZ_1G

    # A write near the top of RAM reads back through the CPU's linear map.
    system.memory.write(top - 16, b"top of the bank!")
    assert system.cpu.read(system.cpu.phys_to_virt(top - 16), 16) == b"top of the bank!"

    # The seed's calls: a device writes a buffer, the kernel reads it through the VMM.
    dev = system.device("gpu")
    vcm = system.vcm_create(SZ_4K, SZ_1G)
    avcm = system.vcm_assoc(vcm, dev, 0)
    system.vcm_activate(avcm)
    res = system.vcm_reserve(vcm, SZ_2M, Attr.READ | Attr.WRITE)
    physmem = system.vcm_phys_alloc("sysram", SZ_2M, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    dev.write(res.dev_addr + SZ_2M - 5, b"frame")
    kernel = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(kernel, system.cpu, 0))
    kres = system.vcm_reserve(kernel, SZ_2M, Attr.READ | Attr.WRITE)
    system.vcm_back(kres, physmem)
    assert system.cpu.read(kres.dev_addr + SZ_2M - 5, 5) == b"frame"

    assert system.memory.resident_bytes() <= 32 * SZ_4K
    assert system.memory.store_bytes() <= 4 * CHUNK_SIZE
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 128 * 1024
