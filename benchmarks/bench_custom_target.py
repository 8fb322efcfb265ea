"""What checking a run-time target's answers costs (issue 17 item 1).

The same allocator, vcmm's ``ContiguousPool`` over 64 MiB, serves ``vcm_phys_alloc``
twice on one system: as the default platform's ``contig`` target (built in, trusted),
and registered with ``vcm_register_target`` (behind the core's ``CheckedTarget``, which
snapshots the policy, checks each chunk against its regions, the request and the owner
map).  Each round takes ``LIVE`` allocations of 4-64 KiB and frees them, so the checks
run with many allocations live; the variants run interleaved, ``REPEATS`` times, and the
table gives min-max microseconds per allocate+free and the ratio of the minima.

Run: ``python benchmarks/bench_custom_target.py``
"""

from __future__ import annotations

import time

import vcmm
from vcmm import SZ_4K, PhysAttr
from vcmm.mm.pools import ContiguousPool
from vcmm.ranges import AddressRange

LIVE = 1000
REPEATS = 3
REGION = 64 << 20


def _round(system: vcmm.System, target: str) -> float:
    start = time.perf_counter()
    held = [system.vcm_phys_alloc(target, SZ_4K * (1 + i % 16), PhysAttr.NONE) for i in range(LIVE)]
    for physmem in held:
        system.vcm_phys_free(physmem)
    return (time.perf_counter() - start) / LIVE * 1e6


def main() -> None:
    system = vcmm.System.default()
    builtin = system.target("contig")
    assert isinstance(builtin, ContiguousPool) and builtin.total_bytes == REGION
    system.vcm_register_target(ContiguousPool("checked", AddressRange(0xB000_0000, REGION)))
    times: dict[str, list[float]] = {"contig": [], "checked": []}
    for _ in range(REPEATS):
        for name in times:
            times[name].append(_round(system, name))
    print(f"{LIVE} allocations of 4-64 KiB live, then freed; us per allocate+free")
    for name, runs in times.items():
        print(f"  {name:8s} {min(runs):7.1f} - {max(runs):7.1f}")
    print(f"  checked / built-in (minima): {min(times['checked']) / min(times['contig']):.2f}x")


if __name__ == "__main__":
    main()
