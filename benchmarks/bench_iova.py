"""IOVA allocation throughput with the range cache on and off, under both policies.

A DMA-heavy device maps and unmaps buffers continuously while thousands of other
mappings stay live (seed 002's map_page/unmap_page on an IOMMU domain).  Each
iteration maps one buffer and unmaps the oldest of a small in-flight window, so the
allocator sees the steady map/unmap stream of a queue-based device on top of a
fragmented population.  Both rcache settings and both placement policies (``seed``
and mainline ``linux``) run on identical populations in the same process, and the
table reports map+unmap pairs per second, the rcache on/off ratio and the
linux/seed ratio.

Run: ``python benchmarks/bench_iova.py [--live 4000] [--iterations 20000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import time
from collections import deque

import numpy as np

from vcmm.mm.iova import IovaDomain
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_policy import IOVA_POLICIES, new_iova_domain
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4G, SZ_4K

MASK32 = 0xFFFF_FFFF


def build_domain(policy: str, rcache: bool, live: int, seed: int) -> IovaDomain | LinuxIovaDomain:
    """A 4 GiB domain holding ``live`` ranges of 1-32 granules with holes between them."""
    rng = np.random.default_rng(seed)
    iovad = new_iova_domain(policy, SZ_4K, AddressRange(0, SZ_4G), rcache=rcache)
    total = live + live // 2
    sizes = rng.integers(1, 33, size=total)
    addrs = [iovad.alloc(int(n) * SZ_4K, MASK32) for n in sizes]
    for index in rng.permutation(total)[: total - live]:
        iovad.free(addrs[int(index)])
    iovad.flush_rcache()  # both settings start from the same tree
    return iovad


def run(
    iovad: IovaDomain | LinuxIovaDomain, granules: int, iterations: int, window: int, order: str
) -> float:
    """Map/unmap pairs per second for one buffer size.

    ``order`` is how the in-flight buffers complete: ``fifo`` (oldest first, a ring)
    or ``random`` (out of order, as with several queues), which leaves holes below the
    cached node and makes the rcache-less allocator search the tree.
    """
    size = granules * SZ_4K
    rng = np.random.default_rng(granules)
    victims = rng.integers(0, window, size=iterations).tolist() if order == "random" else None
    in_flight: deque[int] = deque()
    for _ in range(window):
        in_flight.append(iovad.alloc(size, MASK32))
    start = time.perf_counter()
    if victims is None:
        for _ in range(iterations):
            in_flight.append(iovad.alloc(size, MASK32))
            iovad.free(in_flight.popleft())
    else:
        slots = list(in_flight)
        for victim in victims:
            iovad.free(slots[victim])
            slots[victim] = iovad.alloc(size, MASK32)
        in_flight = deque(slots)
    elapsed = time.perf_counter() - start
    while in_flight:
        iovad.free(in_flight.popleft())
    return iterations / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--live", type=int, default=4000, help="live ranges in the tree")
    parser.add_argument("--iterations", type=int, default=20000, help="map+unmap pairs per run")
    parser.add_argument("--window", type=int, default=64, help="mappings in flight")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many runs")
    args = parser.parse_args()

    print(
        f"IOVA map+unmap throughput: granule 4K, limit {MASK32:#x}, {args.live} live ranges, "
        f"{args.window} in flight, {args.iterations} pairs per run"
    )
    header = (
        f"{'size':>6} {'completion':>10} {'policy':>6} {'rcache':>6} {'pairs/s':>11} "
        f"{'hits':>7} {'misses':>7} {'nodes':>6}"
    )
    print(header)
    print("-" * len(header))
    rcache_ratios, policy_ratios = [], []
    for order in ("fifo", "random"):
        for granules in (1, 16):
            rates = {}
            for rcache in (False, True):
                for policy in IOVA_POLICIES:
                    rate = 0.0
                    for _ in range(args.rounds):  # the best round: the machine may be busy
                        iovad = build_domain(policy, rcache, args.live, args.seed)
                        before = iovad.counters
                        rate = max(rate, run(iovad, granules, args.iterations, args.window, order))
                        after = iovad.counters
                    rates[policy, rcache] = rate
                    print(
                        f"{granules * 4:>5}K {order:>10} {policy:>6} {'on' if rcache else 'off':>6} "
                        f"{rate:>11,.0f} {after.rcache_hits - before.rcache_hits:>7} "
                        f"{after.rcache_misses - before.rcache_misses:>7} "
                        f"{len(iovad.snapshot().nodes):>6}"
                    )
            label = f"{granules * 4}K buffers, {order} completion"
            for policy in IOVA_POLICIES:
                ratio = rates[policy, True] / rates[policy, False]
                rcache_ratios.append(f"rcache on/off speed-up, {policy}, {label}: {ratio:.2f}x")
            ratio = rates["linux", True] / rates["seed", True]
            policy_ratios.append(f"linux/seed speed, rcache on, {label}: {ratio:.2f}x")
    print()
    print("\n".join(rcache_ratios + policy_ratios))


if __name__ == "__main__":
    main()
