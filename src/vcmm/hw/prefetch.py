"""Speculative prefetch: the CPU filling cache lines nobody asked for.

ARMv6 and ARMv7 CPUs may speculatively fetch *any* location mapped cacheable, at any
time, whether or not the program ever touches it.  Russell King put it to the VCMM's
author (seed 000 L2075-2094): multiple mappings of one physical page with different
attributes are outlawed "due to speculative prefetching.  The cache can be searched even
for a mapping specified as 'normal, uncached' and you can get cache hits because the
data has been speculatively loaded through a separate cached mapping of the same
physical page."  Not touching the cacheable alias is not enough (L3071-3079): the
kernel's linear map of RAM is cacheable, so an uncached alias of that RAM can be
shadowed by a line the CPU pulled in on its own.

:class:`SpeculativePrefetcher` makes that hazard reproducible.  The CPU gives it a
callable returning the physical ranges it currently maps cacheable; every :meth:`tick`
fills a few lines chosen from them with a seeded numpy generator, so a run is random in
shape but identical for the same seed.  :meth:`prefetch_range` forces a whole range in,
for demonstrations that must not depend on luck; like a tick it reaches only ranges the
CPU maps cacheable.  What a line filled this way does to an *uncached* alias of the
same page is the cache's business (:attr:`vcmm.hw.cache.DataCache.uncached_lookup`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, NotMappedError
from vcmm.hw.cache import DataCache
from vcmm.ranges import AddressRange, subtract


@dataclass(slots=True)
class PrefetchCounters:
    """``ticks`` that ran, lines ``chosen`` by them, lines newly ``filled`` (ticks and
    forced ranges), and ``ranges`` forced in by :meth:`SpeculativePrefetcher.prefetch_range`.
    """

    ticks: int = 0
    chosen: int = 0
    filled: int = 0
    ranges: int = 0


@dataclass(frozen=True, slots=True)
class PrefetcherSnapshot:
    """The prefetcher's own state: enable flag, generator state and counters."""

    enabled: bool
    rng_state: dict[str, Any]
    counters: tuple[int, ...]


class SpeculativePrefetcher:
    """Fills lines of the cacheable-mapped ranges into a :class:`DataCache` at random."""

    def __init__(
        self,
        cache: DataCache,
        *,
        seed: int,
        lines_per_tick: int = 4,
        candidates: Callable[[], Sequence[AddressRange]],
    ) -> None:
        if not isinstance(cache, DataCache):
            raise InvalidArgumentError(
                f"SpeculativePrefetcher needs a DataCache, got {type(cache).__name__}"
            )
        if not is_int(seed) or seed < 0:
            raise InvalidArgumentError(f"prefetcher seed {seed!r} must be an integer >= 0")
        if not is_int(lines_per_tick):
            raise InvalidArgumentError(f"lines_per_tick {lines_per_tick!r} is not an integer")
        if lines_per_tick < 1:
            raise InvalidArgumentError(f"lines_per_tick {lines_per_tick} must be >= 1")
        if not callable(candidates):
            raise InvalidArgumentError(
                f"candidates {candidates!r} must be a callable returning AddressRanges"
            )
        self._cache = cache
        self._seed = seed
        self._lines_per_tick = lines_per_tick
        self._candidates = candidates
        self._rng = np.random.default_rng(seed)
        self._enabled = True
        self._counters = PrefetchCounters()

    @property
    def cache(self) -> DataCache:
        return self._cache

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def lines_per_tick(self) -> int:
        return self._lines_per_tick

    @property
    def enabled(self) -> bool:
        """Whether :meth:`tick` does anything (a CPU with speculation switched off)."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"prefetcher enabled flag {value!r} is not a bool")
        self._enabled = value

    @property
    def counters(self) -> PrefetchCounters:
        """A copy of the counters."""
        return replace(self._counters)

    def snapshot(self) -> PrefetcherSnapshot:
        return PrefetcherSnapshot(
            enabled=self._enabled,
            rng_state=copy.deepcopy(dict(self._rng.bit_generator.state)),
            counters=(
                self._counters.ticks,
                self._counters.chosen,
                self._counters.filled,
                self._counters.ranges,
            ),
        )

    def tick(self) -> int:
        """Speculatively fill ``lines_per_tick`` lines of the candidate ranges.

        Lines are drawn uniformly (with replacement) among all lines the ranges cover.
        Returns how many of them were not cached before.  Disabled, or with nothing
        mapped cacheable, a tick does nothing and draws nothing.
        """
        if not self._enabled:
            return 0
        ranges = self._candidate_ranges()
        if not ranges:
            return 0
        shift = self._cache.config.line_shift
        firsts = np.array([r.start >> shift for r in ranges], dtype=np.int64)
        counts = np.array([((r.end - 1) >> shift) - (r.start >> shift) + 1 for r in ranges])
        ends = np.cumsum(counts)
        picks = self._rng.integers(0, int(ends[-1]), size=self._lines_per_tick)
        which = np.searchsorted(ends, picks, side="right")
        numbers = firsts[which] + (picks - (ends[which] - counts[which]))
        filled = sum(self._cache.fill_line(int(number) << shift) for number in numbers)
        self._counters.ticks += 1
        self._counters.chosen += self._lines_per_tick
        self._counters.filled += filled
        return filled

    def prefetch_range(self, range: AddressRange) -> int:
        """Fill every line of ``range``, as if the CPU had speculatively run through it.

        Speculation reaches only what the CPU maps cacheable, so every byte of
        ``range`` must lie in the candidate ranges (the linear map, cacheable vmalloc
        and user mappings); a range no cacheable mapping covers is refused with
        :class:`NotMappedError`.  Returns the number of lines newly filled.
        """
        if not isinstance(range, AddressRange):
            raise InvalidArgumentError(f"prefetch_range needs an AddressRange, got {range!r}")
        if range.size:
            self._cache.check_backed("prefetch_range", range.start, range.size)
            outside = subtract([range], self._candidate_ranges())
            if outside:
                raise NotMappedError(
                    f"prefetch_range {range}: physical {outside[0]} is not mapped cacheable "
                    "by the CPU, and speculation only fills lines of cacheable mappings"
                )
        filled = self._cache.fill_range(range.start, range.size)
        self._counters.ranges += 1
        self._counters.filled += filled
        return filled

    def _candidate_ranges(self) -> list[AddressRange]:
        """The CPU's cacheable ranges, checked before any line is drawn or filled."""
        got = self._candidates()
        if not isinstance(got, Sequence) or isinstance(got, str | bytes):
            raise InvalidArgumentError(
                f"prefetch candidates returned {type(got).__name__}, not a sequence of AddressRange"
            )
        ranges = []
        for item in got:
            if not isinstance(item, AddressRange):
                raise InvalidArgumentError(f"prefetch candidate {item!r} is not an AddressRange")
            if item.size:
                self._cache.check_backed("prefetch", item.start, item.size)
                ranges.append(item)
        return ranges
