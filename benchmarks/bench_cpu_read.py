"""The CPU read path with and without the cache lookup of Normal non-cacheable reads.

A Normal non-cacheable read searches the data cache first (``DataCache.uncached_lookup``,
the ARMv6/v7 behaviour behind Russell King's hazard, seed 000 L2075-2094); switched off,
it reads memory directly, as every uncached read did before the lookup existed.  This
script times ``Cpu.read`` through the MMU, TLB and cache for small and large reads of an
uncached alias with the lookup on and off, side by side in one run, and a cacheable read
of the same bytes for scale.  With consistent attributes no line of the uncached buffer
is ever cached, so the "on, nothing cached" row is the cost every correct program pays;
the "on, line cached" row is the mismatched-alias hit itself.

Run: ``python benchmarks/bench_cpu_read.py [--calls 20000] [--repeat 3]``
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


def best(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Best time per call over ``repeat`` runs of ``calls`` calls, in microseconds."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t0) / calls)
    return min(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cpu = build()
    linear = cpu.phys_to_virt(BUF)
    big_calls = max(1, args.calls // 400)

    def timed(lookup: bool, cached: bool, length: int, calls: int) -> float:
        cpu.cache.uncached_lookup = lookup
        cpu.cache.invalidate_all()
        if cached:
            cpu.read(linear, 64)  # the mismatched cacheable alias brings line 0 in
        return best(lambda: cpu.read(NC_VA, length), calls, args.repeat)

    rows = []
    for length, calls in ((64, args.calls), (SZ_1M, big_calls)):
        off = timed(False, False, length, calls)
        on = timed(True, False, length, calls)
        hit = timed(True, True, length, calls)
        cpu.cache.invalidate_all()
        cpu.read(linear, length)
        wb = best(lambda n=length: cpu.read(linear, n), calls, args.repeat)
        rows.append((length, off, on, hit, wb))
    print(f"Cpu.read of an uncached alias, best of {args.repeat}, microseconds per call")
    print(
        f"{'bytes':>8}  {'lookup off':>10}  {'on, none cached':>15}  {'on, line cached':>15}"
        f"  {'cacheable':>9}  {'on/off':>6}"
    )
    for length, off, on, hit, wb in rows:
        print(f"{length:>8}  {off:>10.2f}  {on:>15.2f}  {hit:>15.2f}  {wb:>9.2f}  {on / off:>6.2f}")


if __name__ == "__main__":
    main()
