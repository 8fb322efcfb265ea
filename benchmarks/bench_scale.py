"""Scale: work that must grow linearly (or not at all) with its size, timed.

The test suite counts this work instead of timing it (a test that asserts a duration
fails on a busy machine); here the same operations are timed at two sizes, side by
side in one run, and the table prints the time per unit at each size and their ratio.
A ratio near 1 is linear work; a cost that grows with the size shows as a ratio near
the size factor.

1. Mapping graph: a contiguous buffer in N scattered 4 KiB pieces backs a kernel VMM
   reservation and a device reservation (every kernel edge flips shareable), then
   both are unbacked (tests/core/test_graph_scale.py).  N = 1024 and 16384.
2. Page table: map and unmap a range with 4 KiB pages forced, ARMv7 short descriptors
   (tests/hw/test_pgtable_ops.py).  4 MiB and 64 MiB.
3. Data cache: one write-back write of a long buffer (the middle handled in bulk), and
   cleaning a range with ten resident dirty lines (tests/hw/test_cache.py).  1 and
   8 MiB; 8 and 64 MiB.

Run: ``python benchmarks/bench_scale.py``
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

import vcmm
from vcmm.attrs import MemType, PageAttrs
from vcmm.core import Attr, PhysAttr
from vcmm.hw.cache import DataCache
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, PageTable
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_64M

REPEATS = 3


def best_of(prepare: Callable[[], Callable[[], object]]) -> float:
    """Best time of REPEATS runs of the timed callable ``prepare()`` returns (the
    preparation itself is not timed)."""
    best = float("inf")
    for _ in range(REPEATS):
        work = prepare()
        started = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - started)
    return best


def graph_case(pieces: int) -> Callable[[], object]:
    system = vcmm.System.default()
    carve = system.vcm_phys_alloc("contig", pieces * SZ_4K, PhysAttr.CONTIGUOUS)
    order = [i ^ 1 for i in range(pieces)]
    view = system.vcm_phys_view(carve, windows=[(i * SZ_4K, SZ_4K) for i in order])
    kernel = system.vcm_reserve(
        system.vcm_create_from_prebuilt(0), pieces * SZ_4K, Attr.RW | Attr.NONCACHED
    )
    device = system.vcm_create(0x4000_0000, 128 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(device, "vcodec_a_mm1", 0))
    dres = system.vcm_reserve(device, pieces * SZ_4K, Attr.RW | Attr.NONCACHED)

    def work() -> None:
        system.vcm_back(kernel, view)
        system.vcm_back(dres, view)
        system.vcm_unback(dres)
        system.vcm_unback(kernel)

    return work


def table_case(size: int) -> Callable[[], object]:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0x8000_0000, 0x1000_0000))])
    table = PageTable(ARMV7S, memory, TableMemory(memory, AddressRange(0x8000_0000, SZ_4M)))

    def work() -> None:
        table.map(0x1000_0000, 0x9000_0000, size, PageAttrs(), page_size=SZ_4K)
        table.unmap(0x1000_0000, size)

    return work


def cache_write_case(size: int) -> Callable[[], object]:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0x8000_0000, 16 * SZ_1M))])
    cache = DataCache(memory)
    data = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    return lambda: cache.write(0x8000_0000, data, MemType.NORMAL_WB_WA)


def cache_clean_case(size: int) -> Callable[[], object]:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0, 64 * SZ_1M))])
    cache = DataCache(memory)
    for i in range(10):
        cache.write(i * SZ_1M // 2 + i * 64, bytes([i]) * 64, MemType.NORMAL_WB_WA)
    return lambda: cache.clean(0, size)


CASES: list[tuple[str, str, Callable[[int], Callable[[], object]], int, int, int]] = [
    # name, unit, case, small, large, units per size step
    ("graph share+unshare", "piece", graph_case, 1024, 16384, 1),
    ("forced 4K map+unmap", "4K page", table_case, SZ_4M, SZ_64M, SZ_4K),
    ("cache write", "64B line", cache_write_case, SZ_1M, 8 * SZ_1M, 64),
    ("cache clean (10 dirty lines)", "64B line", cache_clean_case, 8 * SZ_1M, 64 * SZ_1M, 64),
]


def main() -> None:
    print(f"best of {REPEATS} runs per size; time per unit at the small and large size")
    header = f"{'operation':<30} {'unit':<9} {'small':>9} {'large':>9} {'us/unit small':>14} {'us/unit large':>14} {'ratio':>7}"
    print(header)
    print("-" * len(header))
    for name, unit, case, small, large, step in CASES:
        t_small = best_of(lambda c=case, n=small: c(n))
        t_large = best_of(lambda c=case, n=large: c(n))
        per_small = t_small / (small // step) * 1e6
        per_large = t_large / (large // step) * 1e6
        print(
            f"{name:<30} {unit:<9} {small // step:>9,} {large // step:>9,} "
            f"{per_small:>14.3f} {per_large:>14.3f} {per_large / per_small:>7.2f}"
        )
    print("ratio: time per unit at the large size over the small; ~1 = linear, < 1 = bulk")


if __name__ == "__main__":
    main()
