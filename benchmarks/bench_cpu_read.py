"""The CPU read path with and without the cache lookup of Normal non-cacheable reads.

A Normal non-cacheable read searches the data cache first (``DataCache.uncached_lookup``,
the ARMv6/v7 behaviour behind Russell King's hazard, seed 000 L2075-2094); switched off,
it reads memory directly, as every uncached read did before the lookup existed.  This
script times ``Cpu.read`` through the MMU, TLB and cache for small and large reads of an
uncached alias with the lookup on and off, side by side in one run, and a cacheable read
of the same bytes for scale.  With consistent attributes no line of the uncached buffer
is ever cached, so the "on, nothing cached" row is the cost every correct program pays;
the "on, line cached" row is the mismatched-alias hit itself.

Run: ``python benchmarks/bench_cpu_read.py [--calls 20000] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import KERNEL_NC, VMALLOC_AREA, Cpu
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4M, SZ_64M

RAM = 0x8000_0000
BUF = RAM + SZ_4M
NC_VA = VMALLOC_AREA.start


def build() -> Cpu:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_64M))])
    cpu = Cpu(
        memory,
        TableMemory(memory, AddressRange(RAM, SZ_4M)),
        cache=CacheConfig(),
        tlb=TLBConfig(32, 4),
    )
    cpu.map_kernel(NC_VA, BUF, SZ_1M, KERNEL_NC)
    return cpu


def once(fn: Callable[[], object], calls: int) -> float:
    """Time per call of ``calls`` calls, in microseconds."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls * 1e6


def row(cpu: Cpu, length: int, calls: int, repeat: int) -> tuple[float, ...]:
    """Best times of the four variants, measured in interleaved rounds so that a change
    in the machine's load hits all of them alike."""
    linear = cpu.phys_to_virt(BUF)

    def uncached(lookup: bool, cached: bool) -> float:
        cpu.cache.uncached_lookup = lookup
        cpu.cache.invalidate_all()
        if cached:
            cpu.read(linear, 64)  # the mismatched cacheable alias brings line 0 in
        return once(lambda: cpu.read(NC_VA, length), calls)

    def cacheable() -> float:
        cpu.cache.invalidate_all()
        cpu.read(linear, length)
        return once(lambda: cpu.read(linear, length), calls)

    rounds = [
        (uncached(False, False), uncached(True, False), uncached(True, True), cacheable())
        for _ in range(repeat)
    ]
    return tuple(min(column) for column in zip(*rounds, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    cpu = build()
    print(f"Cpu.read of an uncached alias, best of {args.repeat}, microseconds per call")
    print(
        f"{'bytes':>8}  {'lookup off':>10}  {'on, none cached':>15}  {'on, line cached':>15}"
        f"  {'cacheable':>9}  {'on/off':>6}"
    )
    for length, calls in ((64, args.calls), (SZ_1M, max(1, args.calls // 400))):
        off, on, hit, wb = row(cpu, length, calls, args.repeat)
        print(f"{length:>8}  {off:>10.2f}  {on:>15.2f}  {hit:>15.2f}  {wb:>9.2f}  {on / off:>6.2f}")


if __name__ == "__main__":
    main()
