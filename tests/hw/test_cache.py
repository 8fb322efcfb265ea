"""Tests of the CPU data cache: staleness, policies, maintenance, replacement.

The replacement and policy tests compare against ``RefCache``, a deliberately naive
model written here line by line with an OrderedDict per set (LRU first, MRU last).  It
shares no code with the vectorised cache, so agreement on returned bytes, memory
contents, resident lines and counters is an independent check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType
from vcmm.errors import BusError, InvalidArgumentError, VcmmError
from vcmm.hw.cache import CacheConfig, CacheCounters, DataCache
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K

WB = MemType.NORMAL_WB_WA
NWA = MemType.NORMAL_WB_NWA
WT = MemType.NORMAL_WT
NC = MemType.NORMAL_NC
UNCACHED = (MemType.NORMAL_NC, MemType.DEVICE, MemType.STRONGLY_ORDERED)

#: Two 4 KiB banks with a 4 KiB hole between them.
BANK_A = 0x0000
BANK_B = 0x2000
HOLE = 0x1000
TINY = CacheConfig(size=128, ways=2, line=16)  # 4 sets


def make_memory() -> PhysicalMemory:
    return PhysicalMemory(
        [
            MemoryRegion("a", AddressRange(BANK_A, SZ_4K)),
            MemoryRegion("b", AddressRange(BANK_B, SZ_4K)),
        ]
    )


def pattern(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def make(config: CacheConfig = TINY) -> tuple[PhysicalMemory, DataCache]:
    memory = make_memory()
    memory.write(BANK_A, pattern(SZ_4K, 1))
    memory.write(BANK_B, pattern(SZ_4K, 2))
    return memory, DataCache(memory, config)


def state_without_counters(cache: DataCache) -> tuple[object, ...]:
    snap = cache.snapshot()
    return snap.tags, snap.valid, snap.dirty, snap.ages, snap.data


# -- a reference cache, line by line --------------------------------------------------------


class RefCache:
    """Sequential, per-line LRU cache over a bytearray model of the two banks."""

    def __init__(self, memory: bytearray, config: CacheConfig, lookup: bool = True) -> None:
        self.lookup = lookup  # Normal non-cacheable reads see cached lines
        self.mem = memory
        self.line = config.line
        self.ways = config.ways
        self.sets: list[OrderedDict[int, list]] = [OrderedDict() for _ in range(config.sets)]
        self.c = CacheCounters()

    def _lines(self, pa: int, n: int) -> range:
        return range(pa // self.line, (pa + n - 1) // self.line + 1)

    def _clip(self, ln: int, pa: int, n: int) -> tuple[int, int]:
        return max(pa, ln * self.line), min(pa + n, (ln + 1) * self.line)

    def _access(self, ln: int, allocate: bool, count: bool = True) -> list | None:
        s = self.sets[ln % len(self.sets)]
        if ln in s:
            s.move_to_end(ln)
            if count:
                self.c.hits += 1
            return s[ln]
        if count:
            self.c.misses += 1
        if not allocate:
            return None
        if len(s) == self.ways:
            victim, (dirty, data) = s.popitem(last=False)
            self.c.evictions += 1
            if dirty:
                self.mem[victim * self.line : (victim + 1) * self.line] = data
                self.c.writebacks += 1
        entry = [False, bytearray(self.mem[ln * self.line : (ln + 1) * self.line])]
        s[ln] = entry
        self.c.fills += 1
        return entry

    def read(self, pa: int, n: int, mt: MemType) -> bytes:
        if n == 0:
            return b""
        if not mt.cacheable:
            self.c.bypasses += 1
            if mt is NC and self.lookup:
                data, found = self._peek(pa, n)
                self.c.uncached_hits += found
                return data
            return bytes(self.mem[pa : pa + n])
        out = bytearray()
        for ln in self._lines(pa, n):
            entry = self._access(ln, allocate=True)
            assert entry is not None
            lo, hi = self._clip(ln, pa, n)
            out += entry[1][lo - ln * self.line : hi - ln * self.line]
        return bytes(out)

    def write(self, pa: int, data: bytes, mt: MemType) -> None:
        n = len(data)
        if n == 0:
            return
        if not mt.cacheable:
            self.c.bypasses += 1
            self.mem[pa : pa + n] = data
            return
        for ln in self._lines(pa, n):
            entry = self._access(ln, allocate=mt is WB)
            lo, hi = self._clip(ln, pa, n)
            piece = data[lo - pa : hi - pa]
            if entry is not None:
                entry[1][lo - ln * self.line : hi - ln * self.line] = piece
                if mt is not WT:
                    entry[0] = True
            if entry is None or mt is WT:
                self.mem[lo:hi] = piece

    def fill_line(self, pa: int) -> bool:
        ln = pa // self.line
        s = self.sets[ln % len(self.sets)]
        if ln in s:
            s.move_to_end(ln)
            return False
        self._access(ln, allocate=True, count=False)
        self.c.prefetch_fills += 1
        return True

    def fill_range(self, pa: int, n: int) -> int:
        return sum(self.fill_line(ln * self.line) for ln in self._lines(pa, n)) if n else 0

    def _in_range(self, pa: int, n: int) -> list[tuple[OrderedDict[int, list], int]]:
        if n == 0:
            return []
        first, last = pa // self.line, (pa + n - 1) // self.line
        return [(s, ln) for s in self.sets for ln in list(s) if first <= ln <= last]

    def clean(self, pa: int, n: int) -> int:
        count = 0
        for s, ln in self._in_range(pa, n):
            if s[ln][0]:
                self.mem[ln * self.line : (ln + 1) * self.line] = s[ln][1]
                s[ln][0] = False
                self.c.writebacks += 1
                count += 1
        return count

    def invalidate(self, pa: int, n: int) -> int:
        hits = self._in_range(pa, n)
        for s, ln in hits:
            del s[ln]
        return len(hits)

    def clean_invalidate(self, pa: int, n: int) -> int:
        self.clean(pa, n)
        return self.invalidate(pa, n)

    def _peek(self, pa: int, n: int) -> tuple[bytes, int]:
        """Memory with every cached line on top, and the lines found (no LRU move)."""
        out = bytearray(self.mem[pa : pa + n])
        found = self._in_range(pa, n)
        for s, ln in found:
            lo, hi = self._clip(ln, pa, n)
            out[lo - pa : hi - pa] = s[ln][1][lo - ln * self.line : hi - ln * self.line]
        return bytes(out), len(found)

    def snoop_read(self, pa: int, n: int) -> bytes:
        if n == 0:
            return b""
        data, found = self._peek(pa, n)
        self.c.snoop_hits += found
        return data

    def snoop_write(self, pa: int, data: bytes) -> None:
        n = len(data)
        if n == 0:
            return
        self.mem[pa : pa + n] = data
        for s, ln in self._in_range(pa, n):
            lo, hi = self._clip(ln, pa, n)
            s[ln][1][lo - ln * self.line : hi - ln * self.line] = data[lo - pa : hi - pa]
            self.c.snoop_hits += 1

    def lines(self) -> list[tuple[int, bool]]:
        return sorted((ln * self.line, e[0]) for s in self.sets for ln, e in s.items())


# -- configuration --------------------------------------------------------------------------


def test_default_geometry_is_a_32k_4way_64b_cache() -> None:
    cfg = CacheConfig()
    assert (cfg.size, cfg.ways, cfg.line) == (32 * 1024, 4, 64)
    assert cfg.sets == 128
    assert cfg.num_lines == 512
    assert cfg.line_shift == 6
    assert cfg.set_shift == 7


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 1000},
        {"ways": 3},
        {"line": 48},
        {"line": 2},
        {"line": 8192, "size": 1 << 20},
        {"size": 64, "line": 128},
        {"size": 128, "line": 64, "ways": 4},
        {"ways": True},
        {"size": 4096.0},
    ],
)
def test_bad_geometry_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError):
        CacheConfig(**kwargs)  # type: ignore[arg-type]


def test_constructor_checks_its_arguments() -> None:
    memory = make_memory()
    with pytest.raises(InvalidArgumentError, match="PhysicalMemory"):
        DataCache(bytearray(16), TINY)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="CacheConfig"):
        DataCache(memory, (128, 2, 16))  # type: ignore[arg-type]


# -- write-back and staleness ---------------------------------------------------------------


def test_write_back_keeps_new_bytes_in_cache_until_clean() -> None:
    memory, cache = make()
    old = memory.read(0x100, 8)
    cache.write(0x100, b"NEWBYTES", WB)
    assert memory.read(0x100, 8) == old  # memory still has the old bytes
    assert cache.is_dirty(0x100) and cache.contains(0x107)
    assert cache.read(0x100, 8, WB) == b"NEWBYTES"
    assert cache.clean(0x100, 8) == 1
    assert memory.read(0x100, 8) == b"NEWBYTES"
    assert cache.contains(0x100) and not cache.is_dirty(0x100)
    assert cache.clean(0x100, 8) == 0  # nothing dirty any more


def test_invalidate_loses_dirty_data() -> None:
    memory, cache = make()
    old = memory.read(0x100, 8)
    cache.write(0x100, b"NEWBYTES", WB)
    assert cache.invalidate(0x100, 8) == 1
    assert not cache.contains(0x100)
    assert memory.read(0x100, 8) == old
    assert cache.read(0x100, 8, WB) == old  # refetched from memory: the write is gone


def test_device_and_strongly_ordered_reads_never_look_at_the_cache() -> None:
    memory, cache = make()
    old = memory.read(0x200, 4)
    cache.write(0x200, b"\xde\xad\xbe\xef", WB)
    before = state_without_counters(cache)
    for mt in (MemType.DEVICE, MemType.STRONGLY_ORDERED):
        assert cache.read(0x200, 4, mt) == old
    assert state_without_counters(cache) == before  # the cache was not looked at
    assert (cache.counters.bypasses, cache.counters.uncached_hits) == (2, 0)
    assert cache.snoop_read(0x200, 4) == b"\xde\xad\xbe\xef"  # a coherent device sees it


def test_normal_uncached_read_returns_the_line_a_cacheable_alias_left() -> None:
    """King's ARMv6/v7 behaviour (000 L2075-2094): the cache is searched even for a
    Normal non-cacheable access.  Dirty or stale, the line's bytes win over memory;
    the lookup allocates nothing and moves no LRU position."""
    memory, cache = make()
    old = memory.read(0x200, 40)
    cache.write(0x210, b"dirty-in-cache!!", WB)  # the whole line 0x210..0x21f, dirty
    cache.read(0x220, 1, WB)  # line 0x220 cached clean...
    memory.write(0x220, b"D" * 16)  # ...and a non-coherent device writes behind it
    before = state_without_counters(cache)
    got = cache.read(0x200, 40, NC)  # lines 0x200 (not cached), 0x210, 0x220
    assert got == old[:16] + b"dirty-in-cache!!" + old[32:40]
    assert memory.read(0x200, 40) == old[:16] + old[16:32] + b"D" * 8  # memory differs
    assert state_without_counters(cache) == before
    assert (cache.counters.bypasses, cache.counters.uncached_hits) == (1, 2)


def test_without_the_lookup_a_normal_uncached_read_bypasses_the_cache() -> None:
    memory, cache = make()
    cache.write(0x210, b"dirty-in-cache!!", WB)
    cache.uncached_lookup = False
    assert cache.read(0x210, 16, NC) == memory.read(0x210, 16) != b"dirty-in-cache!!"
    assert cache.counters.uncached_hits == 0
    cache.uncached_lookup = True
    assert cache.read(0x210, 16, NC) == b"dirty-in-cache!!"


def test_uncached_write_then_read_loses_uniprocessor_semantics() -> None:
    """The ARMv7 ARM's first listed effect of mismatched attributes: a read may not
    return the value the same thread last wrote.  The write goes to memory, the read
    is answered by the line the cacheable alias holds."""
    memory, cache = make()
    stale = cache.read(0x240, 8, WB)  # the cacheable alias brought the line in
    cache.write(0x240, b"nc-write", NC)
    assert memory.read(0x240, 8) == b"nc-write"
    assert cache.read(0x240, 8, NC) == stale != b"nc-write"
    cache.invalidate(0x240, 8)  # maintenance restores it, until the next fill
    assert cache.read(0x240, 8, NC) == b"nc-write"


def test_uncached_lookup_is_a_bool_and_part_of_the_snapshot() -> None:
    _, cache = make()
    snap = cache.snapshot()
    with pytest.raises(InvalidArgumentError, match="uncached_lookup 1 is not a bool"):
        cache.uncached_lookup = 1  # type: ignore[assignment]
    assert cache.snapshot() == snap and cache.uncached_lookup is True
    cache.uncached_lookup = False
    assert cache.snapshot() != snap and cache.snapshot().uncached_lookup is False


def test_uncached_write_is_later_overwritten_by_the_dirty_line() -> None:
    """Mismatched aliases corrupt silently: the cached alias's eviction wins."""
    memory, cache = make()
    cache.write(0x300, b"cpu-data", WB)
    cache.write(0x300, b"nc-write", NC)
    assert memory.read(0x300, 8) == b"nc-write"
    assert cache.read(0x300, 8, WB) == b"cpu-data"
    cache.clean_all()
    assert memory.read(0x300, 8) == b"cpu-data"


def test_cpu_keeps_reading_a_stale_line_after_a_device_write_until_invalidate() -> None:
    memory, cache = make()
    old = cache.read(0x400, 32, WB)
    memory.write(0x400, b"D" * 32)  # a non-coherent device writes memory
    assert cache.read(0x400, 32, WB) == old
    assert cache.invalidate(0x400, 32) == 2
    assert cache.read(0x400, 32, WB) == b"D" * 32


def test_unaligned_write_merges_with_the_rest_of_its_lines() -> None:
    memory, cache = make()
    original = memory.read(0x0, 64)
    cache.write(0x5, b"x" * 30, WB)  # lines 0, 1, 2 (bytes 5..34)
    assert [pa for pa, _ in cache.lines()] == [0x0, 0x10, 0x20]
    cache.clean_all()
    expected = original[:5] + b"x" * 30 + original[35:]
    assert memory.read(0x0, 64) == expected


def test_multi_line_read_spanning_two_banks_without_a_hole() -> None:
    memory = PhysicalMemory(
        [MemoryRegion("lo", AddressRange(0, SZ_4K)), MemoryRegion("hi", AddressRange(SZ_4K, SZ_4K))]
    )
    memory.write(0, pattern(2 * SZ_4K, 9))
    cache = DataCache(memory, TINY)
    assert cache.read(SZ_4K - 24, 48, WB) == pattern(2 * SZ_4K, 9)[SZ_4K - 24 : SZ_4K + 24]


# -- replacement ------------------------------------------------------------------------------


def test_eviction_writes_back_the_least_recently_used_dirty_line() -> None:
    memory, cache = make()  # 4 sets of 2 ways, 16-byte lines: set stride 64 bytes
    a, b, c = 0x000, 0x040, 0x080  # all in set 0
    cache.write(a, b"A" * 16, WB)
    cache.write(b, b"B" * 16, WB)
    cache.read(a, 1, WB)  # a becomes most recent: b is now the LRU
    cache.write(c, b"C" * 16, WB)
    assert [pa for pa, _ in cache.lines()] == [a, c]
    assert memory.read(b, 16) == b"B" * 16  # victim written back
    assert memory.read(a, 16) != b"A" * 16  # survivors still only in the cache
    counters = cache.counters
    assert (counters.evictions, counters.writebacks) == (1, 1)


def test_clean_victim_is_evicted_without_writeback() -> None:
    memory, cache = make()
    cache.read(0x000, 1, WB)
    cache.read(0x040, 1, WB)
    digest = memory.digest()
    cache.read(0x080, 1, WB)
    assert not cache.contains(0x000)
    assert memory.digest() == digest
    assert (cache.counters.evictions, cache.counters.writebacks) == (1, 0)


def test_long_access_matches_the_reference_through_the_bulk_path() -> None:
    """A 1000-byte access is 63 lines = 16 chunks of 4: the middle is settled in bulk."""
    memory, cache = make()
    ref = RefCache(bytearray(0x3000), TINY)
    ref.mem[BANK_A : BANK_A + SZ_4K] = memory.read(BANK_A, SZ_4K)
    for target in (cache, ref):
        target.write(0x44, b"dirty-before", WB)  # dirty line inside the range
        target.read(0x3F0, 8, WB)  # clean line inside the range
        target.write(0x600, b"outside", WB)  # dirty line that the access will evict
    memory.write(0x3F0, b"STALE!!!")  # stale the clean line behind the cache's back
    ref.mem[0x3F0:0x3F8] = b"STALE!!!"
    assert cache.read(0x13, 1000, WB) == ref.read(0x13, 1000, WB)
    data = pattern(1000, 5)
    cache.write(0x27, data, WB)
    ref.write(0x27, data, WB)
    assert cache.lines() == ref.lines()
    assert astuple(cache.counters) == astuple(ref.c)
    assert memory.read(BANK_A, SZ_4K) == bytes(ref.mem[BANK_A : BANK_A + SZ_4K])


def test_large_write_leaves_only_the_tail_dirty_and_everything_else_in_memory(
    count_calls: Callable[[Callable[[], object]], int],
) -> None:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0x8000_0000, 16 * SZ_1M))])
    cache = DataCache(memory)  # 32 KiB, 4-way, 64-byte lines
    base, size = 0x8000_0000, 8 * SZ_1M
    data = np.random.default_rng(3).integers(0, 256, size, dtype=np.uint8)
    # The middle is done in bulk: 8 MiB (131072 lines) cost the calls 1 MiB does.
    small_calls = count_calls(lambda: DataCache(memory).write(base, data[:SZ_1M], WB))
    assert count_calls(lambda: cache.write(base, data, WB)) <= small_calls + 32
    tail = 32 * 1024
    assert cache.lines() == [(pa, True) for pa in range(base + size - tail, base + size, 64)]
    assert memory.read(base, size - tail) == data[: size - tail].tobytes()
    assert memory.read(base + size - tail, 64) != data[size - tail : size - tail + 64].tobytes()
    assert cache.read(base, size, WB) == data.tobytes()
    assert cache.clean(base, size) == 0  # the read above evicted (and wrote back) the tail
    assert cache.invalidate(base, size) == 512
    assert memory.read(base, size) == data.tobytes()
    lines = size // 64
    counters = cache.counters
    assert counters.misses == 2 * lines
    assert counters.writebacks == lines
    assert counters.evictions == 2 * lines - 512


def test_maintenance_over_8mib_touches_only_resident_lines(
    count_calls: Callable[[Callable[[], object]], int],
) -> None:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0, 16 * SZ_1M))])
    cache, twin = DataCache(memory), DataCache(memory)
    for i in range(10):  # ten lines in ten different sets, spread over 8 MiB
        for c in (cache, twin):
            c.write(i * SZ_1M // 2 + i * 64, bytes([i]) * 64, WB)
    # Only resident lines are looked at: cleaning 16 MiB costs the calls 8 MiB does.
    eight = count_calls(lambda: cache.clean(0, 8 * SZ_1M))
    assert count_calls(lambda: twin.clean(0, 16 * SZ_1M)) <= eight + 4
    assert cache.counters.writebacks == twin.counters.writebacks == 10
    assert cache.clean_invalidate(0, 8 * SZ_1M) == 10
    assert cache.lines() == []
    assert memory.read(9 * SZ_1M // 2 + 9 * 64, 64) == bytes([9]) * 64


# -- policies ------------------------------------------------------------------------------


def test_wb_nwa_write_miss_goes_to_memory_and_allocates_nothing() -> None:
    memory, cache = make()
    cache.write(0x500, b"nwa-miss", NWA)
    assert memory.read(0x500, 8) == b"nwa-miss"
    assert cache.lines() == []
    assert (cache.counters.misses, cache.counters.fills) == (1, 0)


def test_wb_nwa_write_hit_dirties_the_line_only() -> None:
    memory, cache = make()
    old = cache.read(0x500, 16, NWA)  # read-allocate
    cache.write(0x502, b"hit!", NWA)
    assert memory.read(0x500, 16) == old
    assert cache.is_dirty(0x500)
    assert cache.read(0x500, 16, NWA) == old[:2] + b"hit!" + old[6:]


def test_wb_nwa_write_spanning_hit_and_miss_lines() -> None:
    memory, cache = make()
    old = memory.read(0x500, 48)
    cache.read(0x510, 1, NWA)  # only the middle line is cached
    cache.write(0x508, b"z" * 32, NWA)  # touches lines 0x500, 0x510, 0x520
    mem_now = memory.read(0x500, 48)
    assert mem_now[:8] == old[:8] and mem_now[8:16] == b"z" * 8  # miss line: memory
    assert mem_now[16:32] == old[16:32]  # hit line: only in the cache
    assert mem_now[32:40] == b"z" * 8 and mem_now[40:] == old[40:]
    assert cache.lines() == [(0x510, True)]


def test_write_through_updates_memory_always_and_never_dirties() -> None:
    memory, cache = make()
    cache.write(0x600, b"wt-miss!", WT)
    assert memory.read(0x600, 8) == b"wt-miss!" and not cache.contains(0x600)
    cache.read(0x600, 16, WT)
    cache.write(0x604, b"HIT!", WT)
    assert memory.read(0x600, 8) == b"wt-mHIT!"
    assert cache.read(0x600, 8, WT) == b"wt-mHIT!"
    assert cache.lines() == [(0x600, False)]


def test_write_through_leaves_an_already_dirty_line_dirty() -> None:
    memory, cache = make()
    cache.write(0x700, b"wb", WB)
    cache.write(0x708, b"wt", WT)
    assert cache.is_dirty(0x700)  # bytes 0..1 are still newer than memory
    assert memory.read(0x708, 2) == b"wt"


@pytest.mark.parametrize("mt", [NWA, WT])
def test_non_allocating_write_hit_refreshes_lru(mt: MemType) -> None:
    _, cache = make()
    cache.read(0x000, 1, WB)
    cache.read(0x040, 1, WB)  # set 0 holds 0x000 (LRU) and 0x040
    cache.write(0x000, b"w", mt)  # a hit: 0x000 becomes the most recent
    cache.read(0x080, 1, WB)  # miss in set 0 evicts the LRU, now 0x040
    assert [pa for pa, _ in cache.lines()] == [0x000, 0x080]


@pytest.mark.parametrize("mt", [WB, NWA, WT])
def test_every_cacheable_type_read_allocates(mt: MemType) -> None:
    _, cache = make()
    cache.read(0x800, 20, mt)
    assert cache.lines() == [(0x800, False), (0x810, False)]


# -- maintenance, snoops, fills ------------------------------------------------------------


def test_maintenance_counts_and_partial_lines() -> None:
    _, cache = make()
    cache.write(0x000, b"a" * 16, WB)
    cache.read(0x010, 1, WB)
    cache.write(0x020, b"c", WB)
    assert cache.clean(0x008, 0x10) == 1  # lines 0x000 and 0x010; only 0x000 dirty
    assert cache.lines() == [(0x000, False), (0x010, False), (0x020, True)]
    assert cache.invalidate(0x01F, 2) == 2  # one byte of 0x010, one of 0x020: both dropped
    assert cache.lines() == [(0x000, False)]
    assert cache.clean(0x000, 0) == 0 and cache.invalidate(0x000, 0) == 0
    cache.write(0x040, b"d", WB)
    assert cache.clean_invalidate(0x000, 0x100) == 2
    assert cache.lines() == []


def test_whole_cache_maintenance() -> None:
    memory, cache = make()
    cache.write(0x000, b"1", WB)
    cache.write(0x010, b"2", WB)
    cache.read(0x020, 1, WB)
    assert cache.clean_all() == 2
    assert memory.read(0x000, 1) == b"1"
    cache.write(0x030, b"3", WB)
    assert cache.invalidate_all() == 4
    assert memory.read(0x030, 1) != b"3"
    cache.write(0x040, b"4", WB)
    cache.read(0x050, 1, WB)
    assert cache.clean_invalidate_all() == 2
    assert memory.read(0x040, 1) == b"4" and cache.lines() == []


def test_snoop_write_updates_the_cached_copy_and_keeps_it_dirty() -> None:
    memory, cache = make()
    cache.write(0x900, b"cpu-cpu-", WB)  # dirty bytes 0..7 of the line
    cache.snoop_write(0x908, b"DEVICE!!")  # a coherent device writes bytes 8..15
    assert memory.read(0x908, 8) == b"DEVICE!!"
    assert cache.is_dirty(0x900)
    assert cache.read(0x900, 16, WB) == b"cpu-cpu-DEVICE!!"
    cache.clean_all()
    assert memory.read(0x900, 16) == b"cpu-cpu-DEVICE!!"


def test_snoop_read_overlays_only_cached_lines() -> None:
    memory, cache = make()
    cache.write(0xA10, b"X" * 16, WB)
    expected = memory.read(0xA00, 16) + b"X" * 16 + memory.read(0xA20, 16)
    assert cache.snoop_read(0xA00, 48) == expected
    assert cache.counters.snoop_hits == 1


def test_fill_line_is_clean_and_may_write_back_a_dirty_victim() -> None:
    memory, cache = make()
    cache.write(0x000, b"victim", WB)
    cache.write(0x040, b"other", WB)
    assert cache.fill_line(0x085) is True
    assert cache.fill_line(0x080) is False  # already there
    assert cache.lines() == [(0x040, True), (0x080, False)]
    assert memory.read(0x000, 6) == b"victim"
    counters = cache.counters
    assert (counters.prefetch_fills, counters.fills, counters.hits) == (1, 3, 0)
    assert cache.fill_range(0x7F8, 0x10) == 2  # two lines, both new


# -- misuse -----------------------------------------------------------------------------------

MISUSE = [
    ("read negative length", lambda c: c.read(0x10, -1, WB), InvalidArgumentError),
    ("read bool address", lambda c: c.read(True, 4, WB), InvalidArgumentError),
    ("read str address", lambda c: c.read("0x10", 4, WB), InvalidArgumentError),
    ("read float length", lambda c: c.read(0x10, 4.0, WB), InvalidArgumentError),
    ("read negative address", lambda c: c.read(-16, 4, WB), InvalidArgumentError),
    ("read memtype string", lambda c: c.read(0x10, 4, "normal-wb-wa"), InvalidArgumentError),
    ("read into hole", lambda c: c.read(HOLE + 0x10, 4, WB), BusError),
    ("read across hole", lambda c: c.read(HOLE - 0x20, 0x40, WB), BusError),
    ("read huge length", lambda c: c.read(0x10, 1 << 62, WB), BusError),
    ("uncached read in hole", lambda c: c.read(HOLE, 4, NC), BusError),
    ("write across hole", lambda c: c.write(HOLE - 0x8, b"x" * 0x20, WB), BusError),
    ("nwa write across hole", lambda c: c.write(HOLE - 0x8, b"x" * 0x20, NWA), BusError),
    ("wt write across hole", lambda c: c.write(HOLE - 0x8, b"x" * 0x20, WT), BusError),
    ("nc write across hole", lambda c: c.write(HOLE - 0x8, b"x" * 0x20, NC), BusError),
    ("write non-bytes", lambda c: c.write(0x10, "text", WB), InvalidArgumentError),
    ("write bad memtype", lambda c: c.write(0x10, b"x", None), InvalidArgumentError),
    ("clean in hole", lambda c: c.clean(HOLE, 0x10), BusError),
    ("clean negative", lambda c: c.clean(0x10, -5), InvalidArgumentError),
    ("invalidate across hole", lambda c: c.invalidate(0x0, 0x3000), BusError),
    ("clean_invalidate bool", lambda c: c.clean_invalidate(0x0, False), InvalidArgumentError),
    ("snoop_read hole", lambda c: c.snoop_read(HOLE + 4, 4), BusError),
    ("snoop_write across hole", lambda c: c.snoop_write(HOLE - 2, b"abcd"), BusError),
    ("fill_line in hole", lambda c: c.fill_line(HOLE), BusError),
    ("fill_line past memory", lambda c: c.fill_line(1 << 40), BusError),
    ("fill_range across hole", lambda c: c.fill_range(HOLE - 16, 32), BusError),
    ("contains negative", lambda c: c.contains(-1), InvalidArgumentError),
    ("is_dirty str", lambda c: c.is_dirty("a"), InvalidArgumentError),
    ("check_backed hole", lambda c: c.check_backed("dma", HOLE, 1), BusError),
]


@pytest.mark.parametrize(("name", "call", "error"), MISUSE, ids=[m[0] for m in MISUSE])
def test_misuse_raises_typed_error_and_changes_nothing(name: str, call, error) -> None:  # type: ignore[no-untyped-def]
    memory, cache = make()
    cache.write(0xFE0, pattern(32, 7), WB)  # dirty lines next to the hole
    cache.read(HOLE + 0x1000, 40, WB)  # clean lines at the start of bank b
    cache.write(0x000, b"dirty", WB)
    snap, digest = cache.snapshot(), memory.digest()
    with pytest.raises(error) as info:
        call(cache)
    assert isinstance(info.value, VcmmError)
    assert cache.snapshot() == snap
    assert memory.digest() == digest


def test_bus_error_names_the_first_unbacked_address() -> None:
    _, cache = make()
    with pytest.raises(BusError) as info:
        cache.read(HOLE - 0x20, 0x40, WB)
    assert info.value.address == HOLE
    assert hex(HOLE) in str(info.value)


def test_zero_length_accesses_change_nothing() -> None:
    _, cache = make()
    snap = cache.snapshot()
    assert cache.read(0x10, 0, WB) == b""
    cache.write(0x10, b"", WB)
    assert cache.snoop_read(0x10, 0) == b""
    assert cache.fill_range(0x10, 0) == 0
    assert cache.snapshot() == snap


def test_lines_contains_and_is_dirty_agree() -> None:
    _, cache = make()
    cache.read(BANK_B + 0x30, 1, WB)
    cache.write(0x10, b"q", WB)
    assert cache.lines() == [(0x10, True), (BANK_B + 0x30, False)]
    assert cache.contains(BANK_B + 0x3F) and not cache.is_dirty(BANK_B + 0x30)
    assert cache.is_dirty(0x1F) and not cache.contains(0x20)
    assert not cache.contains(HOLE)  # a hole is simply never cached


# -- the reference comparison -----------------------------------------------------------------

CONFIGS = [
    TINY,
    CacheConfig(size=64, ways=1, line=16),  # direct mapped
    CacheConfig(size=256, ways=4, line=16),
    CacheConfig(size=128, ways=2, line=32),
    CacheConfig(size=64, ways=4, line=16),  # fully associative
]

_bank = st.sampled_from([BANK_A, BANK_B])
# Mostly a hot window of a few lines per set (hits, LRU refreshes), sometimes anywhere.
_offset = st.one_of(st.integers(0, 0xBF), st.integers(0, 0x3FF), st.integers(0, SZ_4K - 1))
_length = st.one_of(st.integers(0, 40), st.integers(0, 1200))
_any_type = st.sampled_from(list(MemType))
_op = st.one_of(
    st.tuples(st.just("read"), _bank, _offset, _length, _any_type),
    st.tuples(st.just("write"), _bank, _offset, _length, _any_type, st.integers(0, 1000)),
    st.tuples(
        st.sampled_from(["clean", "invalidate", "clean_invalidate"]), _bank, _offset, _length
    ),
    st.tuples(st.sampled_from(["clean_all", "invalidate_all", "clean_invalidate_all"])),
    st.tuples(st.just("fill_line"), _bank, _offset),
    st.tuples(st.just("fill_range"), _bank, _offset, _length),
    st.tuples(st.just("snoop_read"), _bank, _offset, _length),
    st.tuples(st.just("snoop_write"), _bank, _offset, _length, st.integers(0, 1000)),
    st.tuples(st.just("device_write"), _bank, _offset, _length, st.integers(0, 1000)),
    st.tuples(st.just("hole"), st.integers(0x0F80, 0x1FFF), st.integers(1, 0x100), _any_type),
)


def _apply(target: DataCache | RefCache, memory: PhysicalMemory | None, op: tuple) -> object:  # type: ignore[type-arg]
    kind = op[0]
    if kind in ("clean_all", "invalidate_all", "clean_invalidate_all"):
        if isinstance(target, RefCache):
            length = 0x3000
            out = {
                "clean_all": target.clean,
                "invalidate_all": target.invalidate,
                "clean_invalidate_all": target.clean_invalidate,
            }[kind](0, length)
            return out
        return getattr(target, kind)()
    bank, offset = op[1], op[2]
    pa = bank + offset
    if kind == "fill_line":
        return target.fill_line(pa)
    length = min(op[3], SZ_4K - offset)
    if kind == "read":
        return target.read(pa, length, op[4])
    if kind == "write":
        return target.write(pa, pattern(length, op[5]), op[4])
    if kind == "snoop_write":
        return target.snoop_write(pa, pattern(length, op[4]))
    if kind == "device_write":
        if isinstance(target, RefCache):
            target.mem[pa : pa + length] = pattern(length, op[4])
        else:
            assert memory is not None
            memory.write(pa, pattern(length, op[4]))
        return None
    return getattr(target, kind)(pa, length)


# A few lines used through a cacheable and an uncached alias at once, with device
# writes behind the cache's back: there the uncached reads hit lines nearly every time.
_window = st.integers(0, 0x7F)
_alias_type = st.sampled_from([WB, NC])
_alias_op = st.one_of(
    st.tuples(st.just("read"), st.just(BANK_A), _window, st.integers(1, 48), _alias_type),
    st.tuples(
        st.just("write"),
        st.just(BANK_A),
        _window,
        st.integers(1, 48),
        _alias_type,
        st.integers(0, 1000),
    ),
    st.tuples(
        st.just("device_write"), st.just(BANK_A), _window, st.integers(1, 48), st.integers(0, 1000)
    ),
    st.tuples(st.just("fill_line"), st.just(BANK_A), _window),
    st.tuples(st.just("invalidate"), st.just(BANK_A), _window, st.integers(1, 48)),
)


@settings(max_examples=180, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    config=st.sampled_from(CONFIGS),
    ops=st.one_of(
        st.lists(_op, min_size=1, max_size=30), st.lists(_alias_op, min_size=1, max_size=20)
    ),
    lookup=st.booleans(),
)
def test_cache_agrees_with_the_reference_model(
    config: CacheConfig,
    ops: list[tuple],  # type: ignore[type-arg]
    lookup: bool,
) -> None:
    _agree(config, ops, lookup)


def _agree(config: CacheConfig, ops: list[tuple], lookup: bool) -> None:  # type: ignore[type-arg]
    """Run ``ops`` on the cache and on the reference; every result and state agrees."""
    memory, cache = make(config)
    cache.uncached_lookup = lookup
    ref_mem = bytearray(0x3000)
    ref_mem[BANK_A : BANK_A + SZ_4K] = memory.read(BANK_A, SZ_4K)
    ref_mem[BANK_B : BANK_B + SZ_4K] = memory.read(BANK_B, SZ_4K)
    ref = RefCache(ref_mem, config, lookup)
    for op in ops:
        if op[0] == "hole":
            pa = op[1]
            length = max(op[2], HOLE - pa + 1)  # reaches at least the hole's first byte
            snap, digest = cache.snapshot(), memory.digest()
            with pytest.raises(BusError):
                cache.read(pa, length, op[3])
            with pytest.raises(BusError):
                cache.write(pa, b"h" * length, op[3])
            assert cache.snapshot() == snap and memory.digest() == digest
            continue
        got = _apply(cache, memory, op)
        want = _apply(ref, None, op)
        assert got == want, op
        assert cache.lines() == ref.lines(), op
        assert astuple(cache.counters) == astuple(ref.c), op
    for bank in (BANK_A, BANK_B):
        assert memory.read(bank, SZ_4K) == bytes(ref.mem[bank : bank + SZ_4K])
        assert cache.snoop_read(bank, SZ_4K) == ref.snoop_read(bank, SZ_4K)
