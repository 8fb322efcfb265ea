"""DMA copy bandwidth through an SMMU context, per page size, against a plain numpy copy.

An SMMU device copies a 64 MiB buffer to another 64 MiB buffer inside its own address
space (``SmmuDevice.copy``): both sides are translated page by page through the
context (TLB, table walk in simulated memory) and the data moves run by run with numpy
slices.  The buffers are mapped with 4K, 64K, 1M and 16M pages in turn; each bandwidth
is reported as a fraction of a plain numpy copy of the same 64 MiB, the two copies
alternating round by round (each figure the fastest of its rounds; the median and the
range of the per-round ratios are printed too), so the figure says what the translation
path costs, not how fast (or how busy) this machine is.  Targets
(issue 12): at least 0.5x through 4K pages, 0.7x through 64K, 0.8x through 1M and 16M.
``VCMM_ENGINE`` picks the engine (the compiled one translates each side as one span).

The buffers are physically contiguous, so after translation the runs merge and the
data moves in one slice per side whatever the page size: what falls with the page size
is the cost of one translation (TLB miss and table walk) per page.  The TLB is
invalidated before each run, as for a buffer streamed once.

Run: ``python benchmarks/bench_dma_copy.py [--size-mib 64] [--repeat 9]``
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from vcmm.attrs import RW_WB
from vcmm.hw.bus import Interconnect, SmmuDevice
from vcmm.hw.engine import current_engine, measured_engine
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_16M, SZ_64K, SZ_256M, format_size

RAM_BASE = 0x8000_0000
SRC_VA = 0x1000_0000
DST_VA = 0x5000_0000


def build(size: int) -> tuple[PhysicalMemory, Smmu, SmmuDevice, int, int]:
    """A 512 MiB RAM bank, a 4 MiB table window and one SMMU device with a 64-entry TLB."""
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM_BASE, 2 * SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM_BASE, SZ_4M))
    smmu = Smmu("smmu0", memory, tables, context_banks=2, tlb=TLBConfig(64, 4))
    ctx = smmu.context_init("dma")
    ctx.bind(smmu)
    ctx.activate()
    device = SmmuDevice("dma-engine", ctx, Interconnect(memory))
    src_pa = RAM_BASE + SZ_16M * 2
    dst_pa = src_pa + -(-size // SZ_16M) * SZ_16M
    rng = np.random.default_rng(0)
    memory.write(src_pa, rng.integers(0, 256, size, dtype=np.uint8))
    return memory, smmu, device, src_pa, dst_pa


def map_buffers(device: SmmuDevice, src_pa: int, dst_pa: int, size: int, page: int) -> None:
    """Map both buffers with pages of exactly ``page`` bytes, replacing earlier mappings."""
    ctx = device.ctx
    ctx.update_start()
    if ctx.low_table is not None and next(ctx.low_table.mappings(), None) is not None:
        ctx.unmap(SRC_VA, size)
        ctx.unmap(DST_VA, size)
    ctx.map_range(SRC_VA, src_pa, size, RW_WB, page_size=page)
    ctx.map_range(DST_VA, dst_pa, size, RW_WB, page_size=page)
    ctx.update_done()


def interleaved(repeat: int, *fns: Callable[[], object]) -> list[list[float]]:
    """Seconds of each of ``repeat`` rounds of each function, the functions alternating
    within each round (and their order reversed every other round), so that a busy
    machine slows them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeat):
        order = list(enumerate(fns))
        for k, fn in order if r % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    size = args.size_mib * SZ_1M
    memory, smmu, device, src_pa, dst_pa = build(size)

    plain_src = memory.read_array(src_pa, size)
    plain_dst = np.zeros(size, dtype=np.uint8)
    np.copyto(plain_dst, plain_src)  # first touches of the pages out of the rounds
    print(
        f"DMA copy of {format_size(size)} through an SMMU context ({smmu.tlb.config.entries}"
        f"-entry TLB), engine {current_engine()}, {args.repeat} interleaved rounds"
    )
    print(
        "ratio: fastest numpy copy / fastest vcmm copy (the target applies to it); "
        "per round: numpy / vcmm of that round"
    )
    print(
        f"{'page':>5} {'numpy GiB/s':>11} {'vcmm GiB/s':>10} {'ratio':>6} {'target':>6} "
        f"{'round median':>12} {'round min-max':>13} {'walks':>7}"
    )
    met = True
    for page, target in ((SZ_4K, 0.5), (SZ_64K, 0.7), (SZ_1M, 0.8), (SZ_16M, 0.8)):
        map_buffers(device, src_pa, dst_pa, size, page)
        memory.fill(dst_pa, size, 0)

        def run() -> None:
            device.ctx.invalidate_tlb()
            device.copy(SRC_VA, DST_VA, size)

        run()  # the first call loads the compiled kernels
        smmu.tlb.reset_stats()
        numpy_t, vcmm_t = interleaved(args.repeat, lambda: np.copyto(plain_dst, plain_src), run)
        if memory.read(dst_pa + size - 4096, 4096) != memory.read(src_pa + size - 4096, 4096):
            raise SystemExit(f"copy with {format_size(page)} pages produced wrong data")
        numpy_s, vcmm_s = min(numpy_t), min(vcmm_t)
        ratio = numpy_s / vcmm_s
        rounds = [n / v for n, v in zip(numpy_t, vcmm_t, strict=True)]
        met = met and ratio >= target
        spread = f"{min(rounds):.2f}-{max(rounds):.2f}"
        print(
            f"{format_size(page):>5} {size / numpy_s / 2**30:11.2f} {size / vcmm_s / 2**30:10.2f} "
            f"{ratio:6.2f} {target:6.1f} {statistics.median(rounds):12.2f} {spread:>13} "
            f"{smmu.tlb.stats.walks // args.repeat:7d}"
        )
    print(f"targets: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    with measured_engine():
        main()
