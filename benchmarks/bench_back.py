"""``vcm_back`` of a buffer in 16,384 separate 4 KiB pieces: batched against per piece.

A device reservation is backed by a view whose pieces are scattered pages (neighbours
swapped, so no two continue each other physically), the case issue 12 measured at
1.3 s with one ``PageTable.map`` per piece (target: 50 ms).  The batched path (one
``PageTable.map_many`` for the backing's runs) and the per-piece path (the same
``vcm_back`` with the mapper's batched write replaced by one ``map`` per run, what it
did before) run alternately on fresh systems; each figure is the fastest of
``--repeat`` rounds, ``vcm_unback`` of the same backing too.  The two paths must
leave the same table bytes and graph.

Run: ``python benchmarks/bench_back.py [--pieces 16384] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Sequence
from unittest import mock

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.attrs import PageAttrs
from vcmm.core import Attr, PhysAttr
from vcmm.core.mappers import IommuMapper, PageRun


def _map_each(self: IommuMapper, runs: Sequence[tuple[PageAttrs, PageRun]]) -> None:
    for attrs, run in runs:
        self.map(run, attrs)


def one_round(pieces: int, batched: bool) -> tuple[float, float, object]:
    """Seconds of ``vcm_back`` and ``vcm_unback`` on a fresh system, and the state."""
    system = vcmm.System.default()
    carve = system.vcm_phys_alloc("contig", pieces * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(carve, windows=[((i ^ 1) * SZ_4K, SZ_4K) for i in range(pieces)])
    vcm = system.vcm_create(0x4000_0000, max(pieces * SZ_4K, SZ_1M) * 2)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    res = system.vcm_reserve(vcm, pieces * SZ_4K, Attr.RW | Attr.NONCACHED)
    patch = mock.patch.object(IommuMapper, "map_many", _map_each)
    with patch if not batched else contextlib.nullcontext():
        t0 = time.perf_counter()
        system.vcm_back(res, view)
        t1 = time.perf_counter()
        state = (system.memory.digest(), system.graph.snapshot())
        t2 = time.perf_counter()
        system.vcm_unback(res)
        t3 = time.perf_counter()
    return t1 - t0, t3 - t2, state


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pieces", type=int, default=16384)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    names = {True: "batched", False: "per piece"}
    back = dict.fromkeys(names.values(), float("inf"))
    unback = dict.fromkeys(names.values(), float("inf"))
    states = set()
    for _ in range(args.repeat):
        for batched, name in names.items():  # alternating, fresh system each time
            b, u, state = one_round(args.pieces, batched)
            back[name] = min(back[name], b)
            unback[name] = min(unback[name], u)
            states.add(state)
    print(f"vcm_back of {args.pieces} separate 4K pieces, fastest of {args.repeat} rounds")
    for name in names.values():
        print(f"{name:>10}: back {back[name] * 1e3:8.1f} ms   unback {unback[name] * 1e3:8.1f} ms")
    print(f"batched speed-up (back): {back['per piece'] / back['batched']:.1f}x")
    print(f"target 50 ms: {'met' if back['batched'] <= 0.05 else 'NOT met'}")
    print(f"same table bytes and graph: {'yes' if len(states) == 1 else 'NO'}")


if __name__ == "__main__":
    main()
