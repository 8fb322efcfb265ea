"""Batch versus per-access translation of a video frame stream.

A display or codec engine reads a 1080p NV12 frame (1920x1080 luma plus a half-height
interleaved chroma plane, about 3 MiB) in raster order as 64-byte bursts.  The frame is
mapped either with 4 KiB pages (scattered physical pages, two descriptor reads per walk)
or with 1 MiB sections (one read per walk), the contrast the seed draws between 4K pages
and 1M blocks for streamed multimedia.  The same three-frame trace runs through two
fresh 64-entry LRU TLBs, once with ``translate_batch`` and once with a Python loop over
``translate``; the output addresses and every counter must agree.

Run: ``python benchmarks/bench_translate.py``
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loop_vs_batch import LoopBatchRow
from vcmm.attrs import RW_NC, Access, FaultKind, PageAttrs
from vcmm.hw.engine import measured_engine
from vcmm.hw.tlb import TLB, TLBConfig
from vcmm.hw.translate import Translation, Translator
from vcmm.hw.walk import Walk
from vcmm.sizes import SZ_1M, SZ_4K, align_up, format_size

WIDTH, HEIGHT = 1920, 1080
FRAME_BYTES = WIDTH * HEIGHT + WIDTH * HEIGHT // 2  # NV12: Y plane + interleaved CbCr
BURST = 64
FRAMES = 3
VA_BASE = 0x4000_0000
PA_BASE = 0x8000_0000
TLB_ENTRIES = 64
TARGET_RATIO = 20.0
REPEATS = 3


@dataclass
class FrameWalker:
    """Pretend page tables mapping the frame buffer with one page size.

    Reads per walk follow the ARMv7 short-descriptor format: a 1 MiB section is found
    at the first level (1 read), a 4 KiB page needs the second level too (2 reads).
    """

    page_size: int
    pages: dict[int, int]
    attrs: PageAttrs = RW_NC
    calls: int = 0

    def __call__(self, va: int) -> Walk:
        self.calls += 1
        size = self.page_size
        reads = 1 if size >= SZ_1M else 2
        base = va - va % size
        pa_base = self.pages.get(base)
        if pa_base is None:
            return Walk(va, reads=1, level=1, fault=FaultKind.TRANSLATION)
        return Walk(va, reads, pa_base + (va - base), size, self.attrs, level=reads)


def frame_walker(page_size: int, seed: int) -> FrameWalker:
    """Map the frame buffer with ``page_size`` pages onto shuffled physical pages."""
    count = align_up(FRAME_BYTES, page_size) // page_size
    rng = np.random.default_rng(seed)
    physical = rng.permutation(count * 4)[:count]  # scattered, as a page allocator gives
    pages = {VA_BASE + k * page_size: PA_BASE + int(p) * page_size for k, p in enumerate(physical)}
    return FrameWalker(page_size, pages)


def raster_trace() -> npt.NDArray[np.uint64]:
    """Addresses of the 64-byte bursts of ``FRAMES`` raster scans of the frame."""
    one_frame = np.arange(0, FRAME_BYTES, BURST, dtype=np.uint64) + np.uint64(VA_BASE)
    return np.tile(one_frame, FRAMES)


@dataclass
class Pass:
    """One timed pass over the trace with a fresh TLB and walker."""

    seconds: float
    pas: npt.NDArray[np.uint64]
    tlb: TLB
    walker: FrameWalker


def fresh(page_size: int) -> tuple[TLB, FrameWalker, Translator]:
    tlb = TLB(TLBConfig(entries=TLB_ENTRIES, ways=TLB_ENTRIES, replacement="lru"))
    walker = frame_walker(page_size, seed=1)
    return tlb, walker, Translator(tlb, 0, walker)


def loop_pass(page_size: int, trace: npt.NDArray[np.uint64]) -> Pass:
    tlb, walker, translator = fresh(page_size)
    t0 = time.perf_counter()
    out: list[int] = []
    for va in trace.tolist():
        result = translator.translate(va, Access.READ)
        if not isinstance(result, Translation):
            raise SystemExit(f"unexpected fault in the per-access loop: {result}")
        out.append(result.pa)
    pas = np.asarray(out, dtype=np.uint64)
    return Pass(time.perf_counter() - t0, pas, tlb, walker)


def batch_pass(page_size: int, trace: npt.NDArray[np.uint64]) -> Pass:
    tlb, walker, translator = fresh(page_size)
    t0 = time.perf_counter()
    batch = translator.translate_batch(trace, Access.READ)
    seconds = time.perf_counter() - t0
    if batch.fault is not None:
        raise SystemExit(f"unexpected fault in the batch: {batch.fault}")
    return Pass(seconds, batch.pas, tlb, walker)


def run(page_size: int, trace: npt.NDArray[np.uint64]) -> LoopBatchRow:
    """Best of ``REPEATS`` timings of each path; results compared on every repeat."""
    loops = [loop_pass(page_size, trace) for _ in range(REPEATS)]
    batches = [batch_pass(page_size, trace) for _ in range(REPEATS)]
    identical = all(
        np.array_equal(b.pas, lp.pas)
        and b.tlb.snapshot() == lp.tlb.snapshot()
        and b.walker.calls == lp.walker.calls
        for b, lp in zip(batches, loops, strict=True)
    )
    stats = batches[0].tlb.stats
    return LoopBatchRow(
        label=format_size(page_size),
        accesses=len(trace),
        misses=stats.misses,
        walk_reads=stats.walk_reads,
        loop_s=min(p.seconds for p in loops),
        batch_s=min(p.seconds for p in batches),
        identical=identical,
    )


def main() -> int:
    trace = raster_trace()
    print(
        f"1080p NV12 frame ({FRAME_BYTES} bytes, {format_size(FRAME_BYTES)}), "
        f"{FRAMES} frames of {BURST}-byte raster bursts = {len(trace)} accesses; "
        f"fully associative LRU TLB, {TLB_ENTRIES} entries; best of {REPEATS} runs"
    )
    rows = [run(SZ_4K, trace), run(SZ_1M, trace)]
    header = (
        f"{'mapping':>8} {'accesses':>9} {'misses':>7} {'walk rd':>8} "
        f"{'loop acc/s':>12} {'batch acc/s':>13} {'loop s':>8} {'batch s':>8} "
        f"{'ratio':>9} {'counters':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.label:>8} {r.accesses:>9} {r.misses:>7} {r.walk_reads:>8} "
            f"{r.accesses / r.loop_s:>12,.0f} {r.accesses / r.batch_s:>13,.0f} "
            f"{r.loop_s:>8.3f} {r.batch_s:>8.4f} {r.ratio:>8.1f}x "
            f"{'identical' if r.identical else 'DIFFER':>9}"
        )
    ok = all(r.identical for r in rows)
    fast = all(r.ratio >= TARGET_RATIO for r in rows)
    print(f"pas, TLB contents and counters identical on every run: {'yes' if ok else 'NO'}")
    print(f"batch/loop ratio >= {TARGET_RATIO:.0f}x for every mapping: {'yes' if fast else 'NO'}")
    assert ok, "batch and per-access translation disagree"
    return 0 if fast else 1


if __name__ == "__main__":
    with measured_engine():
        status = main()
    sys.exit(status)
