"""Page-table operations per second: map, unmap (the DMA API's hot path), split, set_attrs.

Each row times one pattern on a fresh ARMv7 short-descriptor table (the SMMU format of
the default platform) or a VMSAv8-64 4K table (the CPU's) in simulated memory:

- ``map+unmap 4K``: one small page mapped and unmapped at 1024 different addresses,
  what ``dma_map_page``/``dma_unmap_page`` cost in the table;
- ``map+unmap 16x4K``: a 64 KiB buffer of scattered pages as one forced-4K run;
- ``map+unmap 1M`` / ``2M``: one section (ARMv7) or one 2 MiB block (VMSAv8-64);
- ``unmap 4K in 1M``: a small page unmapped out of a section, which splits it into
  large pages and those into small pages first (Linux's ``split_blk_unmap``);
- ``set_attrs 4K``: rewriting the attributes of one page;
- ``decode 4096 pages``: ``mappings()`` of a table holding 4096 small pages.

``--against DIR`` times the same rows with another checkout's ``src`` (for example the
main branch) in alternating subprocesses and prints both rates and their ratio, so a
change to the table code is judged side by side in one run.  Rates are per second of
the process's CPU time, which a machine shared with other jobs disturbs less than wall
time.

Run: ``PYTHONPATH=src python benchmarks/bench_pgtable.py [--repeat 5] [--against ../main]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROWS = (
    "map+unmap 4K",
    "map+unmap 16x4K",
    "map+unmap 1M",
    "unmap 4K in 1M",
    "set_attrs 4K",
    "decode 4096 pages",
    "v8 map+unmap 4K",
    "v8 map+unmap 2M",
)


def measure() -> dict[str, float]:
    """Operations per second of every row, with whatever ``vcmm`` is importable."""
    from vcmm.attrs import RO_WB, RW_WB
    from vcmm.hw.memory import MemoryRegion, PhysicalMemory
    from vcmm.hw.pgtable import ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
    from vcmm.hw.tablemem import TableMemory
    from vcmm.ranges import AddressRange
    from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_64K, SZ_256M

    ram = 0x8000_0000
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(ram, SZ_256M))])

    def table(fmt: PageTableFormat) -> PageTable:
        return PageTable(fmt, memory, TableMemory(memory, AddressRange(ram, SZ_4M)))

    def rate(count: int, body: Callable[[], None]) -> float:
        start = time.process_time()  # CPU time: waiting for a busy machine's cores is not ours
        body()
        return count / (time.process_time() - start)

    out: dict[str, float] = {}
    for prefix, fmt, block in (("", ARMV7S, SZ_1M), ("v8 ", VMSAV8_4K, SZ_2M)):
        t = table(fmt)
        vas = [0x1000_0000 + k * 37 * SZ_4K for k in range(1024)]

        def pages(t: PageTable = t, vas: list[int] = vas) -> None:
            for va in vas:
                t.map(va, ram + SZ_4M, SZ_4K, RW_WB)
                t.unmap(va, SZ_4K)

        out[prefix + "map+unmap 4K"] = rate(len(vas), pages)
        blocks = [0x2000_0000 + k * block for k in range(256)]

        def big(t: PageTable = t, blocks: list[int] = blocks, size: int = block) -> None:
            for va in blocks:
                t.map(va, ram + 8 * SZ_4M, size, RW_WB)
                t.unmap(va, size)

        out[f"{prefix}map+unmap {'1M' if block == SZ_1M else '2M'}"] = rate(len(blocks), big)
        if prefix:
            continue

        def runs(t: PageTable = t, vas: list[int] = vas[:256]) -> None:
            for va in vas:
                t.map(va, ram + SZ_4M, SZ_64K, RW_WB, page_size=SZ_4K)
                t.unmap(va, SZ_64K)

        out["map+unmap 16x4K"] = rate(256, runs)

        def split(t: PageTable = t, blocks: list[int] = blocks) -> None:
            for va in blocks:
                t.map(va, ram + 8 * SZ_4M, SZ_1M, RW_WB)
                t.unmap(va + 5 * SZ_4K, SZ_4K)
                t.unmap(va, 5 * SZ_4K)
                t.unmap(va + 6 * SZ_4K, SZ_1M - 6 * SZ_4K)

        out["unmap 4K in 1M"] = rate(len(blocks), split)
        for va in vas:
            t.map(va, ram + SZ_4M, SZ_4K, RW_WB)

        def attrs(t: PageTable = t, vas: list[int] = vas) -> None:
            for k, va in enumerate(vas):
                t.set_attrs(va, SZ_4K, RO_WB if k % 2 else RW_WB)

        out["set_attrs 4K"] = rate(len(vas), attrs)
        for k in range(4096 - len(vas)):
            t.map(0x4000_0000 + k * SZ_4K, ram + SZ_4M, SZ_4K, RW_WB)

        def decode(t: PageTable = t) -> None:
            for _ in range(5):
                assert sum(1 for _ in t.mappings()) == 4096

        out["decode 4096 pages"] = rate(5, decode)
    return out


def best_of(repeat: int, src: Path | None) -> dict[str, float]:
    """The best rate of each row over ``repeat`` runs, in this process or with ``src``."""
    best: dict[str, float] = {}
    for _ in range(repeat):
        if src is None:
            got = measure()
        else:
            proc = subprocess.run(
                [sys.executable, __file__, "--json"],
                env={"PYTHONPATH": str(src)},
                capture_output=True,
                text=True,
                check=True,
            )
            got = json.loads(proc.stdout)
        for row, value in got.items():
            best[row] = max(best.get(row, 0.0), value)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="rounds; the best is reported")
    parser.add_argument("--against", type=Path, help="another checkout to compare with")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.json:
        print(json.dumps(measure()))
        return 0
    here = Path(__file__).resolve().parents[1] / "src"
    if args.against is None:
        rates = best_of(args.repeat, None)
        print(f"{'operation':<20} {'ops/s':>12}")
        for row in ROWS:
            print(f"{row:<20} {rates[row]:>12,.0f}")
        return 0
    other_src = args.against.resolve() / "src"
    mine: dict[str, float] = {}
    theirs: dict[str, float] = {}
    for _ in range(args.repeat):  # alternate, so load on the machine hits both alike
        for target, src in ((mine, here), (theirs, other_src)):
            for row, value in best_of(1, src).items():
                target[row] = max(target.get(row, 0.0), value)
    print(f"{'operation':<20} {'this ops/s':>12} {'other ops/s':>12} {'this/other':>10}")
    for row in ROWS:
        print(
            f"{row:<20} {mine[row]:>12,.0f} {theirs[row]:>12,.0f} {mine[row] / theirs[row]:>9.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
