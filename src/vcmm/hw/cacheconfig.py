"""The values of the CPU data cache: its geometry, its counters, a snapshot of it.

Kept apart from the cache's behaviour (:mod:`vcmm.hw.cache`) as the TLB's values are
(:mod:`vcmm.hw.tlbentry`): the CPU, the prefetcher, reports and tests share them.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import SZ_1K, SZ_4K, is_power_of_two

#: Smallest and largest line sizes accepted.  Lines never exceed 4 KiB so that a line
#: never straddles a memory region (regions are 4 KiB aligned): a backed byte implies a
#: backed line, which keeps fills and write-backs from ever faulting half way.
MIN_LINE = 4
MAX_LINE = SZ_4K


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """Geometry of a set-associative cache: total ``size``, ``ways`` per set, ``line`` bytes."""

    size: int = 32 * SZ_1K
    ways: int = 4
    line: int = 64

    def __post_init__(self) -> None:
        for name in ("size", "ways", "line"):
            value = getattr(self, name)
            if not is_int(value):
                raise InvalidArgumentError(f"CacheConfig {name} {value!r} is not an integer")
            if not is_power_of_two(value):
                raise InvalidArgumentError(f"CacheConfig {name} {value} is not a power of two")
        if not MIN_LINE <= self.line <= MAX_LINE:
            raise InvalidArgumentError(
                f"CacheConfig line {self.line} must be between {MIN_LINE} and {MAX_LINE} bytes"
            )
        if self.size % self.line:
            raise InvalidArgumentError(
                f"CacheConfig line {self.line} does not divide size {self.size}"
            )
        if (self.size // self.line) % self.ways:
            raise InvalidArgumentError(
                f"CacheConfig ways {self.ways} does not divide the {self.size // self.line} "
                f"lines of a {self.size}-byte cache with {self.line}-byte lines"
            )

    @property
    def sets(self) -> int:
        return self.size // (self.line * self.ways)

    @property
    def num_lines(self) -> int:
        return self.size // self.line

    @property
    def line_shift(self) -> int:
        """log2(line): physical address >> line_shift is the line number."""
        return self.line.bit_length() - 1

    @property
    def set_shift(self) -> int:
        """log2(sets): line number >> set_shift is the tag."""
        return self.sets.bit_length() - 1


@dataclass(slots=True)
class CacheCounters:
    """Event counts, for reports and tests.

    ``hits``/``misses`` count CPU line accesses through cacheable mappings (a multi-line
    access counts once per line).  ``fills`` counts every line allocation, demand or
    speculative; ``prefetch_fills`` the speculative ones among them.  ``evictions``
    counts valid lines displaced by replacement; ``writebacks`` every line written to
    memory (by eviction or by clean).  ``bypasses`` counts accesses through
    non-cacheable mappings, ``snoop_hits`` lines a coherent device found in the cache,
    ``uncached_hits`` lines a Normal non-cacheable read found there (each one the sign
    of a mismatched cacheable alias, :attr:`vcmm.hw.cache.DataCache.uncached_lookup`).
    """

    hits: int = 0
    misses: int = 0
    fills: int = 0
    evictions: int = 0
    writebacks: int = 0
    prefetch_fills: int = 0
    bypasses: int = 0
    snoop_hits: int = 0
    uncached_hits: int = 0


@dataclass(frozen=True, slots=True)
class CacheSnapshot:
    """The complete state of a cache as comparable bytes (for state-unchanged checks),
    with its lookup policy for uncached reads."""

    tags: bytes
    valid: bytes
    dirty: bytes
    ages: bytes
    data: bytes
    clock: int
    counters: tuple[int, ...]
    uncached_lookup: bool
