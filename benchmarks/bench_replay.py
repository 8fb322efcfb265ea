"""Trace replay throughput: events per second, parse alone to full replay, side by side.

Two synthetic traces in the kernel's text format (6.12-era events, four devices on
four CPUs, a window of 8 buffers in flight per device, FIFO completion):

- ``streaming``: ``map``, ``dma_map_page``, ``dma_sync_single_for_device``, then
  ``unmap`` and ``dma_unmap_page`` of the oldest buffer: 1-4 pages at random physical
  addresses, as a network or storage driver produces;
- ``sg``: ``dma_map_sg`` of 4-16 physically contiguous pages written as one ``map``
  per page (``iommu_map_sg`` traces each chunk), ``dma_unmap_sg`` then one ``unmap``:
  the case the replay's run batching merges.

Each round runs every variant on the same text, interleaved: parse alone,
parse + attribution, replay without tables (``--no-tables``: problems only), the
full replay (real page tables, batched writes), the same with ``--reallocate``
(vcmm's IOVA allocator places every map) and, unless ``--no-unbatched``, the
full replay making one page-table call per traced map and unmap (``batch=False``,
the reference the batched writes are tested against; the script checks that both
report the same).  Reported: events (lines) per second, the slowest and the fastest
round (wall clock), the fastest round's ratio to parsing alone, the fastest round in
CPU time (what the process itself used: less noisy on a shared machine), and
whether the as-traced full replay met the issue's goal in every round (wall clock)
and in CPU time.

Run: ``PYTHONPATH=src python benchmarks/bench_replay.py [--buffers 5000] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from vcmm.trace import attribute, parse_text, replay


def _head(d: int, ts: float) -> str:
    return f"     kworker/{d}:1-{100 + d:<6} [{d:03d}] d..1.  {ts:12.6f}: "


def streaming(buffers: int, devices: int = 4, seed: int = 1) -> str:
    rng = random.Random(seed)
    out = ["# tracer: nop", "#"]
    nxt = dict.fromkeys(range(devices), 0xFFF00000)
    live: dict[int, list[tuple[int, int]]] = {d: [] for d in range(devices)}
    for i in range(buffers):
        d = rng.randrange(devices)
        dev, h = f"0000:00:0{d}.0", _head(d, 100 + i * 1e-6)
        size = 0x1000 * rng.choice((1, 1, 1, 2, 4))
        iova = nxt[d] - size
        nxt[d] = iova if iova > 0x10000000 else 0xFFF00000
        pa = 0x80000000 + rng.randrange(1 << 18) * 0x1000
        out.append(f"{h}map: IOMMU: iova=0x{iova:016x} - 0x{iova + size:016x} "
                   f"paddr=0x{pa:016x} size={size}")  # fmt: skip
        out.append(f"{h}dma_map_page: {dev} dir=TO_DEVICE dma_addr={iova:x} size={size} "
                   f"phys_addr={pa:x} attrs=")  # fmt: skip
        out.append(f"{h}dma_sync_single_for_device: {dev} dir=TO_DEVICE dma_addr={iova:x} "
                   f"size={size}")  # fmt: skip
        live[d].append((iova, size))
        if len(live[d]) > 8:
            ui, us = live[d].pop(0)
            out.append(f"{h}unmap: IOMMU: iova=0x{ui:016x} - 0x{ui + us:016x} size={us} "
                       f"unmapped_size={us}")  # fmt: skip
            out.append(f"{h}dma_unmap_page: {dev} dir=TO_DEVICE dma_addr={ui:x} size={us} attrs=")
    return "\n".join(out) + "\n"


def scatter(buffers: int, devices: int = 4, seed: int = 2) -> str:
    rng = random.Random(seed)
    out = ["# tracer: nop", "#"]
    nxt = dict.fromkeys(range(devices), 0xFFF00000)
    live: dict[int, list[tuple[int, int, int]]] = {d: [] for d in range(devices)}
    for i in range(buffers):
        d = rng.randrange(devices)
        dev, h = f"0000:00:0{d}.0", _head(d, 100 + i * 1e-6)
        pages = rng.randrange(4, 17)
        size = pages * 0x1000
        iova = nxt[d] - 0x10000
        nxt[d] = iova if iova > 0x10000000 else 0xFFF00000
        pa = 0x80000000 + rng.randrange(1 << 14) * 0x10000
        for k in range(pages):
            a, p = iova + k * 0x1000, pa + k * 0x1000
            out.append(f"{h}map: IOMMU: iova=0x{a:016x} - 0x{a + 0x1000:016x} "
                       f"paddr=0x{p:016x} size=4096")  # fmt: skip
        out.append(f"{h}dma_map_sg: {dev} dir=FROM_DEVICE dma_addrs={{0x{iova:x}}} "
                   f"sizes={{0x{size:x}}} phys_addrs={{0x{pa:x}}} attrs=")  # fmt: skip
        live[d].append((iova, size, pa))
        if len(live[d]) > 8:
            ui, us, up = live[d].pop(0)
            out.append(f"{h}dma_unmap_sg: {dev} dir=FROM_DEVICE phys_addrs={{0x{up:x}}} attrs=")
            out.append(f"{h}unmap: IOMMU: iova=0x{ui:016x} - 0x{ui + us:016x} size={us} "
                       f"unmapped_size={us}")  # fmt: skip
    return "\n".join(out) + "\n"


#: Issue 14's goal: the as-traced replay, parse to report, at 100,000 events a second.
GOALS = {"full replay": 100_000}


def variants(text: str) -> dict[str, Callable[[], object]]:
    return {
        "parse": lambda: parse_text(text),
        "parse+attribute": lambda: list(attribute(parse_text(text))),
        "replay --no-tables": lambda: replay(parse_text(text), tables=False),
        "full replay": lambda: replay(parse_text(text)),
        "full --reallocate": lambda: replay(parse_text(text), reallocate=True),
        "full, unbatched": lambda: replay(parse_text(text), batch=False),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--buffers", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-unbatched", action="store_true", help="skip the slow reference")
    args = parser.parse_args()
    for name, make in (("streaming", streaming), ("sg", scatter)):
        text = make(args.buffers)
        events = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
        report = replay(parse_text(text))
        calls = f"{report.table_calls:,} table calls"
        runs = variants(text)
        if args.no_unbatched:
            del runs["full, unbatched"]
        else:
            single = replay(parse_text(text), batch=False)
            same = single.problems == report.problems and {
                d: s.to_dict() for d, s in single.devices.items()
            } == {d: s.to_dict() for d, s in report.devices.items()}
            if not same:
                raise SystemExit(f"{name}: the batched replay reports otherwise than one call each")
            calls += f" ({single.table_calls:,} unbatched)"
        print(f"{name}: {events:,} events, {len(report.problems)} problems (leaks at the "
              f"end), {calls}")  # fmt: skip
        rates: dict[str, list[float]] = {label: [] for label in runs}
        cpu: dict[str, float] = {}
        for _ in range(args.rounds):
            for label, fn in runs.items():  # interleaved: same load for each
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                wall, used = time.perf_counter() - start, time.process_time() - start_cpu
                rates[label].append(events / wall)
                cpu[label] = max(cpu.get(label, 0.0), events / max(used, 1e-9))
        base = max(rates["parse"])
        print(f"  {'':<20} {'events/s, min-max of rounds':>29} {'best':>6} {'CPU time':>10}")
        for label, seen in rates.items():
            goal = ""
            if label in GOALS:
                want = GOALS[label]
                goal = (f"  goal {want:,}: every round {'met' if min(seen) >= want else 'NOT met'}"
                        f", CPU time {'met' if cpu[label] >= want else 'NOT met'}")  # fmt: skip
            print(f"  {label:<20} {min(seen):>13,.0f} - {max(seen):>9,.0f} {max(seen) / base:5.2f}x "
                  f"{cpu[label]:>10,.0f}{goal}")  # fmt: skip


if __name__ == "__main__":
    main()
