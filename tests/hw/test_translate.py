"""Tests of the translation engine: per-access path, batch path, faults and counters.

The page tables are faked by :class:`FakeWalker`, a dict of mappings that pretends to
read descriptors the way the ARMv7 short-descriptor format does: a 1 MiB section or
16 MiB supersection is found at level 1 (one read), a 64 KiB or 4 KiB page at level 2
(two reads).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import RO_WB, RW_WB, Access, FaultKind, PageAttrs
from vcmm.errors import InvalidArgumentError, NotMappedError, VcmmError
from vcmm.hw.tlb import TLB, TLBConfig, TLBEntry
from vcmm.hw.translate import BatchResult, Translation, TranslationFault, Translator
from vcmm.hw.walk import Walk
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K

LEVEL1_SIZES = (SZ_16M, SZ_1M)
LEVEL2_SIZES = (SZ_64K, SZ_4K)


@dataclass
class FakeWalker:
    """Page tables as a dict ``(va_base, size) -> (pa_base, attrs)``."""

    pages: dict[tuple[int, int], tuple[int, PageAttrs]] = field(default_factory=dict)
    calls: int = 0
    reads: int = 0

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs = RW_WB) -> None:
        assert va % size == 0 and pa % size == 0
        self.pages[(va, size)] = (pa, attrs)

    def __call__(self, va: int) -> Walk:
        self.calls += 1
        for size in LEVEL1_SIZES:
            found = self.pages.get((va - va % size, size))
            if found is not None:
                return self._leaf(va, size, found, level=1)
        section = va - va % SZ_1M
        has_table = any(
            size in LEVEL2_SIZES and section <= base < section + SZ_1M for base, size in self.pages
        )
        if not has_table:
            self.reads += 1
            return Walk(va, reads=1, level=1, fault=FaultKind.TRANSLATION)
        for size in LEVEL2_SIZES:
            found = self.pages.get((va - va % size, size))
            if found is not None:
                return self._leaf(va, size, found, level=2)
        self.reads += 2
        return Walk(va, reads=2, level=2, fault=FaultKind.TRANSLATION)

    def _leaf(self, va: int, size: int, found: tuple[int, PageAttrs], level: int) -> Walk:
        self.reads += level
        pa_base, attrs = found
        return Walk(va, level, pa_base + va % size, size, attrs, level=level)


def setup(
    entries: int = 64, ways: int = 64, policy: str = "lru", tag: Hashable = 0, **kw: bool
) -> tuple[TLB, FakeWalker, Translator]:
    tlb = TLB(TLBConfig(entries, ways, policy))
    walker = FakeWalker()
    return tlb, walker, Translator(tlb, tag, walker, **kw)


# -- one access ---------------------------------------------------------------------------


def test_miss_walks_then_hit_does_not() -> None:
    tlb, walker, t = setup()
    walker.map(0x10_0000, 0x8000_0000, SZ_1M)
    walker.map(0x20_3000, 0x9000_5000, SZ_4K)
    first = t.translate(0x12_3456, Access.READ)
    assert first == Translation(0x12_3456, 0x8002_3456, SZ_1M, RW_WB, hit=False)
    second = t.translate(0x1F_FFFF, Access.WRITE)
    assert second == Translation(0x1F_FFFF, 0x800F_FFFF, SZ_1M, RW_WB, hit=True)
    page = t.translate(0x20_3FC0, Access.READ)
    assert isinstance(page, Translation) and page.pa == 0x9000_5FC0 and not page.hit
    assert walker.calls == 2
    s = tlb.stats
    assert (s.lookups, s.hits, s.misses, s.walks, s.walk_reads) == (3, 1, 2, 2, 1 + 2)
    assert t.stats == s


def test_walk_fault_is_reported_and_not_cached() -> None:
    tlb, walker, t = setup(tag="ctx3")
    walker.map(0x20_0000, 0x9000_0000, SZ_4K)
    hole_l1 = t.translate(0x50_0000, Access.READ)
    assert hole_l1 == TranslationFault(0x50_0000, Access.READ, FaultKind.TRANSLATION, 1, "ctx3")
    hole_l2 = t.translate(0x20_1000, Access.WRITE)
    assert hole_l2 == TranslationFault(0x20_1000, Access.WRITE, FaultKind.TRANSLATION, 2, "ctx3")
    assert len(tlb) == 0
    again = t.translate(0x50_0000, Access.READ)
    assert isinstance(again, TranslationFault)
    assert walker.calls == 3
    s = tlb.stats_for("ctx3")
    assert (s.lookups, s.hits, s.misses, s.walks, s.walk_reads) == (3, 0, 3, 3, 1 + 2 + 1)


def test_permission_faults_report_the_leaf_level_and_keep_the_entry() -> None:
    tlb, walker, t = setup()
    walker.map(0x10_0000, 0x8000_0000, SZ_1M, RO_WB)
    walker.map(0x20_0000, 0x9000_0000, SZ_4K, RO_WB)
    assert t.translate(0x10_0040, Access.WRITE) == TranslationFault(
        0x10_0040, Access.WRITE, FaultKind.PERMISSION, 1, 0
    )
    assert len(tlb) == 1  # the leaf was cached before the check, as hardware does
    read = t.translate(0x10_0080, Access.READ)
    assert isinstance(read, Translation) and read.hit
    exec_ = t.translate(0x10_0080, Access.EXEC)  # RO_WB is not executable
    assert isinstance(exec_, TranslationFault) and exec_.kind is FaultKind.PERMISSION
    page = t.translate(0x20_0000, Access.WRITE)
    assert isinstance(page, TranslationFault) and page.level == 2
    assert walker.calls == 2


def test_unprivileged_context_needs_user_mappings() -> None:
    tlb, walker, t = setup(privileged=False)
    walker.map(0x1000, 0x5000, SZ_4K, RW_WB)
    walker.map(0x2000, 0x6000, SZ_4K, RW_WB.with_(user=True))
    kernel_only = t.translate(0x1000, Access.READ)
    assert isinstance(kernel_only, TranslationFault) and kernel_only.kind is FaultKind.PERMISSION
    assert isinstance(t.translate(0x2000, Access.WRITE), Translation)
    kernel = Translator(tlb, 0, walker)  # same tag, privileged: the cached entry serves
    assert t.privileged is False and kernel.privileged is True
    assert t.translate(0x1000, Access.READ) != kernel.translate(0x1000, Access.READ)


def test_global_flag_only_when_honoured() -> None:
    tlb = TLB(TLBConfig(8, 8))
    walker = FakeWalker()
    walker.map(0xC000_0000, 0x8000_0000, SZ_1M, RW_WB)  # PageAttrs default: global
    smmu_ctx = Translator(tlb, 1, walker)
    smmu_ctx.translate(0xC000_0000, Access.READ)
    assert [e.global_ for e in tlb.entries()] == [False]
    other = Translator(tlb, 2, walker)
    assert other.translate(0xC000_0000, Access.READ).hit is False  # type: ignore[union-attr]

    tlb.invalidate_all()
    kernel = Translator(tlb, 1, walker, honour_global=True)
    kernel.translate(0xC000_0000, Access.READ)
    assert [e.global_ for e in tlb.entries()] == [True]
    process = Translator(tlb, 9, walker, honour_global=True)
    assert process.translate(0xC000_0040, Access.READ).hit is True  # type: ignore[union-attr]

    tlb.invalidate_all()
    walker.map(0x1000, 0x2000, SZ_4K, RW_WB.with_(global_=False))
    kernel.translate(0x1000, Access.READ)
    assert [e.global_ for e in tlb.entries()] == [False]


def test_contexts_sharing_a_tlb_keep_their_own_counters() -> None:
    tlb = TLB(TLBConfig(4, 4))
    walkers = [FakeWalker(), FakeWalker()]
    walkers[0].map(0x0, 0x10_0000, SZ_1M)
    walkers[1].map(0x0, 0x20_0000, SZ_4K)
    a, b = Translator(tlb, 0, walkers[0]), Translator(tlb, 1, walkers[1])
    assert a.translate(0x40, Access.READ).pa == 0x10_0040  # type: ignore[union-attr]
    assert b.translate(0x40, Access.READ).pa == 0x20_0040  # type: ignore[union-attr]
    assert a.translate(0x80, Access.READ).hit  # type: ignore[union-attr]
    assert a.stats.lookups == 2 and a.stats.hits == 1 and a.stats.walk_reads == 1
    assert b.stats.lookups == 1 and b.stats.misses == 1 and b.stats.walk_reads == 2
    assert tlb.stats.lookups == 3 and tlb.stats.walk_reads == 3


# -- stale translations ---------------------------------------------------------------------


def test_page_table_change_is_invisible_until_invalidated() -> None:
    tlb, walker, t = setup()
    walker.map(0x40_0000, 0x1000_0000, SZ_4K)
    assert t.translate(0x40_0010, Access.READ).pa == 0x1000_0010  # type: ignore[union-attr]
    walker.map(0x40_0000, 0x2000_0000, SZ_4K)  # remapped in the tables
    stale = t.translate(0x40_0010, Access.READ)
    assert isinstance(stale, Translation) and stale.pa == 0x1000_0010 and stale.hit
    batch = t.translate_batch(np.array([0x40_0020], dtype=np.uint64), Access.READ)
    assert batch.pas.tolist() == [0x1000_0020]
    assert tlb.invalidate_range(0x40_0000, SZ_4K) == 1
    fresh = t.translate(0x40_0010, Access.READ)
    assert isinstance(fresh, Translation) and fresh.pa == 0x2000_0010 and not fresh.hit

    del walker.pages[(0x40_0000, SZ_4K)]  # unmapped in the tables
    assert isinstance(t.translate(0x40_0000, Access.READ), Translation)
    tlb.invalidate_va(0, 0x40_0FFF)
    assert isinstance(t.translate(0x40_0000, Access.READ), TranslationFault)


def test_other_tags_invalidation_leaves_the_stale_entry() -> None:
    tlb, walker, t = setup(tag=5)
    walker.map(0x0, 0x1000_0000, SZ_64K)
    t.translate(0x0, Access.READ)
    walker.map(0x0, 0x3000_0000, SZ_64K)
    tlb.invalidate_tag(6)
    tlb.invalidate_range(0x0, SZ_64K, tag=6)
    assert t.translate(0xFFFF, Access.READ).pa == 0x1000_FFFF  # type: ignore[union-attr]
    tlb.invalidate_tag(5)
    assert t.translate(0xFFFF, Access.READ).pa == 0x3000_FFFF  # type: ignore[union-attr]


# -- exact counters of sweeps ----------------------------------------------------------------


def mapped_sweep(size: int, length: int, base: int = 0x1000_0000) -> FakeWalker:
    walker = FakeWalker()
    pages = math.ceil(length / size)
    for k in range(pages):
        walker.map(base + k * size, 0x8000_0000 + (pages - 1 - k) * size, size)
    return walker


@pytest.mark.parametrize(
    ("size", "batch"),
    [(SZ_4K, False), (SZ_64K, False), (SZ_1M, False)]
    + [(size, True) for size in (SZ_4K, SZ_64K, SZ_1M, SZ_16M)],
)
def test_linear_sweep_costs_one_walk_per_page(size: int, batch: bool) -> None:
    length = 3 * size + size // 2 + 64  # not a whole number of pages
    if not batch and size > SZ_64K:
        length = size + 4096  # keeps the per-access loop short
    walker = mapped_sweep(size, length)
    tlb = TLB(TLBConfig(64, 64))
    t = Translator(tlb, 0, walker)
    vas = np.arange(0x1000_0000, 0x1000_0000 + length, 64, dtype=np.uint64)
    if batch:
        result = t.translate_batch(vas, Access.READ)
        assert result.ok and result.done == len(vas)
    else:
        for va in vas.tolist():
            assert isinstance(t.translate(va, Access.READ), Translation)
    pages = math.ceil(length / size)
    reads_per_walk = 1 if size >= SZ_1M else 2
    s = tlb.stats
    assert s.lookups == len(vas) == math.ceil(length / 64)
    assert s.misses == s.walks == pages == walker.calls
    assert s.hits == len(vas) - pages
    assert s.walk_reads == pages * reads_per_walk
    assert s.evictions == 0


def test_batch_of_12_mib_in_1_mib_sections_takes_12_steps(
    translator_steps: Callable[[], int],
) -> None:
    walker = mapped_sweep(SZ_1M, 12 * SZ_1M)
    tlb = TLB(TLBConfig(64, 4))
    t = Translator(tlb, 0, walker)
    vas = np.arange(0x1000_0000, 0x1000_0000 + 12 * SZ_1M, 64, dtype=np.uint64)
    result = t.translate_batch(vas, Access.READ)
    assert translator_steps() == 12 and result.done == len(vas) == 12 * SZ_1M // 64
    assert tlb.stats.hits == len(vas) - 12
    expected = np.concatenate(
        [
            np.arange(0x8000_0000 + (11 - k) * SZ_1M, 0x8000_0000 + (12 - k) * SZ_1M, 64)
            for k in range(12)
        ]
    ).astype(np.uint64)
    assert np.array_equal(result.pas, expected)


# -- batch path ------------------------------------------------------------------------------


def test_batch_stops_at_the_first_fault() -> None:
    _, walker, t = setup()
    walker.map(0x0, 0x10_0000, SZ_4K)
    walker.map(0x1000, 0x30_0000, SZ_4K, RO_WB)
    vas = np.array([0x0, 0x40, 0x1000, 0x1040, 0x2000, 0x0], dtype=np.uint64)
    read = t.translate_batch(vas, Access.READ)
    assert read.done == 4 and read.fault is not None
    assert read.fault == TranslationFault(0x2000, Access.READ, FaultKind.TRANSLATION, 2, 0)
    assert read.pas.tolist() == [0x10_0000, 0x10_0040, 0x30_0000, 0x30_0040]
    assert read.pas.dtype == np.uint64 and not read.ok
    write = t.translate_batch(vas, Access.WRITE)
    assert write.done == 2 and write.fault is not None
    assert write.fault.kind is FaultKind.PERMISSION and write.fault.va == 0x1000
    empty = t.translate_batch(np.array([], dtype=np.uint64), Access.READ)
    assert empty == BatchResult(empty.pas, 0, None) and empty.pas.size == 0


def test_batch_accepts_signed_integer_arrays() -> None:
    _, walker, t = setup()
    walker.map(0x0, 0x10_0000, SZ_4K)
    result = t.translate_batch(np.array([0x10, 0x20], dtype=np.int32), Access.READ)
    assert result.pas.tolist() == [0x10_0010, 0x10_0020]


def test_batch_near_the_top_of_the_address_space() -> None:
    tlb, walker, t = setup()
    top = (1 << 64) - SZ_1M
    walker.map(top, 0x4000_0000, SZ_1M)
    # A stale smaller entry inside the section pre-empts part of it.
    tlb.insert(TLBEntry(0, top + 0x8000, SZ_4K, 0x7000_0000, RW_WB))
    vas = np.array([top, top + 0x7FC0, top + 0x8000, top + 0x9000, (1 << 64) - 64], np.uint64)
    result = t.translate_batch(vas, Access.READ)
    assert result.pas.tolist() == [
        0x4000_0000,
        0x4000_7FC0,
        0x7000_0000,
        0x4000_9000,
        0x4000_0000 + SZ_1M - 64,
    ]


@pytest.mark.parametrize("step", [64, -64])
def test_batch_respects_smaller_entries_inside_a_section(step: int) -> None:
    """Stale 4K entries inside a cached section win for their pages, on either side of
    where a run over the section started."""
    tlb, walker, t = setup()
    walker.map(0x10_0000, 0x8000_0000, SZ_1M)
    tlb.insert(TLBEntry(0, 0x10_1000, SZ_4K, 0x6000_0000, RW_WB))
    tlb.insert(TLBEntry(0, 0x10_5000, SZ_4K, 0x6100_0000, RW_WB, global_=True))
    tlb.insert(TLBEntry(3, 0x10_3000, SZ_4K, 0x6200_0000, RW_WB))  # other tag: ignored
    start = 0x10_3000 if step < 0 else 0x10_0000
    vas = start + step * np.arange(0x1000 * 6 // 64 if step > 0 else 0x3000 // 64)
    vas = vas.astype(np.uint64)
    result = t.translate_batch(vas, Access.READ)
    expected = []
    for va in vas.tolist():
        if 0x10_1000 <= va < 0x10_2000:
            expected.append(0x6000_0000 + va - 0x10_1000)
        elif 0x10_5000 <= va < 0x10_6000:
            expected.append(0x6100_0000 + va - 0x10_5000)
        else:
            expected.append(0x8000_0000 + va - 0x10_0000)
    assert result.pas.tolist() == expected
    assert tlb.stats.lookups == len(vas) and tlb.stats.misses == 1


def random_mapping(
    rng: random.Random, window: int, base: int, holes: float, read_only: float
) -> FakeWalker:
    """Mixed 16M/1M/64K/4K pages with holes and some read-only pages."""
    walker = FakeWalker()

    def attrs() -> PageAttrs:
        return RO_WB if rng.random() < read_only else RW_WB

    def pa(size: int) -> int:
        return rng.randrange(0, 1 << 32, size)

    if rng.random() < 0.1:
        walker.map(base, pa(SZ_16M), SZ_16M, attrs())
        return walker
    for section in range(base, base + window, SZ_1M):
        kind = rng.random()
        if kind < holes:
            continue
        if kind < 0.4:
            walker.map(section, pa(SZ_1M), SZ_1M, attrs())
            continue
        for large in range(section, section + SZ_1M, SZ_64K):
            sub = rng.random()
            if sub < holes:
                continue
            if sub < 0.4:
                walker.map(large, pa(SZ_64K), SZ_64K, attrs())
                continue
            for small in range(large, large + SZ_64K, SZ_4K):
                if rng.random() >= holes / 2:
                    walker.map(small, pa(SZ_4K), SZ_4K, attrs())
    return walker


def random_trace(rng: random.Random, window: int, base: int, count: int) -> np.ndarray:
    parts: list[np.ndarray] = []
    while sum(len(p) for p in parts) < count:
        margin = SZ_64K if rng.random() < 0.05 else 0  # sometimes stray outside
        start = base + rng.randrange(-margin, window + margin, 64)
        stride = rng.choice([64, 64, 64, 128, 4096, -64, SZ_64K])
        length = rng.randrange(1, 400)
        run = start + stride * np.arange(length, dtype=np.int64)
        parts.append(run[(run >= base - margin) & (run < base + window + margin)])
    return np.concatenate(parts)[:count].astype(np.uint64)


def stale_entries(rng: random.Random, window: int, base: int) -> list[TLBEntry]:
    """Entries the tables do not back: other tags, globals, overlapping sizes."""
    out = []
    for _ in range(rng.randrange(0, 12)):
        size = rng.choice([SZ_4K, SZ_64K, SZ_1M])
        va = base + rng.randrange(0, window, size)
        tag = rng.choice([0, 0, 1, 2])
        out.append(
            TLBEntry(tag, va, size, rng.randrange(0, 1 << 32, size), RW_WB, rng.random() < 0.3)
        )
    return out


@settings(max_examples=60, deadline=None)
@given(
    policy=st.sampled_from(["lru", "fifo", "random"]),
    geometry=st.sampled_from([(1, 1), (8, 1), (8, 2), (12, 3), (16, 4), (32, 32), (64, 64)]),
    seed=st.integers(0, 2**32 - 1),
    count=st.integers(1, 3000),
    access=st.sampled_from([Access.READ, Access.READ, Access.WRITE]),
    honour_global=st.booleans(),
    holes=st.sampled_from([0.0, 0.01, 0.05, 0.2]),
    read_only=st.sampled_from([0.0, 0.02, 0.2]),
)
def test_batch_equals_per_access_translation(
    policy: str,
    geometry: tuple[int, int],
    seed: int,
    count: int,
    access: Access,
    honour_global: bool,
    holes: float,
    read_only: float,
) -> None:
    rng = random.Random(seed)
    base, window = 0x4000_0000, 4 * SZ_1M
    mapping = random_mapping(rng, window, base, holes, read_only)
    trace = random_trace(rng, window, base, count)
    prefill = stale_entries(rng, window, base)

    def build() -> tuple[TLB, FakeWalker, Translator]:
        tlb = TLB(TLBConfig(*geometry, replacement=policy, seed=seed % 97))
        for e in prefill:
            tlb.insert(e)
        walker = FakeWalker(dict(mapping.pages))
        return tlb, walker, Translator(tlb, 0, walker, honour_global=honour_global)

    loop_tlb, loop_walker, loop_t = build()
    pas: list[int] = []
    fault: TranslationFault | None = None
    for va in trace.tolist():
        r = loop_t.translate(va, access)
        if isinstance(r, TranslationFault):
            fault = r
            break
        pas.append(r.pa)

    batch_tlb, batch_walker, batch_t = build()
    result = batch_t.translate_batch(trace, access)
    assert result.done == len(pas)
    assert result.fault == fault
    assert result.pas.tolist() == pas
    assert batch_tlb.snapshot() == loop_tlb.snapshot()
    assert (batch_walker.calls, batch_walker.reads) == (loop_walker.calls, loop_walker.reads)
    # Continuing after the fault keeps them equal (the state carried over is identical).
    if fault is not None:
        rest = trace[len(pas) + 1 :]
        again = batch_t.translate_batch(rest, Access.READ)
        for va in rest[: again.done + 1].tolist():
            loop_t.translate(va, Access.READ)
        assert batch_tlb.snapshot() == loop_tlb.snapshot()


# -- misuse -----------------------------------------------------------------------------------


def test_bad_translator_arguments() -> None:
    tlb, walker, _ = setup()
    for args, kwargs in [
        (("tlb", 0, walker), {}),
        ((tlb, None, walker), {}),
        ((tlb, [0], walker), {}),
        ((tlb, 0, "walker"), {}),
        ((tlb, 0, walker), {"privileged": 1}),
        ((tlb, 0, walker), {"honour_global": "yes"}),
    ]:
        with pytest.raises(InvalidArgumentError):
            Translator(*args, **kwargs)  # type: ignore[arg-type]


def bad_walkers() -> list[object]:
    good = Walk(0x1000, 2, 0x5000, SZ_4K, RW_WB, level=2)
    return [
        lambda va: None,
        lambda va: (va, 0x5000),
        lambda va: Walk(va + SZ_4K, 2, 0x5000, SZ_4K, RW_WB, level=2),
        lambda va: Walk(va, -1, 0x5000 + va % SZ_4K, SZ_4K, RW_WB, level=2),
        lambda va: Walk(va, 2, 0x5800 + va % SZ_4K, SZ_4K, RW_WB, level=2),  # offset differs
        lambda va: Walk(va, 2, 0x5000 + va % SZ_4K, 0x3000, RW_WB, level=2),
        lambda va: Walk(va, 2, 0x5000 + va % SZ_4K, SZ_4K, None, level=2),
        lambda va: Walk(va, 2, None, SZ_4K, RW_WB, level=2),
        lambda va: Walk(va, 1, level=1, fault="translation"),  # type: ignore[arg-type]
        lambda va: good if va == 0x1000 else Walk(va, 2, 1 << 64, SZ_4K, RW_WB),
    ]


def raising_walker(va: int) -> Walk:
    raise NotMappedError(f"table page for {va:#x} is gone")


@pytest.mark.parametrize("walker", [*bad_walkers(), raising_walker])
def test_walker_breaking_the_protocol_changes_nothing(walker: object) -> None:
    tlb = TLB(TLBConfig(8, 2))
    good = FakeWalker()
    good.map(0x0, 0x7000_0000, SZ_1M)
    Translator(tlb, 0, good).translate(0x40, Access.READ)
    before = tlb.snapshot()
    t = Translator(tlb, 1, walker)  # type: ignore[arg-type]
    with pytest.raises(VcmmError):
        t.translate(0x2000, Access.READ)
    assert tlb.snapshot() == before
    # The batch rolls back the hits and fills it made before the walker failed.
    shared = Translator(tlb, 0, lambda va: good(va) if va < SZ_1M else walker(va))  # type: ignore[operator]
    vas = np.array([0x40, 0x80, 0x10_0000 + 0x40, SZ_1M + 0x2000], dtype=np.uint64)
    good.map(0x10_0000, 0x7100_0000, SZ_4K)
    with pytest.raises(VcmmError):
        shared.translate_batch(vas, Access.READ)
    assert tlb.snapshot() == before


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.translate(-1, Access.READ),
        lambda t: t.translate(1 << 64, Access.READ),
        lambda t: t.translate(0x1000, "read"),
        lambda t: t.translate(4096.0, Access.READ),
        lambda t: t.translate(True, Access.READ),
        lambda t: t.translate_batch([0x1000], Access.READ),
        lambda t: t.translate_batch(np.zeros((2, 2), dtype=np.uint64), Access.READ),
        lambda t: t.translate_batch(np.array([0.0, 64.0]), Access.READ),
        lambda t: t.translate_batch(np.array([64, -64], dtype=np.int64), Access.READ),
        lambda t: t.translate_batch(np.array([64], dtype=np.uint64), None),
    ],
)
def test_bad_translate_arguments_change_nothing(call: object) -> None:
    tlb, walker, t = setup()
    walker.map(0x0, 0x10_0000, SZ_4K)
    t.translate(0x40, Access.READ)
    before = tlb.snapshot()
    calls = walker.calls
    with pytest.raises(InvalidArgumentError):
        call(t)  # type: ignore[operator]
    assert tlb.snapshot() == before and walker.calls == calls


def test_a_span_reports_the_attributes_of_each_rows_entry() -> None:
    """``with_attrs``: one attribute value per row, the entry's (a stale TLB entry's
    attributes, not the table's, as the access would use)."""
    tlb, walker, tr = setup()
    walker.map(0x10_0000, 0x8010_0000, SZ_1M, RW_WB)
    walker.map(0x20_0000, 0x8020_0000, SZ_64K, RO_WB)
    tlb.insert(TLBEntry(0, 0x20_0000, SZ_64K, 0x9000_0000, RW_WB))  # stale: RW, elsewhere
    span = tr.translate_span(0x18_0000, 0x9_0000, Access.READ, with_attrs=True)
    assert span.fault is None
    assert span.length.tolist() == [0x8_0000, 0x1_0000]
    assert span.pa.tolist() == [0x8018_0000, 0x9000_0000]
    assert span.attrs == (RW_WB, RW_WB)
    assert tr.translate_span(0x18_0000, 0x1000, Access.READ).attrs == ()  # not asked


def test_a_span_refuses_a_with_attrs_that_is_not_a_bool() -> None:
    tlb, walker, tr = setup()
    walker.map(0x10_0000, 0x8010_0000, SZ_1M)
    before = tlb.snapshot()
    with pytest.raises(InvalidArgumentError, match=r"with_attrs=1 is not a bool"):
        tr.translate_span(0x10_0000, 0x1000, Access.READ, with_attrs=1)  # type: ignore[arg-type]
    assert tlb.snapshot() == before and walker.calls == 0
