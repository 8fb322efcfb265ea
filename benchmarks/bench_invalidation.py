"""Strict against lazy IOTLB invalidation on the bundled network-like workload.

Runs the packaged ``net_stream`` scenario (two devices behind smmu0 mapping, moving
and unmapping 1536-byte packets through the DMA API, receive every 2 us and transmit
every 50 us of simulated time, rings of 64, while the display scans out) once per
invalidation mode per round, the two modes interleaved in one process, and prints
per mode: invalidation commands and syncs issued, the modelled time spent
invalidating (the platform's default cost: 40 cycles per command, 600 per sync, at
400 MHz), the flushes of lazy mode by cause, and the wall and CPU time of the whole
run (on a shared machine the CPU time is the steadier of the two).  The ratios
strict/lazy are of figures measured side by side in the same round.

Run: ``python benchmarks/bench_invalidation.py [--rounds 3] [--packets 1500]``
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from vcmm.workload import run_scenario
from vcmm.workload.scenario import Scenario, packaged_scenario

MODES = ("strict", "lazy")


def scenario(packets: int) -> Scenario:
    sc = packaged_scenario("net_stream")
    flows = tuple(dataclasses.replace(f, packets=packets) for f in sc.traffic)
    return dataclasses.replace(sc, traffic=flows)


def measure(sc: Scenario, mode: str) -> dict[str, float]:
    """One run in ``mode``: summed invalidation figures over its domains, wall time."""
    start, cpu = time.perf_counter(), time.process_time()
    result = run_scenario(sc.with_params(invalidation=mode))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    inval = result.invalidation
    return {
        "unmaps": sum(d.unmaps for d in inval),
        "commands": sum(d.commands for d in inval),
        "syncs": sum(d.syncs for d in inval),
        "time_us": sum(d.time_ns for d in inval) / 1000,
        "ring_full": sum(d.flushes["ring_full"] for d in inval),
        "timeout": sum(d.flushes["timeout"] for d in inval),
        "stale": sum(f.stray_stale for f in result.traffic),
        "faulted": sum(f.stray_faults for f in result.traffic),
        "wall_s": wall,
        "cpu_s": cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--packets", type=int, default=1500)
    args = parser.parse_args()
    sc = scenario(args.packets)
    print(f"net_stream, {args.packets} packets per flow, {args.rounds} rounds (interleaved)")
    header = (
        f"{'round':>5} {'mode':>6} {'unmaps':>7} {'cmds':>6} {'syncs':>6} {'inval us':>9} "
        f"{'full':>5} {'timer':>5} {'faulted':>7} {'stale':>5} {'wall s':>7} {'cpu s':>6}"
    )
    print(header)
    ratios: dict[str, list[float]] = {"commands": [], "time_us": [], "wall_s": [], "cpu_s": []}
    for r in range(args.rounds):
        order = MODES if r % 2 == 0 else MODES[::-1]  # alternate which runs first
        got = {mode: measure(sc, mode) for mode in order}
        for mode in MODES:
            m = got[mode]
            print(
                f"{r:>5} {mode:>6} {m['unmaps']:>7.0f} {m['commands']:>6.0f} {m['syncs']:>6.0f} "
                f"{m['time_us']:>9.1f} {m['ring_full']:>5.0f} {m['timeout']:>5.0f} "
                f"{m['faulted']:>7.0f} {m['stale']:>5.0f} {m['wall_s']:>7.2f} {m['cpu_s']:>6.2f}"
            )
        for key in ratios:
            ratios[key].append(got["strict"][key] / got["lazy"][key])
    for key, values in ratios.items():
        print(f"strict/lazy {key}: {min(values):.2f}-{max(values):.2f}")


if __name__ == "__main__":
    main()
