"""The compiled engine against the Python reference: same operations, same everything.

Each property builds two identical machines, drives one with ``VCMM_ENGINE=python``
(the reference paths) and one with the compiled engine, with the same random
operations, and requires identical output addresses, faults and errors, bytes moved,
TLB contents and replacement state, every counter, and memory traffic.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcmm.attrs import RO_WB, RW_WB, Access, FaultKind, PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.bus import Interconnect, SmmuDevice
from vcmm.hw.cache import CacheConfig
from vcmm.hw.cpu import KERNEL_NC, KERNEL_WB, VMALLOC_AREA, Cpu
from vcmm.hw.engine import numba_available, use_engine
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K
from vcmm.hw.smmu import Smmu
from vcmm.hw.stream import BatchWalker, StreamRunner, walks_from
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLB, TLBConfig, TLBEntry
from vcmm.hw.translate import Translator
from vcmm.hw.walk import Walk, WalkArrays
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_16M, SZ_64K, SZ_64M, SZ_256M

pytestmark = pytest.mark.skipif(not numba_available(), reason="numba is not installed")

FAST = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def test_compiled_victim_choice_draws_what_cpython_randrange_draws() -> None:
    """The random policy's victims: CPython's MT19937 and ``_randbelow``, bit for bit."""
    from vcmm.hw.kernels.mt19937 import randbelow

    for seed in (0, 1, 12345):
        rng = random.Random(seed)
        _, words, _ = rng.getstate()
        mt = np.array(words[:624], dtype=np.uint64)
        pos = np.array([words[624]], dtype=np.int64)
        bounds = [1, 2, 3, 4, 7, 8, 16, 64, 100, 1000] * 80  # > 624 draws: the state twists
        assert [randbelow(mt, pos, n) for n in bounds] == [rng.randrange(n) for n in bounds]


# -- a TLB and a walker over a random page map ------------------------------------------


@dataclass
class MapWalker(BatchWalker):
    """A page map of mixed sizes (4K, 64K, 1M), some pages read-only, holes fault.

    Counts the descriptor reads of every walk made one at a time and every read
    charged for walks made ahead, so both engines can be held to the same traffic."""

    leaves: dict[int, tuple[int, int, PageAttrs]]  # base -> (size, pa, attrs)
    reads: int = 0
    calls: int = 0
    granule: int = SZ_4K
    sizes: tuple[int, ...] = (SZ_1M, SZ_64K, SZ_4K)
    log: list[int] = field(default_factory=list)

    def find(self, va: int) -> Walk:
        for size in self.sizes:
            base = va - va % size
            leaf = self.leaves.get(base)
            if leaf is not None and leaf[0] == size:
                reads = 1 if size == SZ_1M else 2
                return Walk(va, reads, leaf[1] + va - base, size, leaf[2], level=reads)
        return Walk(va, 1, level=1, fault=FaultKind.TRANSLATION)

    def __call__(self, va: int) -> Walk:
        walk = self.find(va)
        self.calls += 1
        self.reads += walk.reads
        return walk

    def walk_many(self, vas: np.ndarray) -> WalkArrays:
        return walks_from(self.find, vas)

    def charge(self, reads: int) -> None:
        self.reads += reads


def page_map(data: st.DataObject) -> dict[int, tuple[int, int, PageAttrs]]:
    leaves: dict[int, tuple[int, int, PageAttrs]] = {}
    for mb in range(4):  # 4 MiB of input space, each MiB one way or another
        kind = data.draw(st.sampled_from(["1M", "64K", "4K", "hole"]))
        base = mb * SZ_1M
        attrs = data.draw(st.sampled_from([RW_WB, RW_WB, RO_WB]))
        if kind == "1M":
            leaves[base] = (SZ_1M, 0x8000_0000 + data.draw(st.integers(0, 63)) * SZ_1M, attrs)
        elif kind != "hole":
            size = SZ_64K if kind == "64K" else SZ_4K
            for off in range(0, SZ_1M, size):
                if data.draw(st.integers(0, 9)):
                    pa = 0x9000_0000 + data.draw(st.integers(0, 4095)) * size
                    leaves[base + off] = (size, pa, attrs)
    return leaves


def trace(data: st.DataObject) -> np.ndarray:
    n = data.draw(st.integers(1, 300))
    shape = data.draw(st.sampled_from(["random", "runs", "stride", "far", "scan"]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    if shape == "random":
        vas = rng.integers(0, 4 * SZ_1M, n)
    elif shape == "scan":  # many accesses per page of a small range: every page is walked
        pages = max(1, n // 8)
        start = int(rng.integers(0, 4 * SZ_1M // SZ_4K - pages)) * SZ_4K
        vas = start + rng.integers(0, pages * SZ_4K, n)
    elif shape == "runs":
        vas = np.cumsum(rng.integers(0, 3 * SZ_4K, n)) % (4 * SZ_1M)
    elif shape == "stride":
        vas = (np.arange(n) * 65 * SZ_4K + int(rng.integers(0, SZ_4K))) % (4 * SZ_1M)
    else:  # mostly mapped, the last access 1 TiB away: the kernel's sparse plan
        vas = rng.integers(0, 4 * SZ_1M, n)
        vas[-1] += 1 << 40
    return vas.astype(np.uint64)


@FAST
@given(st.data())
def test_translate_batch_streams_agree(data: st.DataObject) -> None:
    entries = data.draw(st.sampled_from([4, 8, 12, 16, 48, 64]))  # 12, 48: 3 or 6 sets
    ways = data.draw(st.sampled_from([w for w in (1, 2, 4, 16, entries) if entries % w == 0]))
    config = TLBConfig(entries, ways, data.draw(st.sampled_from(["lru", "fifo", "random"])), 7)
    leaves = page_map(data)
    vas = trace(data)
    access = data.draw(st.sampled_from([Access.READ, Access.WRITE]))
    honour_global = data.draw(st.booleans())
    seed = data.draw(st.integers(0, 2**31))
    outcomes = []
    for engine in ("python", "numba"):
        tlb = TLB(config)
        rng_data = random.Random(seed)  # entries of other tags, global and stale ones
        for _ in range(rng_data.randint(0, 12)):
            size = rng_data.choice([SZ_4K, SZ_64K, SZ_1M])
            base = rng_data.randrange(4 * SZ_1M // size) * size
            attrs = rng_data.choice([RW_WB, RO_WB])
            tlb.insert(
                TLBEntry(rng_data.choice([0, 1, 2]), base, size, 0xA000_0000 + base, attrs,
                         global_=rng_data.random() < 0.3)
            )  # fmt: skip
        walker = MapWalker(dict(leaves))
        translator = Translator(tlb, 0, walker, honour_global=honour_global)
        with use_engine(engine):
            result = translator.translate_batch(vas, access)
        outcomes.append(
            (result.pas.tolist(), result.done, result.fault, tlb.snapshot(), walker.reads)
        )
    assert outcomes[0] == outcomes[1]


@FAST
@given(st.data())
def test_scans_of_small_pages_agree(data: st.DataObject) -> None:
    """Streams dense in a small range (a display scan) plan a walk of every granule of
    the range, skipped ones included: over 4K pages each mapped elsewhere (some not at
    all, some read-only) every page must still translate as the reference does."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    leaves = {
        va: (SZ_4K, 0x9000_0000 + int(rng.integers(0, 4096)) * SZ_4K, RO_WB if ro else RW_WB)
        for va, ro in zip(
            range(0, SZ_1M, SZ_4K), rng.integers(0, 8, SZ_1M // SZ_4K) == 0, strict=True
        )
        if rng.integers(0, 16)
    }
    n = data.draw(st.integers(16, 2000))
    pages = data.draw(st.integers(1, min(SZ_1M // SZ_4K, max(1, n // 4))))
    first = data.draw(st.integers(0, SZ_1M // SZ_4K - pages))
    step = data.draw(st.sampled_from([64, 1920, 4096 + 64]))
    vas = (first * SZ_4K + (np.arange(n) * step) % (pages * SZ_4K)).astype(np.uint64)
    config = TLBConfig(16, data.draw(st.sampled_from([1, 4, 16])), "lru")
    access = data.draw(st.sampled_from([Access.READ, Access.WRITE]))
    outcomes = []
    for engine in ("python", "numba"):
        tlb = TLB(config)
        walker = MapWalker(dict(leaves))
        with use_engine(engine):
            result = Translator(tlb, 0, walker).translate_batch(vas, access)
        outcomes.append(
            (result.pas.tolist(), result.done, result.fault, tlb.snapshot(), walker.reads)
        )
    assert outcomes[0] == outcomes[1]


# -- a real SMMU: tables in memory, DMA copies, reads, writes and batches --------------

RAM = 0x8000_0000


def build(fmt: object, config: TLBConfig) -> tuple[PhysicalMemory, Smmu, SmmuDevice]:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu("smmu0", memory, tables, fmt=fmt, context_banks=2, tlb=config)  # type: ignore[arg-type]
    ctx = smmu.context_init("ctx0")
    ctx.bind(smmu)
    ctx.activate()
    memory.write(RAM + SZ_4M, np.arange(SZ_1M, dtype=np.uint32).view(np.uint8))
    return memory, smmu, SmmuDevice("dma", ctx, Interconnect(memory))


def smmu_ops(data: st.DataObject, fmt: object) -> tuple[list[tuple], list[tuple]]:
    sizes = [SZ_4K, SZ_64K, SZ_1M] if fmt is ARMV7S else [SZ_4K, 2 * SZ_1M]
    maps = []
    for _ in range(data.draw(st.integers(1, 6))):
        size = data.draw(st.sampled_from(sizes))
        count = data.draw(st.integers(1, 4 if size > SZ_64K else 24))
        va = data.draw(st.integers(0, 16 * SZ_1M // size - count)) * size
        pa = RAM + SZ_4M + data.draw(st.integers(0, 8 * SZ_1M // size - 1)) * size
        attrs = data.draw(st.sampled_from([RW_WB, RW_WB, RO_WB]))
        maps.append((va, pa, size, count, attrs))
    ops = []
    for _ in range(data.draw(st.integers(1, 8))):
        kind = data.draw(st.sampled_from(["copy", "read", "write", "batch", "flush"]))
        va = data.draw(st.integers(0, 16 * SZ_1M - 1))
        n = data.draw(st.integers(0, 3 * SZ_64K))
        ops.append((kind, va, data.draw(st.integers(0, 16 * SZ_1M - 1)), n))
    return maps, ops


def run_smmu(fmt: object, config: TLBConfig, maps: list[tuple], ops: list[tuple]) -> list[object]:
    memory, smmu, dev = build(fmt, config)
    ctx = dev.ctx
    ctx.update_start()
    for va, pa, size, count, attrs in maps:
        # ``count`` pages of ``size`` in one call (the same leaves, a fraction of the
        # setup time); where they overlap earlier maps the call changes nothing and
        # the pages are mapped one by one, the overlapping ones skipped alike by both
        # engines.  The setup is not what the test is about: the transfers are.
        try:
            ctx.map_range(va, pa, count * size, attrs, page_size=size)
        except VcmmError:
            for k in range(count):
                with contextlib.suppress(VcmmError):
                    ctx.map(pa + k * size, va + k * size, size, attrs)
    ctx.update_done()
    seen: list[object] = []
    for kind, va, other, n in ops:
        try:
            if kind == "copy":
                dev.copy(va, other, n)
            elif kind == "read":
                seen.append(dev.read(va, n))
            elif kind == "write":
                dev.write(va, np.full(n, 0x5A, dtype=np.uint8))
            elif kind == "batch":
                addrs = (
                    np.arange(n // 64 + 1, dtype=np.uint64) * np.uint64(4096 + 64)
                ) + np.uint64(va - va % 64)
                dev.access_batch(addrs % np.uint64(16 * SZ_1M), Access.READ)
            else:
                ctx.invalidate_tlb()
        except VcmmError as exc:
            seen.append((type(exc).__name__, str(exc)))
    seen += [
        memory.digest(),
        memory.bytes_read,
        smmu.tlb.snapshot(),
        dev.counters(),
        ctx.stats(),
        ctx.fault_status,
    ]
    return seen


@FAST
@given(st.data())
def test_smmu_transactions_agree(data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from([ARMV7S, ARMV7_LPAE, VMSAV8_4K]))
    config = TLBConfig(16, data.draw(st.sampled_from([1, 4, 16])), data.draw(
        st.sampled_from(["lru", "fifo", "random"])
    ))  # fmt: skip
    maps, ops = smmu_ops(data, fmt)
    results = []
    for engine in ("python", "numba"):
        with use_engine(engine):
            results.append(run_smmu(fmt, config, maps, ops))
    assert results[0] == results[1]


# -- the CPU MMU: loads and stores through kernel and user tables -----------------------

USER_RW = PageAttrs(user=True)
USER_RO = PageAttrs(user=True, write=False)


def build_cpu(config: TLBConfig) -> tuple[PhysicalMemory, Cpu]:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_64M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    cpu = Cpu(memory, tables, cache=CacheConfig(8 * 1024, 4, 64), tlb=config)
    memory.write(RAM + SZ_4M, np.arange(SZ_4M // 4, dtype=np.uint32).view(np.uint8))
    return memory, cpu


def cpu_ops(data: st.DataObject) -> tuple[list[tuple], list[tuple]]:
    """Kernel mappings in vmalloc (4K pieces, cacheable or not) and user mappings of
    ASID 1 (some read-only), then loads and stores long enough to leave Python for
    the kernel (over 128 pages), some running into holes."""
    maps = []
    for _ in range(data.draw(st.integers(1, 5))):
        space = data.draw(st.sampled_from(["kernel", "user"]))
        pages = data.draw(st.integers(1, 300))
        at = data.draw(st.integers(0, 1024 - pages)) * SZ_4K
        pa = RAM + SZ_4M + data.draw(st.integers(0, 2048 - pages)) * SZ_4K
        if space == "kernel":
            attrs = data.draw(st.sampled_from([KERNEL_WB, KERNEL_WB, KERNEL_NC]))
        else:
            attrs = data.draw(st.sampled_from([USER_RW, USER_RW, USER_RO]))
        maps.append((space, at, pa, pages * SZ_4K, attrs))
    ops = []
    for _ in range(data.draw(st.integers(1, 6))):
        kind = data.draw(st.sampled_from(["read", "read", "write", "flush"]))
        space = data.draw(st.sampled_from(["kernel", "user"]))
        at = data.draw(st.integers(0, 4 * SZ_1M - 1))
        ops.append((kind, space, at, data.draw(st.integers(0, 200 * SZ_4K))))
    return maps, ops


def run_cpu(config: TLBConfig, maps: list[tuple], ops: list[tuple]) -> list[object]:
    memory, cpu = build_cpu(config)
    cpu.create_address_space(1)
    for space, at, pa, size, attrs in maps:
        with contextlib.suppress(VcmmError):  # overlaps: both engines skip it alike
            if space == "kernel":
                cpu.map_kernel(VMALLOC_AREA.start + at, pa, size, attrs)
            else:
                cpu.map_user(1, at, pa, size, attrs)
    cpu.switch_to(1)
    seen: list[object] = []
    for kind, space, at, n in ops:
        va = VMALLOC_AREA.start + at if space == "kernel" else at
        user = space == "user"
        try:
            if kind == "read":
                seen.append(cpu.read(va, n, user=user))
            elif kind == "write":
                cpu.write(va, np.full(n, 0xC3, dtype=np.uint8), user=user)
            else:
                cpu.flush_tlb_all()
        except VcmmError as exc:
            seen.append((type(exc).__name__, str(exc)))
    seen += [memory.digest(), memory.bytes_read, cpu.tlb.snapshot(), cpu.cache.counters]
    return seen


@FAST
@given(st.data())
def test_cpu_accesses_agree(data: st.DataObject) -> None:
    config = TLBConfig(64, data.draw(st.sampled_from([4, 64])), "lru")
    maps, ops = cpu_ops(data)
    results = []
    for engine in ("python", "numba"):
        with use_engine(engine):
            results.append(run_cpu(config, maps, ops))
    assert results[0] == results[1]


def test_a_long_cpu_access_runs_on_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 MiB load through 4K kernel mappings leaves Python for the TLB kernel once,
    and the TLB then holds what the reference leaves: the last 64 pages' entries."""
    spans: list[int] = []
    original = StreamRunner.span

    def counted(self: StreamRunner, va: int, end: int) -> tuple:
        spans.append(end - va)
        return original(self, va, end)

    monkeypatch.setattr(StreamRunner, "span", counted)
    snapshots = []
    for engine in ("python", "numba"):
        _, cpu = build_cpu(TLBConfig(64, 64, "lru"))
        for k in range(512):  # one call per page: 4K leaves, not a 2 MiB block
            cpu.map_kernel(
                VMALLOC_AREA.start + k * SZ_4K, RAM + SZ_4M + k * SZ_4K, SZ_4K, KERNEL_WB
            )
        with use_engine(engine):
            data = cpu.read(VMALLOC_AREA.start, 2 * SZ_1M)
        assert data[:8] == bytes(np.arange(2, dtype=np.uint32).view(np.uint8))
        snapshots.append(cpu.tlb.snapshot())
        assert cpu.tlb.stats.misses == 512
    assert spans == [2 * SZ_1M - SZ_4K]  # the first page in Python, the rest compiled
    assert snapshots[0] == snapshots[1]


def long_smmu_ops(data: st.DataObject, fmt: object) -> tuple[list[tuple], list[tuple]]:
    """Mappings of every leaf size over 64 MiB of input space (some read-only, holes
    between), then DMA transfers long enough for the compiled span (from 256 KiB to
    several MiB): the coarse-to-fine plan meets every mix of sizes and faults."""
    sizes = [SZ_4K, SZ_64K, SZ_1M, 16 * SZ_1M] if fmt is ARMV7S else [SZ_4K, 2 * SZ_1M]
    maps = []
    for _ in range(data.draw(st.integers(1, 8))):
        size = data.draw(st.sampled_from(sizes))
        most = {SZ_4K: 1536, SZ_64K: 160, SZ_1M: 24}.get(size, 2)
        count = data.draw(st.integers(1, most))
        va = data.draw(st.integers(0, 64 * SZ_1M // size - count)) * size
        pa = RAM + SZ_16M + data.draw(st.integers(0, 64 * SZ_1M // size - count)) * size
        attrs = data.draw(st.sampled_from([RW_WB, RW_WB, RO_WB]))
        maps.append((va, pa, size, count, attrs))
    ops = []
    for _ in range(data.draw(st.integers(1, 5))):
        kind = data.draw(st.sampled_from(["copy", "copy", "read", "write", "flush"]))
        n = data.draw(st.integers(256 * 1024, 6 * SZ_1M))
        starts = [va for va, *_ in maps if va + n <= 64 * SZ_1M]  # mostly where mapped
        va = data.draw(st.sampled_from(starts) if starts else st.just(0))
        va += data.draw(st.integers(0, min(SZ_64K, 64 * SZ_1M - n - va)))
        ops.append((kind, va, data.draw(st.sampled_from(starts) if starts else st.just(0)), n))
    return maps, ops


@FAST
@given(st.data())
def test_long_smmu_transfers_agree(data: st.DataObject) -> None:
    fmt = data.draw(st.sampled_from([ARMV7S, ARMV7S, ARMV7_LPAE]))
    config = TLBConfig(64, data.draw(st.sampled_from([4, 64])), data.draw(
        st.sampled_from(["lru", "fifo", "random"])
    ))  # fmt: skip
    maps, ops = long_smmu_ops(data, fmt)
    results = []
    for engine in ("python", "numba"):
        with use_engine(engine):
            results.append(run_smmu(fmt, config, maps, ops))
    assert results[0] == results[1]


@pytest.mark.parametrize("policy", ["lru", "fifo", "random"])
@pytest.mark.parametrize("entries, ways", [(64, 4), (64, 64), (48, 4)])  # 48: 12 sets
def test_spans_over_entries_held_before_agree(policy: str, entries: int, ways: int) -> None:
    """Long transfers that start where the TLB already holds entries (a short read just
    before: the first steps hit), and transfers through 64K pages that evict only
    some of each set's entries (the oldest must go): the compiled engine's shortcut
    for spans that only miss must not take these."""
    maps = [
        (0, RAM + SZ_16M, SZ_4K, 2048, RW_WB),  # 8 MiB of 4K pages
        (16 * SZ_1M, RAM + 32 * SZ_1M, SZ_64K, 128, RW_WB),  # 8 MiB of 64K pages
    ]
    ops = [
        ("read", 0, 0, 3 * SZ_4K),  # three entries at the start of the next copy
        ("copy", 0, 4 * SZ_1M, 2 * SZ_1M),
        ("read", 2 * SZ_1M - SZ_4K, 0, SZ_1M),  # the copy's last entry starts it
        ("read", 16 * SZ_1M, 0, 2 * SZ_1M + SZ_64K),  # 33 pages: two fills a set, last
    ]
    config = TLBConfig(entries, ways, policy)
    with use_engine("python"):
        expected = run_smmu(ARMV7S, config, maps, ops)
    with use_engine("numba"):
        assert run_smmu(ARMV7S, config, maps, ops) == expected
