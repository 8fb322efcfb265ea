"""Negotiated buffers against an exporter's guesses: IOTLB misses and set-up time.

The video pipeline of ``vcmm run video_collection`` (four 720p NV12 frames written by
the physically addressed camera, read in raster order by the display ``mdp`` behind
smmu1) is set up three ways on fresh systems, interleaved, ``--runs`` times:

- ``negotiated``: a buffer collection of camera and mdp (the camera's constraints
  force one chunk; mdp's SMMU page sizes make it 1 MiB-aligned);
- ``guess: kernel RAM``: ``VcmExporter.allocate(contiguous=True)`` from the exporter's
  default target (what a driver that knows only that the camera needs one chunk does);
- ``guess: carve-out``: the same from the ``contig`` carve-out.

For each it reports the IOTLB misses of one raster pass of mdp over each frame in turn
(read from the SMMU's counters; the first frame lands aligned in any empty pool, the
others only if someone asks) and the wall time of the set-up
(allocation, attach, map for both devices), as the ratio to the negotiated set-up.

Run: ``PYTHONPATH=src python benchmarks/bench_collection.py [--runs 3]``  (a few seconds)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

import vcmm
from vcmm.attrs import Access, DmaDirection
from vcmm.pixels import layout
from vcmm.share import VcmExporter
from vcmm.share.collection import BufferCollection
from vcmm.share.constraints import Constraints, ImageConstraints

IMAGE = layout("nv12", 1280, 720)
BURST = 64
#: Buffers in flight (the camera camps on 3, the display on 1).
BUFFERS = 4


def negotiated(system: vcmm.System) -> list[int]:
    frames = BufferCollection(system, "frames", ["camera", "mdp"])
    image = ImageConstraints({"nv12"}, min_width=IMAGE.width, min_height=IMAGE.height)
    wanted = Constraints(camping=BUFFERS - 1, image=image)
    frames.join("camera", wanted, direction=DmaDirection.FROM_DEVICE)
    frames.join("mdp", Constraints(camping=1), direction=DmaDirection.TO_DEVICE)
    return list(frames.members["mdp"].dma_addresses)


def guessed(target: str | None) -> Callable[[vcmm.System], list[int]]:
    def setup(system: vcmm.System) -> list[int]:
        exporter = VcmExporter(system)
        addresses = []
        for _ in range(BUFFERS):
            if target is None:
                buf = exporter.allocate(IMAGE.size, contiguous=True)
            else:
                buf = exporter.allocate(IMAGE.size, contiguous=True, target=target)
            buf.attach("camera").map(DmaDirection.FROM_DEVICE)
            addresses.append(buf.attach("mdp").map(DmaDirection.TO_DEVICE).entries[0].dma_address)
        return addresses

    return setup


def raster_misses(system: vcmm.System, bases: list[int]) -> int:
    """IOTLB misses of one raster pass over each buffer in turn (as frames cycle)."""
    mdp = system.device("mdp")
    offsets = np.arange(0, IMAGE.size, BURST, dtype=np.uint64)
    before = mdp.ctx.stats().tlb.misses
    for base in bases:
        mdp.access_batch(offsets + np.uint64(base), Access.READ, BURST)
    return int(mdp.ctx.stats().tlb.misses - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    ways: dict[str, Callable[[vcmm.System], list[int]]] = {
        "negotiated": negotiated,
        "guess: kernel RAM": guessed(None),
        "guess: carve-out": guessed("contig"),
    }
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    misses: dict[str, int] = {}
    for _ in range(args.runs):
        for name, setup in ways.items():  # interleaved: each run sets up all three
            system = vcmm.System.default()
            started = time.perf_counter()
            bases = setup(system)
            seconds[name].append(time.perf_counter() - started)
            misses[name] = raster_misses(system, bases)
    reference = min(seconds["negotiated"])
    print(
        f"{BUFFERS} buffers of {IMAGE.describe()} ({IMAGE.size:,} bytes), one mdp raster "
        f"pass over each, {args.runs} runs"
    )
    print(f"{'set-up':<20} {'IOTLB misses':>12} {'set-up ms (min-max)':>22} {'vs negotiated':>14}")
    for name in ways:
        lo, hi = min(seconds[name]), max(seconds[name])
        print(
            f"{name:<20} {misses[name]:>12,} {lo * 1e3:>10.1f} - {hi * 1e3:<9.1f} "
            f"{lo / reference:>12.2f}x"
        )


if __name__ == "__main__":
    main()
