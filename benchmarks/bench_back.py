"""``vcm_back`` of a buffer in 16,384 separate 4 KiB pieces: batched against per piece.

A device reservation is backed by a view whose pieces are scattered pages (neighbours
swapped, so no two continue each other physically), the case issue 12 measured at
1.3 s with one ``PageTable.map`` per piece (target: 50 ms).  The batched path (the
pages as two arrays in one ``PageTable.map_pages`` call, or the runs in one
``map_many`` when they are not all separate small pages) and the per-piece path (the
same ``vcm_back`` with the mapper's batched writes replaced by one ``map`` per run,
what it did before) run alternately on fresh systems; each figure is the fastest of
``--repeat`` rounds (wall and CPU time), ``vcm_unback`` of the same backing too.  The
two paths must leave the same table bytes and graph.

Run: ``python benchmarks/bench_back.py [--pieces 16384] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable, Sequence
from unittest import mock

import numpy as np

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.attrs import PageAttrs
from vcmm.core import Attr, PhysAttr
from vcmm.core.mappers import IommuMapper, PageRun, merge_runs


def _map_each(self: IommuMapper, runs: Sequence[tuple[PageAttrs, PageRun]]) -> None:
    for attrs, run in runs:
        self.map(run, attrs)


def _map_pages_each(self: IommuMapper, vas: np.ndarray, pas: np.ndarray, attrs: PageAttrs) -> None:
    page = min(self.page_sizes)
    pages = [PageRun(va, pa, page, page) for va, pa in zip(vas.tolist(), pas.tolist(), strict=True)]
    for run in merge_runs(pages):
        self.map(run, attrs)


def _timed(call: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``call()`` (CPU time is what a busy machine disturbs
    least: it leaves out the time other processes had the cores)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def one_round(pieces: int, batched: bool) -> tuple[dict[str, float], object]:
    """Seconds of ``vcm_back`` and ``vcm_unback`` on a fresh system, and the state."""
    system = vcmm.System.default()
    carve = system.vcm_phys_alloc("contig", pieces * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(carve, windows=[((i ^ 1) * SZ_4K, SZ_4K) for i in range(pieces)])
    vcm = system.vcm_create(0x4000_0000, max(pieces * SZ_4K, SZ_1M) * 2)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    res = system.vcm_reserve(vcm, pieces * SZ_4K, Attr.RW | Attr.NONCACHED)
    with contextlib.ExitStack() as patches:
        if not batched:
            patches.enter_context(mock.patch.object(IommuMapper, "map_many", _map_each))
            patches.enter_context(mock.patch.object(IommuMapper, "map_pages", _map_pages_each))
        back = _timed(lambda: system.vcm_back(res, view))
        state = (system.memory.digest(), system.graph.snapshot())
        unback = _timed(lambda: system.vcm_unback(res))
    figures = {"back": back[0], "back cpu": back[1], "unback": unback[0], "unback cpu": unback[1]}
    return figures, state


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pieces", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    names = {True: "batched", False: "per piece"}
    best: dict[str, dict[str, float]] = {name: {} for name in names.values()}
    states = set()
    for _ in range(args.repeat):
        for batched, name in names.items():  # alternating, fresh system each time
            figures, state = one_round(args.pieces, batched)
            for what, seconds in figures.items():
                best[name][what] = min(best[name].get(what, seconds), seconds)
            states.add(state)
    print(f"{args.pieces} separate 4K pieces, fastest of {args.repeat} rounds (ms, wall / CPU)")
    for name, fig in best.items():
        print(
            f"{name:>10}: vcm_back {fig['back'] * 1e3:7.1f} / {fig['back cpu'] * 1e3:7.1f}"
            f"   vcm_unback {fig['unback'] * 1e3:7.1f} / {fig['unback cpu'] * 1e3:7.1f}"
        )
    ratio = best["per piece"]["back"] / best["batched"]["back"]
    print(f"batched speed-up (vcm_back, wall): {ratio:.1f}x")
    met = best["batched"]["back"] <= 0.05
    print(f"target vcm_back <= 50 ms (wall): {'met' if met else 'NOT met'}")
    print(f"same table bytes and graph: {'yes' if len(states) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
