"""Batched table writes: ``PageTable.map_many`` against one ``map`` call per piece.

16,384 separate 4 KiB pieces (scattered physical pages, as ``vcm_back`` of a buffer
made of single pages gives) are mapped into a fresh ARMv7 short-descriptor table,
once a call per piece and once in one ``map_many``; the two run alternately, each
figure the fastest of ``--repeat`` rounds, and the tables must come out byte for
byte the same.  (Issue 12's target for ``vcm_back`` of such a buffer is 50 ms.)

Run: ``python benchmarks/bench_table_writes.py [--pieces 16384] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vcmm.attrs import RW_WB
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, PageTable
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
VA = 0x1000_0000


def fresh() -> tuple[PhysicalMemory, PageTable]:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    return memory, PageTable(ARMV7S, memory, TableMemory(memory, AddressRange(RAM, SZ_4M)))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pieces", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    pages = rng.permutation(SZ_256M // SZ_4K - 2048)[: args.pieces] + 2048
    pieces = [(VA + k * SZ_4K, RAM + int(p) * SZ_4K, SZ_4K, RW_WB) for k, p in enumerate(pages)]
    best = {"map per piece": float("inf"), "map_many": float("inf")}
    digests = set()
    for _ in range(args.repeat):
        for name in best:
            memory, table = fresh()
            t0 = time.perf_counter()
            if name == "map_many":
                table.map_many(pieces)
            else:
                for va, pa, size, attrs in pieces:
                    table.map(va, pa, size, attrs)
            best[name] = min(best[name], time.perf_counter() - t0)
            digests.add(memory.digest())
    print(f"{args.pieces} separate 4K pieces into a fresh ARMv7 table, fastest of {args.repeat}")
    for name, seconds in best.items():
        print(f"{name:>14}: {seconds * 1e3:9.1f} ms")
    print(f"map_many speed-up: {best['map per piece'] / best['map_many']:.2f}x")
    print(f"table bytes identical: {'yes' if len(digests) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
