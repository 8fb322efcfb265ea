"""Coherency: what devices and the CPU see when caches hold newer or older data.

The facts under test are the ones the DMA API's sync calls exist for (seed 000,
Russell King L1341-1356 and L2075-2094): a non-coherent device does not see data dirty
in the CPU cache; a CPU with a cacheable mapping keeps reading stale lines after a
device wrote memory; speculative prefetch through a cacheable alias makes that happen
even when the CPU never touched the alias.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from vcmm.attrs import RW_WB
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import KERNEL_NC, PAGE_OFFSET, VMALLOC_AREA, Cpu
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, SZ_4M, SZ_64M

RAM = 0x8000_0000
BUF = RAM + 2 * SZ_4M  # one page shared by the CPU and a device
DEV_VA = 0x0010_0000
LINE = 64


@dataclass
class Soc:
    memory: PhysicalMemory
    cpu: Cpu
    smmu: Smmu
    interconnect: Interconnect

    def device(self, name: str, *, coherent: bool) -> SmmuDevice:
        ctx = self.smmu.context_init(name)
        ctx.bind(self.smmu)
        ctx.activate()
        ctx.update_start()
        ctx.map(BUF, DEV_VA, SZ_4K, RW_WB)
        ctx.update_done()
        return SmmuDevice(name, ctx, self.interconnect, coherent=coherent)


def make_soc(**cpu_kwargs: object) -> Soc:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_64M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    cpu = Cpu(
        memory,
        tables,
        cache=CacheConfig(16 * 1024, 4, LINE),
        tlb=TLBConfig(32, 4),
        **cpu_kwargs,  # type: ignore[arg-type]
    )
    smmu = Smmu("smmu0", memory, tables, context_banks=2, tlb=TLBConfig(16, 4))
    return Soc(memory, cpu, smmu, Interconnect(memory, cpu.cache))


def pattern(tag: int) -> bytes:
    return bytes([tag]) * SZ_4K


@pytest.fixture
def soc() -> Soc:
    return make_soc()


class TestCpuWritesDeviceReads:
    def test_non_coherent_device_reads_stale_memory_until_clean(self, soc: Soc) -> None:
        dev = soc.device("dma", coherent=False)
        soc.memory.write(BUF, pattern(0xAA))
        va = soc.cpu.phys_to_virt(BUF)
        soc.cpu.write(va, pattern(0x55))  # newer data sits dirty in the CPU cache
        assert soc.cpu.cache.is_dirty(BUF)
        assert dev.read(DEV_VA, SZ_4K) == pattern(0xAA)
        soc.cpu.clean_range(va, SZ_4K)
        assert dev.read(DEV_VA, SZ_4K) == pattern(0x55)

    def test_coherent_device_snoops_the_dirty_lines(self, soc: Soc) -> None:
        dev = soc.device("gpu", coherent=True)
        soc.memory.write(BUF, pattern(0xAA))
        va = soc.cpu.phys_to_virt(BUF)
        soc.cpu.write(va + 128, b"fresh")
        got = dev.read(DEV_VA, SZ_4K)
        assert got[128:133] == b"fresh" and got[:128] == pattern(0xAA)[:128]
        assert soc.memory.read(BUF + 128, 5) != b"fresh"  # still only in the cache

    def test_physical_device_is_no_different(self, soc: Soc) -> None:
        dev = PhysicalDevice("mdp", soc.interconnect, bus_offset=0x4000_0000)
        va = soc.cpu.phys_to_virt(BUF)
        soc.cpu.write(va, b"frame")
        assert dev.read(BUF - 0x4000_0000, 5) == bytes(5)
        soc.cpu.clean_range(va, 5)
        assert dev.read(BUF - 0x4000_0000, 5) == b"frame"


class TestDeviceWritesCpuReads:
    def test_cpu_sees_stale_lines_until_invalidated(self, soc: Soc) -> None:
        dev = soc.device("dma", coherent=False)
        va = soc.cpu.phys_to_virt(BUF)
        assert soc.cpu.read(va, SZ_4K) == pattern(0)  # lines now cached, clean
        dev.write(DEV_VA, pattern(0x77))
        assert soc.memory.read(BUF, SZ_4K) == pattern(0x77)
        assert soc.cpu.read(va, SZ_4K) == pattern(0)  # stale
        soc.cpu.invalidate_range(va, SZ_4K)
        assert soc.cpu.read(va, SZ_4K) == pattern(0x77)

    def test_coherent_device_write_updates_the_cpu_cache(self, soc: Soc) -> None:
        dev = soc.device("gpu", coherent=True)
        va = soc.cpu.phys_to_virt(BUF)
        soc.cpu.read(va, SZ_4K)
        dev.write(DEV_VA, pattern(0x42))
        assert soc.cpu.read(va, SZ_4K) == pattern(0x42)

    def test_coherent_copy_sees_and_updates_cached_data(self, soc: Soc) -> None:
        dev = soc.device("gpu", coherent=True)
        va = soc.cpu.phys_to_virt(BUF)
        soc.cpu.write(va, b"src!")
        soc.cpu.read(va + 2048, 4)  # destination line cached, clean
        dev.copy(DEV_VA, DEV_VA + 2048, 4)
        assert soc.cpu.read(va + 2048, 4) == b"src!"


class TestSpeculativePrefetch:
    """An uncached alias of linear-mapped RAM, as a naive dma_alloc_coherent makes."""

    def _setup(self, soc: Soc) -> tuple[SmmuDevice, int, int]:
        dev = soc.device("dma", coherent=False)
        nc_alias = VMALLOC_AREA.start
        soc.cpu.map_kernel(nc_alias, BUF, SZ_4K, KERNEL_NC)
        soc.cpu.write(nc_alias, pattern(0x11))  # goes straight to memory
        return dev, nc_alias, soc.cpu.phys_to_virt(BUF)

    def test_forced_prefetch_makes_both_aliases_stale(self) -> None:
        """King's words: "you can get cache hits because the data has been
        speculatively loaded through a separate cached mapping of the same physical
        page".  The uncached alias, trusted to need no maintenance, reads stale."""
        soc = make_soc(prefetch_seed=0)
        dev, nc_alias, linear = self._setup(soc)
        assert soc.cpu.prefetcher is not None
        soc.cpu.prefetcher.prefetch_range(AddressRange(BUF, SZ_4K))  # never touched by code
        dev.write(DEV_VA, pattern(0x22))
        assert soc.memory.read(BUF, SZ_4K) == pattern(0x22)
        assert soc.cpu.read(nc_alias, SZ_4K) == pattern(0x11)  # the uncached alias hit
        assert soc.cpu.read(linear, SZ_4K) == pattern(0x11)
        assert soc.cpu.cache.counters.uncached_hits == SZ_4K // LINE

    def test_a_core_without_the_lookup_stales_only_the_cacheable_alias(self) -> None:
        soc = make_soc(prefetch_seed=0)
        soc.cpu.cache.uncached_lookup = False
        dev, nc_alias, linear = self._setup(soc)
        assert soc.cpu.prefetcher is not None
        soc.cpu.prefetcher.prefetch_range(AddressRange(BUF, SZ_4K))
        dev.write(DEV_VA, pattern(0x22))
        assert soc.cpu.read(nc_alias, SZ_4K) == pattern(0x22)  # bypassed the cache
        assert soc.cpu.read(linear, SZ_4K) == pattern(0x11)  # the cacheable one is stale
        assert soc.cpu.cache.counters.uncached_hits == 0

    def test_a_dirty_line_of_the_linear_map_overwrites_the_device_write(self) -> None:
        """The write side of the hazard: a store through the cacheable alias stays
        dirty in the cache; the device writes memory; the line's eviction (here a
        clean, as any later maintenance or replacement would do) puts the stale bytes
        back over the device's data."""
        soc = make_soc()
        dev, _, linear = self._setup(soc)
        soc.cpu.write(linear + LINE, b"kernel!!")  # one dirty line of the buffer
        dev.write(DEV_VA, pattern(0x22))
        assert soc.memory.read(BUF, SZ_4K) == pattern(0x22)
        soc.cpu.clean_range(linear, SZ_4K)
        after = soc.memory.read(BUF, SZ_4K)
        expected = bytearray(pattern(0x22))
        expected[LINE : 2 * LINE] = pattern(0x11)[:LINE]  # the whole line went back
        expected[LINE : LINE + 8] = b"kernel!!"
        assert after == bytes(expected)

    def test_without_prefetch_the_cacheable_alias_reads_memory(self) -> None:
        soc = make_soc()
        dev, _, linear = self._setup(soc)
        dev.write(DEV_VA, pattern(0x22))
        assert soc.cpu.read(linear, SZ_4K) == pattern(0x22)

    def test_seeded_random_prefetch_is_deterministic(self) -> None:
        """Only uncached accesses run; lines of the buffer still end up cached."""

        def run(seed: int) -> tuple[bytes, list[int]]:
            soc = make_soc(prefetch_seed=seed, linear_map=[(PAGE_OFFSET, BUF, SZ_4K)])
            dev, nc_alias, linear = self._setup(soc)
            for _ in range(10):
                soc.cpu.read(nc_alias, 64)  # each access ticks the prefetcher
            cached = [a for a, _ in soc.cpu.cache.lines()]
            dev.write(DEV_VA, pattern(0x22))
            uncached = soc.cpu.read(nc_alias, SZ_4K)  # hits exactly the prefetched lines
            assert soc.cpu.cache.counters.uncached_hits >= len(cached)
            seen = soc.cpu.read(linear, SZ_4K)
            assert uncached == seen  # the uncached alias is as stale as the cached one
            return seen, cached

        seen, cached = run(seed=1234)
        assert (seen, cached) == run(seed=1234)
        assert cached, "forty speculative fills left no line of the buffer cached"
        lines = np.frombuffer(seen, dtype=np.uint8).reshape(-1, LINE)[:, 0]
        stale = {BUF + i * LINE for i in np.flatnonzero(lines == 0x11).tolist()}
        fresh = set(np.flatnonzero(lines == 0x22).tolist())
        # exactly the prefetched lines are stale; every other line reads the new data
        assert stale == set(cached)
        assert len(stale) + len(fresh) == SZ_4K // LINE

    def test_disabled_prefetcher_fills_nothing(self) -> None:
        soc = make_soc(prefetch_seed=1234, linear_map=[(PAGE_OFFSET, BUF, SZ_4K)])
        assert soc.cpu.prefetcher is not None
        soc.cpu.prefetcher.enabled = False
        dev, nc_alias, linear = self._setup(soc)
        for _ in range(10):
            soc.cpu.read(nc_alias, 64)
        dev.write(DEV_VA, pattern(0x22))
        assert soc.cpu.read(linear, SZ_4K) == pattern(0x22)
