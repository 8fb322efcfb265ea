"""Small seed calls, one whole-stack operation at a time: this tree against another.

The seed's calls on small inputs (one 4 KiB DMA page, a 64-page reservation, a 1 MiB
backing from the block pool, a 16-page wrap, a 64 KiB device transfer) are where
the layers' own overhead shows: transaction brackets, dispatch, locks, value
construction.  Each row is the median of many calls, in microseconds.

``--against DIR`` runs the same measurements in a fresh interpreter with
``PYTHONPATH=DIR/src`` (another checkout, say the commit before a refactoring)
alternately with one on this tree's ``src``, ``--rounds`` times, and prints each
row's now/before ratio as min-max over the rounds.  Both trees offer the same seed
API (``System.default``, ``vcm_reserve``, ``vcm_back``, ``DmaApi.map_page``...),
so one measurement function serves both.

Run: ``PYTHONPATH=src python benchmarks/bench_small_calls.py [--against DIR] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROWS = (
    "map_page+unmap_page 4K",
    "device write+read 64 KiB",
    "vcm_reserve+vcm_unreserve 64 pages",
    "reserve+back+unback+unreserve 1 MiB (blocks)",
    "vcm_back+vcm_unback 16-page wrap",
    "vcm_phys_alloc+vcm_phys_free 64 KiB",
)


def _median_us(call: Callable[[], object], count: int) -> float:
    """Median microseconds of ``count`` calls after one warm-up call."""
    call()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def measure(scale: float = 1.0) -> dict[str, float]:
    """Median microseconds of each row in the ``vcmm`` this interpreter imports."""
    import vcmm
    from vcmm import SZ_1M, SZ_4K, AddressRange, Attr, PhysAttr
    from vcmm import DmaDirection as Direction
    from vcmm.dma import DmaApi

    def n(count: int) -> int:
        return max(5, int(count * scale))

    out: dict[str, float] = {}
    system = vcmm.System.default()
    dma = DmaApi(system)
    ebi = system.vcm_phys_alloc("ebi", 4 * SZ_1M)
    page = ebi.chunk_ranges[0].start

    def map_unmap() -> None:
        handle = dma.map_page("vcodec_a_mm1", page, 0, SZ_4K, Direction.TO_DEVICE)
        dma.unmap_page("vcodec_a_mm1", handle, SZ_4K, Direction.TO_DEVICE)

    out[ROWS[0]] = _median_us(map_unmap, n(400))

    dev = system.device("vcodec_b_mm2")
    vcm = system.vcm_create(SZ_4K, 256 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    blocks = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    backed = system.vcm_reserve(vcm, SZ_1M, Attr.READ | Attr.WRITE)
    system.vcm_back(backed, blocks)
    data = b"x" * 65536

    def write_read() -> None:
        dev.write(backed.dev_addr, data)
        dev.read(backed.dev_addr, 65536)

    out[ROWS[1]] = _median_us(write_read, n(300))
    system.vcm_unback(backed)
    system.vcm_unreserve(backed)

    def reserve() -> None:
        system.vcm_unreserve(system.vcm_reserve(vcm, 64 * SZ_4K, Attr.READ | Attr.WRITE))

    out[ROWS[2]] = _median_us(reserve, n(600))

    def back_1m() -> None:
        res = system.vcm_reserve(vcm, SZ_1M, Attr.READ | Attr.WRITE)
        system.vcm_back(res, blocks)
        system.vcm_unback(res)
        system.vcm_unreserve(res)

    out[ROWS[3]] = _median_us(back_1m, n(200))

    # Every other page of a contiguous piece: 16 separate runs to map.
    base = ebi.chunk_ranges[0].start + SZ_1M
    pages = [AddressRange(base + 2 * i * SZ_4K, SZ_4K) for i in range(16)]
    wrap = system.vcm_phys_wrap(pages, owner="bench", of=ebi)
    res16 = system.vcm_reserve(vcm, 16 * SZ_4K, Attr.READ | Attr.WRITE)

    def back_wrap() -> None:
        system.vcm_back(res16, wrap)
        system.vcm_unback(res16)

    out[ROWS[4]] = _median_us(back_wrap, n(300))

    def alloc_free() -> None:
        system.vcm_phys_free(system.vcm_phys_alloc("ebi", 64 * 1024))

    out[ROWS[5]] = _median_us(alloc_free, n(600))
    return out


def _run_tree(src: Path, scale: float) -> dict[str, float]:
    """One :func:`measure` in a fresh interpreter importing ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", "--scale", str(scale)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True, cwd="/")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _span(values: list[float], fmt: str) -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def compare(before: Path, now: Path, rounds: int, scale: float) -> None:
    """Alternate the two trees ``rounds`` times; print before, now and ratio spans."""
    figures: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
    for round_no in range(rounds):
        order = [("before", before), ("now", now)]
        if round_no % 2:
            order.reverse()
        for name, src in order:
            figures[name].append(_run_tree(src, scale))
        print(f"round {round_no + 1}/{rounds} done", file=sys.stderr)
    print(f"before: {before}\nnow:    {now}\nmedian us per call, min-max of {rounds} rounds")
    print(f"{'operation':46} {'before':>13} {'now':>13} {'now/before':>11}")
    for row in ROWS:
        old = [f[row] for f in figures["before"]]
        new = [f[row] for f in figures["now"]]
        ratios = [b / a for a, b in zip(old, new, strict=True)]
        print(
            f"{row:46} {_span(old, '.1f'):>13} {_span(new, '.1f'):>13} {_span(ratios, '.2f'):>10}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--against", type=Path, help="another checkout (its src is imported)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply call counts")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.scale)))
        return
    if args.against is None:
        for row, value in measure(args.scale).items():
            print(f"{row:46} {value:10.1f} us")
        return
    here = Path(__file__).resolve().parent.parent / "src"
    compare(args.against.resolve() / "src", here, args.rounds, args.scale)


if __name__ == "__main__":
    main()
