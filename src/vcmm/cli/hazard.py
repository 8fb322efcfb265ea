"""Russell King's hazard, reproduced: an uncached alias reading a speculatively loaded line.

King to the VCMM's author (seed 000 L2075-2094): ARMv6/v7 outlaw mapping a physical
page twice with different attributes, because "the cache can be searched even for a
mapping specified as 'normal, uncached' and you can get cache hits because the data has
been speculatively loaded through a separate cached mapping of the same physical page".
The VCMM's mapping graph refuses such an alias; ``vcmm demo`` shows both sides:

1. a buffer of kernel RAM (memory target ``ebi``, inside the cacheable linear map) holds
   the kernel's old contents, cleaned and invalidated as a DMA allocator would, so no
   line of it is cached;
2. a driver maps it into a VMM VCM with ``Attr.NONCACHED``, for a non-coherent device
   to fill, trusting that an uncached view needs no cache maintenance.  With the check
   on (the default), this is where vcmm refuses, naming both mappings;
3. with ``system.graph.check_attributes = False`` it goes on: the CPU's seeded
   speculative prefetcher pulls the buffer's first line in through the linear map
   (forced with ``prefetch_range``, so the demo does not depend on a lucky draw);
4. the device writes the buffer; memory holds its bytes;
5. the uncached alias reads the line the prefetch left: the old bytes.

Everything is measured on the simulated SoC; the helper returns what it saw so that the
demo and the tests judge the same run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vcmm.core import Attr, PhysAttr
from vcmm.errors import AttributeConflictError
from vcmm.platform import load_default
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M
from vcmm.system import System

#: The prefetcher's seed in the demo: speculation is on, and reproducible.
HAZARD_SEED = 2010
#: The non-coherent device that writes the buffer.
HAZARD_DEVICE = "vcodec_a_mm1"
OLD = b"old frame, kernel wrote it; " * 147  # 4116 bytes, the page is cut from it
NEW = b"NEW FRAME FROM vcodec_a_mm1 " * 147


@dataclass
class AliasHazard:
    """What one run of the steps built and saw.

    ``refused`` is the attribute-conflict error when the check stopped the uncached
    alias (then nothing was read).  Otherwise ``dram`` is what memory holds after the
    device's write and ``uncached`` what the CPU read through the uncached alias, both
    over the whole buffer; ``stale`` lists the line addresses where they differ.
    """

    system: System
    buffer: AddressRange
    uncached_va: int | None
    prefetched: AddressRange
    refused: AttributeConflictError | None = None
    dram: bytes = b""
    uncached: bytes = b""
    stale: tuple[int, ...] = ()


def hazard_system() -> System:
    """The default platform with the CPU's speculative prefetcher switched on."""
    spec = load_default()
    return System(replace(spec, cpu=replace(spec.cpu, prefetch_seed=HAZARD_SEED)))


def alias_hazard(*, check_attributes: bool) -> AliasHazard:
    """King's steps on a fresh system, with the attribute check on or off."""
    system = hazard_system()
    system.graph.check_attributes = check_attributes
    cpu, device = system.cpu, system.device(HAZARD_DEVICE)
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    ((pa, size),) = physmem.chunks
    buffer = AddressRange(pa, size)
    line = AddressRange(pa, cpu.cache.config.line)
    linear = cpu.phys_to_virt(pa)
    cpu.write(linear, OLD[:size])  # the kernel used the page through its linear map
    cpu.flush_range(linear, size)  # clean + invalidate: memory is right, nothing cached
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, cpu, 0))
    res_nc = system.vcm_reserve(vmm, size, Attr.RW | Attr.NONCACHED)
    try:
        system.vcm_back(res_nc, physmem)
    except AttributeConflictError as exc:
        return AliasHazard(system, buffer, None, line, refused=exc)
    iommu = system.vcm_create(SZ_16M, 64 * SZ_1M)  # the device's view; its memory type
    system.vcm_activate(system.vcm_assoc(iommu, device, 0))  # matters not: it does not snoop
    res_dev = system.vcm_reserve(iommu, size, Attr.RW)
    system.vcm_back(res_dev, physmem)
    assert cpu.prefetcher is not None
    cpu.prefetcher.prefetch_range(line)  # speculation through the linear map
    device.write(res_dev.dev_addr, NEW[:size])
    dram = system.memory.read(pa, size)
    uncached = cpu.read(res_nc.dev_addr, size)
    step = line.size
    stale = tuple(
        pa + off
        for off in range(0, size, step)
        if dram[off : off + step] != uncached[off : off + step]
    )
    return AliasHazard(system, buffer, res_nc.dev_addr, line, None, dram, uncached, stale)
