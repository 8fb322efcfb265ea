"""Streaming DMA pairs with the graph's lazy physical index against the plain one.

``MappingGraph`` queues its index's adds (``vcmm.core.lazyindex.LazyIndex``): a
streaming mapping's edge is cancelled from the queue at unmap without ever entering
the segments.  This script runs the lean ``map_page``+``unmap_page`` pair (4 KiB) and
``map_sg``+``unmap_sg`` pair (64 x 4 KiB) of ``bench_dma_api.py`` on identical setups
whose graph uses the lazy index or the plain ``PhysIndex`` (the reference the lazy one
answers as), alternating, and prints per setting the min-max over ``--runs`` of each
run's median pair (wall) and mean pair (CPU time, ``time.process_time``), and the ratio.

Measured on a shared 2-core machine (4 runs, 3000 page pairs and 300 sg pairs each,
load 2-4): map_sg+unmap_sg 1414-1445 us lazy against 1550-1578 us plain (wall median,
1.07-1.11x; CPU 1446-1697 against 1701-1890), map_page+unmap_page 159-165 us against
162-167 (CPU 168-184 against 173-189).

Run: ``PYTHONPATH=src python benchmarks/bench_graph_lazy.py [--runs 3] [--pairs 400]``
"""

from __future__ import annotations

import argparse

import numpy as np

from bench_dma_api import pair_times, streaming_setup
from vcmm.core.lazyindex import LazyIndex
from vcmm.dma import DmaApi


def plain_index(dma: DmaApi) -> None:
    """Give the system's graph the plain index, holding what the lazy one holds."""
    graph = dma.system.graph
    lazy = graph._index
    assert isinstance(lazy, LazyIndex)
    lazy.settle()
    graph._index = lazy.settled


def run(lazy: bool, entries: int, pairs: int, seed: int) -> tuple[float, float]:
    """Median wall and mean CPU microseconds of one unmap+map pair of ``entries``
    pages (map_page for 1, map_sg otherwise), 8 buffers in flight."""
    _, dma, blocks = streaming_setup(True, 1000, seed)
    if not lazy:
        plain_index(dma)
    times, cpu = pair_times(dma, blocks, np.random.default_rng(seed + 3), entries, pairs)
    return float(np.median(times)) * 1e6, cpu / pairs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=400, help="page pairs (sg: a tenth)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{'pair':<28} {'index':<6} {'wall us (median)':>18} {'CPU us (mean)':>16}")
    for label, entries in (("map_page+unmap_page 4 KiB", 1), ("map_sg+unmap_sg 64 x 4 KiB", 64)):
        pairs = args.pairs if entries == 1 else max(8, args.pairs // 10)
        found: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for r in range(args.runs):
            for lazy in (False, True) if r % 2 == 0 else (True, False):
                found[lazy].append(run(lazy, entries, pairs, args.seed + r))
        for lazy in (False, True):
            wall, cpu = zip(*found[lazy], strict=True)
            print(
                f"{label:<28} {'lazy' if lazy else 'plain':<6} "
                f"{min(wall):>8.0f}-{max(wall):<9.0f} {min(cpu):>7.0f}-{max(cpu):<8.0f}"
            )
        ratio = [p[0] / q[0] for p, q in zip(found[False], found[True], strict=True)]
        print(f"{'':<28} plain/lazy wall {min(ratio):.2f}-{max(ratio):.2f}x")
    print()


if __name__ == "__main__":
    main()
