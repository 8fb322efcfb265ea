"""Tests of speculative prefetch: why mismatched aliases and single invalidates fail.

The hazard (Russell King, seed 000 L2075-2094 and L3071-3079): an ARMv6/v7 CPU may load
any cacheable-mapped line at any time, so a line can come back into the cache after the
driver invalidated it, or while the memory is being changed through another path.
"""

from __future__ import annotations

import pytest

from vcmm.attrs import MemType
from vcmm.errors import BusError, InvalidArgumentError, NotMappedError, VcmmError
from vcmm.hw.cache import CacheConfig, DataCache
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.prefetch import SpeculativePrefetcher
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K

WB = MemType.NORMAL_WB_WA
NC = MemType.NORMAL_NC
RAM = 0x8000_0000
HOLE = RAM + SZ_1M  # the bank is 1 MiB, nothing above it


def system(
    ranges: list[AddressRange], *, seed: int = 7, config: CacheConfig | None = None
) -> tuple[PhysicalMemory, DataCache, SpeculativePrefetcher]:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    memory.fill(RAM, SZ_1M, 0x11)
    cache = DataCache(memory, config)
    prefetcher = SpeculativePrefetcher(cache, seed=seed, candidates=lambda: ranges)
    return memory, cache, prefetcher


def lines_of(r: AddressRange, line: int = 64) -> set[int]:
    return set(range(r.start - r.start % line, r.end, line))


def test_prefetched_line_shadows_a_write_through_a_non_cacheable_alias() -> None:
    page = AddressRange(RAM + 0x10000, SZ_4K)
    memory, cache, prefetcher = system([AddressRange(RAM, SZ_1M)])
    assert prefetcher.prefetch_range(page) == 64  # "the CPU speculatively touched it"
    cache.write(page.start, b"\x22" * SZ_4K, NC)  # the driver's uncached alias
    assert memory.read(page.start, SZ_4K) == b"\x22" * SZ_4K
    assert cache.read(page.start, SZ_4K, WB) == b"\x11" * SZ_4K  # stale, silently
    assert cache.invalidate(page.start, page.size) == 64
    assert cache.read(page.start, SZ_4K, WB) == b"\x22" * SZ_4K


def test_speculation_after_the_map_time_invalidate_needs_a_second_one() -> None:
    """Why ARM's DMA API invalidates FROM_DEVICE buffers again at unmap time."""
    linear_map = AddressRange(RAM, 4 * SZ_4K)
    buffer = AddressRange(RAM + SZ_4K, SZ_4K)
    memory, cache, prefetcher = system([linear_map], seed=2010)
    cache.read(buffer.start, buffer.size, WB)  # the CPU used the buffer before
    cache.invalidate(buffer.start, buffer.size)  # dma_map(FROM_DEVICE)
    for _ in range(10):  # the device works; meanwhile the CPU speculates
        prefetcher.tick()
    memory.write(buffer.start, b"\x33" * SZ_4K)  # the device's DMA write
    shadowed = {pa for pa, _ in cache.lines() if pa in buffer}
    assert shadowed  # with this seed, speculation did pull buffer lines back in
    seen = cache.read(buffer.start, buffer.size, WB)
    stale = {buffer.start + i for i in range(0, SZ_4K, 64) if seen[i : i + 64] == b"\x11" * 64}
    assert stale == shadowed  # exactly the speculatively filled lines are stale
    cache.invalidate(buffer.start, buffer.size)  # dma_unmap(FROM_DEVICE) invalidates again
    assert cache.read(buffer.start, buffer.size, WB) == b"\x33" * SZ_4K


def test_ticks_cover_exactly_the_candidate_lines() -> None:
    a = AddressRange(RAM, SZ_4K)
    b = AddressRange(RAM + 0x5020, 2 * SZ_4K)  # unaligned: partial first and last lines
    _, cache, prefetcher = system([a, b])
    for _ in range(1000):
        prefetcher.tick()
    expected = lines_of(a) | lines_of(b)  # 64 + 129 lines, at most 3 per set: no eviction
    assert {pa for pa, _ in cache.lines()} == expected
    assert all(not dirty for _, dirty in cache.lines())  # speculative fills are clean
    counters = prefetcher.counters
    assert (counters.ticks, counters.chosen) == (1000, 4000)
    assert counters.filled == len(expected) == cache.counters.prefetch_fills
    assert (cache.counters.hits, cache.counters.misses) == (0, 0)  # not CPU accesses


def test_same_seed_same_fills_different_seed_different_fills() -> None:
    ranges = [AddressRange(RAM, 64 * SZ_4K)]
    runs = []
    for seed in (5, 5, 6):
        _, cache, prefetcher = system(ranges, seed=seed)
        for _ in range(20):
            prefetcher.tick()
        runs.append((cache.snapshot(), cache.lines()))
    assert runs[0] == runs[1]
    assert runs[0][1] != runs[2][1]


def test_lines_per_tick_bounds_the_fills_of_one_tick() -> None:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_1M))])
    cache = DataCache(memory)
    ranges = [AddressRange(RAM, SZ_1M)]
    prefetcher = SpeculativePrefetcher(cache, seed=1, lines_per_tick=9, candidates=lambda: ranges)
    filled = prefetcher.tick()
    assert filled == len(cache.lines()) and 1 <= filled <= 9
    assert prefetcher.lines_per_tick == 9 and prefetcher.seed == 1


def test_disabled_prefetcher_draws_nothing_and_fills_nothing() -> None:
    ranges = [AddressRange(RAM, 16 * SZ_4K)]
    _, cache, prefetcher = system(ranges, seed=3)
    prefetcher.enabled = False
    snap, psnap = cache.snapshot(), prefetcher.snapshot()
    assert prefetcher.tick() == 0
    assert cache.snapshot() == snap
    assert prefetcher.snapshot() == psnap
    prefetcher.enabled = True
    prefetcher.tick()
    _, twin_cache, twin = system(ranges, seed=3)  # never disabled
    twin.tick()
    assert cache.lines() == twin_cache.lines()


def test_no_candidates_means_no_speculation() -> None:
    _, cache, prefetcher = system([AddressRange(RAM, 0)])
    snap, psnap = cache.snapshot(), prefetcher.snapshot()
    assert prefetcher.tick() == 0
    assert cache.snapshot() == snap and prefetcher.snapshot() == psnap


def test_speculative_fill_can_write_back_a_dirty_victim() -> None:
    tiny = CacheConfig(size=128, ways=2, line=16)  # 4 sets, set stride 64 bytes
    memory, cache, prefetcher = system([AddressRange(RAM, SZ_4K)], config=tiny)
    cache.write(RAM, b"dirty-in-cache!!", WB)
    cache.read(RAM + 0x40, 1, WB)
    cache.read(RAM, 1, WB)  # RAM+0x40 is now the LRU of set 0
    prefetcher.prefetch_range(AddressRange(RAM + 0x80, 0x40))  # 4 lines, one per set
    assert memory.read(RAM, 16) == b"\x11" * 16  # still only in the cache
    prefetcher.prefetch_range(AddressRange(RAM + 0xC0, 0x10))  # set 0 again: evicts RAM
    assert memory.read(RAM, 16) == b"dirty-in-cache!!"
    assert cache.counters.writebacks == 1


def test_prefetch_of_a_dirty_line_keeps_its_data() -> None:
    memory, cache, prefetcher = system([AddressRange(RAM, SZ_4K)])
    cache.write(RAM + 8, b"newer", WB)
    assert prefetcher.prefetch_range(AddressRange(RAM, 64)) == 0
    assert cache.is_dirty(RAM)
    assert cache.read(RAM + 8, 5, WB) == b"newer"
    assert memory.read(RAM + 8, 5) == b"\x11" * 5


# -- misuse ------------------------------------------------------------------------------------


def _bad_candidates(value: object) -> SpeculativePrefetcher:
    _, cache, _ = system([])
    return SpeculativePrefetcher(cache, seed=1, candidates=lambda: value)  # type: ignore[arg-type, return-value]


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ([AddressRange(RAM, 64), 0x1000], InvalidArgumentError),
        ([(RAM, 64)], InvalidArgumentError),
        (AddressRange(RAM, 64), InvalidArgumentError),  # a range, not a sequence of ranges
        ("ranges", InvalidArgumentError),
        ([AddressRange(RAM, 64), AddressRange(HOLE - 64, 128)], BusError),
        ([AddressRange(HOLE, SZ_4K)], BusError),
    ],
)
def test_bad_candidates_fail_before_drawing_or_filling(value: object, error: type) -> None:
    prefetcher = _bad_candidates(value)
    cache = prefetcher.cache
    cache.write(RAM, b"state", WB)
    snap, psnap = cache.snapshot(), prefetcher.snapshot()
    digest = cache.memory.digest()
    with pytest.raises(error) as info:
        prefetcher.tick()
    assert isinstance(info.value, VcmmError)
    assert cache.snapshot() == snap
    assert prefetcher.snapshot() == psnap
    assert cache.memory.digest() == digest


@pytest.mark.parametrize(
    ("arg", "error"),
    [
        ((RAM, 64), InvalidArgumentError),
        (None, InvalidArgumentError),
        (AddressRange(HOLE - 32, 64), BusError),
    ],
)
def test_bad_prefetch_range_changes_nothing(arg: object, error: type) -> None:
    memory, cache, prefetcher = system([AddressRange(RAM, SZ_4K)])
    cache.write(RAM + 0x100, b"x", WB)
    snap, psnap, digest = cache.snapshot(), prefetcher.snapshot(), memory.digest()
    with pytest.raises(error):
        prefetcher.prefetch_range(arg)  # type: ignore[arg-type]
    assert cache.snapshot() == snap and prefetcher.snapshot() == psnap
    assert memory.digest() == digest


def test_prefetch_range_reaches_only_cacheable_mapped_bytes() -> None:
    """Speculation goes through a cacheable mapping: a range partly outside every
    candidate is refused, naming the first uncovered piece, and nothing changes."""
    a, b = AddressRange(RAM, SZ_4K), AddressRange(RAM + SZ_4K, SZ_4K)
    memory, cache, prefetcher = system([b, a])  # adjacent, unsorted: together one window
    assert prefetcher.prefetch_range(AddressRange(RAM + SZ_4K - 64, 128)) == 2
    snap, psnap, digest = cache.snapshot(), prefetcher.snapshot(), memory.digest()
    with pytest.raises(NotMappedError, match=r"physical \[0x80002000, 0x80002040\)"):
        prefetcher.prefetch_range(AddressRange(RAM + 2 * SZ_4K - 64, 128))
    with pytest.raises(NotMappedError, match="not mapped cacheable"):
        system([])[2].prefetch_range(AddressRange(RAM, 64))  # nothing cacheable at all
    assert cache.snapshot() == snap and prefetcher.snapshot() == psnap
    assert memory.digest() == digest


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cache": "not a cache"},
        {"seed": -1},
        {"seed": True},
        {"seed": 1.5},
        {"lines_per_tick": 0},
        {"lines_per_tick": 2.0},
        {"candidates": [AddressRange(RAM, 64)]},  # a list, not a callable
    ],
)
def test_constructor_refuses_bad_arguments(kwargs: dict[str, object]) -> None:
    _, cache, _ = system([])
    args: dict[str, object] = {"cache": cache, "seed": 1, "candidates": list}
    args.update(kwargs)
    with pytest.raises(InvalidArgumentError):
        SpeculativePrefetcher(args.pop("cache"), **args)  # type: ignore[arg-type]


def test_enabled_must_be_a_bool() -> None:
    _, _, prefetcher = system([])
    with pytest.raises(InvalidArgumentError):
        prefetcher.enabled = 1  # type: ignore[assignment]
    assert prefetcher.enabled is True
