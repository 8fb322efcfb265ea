"""A finite, set-associative, tagged TLB holding entries of mixed page sizes.

The seed's SMMU has one global TLB shared by every context bank, its entries tagged by
context; the CPU's TLB tags entries by ASID and lets kernel mappings (nG=0) match any
ASID.  Both are this class: the *tag* is any hashable value (a context-bank number, an
ASID) and an entry may be *global*.

Set-indexing model (exact and deterministic)
--------------------------------------------
An entry of size ``S`` (a power of two) whose input range starts at ``va_base`` lives in
set ``(va_base >> log2(S)) % nsets``: its page number counted in units of its own size.
A lookup of ``va`` probes, for every page size currently held (smallest first), set
``(va >> log2(S)) % nsets`` for an entry of size ``S`` whose base is ``va`` rounded down
to ``S`` and whose owner is the lookup tag, then for a global one.  The first match
wins.  Because each size hashes by its own page number, the 256 4 KiB pages inside a
1 MiB block spread over the sets independently of the block's own entry, the way a
hardware TLB that probes once per supported page size behaves.

Two entries can match the same address only when the TLB holds stale or conflicting
entries (real hardware reports a TLB conflict abort).  The priority above (smaller size
first, then the tag's own entry before a global one) makes such lookups deterministic.

Replacement is per set: ``lru`` (a hit makes the entry most recent), ``fifo`` (hits do
not change state; the oldest insertion goes) and ``random`` (a seeded generator picks
the victim among the set's entries in insertion order).  Inserting an entry whose
(size, base, owner) is already held replaces it and counts as a fresh insertion.

Counters are kept for the whole TLB and per tag: a hit on a global entry, a miss, a
walk and an eviction count for the tag of the access that caused them (the inserter
for evictions); an invalidation counts for the tag stored in the removed entry.  The
per-tag counters therefore sum to the global ones.

Invalidation follows the ARM TLB maintenance operations: by tag (TLBIASID) removes the
tag's non-global entries only; by address for a tag (TLBIMVA) removes that tag's
entries and global entries; by range with no tag removes every overlapping entry.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from vcmm.attrs import PageAttrs
from vcmm.errors import AlignmentError, InvalidArgumentError, UnsupportedSizeError
from vcmm.sizes import SZ_1K, is_power_of_two

#: Replacement policies a TLB can use.
REPLACEMENT_POLICIES: tuple[str, ...] = ("lru", "fifo", "random")
#: Smallest page size an entry may have (ARMv5 tiny pages were 1 KiB).
MIN_PAGE_SIZE = SZ_1K
#: Input and output addresses are at most 64 bits wide.
ADDRESS_LIMIT = 1 << 64


class _GlobalOwner:
    """Owner marker of a global entry: it sorts apart from every user tag."""

    _instance: _GlobalOwner | None = None

    def __new__(cls) -> _GlobalOwner:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "GLOBAL"


_GLOBAL = _GlobalOwner()

_Key = tuple[int, int, Hashable]


def check_tag(tag: object, what: str = "tag") -> Hashable:
    """Validate a TLB tag: hashable, not ``None`` (reserved for "all tags"), not a bool."""
    if tag is None or isinstance(tag, bool):
        raise InvalidArgumentError(
            f"{what} {tag!r} is not a valid TLB tag: None means 'all tags' and bools are "
            "ambiguous; use a context number or an ASID"
        )
    try:
        hash(tag)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} {tag!r} of type {type(tag).__name__} is not hashable, so it cannot tag "
            "TLB entries"
        ) from None
    return tag


def check_address(va: object, what: str = "va") -> int:
    """Validate an input address: an integer in [0, 2**64)."""
    if isinstance(va, bool) or not isinstance(va, int | np.integer):
        raise InvalidArgumentError(f"{what} {va!r} is not an integer address")
    value = int(va)
    if not 0 <= value < ADDRESS_LIMIT:
        raise InvalidArgumentError(f"{what} {value:#x} is outside the 64-bit address space")
    return value


@dataclass(slots=True)
class TLBStats:
    """Event counters of a TLB, for the whole TLB or one tag.

    Mutable on purpose: the TLB and the translation engine add to them in place, and a
    caller holding ``tlb.stats_for(tag)`` sees them grow.
    """

    lookups: int = 0
    hits: int = 0
    misses: int = 0
    #: Page-table walks made on misses, and the descriptor reads they cost.
    walks: int = 0
    walk_reads: int = 0
    evictions: int = 0
    #: Entries removed by invalidation.
    invalidations: int = 0

    def reset(self) -> None:
        """Zero every counter in place (holders of this object see the reset)."""
        for f in fields(self):
            setattr(self, f.name, 0)

    def copy(self) -> TLBStats:
        """An independent copy, for before/after comparisons."""
        return TLBStats(*(getattr(self, f.name) for f in fields(self)))

    snapshot = copy

    def assign(self, other: TLBStats) -> None:
        """Overwrite every counter with ``other``'s (used to roll back)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    def is_zero(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))

    @property
    def hit_rate(self) -> float:
        """Hits per lookup (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True, slots=True)
class TLBConfig:
    """Geometry and policy of a TLB.  ``ways == entries`` means fully associative."""

    entries: int
    ways: int
    replacement: str = "lru"
    #: Seed of the victim generator of the ``random`` policy.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("entries", "ways", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"TLBConfig {name}={value!r} must be an integer")
        if self.entries <= 0:
            raise InvalidArgumentError(f"TLBConfig entries={self.entries} must be > 0")
        if self.ways <= 0 or self.entries % self.ways:
            raise InvalidArgumentError(
                f"TLBConfig ways={self.ways} must be > 0 and divide entries={self.entries}"
            )
        if self.replacement not in REPLACEMENT_POLICIES:
            raise InvalidArgumentError(
                f"TLBConfig replacement={self.replacement!r} is not one of "
                f"{', '.join(REPLACEMENT_POLICIES)}"
            )

    @property
    def sets(self) -> int:
        return self.entries // self.ways

    @property
    def fully_associative(self) -> bool:
        return self.ways == self.entries


@dataclass(frozen=True, slots=True)
class TLBEntry:
    """One cached leaf translation: ``[va_base, va_base + size) -> pa_base``.

    ``level`` is the table level of the leaf descriptor, kept so that a permission fault
    on a hit reports the same level a walk would.
    """

    tag: Hashable
    va_base: int
    size: int
    pa_base: int
    attrs: PageAttrs
    global_: bool = False
    level: int = 0

    def __post_init__(self) -> None:
        check_tag(self.tag, "TLBEntry tag")
        for name in ("va_base", "size", "pa_base", "level"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(f"TLBEntry {name}={value!r} must be an integer")
        if not is_power_of_two(self.size) or self.size < MIN_PAGE_SIZE:
            raise UnsupportedSizeError(
                f"TLBEntry size {self.size:#x} must be a power of two >= {MIN_PAGE_SIZE:#x}"
            )
        for name in ("va_base", "pa_base"):
            value = getattr(self, name)
            if value < 0 or value + self.size > ADDRESS_LIMIT:
                raise InvalidArgumentError(
                    f"TLBEntry {name} {value:#x} + size {self.size:#x} leaves the 64-bit space"
                )
            if value % self.size:
                raise AlignmentError(
                    f"TLBEntry {name} {value:#x} is not aligned to its size {self.size:#x}"
                )
        if not isinstance(self.attrs, PageAttrs):
            raise InvalidArgumentError(f"TLBEntry attrs {self.attrs!r} is not a PageAttrs")
        if not isinstance(self.global_, bool):
            raise InvalidArgumentError(f"TLBEntry global_={self.global_!r} must be a bool")
        if self.level < 0:
            raise InvalidArgumentError(f"TLBEntry level={self.level} must be >= 0")

    @classmethod
    def _trusted(
        cls,
        tag: Hashable,
        va_base: int,
        size: int,
        pa_base: int,
        attrs: PageAttrs,
        global_: bool,
        level: int,
    ) -> TLBEntry:
        """Build without re-validating: for a translation engine that has already checked
        the walk the values come from (the miss path is hot)."""
        entry = object.__new__(cls)
        put = object.__setattr__
        put(entry, "tag", tag)
        put(entry, "va_base", va_base)
        put(entry, "size", size)
        put(entry, "pa_base", pa_base)
        put(entry, "attrs", attrs)
        put(entry, "global_", global_)
        put(entry, "level", level)
        return entry

    @property
    def va_end(self) -> int:
        """First input address after the entry."""
        return self.va_base + self.size

    def covers(self, va: int) -> bool:
        return self.va_base <= va < self.va_base + self.size

    def overlaps(self, start: int, size: int) -> bool:
        return self.va_base < start + size and start < self.va_base + self.size

    def matches(self, tag: Hashable) -> bool:
        """Whether a lookup with ``tag`` may use this entry."""
        return self.global_ or self.tag == tag

    def output(self, va: int) -> int:
        """Output address of ``va`` (which must lie inside the entry)."""
        return self.pa_base + (va - self.va_base)


@dataclass(frozen=True)
class TLBSnapshot:
    """Everything observable about a TLB, as a comparable value.

    ``sets`` lists each set's entries in replacement order (LRU or oldest first);
    ``tag_stats`` holds only tags with a non-zero counter, so merely asking for a tag's
    counters does not change the snapshot.
    """

    sets: tuple[tuple[TLBEntry, ...], ...]
    rng_state: Any
    stats: TLBStats
    tag_stats: dict[Hashable, TLBStats]


@dataclass(frozen=True)
class TLBCheckpoint:
    """Saved state of one TLB, for rolling back a compound operation that failed."""

    owner: int
    sets: tuple[dict[_Key, TLBEntry], ...]
    by_size: dict[int, dict[_Key, int]]
    rng_state: Any
    stats: TLBStats
    tag_stats: dict[Hashable, TLBStats]


class TLB:
    """Finite set-associative TLB (see the module docstring for the exact model)."""

    def __init__(self, config: TLBConfig) -> None:
        if not isinstance(config, TLBConfig):
            raise InvalidArgumentError(f"TLB needs a TLBConfig, got {config!r}")
        self._config = config
        self._nsets = config.sets
        self._ways = config.ways
        self._lru = config.replacement == "lru"
        self._rng = random.Random(config.seed) if config.replacement == "random" else None
        # Each set maps (size, va_base, owner) -> entry; dict order is replacement order.
        self._sets: list[dict[_Key, TLBEntry]] = [{} for _ in range(self._nsets)]
        # Page sizes held, each with its keys and their set index.
        self._by_size: dict[int, dict[_Key, int]] = {}
        # (size, log2 size) for each held size, ascending: the lookup probe order.
        self._present: tuple[tuple[int, int], ...] = ()
        self.stats = TLBStats()
        self._tag_stats: dict[Hashable, TLBStats] = {}

    # -- configuration and inspection --------------------------------------------

    @property
    def config(self) -> TLBConfig:
        return self._config

    def __len__(self) -> int:
        return sum(len(s) for s in self._sets)

    def __repr__(self) -> str:
        c = self._config
        return (
            f"TLB(entries={c.entries}, ways={c.ways}, replacement={c.replacement!r}, "
            f"held={len(self)})"
        )

    def entries(self) -> list[TLBEntry]:
        """Current entries, set by set, each set in replacement order."""
        return [e for s in self._sets for e in s.values()]

    def page_sizes(self) -> tuple[int, ...]:
        """Page sizes currently held, ascending (the probe order of a lookup)."""
        return tuple(size for size, _ in self._present)

    def set_index(self, va: int, size: int) -> int:
        """The set an entry of ``size`` covering ``va`` lives in."""
        va = check_address(va)
        if not is_power_of_two(size) or size < MIN_PAGE_SIZE:
            raise UnsupportedSizeError(
                f"page size {size!r} must be a power of two >= {MIN_PAGE_SIZE:#x}"
            )
        return (va >> (size.bit_length() - 1)) % self._nsets

    def stats_for(self, tag: Hashable) -> TLBStats:
        """The live counters of ``tag`` (created at zero on first use)."""
        check_tag(tag)
        stats = self._tag_stats.get(tag)
        if stats is None:
            stats = self._tag_stats[tag] = TLBStats()
        return stats

    def tags(self) -> tuple[Hashable, ...]:
        """Tags that have counters."""
        return tuple(self._tag_stats)

    def reset_stats(self) -> None:
        """Zero the global and every per-tag counter, in place."""
        self.stats.reset()
        for stats in self._tag_stats.values():
            stats.reset()

    def snapshot(self) -> TLBSnapshot:
        """Contents, replacement state and counters as one comparable value."""
        return TLBSnapshot(
            sets=tuple(tuple(s.values()) for s in self._sets),
            rng_state=self._rng.getstate() if self._rng is not None else None,
            stats=self.stats.copy(),
            tag_stats={t: s.copy() for t, s in self._tag_stats.items() if not s.is_zero()},
        )

    def checkpoint(self) -> TLBCheckpoint:
        """Save the whole state so that :meth:`restore` can undo what follows."""
        return TLBCheckpoint(
            owner=id(self),
            sets=tuple(dict(s) for s in self._sets),
            by_size={size: dict(keys) for size, keys in self._by_size.items()},
            rng_state=self._rng.getstate() if self._rng is not None else None,
            stats=self.stats.copy(),
            tag_stats={t: s.copy() for t, s in self._tag_stats.items()},
        )

    def restore(self, checkpoint: TLBCheckpoint) -> None:
        """Return to a checkpoint of this TLB.  Counter objects are reset in place."""
        if not isinstance(checkpoint, TLBCheckpoint) or checkpoint.owner != id(self):
            raise InvalidArgumentError(f"{checkpoint!r} is not a checkpoint of {self!r}")
        self._sets = [dict(s) for s in checkpoint.sets]
        self._by_size = {size: dict(keys) for size, keys in checkpoint.by_size.items()}
        self._refresh_present()
        if self._rng is not None:
            self._rng.setstate(checkpoint.rng_state)
        self.stats.assign(checkpoint.stats)
        for tag, stats in self._tag_stats.items():
            saved = checkpoint.tag_stats.get(tag)
            if saved is None:
                stats.reset()
            else:
                stats.assign(saved)

    # -- lookup -----------------------------------------------------------------------

    def probe(self, tag: Hashable, va: int) -> TLBEntry | None:
        """The entry a lookup would return, without counting or touching anything."""
        check_tag(tag)
        return self._probe(tag, check_address(va))

    def lookup(self, tag: Hashable, va: int) -> TLBEntry | None:
        """Look ``va`` up for ``tag``: counts a hit or a miss and updates replacement."""
        check_tag(tag)
        va = check_address(va)
        entry = self._probe(tag, va)
        if entry is None:
            self._note_miss(tag)
        else:
            self._note_hits(tag, entry, 1)
        return entry

    def note_hits(self, tag: Hashable, entry: TLBEntry, count: int = 1) -> None:
        """Account ``count`` lookups by ``tag`` that all hit ``entry``.

        The same as ``count`` calls of :meth:`lookup` returning ``entry`` in a row, for
        translation engines that prove a run of hits in bulk.
        """
        check_tag(tag)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise InvalidArgumentError(f"hit count {count!r} must be an integer >= 0")
        if not isinstance(entry, TLBEntry) or not entry.matches(tag):
            raise InvalidArgumentError(f"entry {entry!r} cannot serve tag {tag!r}")
        key, index = self._locate(entry)
        if self._sets[index].get(key) is not entry:
            raise InvalidArgumentError(f"entry {entry!r} is not held by this TLB")
        if count:
            self._note_hits(tag, entry, count)

    def note_walk(self, tag: Hashable, reads: int) -> None:
        """Account one page-table walk by ``tag`` that made ``reads`` descriptor reads."""
        check_tag(tag)
        if isinstance(reads, bool) or not isinstance(reads, int) or reads < 0:
            raise InvalidArgumentError(f"walk reads {reads!r} must be an integer >= 0")
        self._note_walk(tag, reads)

    # -- fill -------------------------------------------------------------------------

    def insert(self, entry: TLBEntry) -> TLBEntry | None:
        """Insert ``entry``, evicting per the policy if its set is full.

        Returns the evicted entry (``None`` if a free way or the same key was used).
        """
        if not isinstance(entry, TLBEntry):
            raise InvalidArgumentError(f"TLB.insert needs a TLBEntry, got {entry!r}")
        return self._insert(entry)

    # -- invalidation -------------------------------------------------------------------

    def invalidate_all(self) -> int:
        """Remove every entry.  Returns how many were removed."""
        return self._remove(lambda e: True)

    def invalidate_tag(self, tag: Hashable) -> int:
        """Remove ``tag``'s non-global entries (global ones survive, as with TLBIASID)."""
        check_tag(tag)
        return self._remove(lambda e: not e.global_ and e.tag == tag)

    def invalidate_va(self, tag: Hashable, va: int) -> int:
        """Remove entries covering ``va`` usable by ``tag``: its own and global ones."""
        check_tag(tag)
        va = check_address(va)
        return self._remove(lambda e: e.matches(tag) and e.covers(va))

    def invalidate_range(self, va: int, size: int, tag: Hashable | None = None) -> int:
        """Remove entries overlapping ``[va, va + size)``.

        With ``tag`` None every tag's entries go; otherwise that tag's and global ones.
        """
        va = check_address(va)
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidArgumentError(f"invalidate_range size {size!r} must be an integer > 0")
        if va + size > ADDRESS_LIMIT:
            raise InvalidArgumentError(
                f"invalidate_range [{va:#x}, +{size:#x}) leaves the 64-bit address space"
            )
        if tag is None:
            return self._remove(lambda e: e.overlaps(va, size))
        check_tag(tag)
        return self._remove(lambda e: e.matches(tag) and e.overlaps(va, size))

    # -- engine internals (arguments already validated by the caller) -----------------

    def _probe(self, tag: Hashable, va: int) -> TLBEntry | None:
        sets = self._sets
        nsets = self._nsets
        for size, shift in self._present:
            page = va >> shift
            held = sets[page % nsets]
            base = page << shift
            entry = held.get((size, base, tag))
            if entry is None:
                entry = held.get((size, base, _GLOBAL))
            if entry is not None:
                return entry
        return None

    def _locate(self, entry: TLBEntry) -> tuple[_Key, int]:
        owner = _GLOBAL if entry.global_ else entry.tag
        shift = entry.size.bit_length() - 1
        return (entry.size, entry.va_base, owner), (entry.va_base >> shift) % self._nsets

    def _stats_of(self, tag: Hashable) -> TLBStats:
        stats = self._tag_stats.get(tag)
        if stats is None:
            stats = self._tag_stats[tag] = TLBStats()
        return stats

    def _note_hits(self, tag: Hashable, entry: TLBEntry, count: int) -> None:
        if self._lru:
            key, index = self._locate(entry)
            held = self._sets[index]
            if next(reversed(held)) != key:
                held[key] = held.pop(key)
        stats = self.stats
        stats.lookups += count
        stats.hits += count
        stats = self._stats_of(tag)
        stats.lookups += count
        stats.hits += count

    def _count_hits(self, tag: Hashable, count: int) -> None:
        """Count hits on the entry the previous lookup or insert made most recent: under
        every policy such hits change nothing but the counters."""
        stats = self.stats
        stats.lookups += count
        stats.hits += count
        stats = self._stats_of(tag)
        stats.lookups += count
        stats.hits += count

    def _note_miss(self, tag: Hashable) -> None:
        stats = self.stats
        stats.lookups += 1
        stats.misses += 1
        stats = self._stats_of(tag)
        stats.lookups += 1
        stats.misses += 1

    def _note_miss_walk(self, tag: Hashable, reads: int) -> None:
        """A miss and the walk it caused, counted together (the miss path is hot)."""
        stats = self.stats
        stats.lookups += 1
        stats.misses += 1
        stats.walks += 1
        stats.walk_reads += reads
        stats = self._stats_of(tag)
        stats.lookups += 1
        stats.misses += 1
        stats.walks += 1
        stats.walk_reads += reads

    def _note_walk(self, tag: Hashable, reads: int) -> None:
        stats = self.stats
        stats.walks += 1
        stats.walk_reads += reads
        stats = self._stats_of(tag)
        stats.walks += 1
        stats.walk_reads += reads

    def _insert(self, entry: TLBEntry) -> TLBEntry | None:
        key, index = self._locate(entry)
        held = self._sets[index]
        victim: TLBEntry | None = None
        if key in held:
            del held[key]
        elif len(held) >= self._ways:
            if self._rng is None:
                victim_key = next(iter(held))
            else:
                victim_key = list(held)[self._rng.randrange(len(held))]
            victim = held.pop(victim_key)
            self._forget(victim_key)
            self.stats.evictions += 1
            self._stats_of(entry.tag).evictions += 1
        held[key] = entry
        keys = self._by_size.get(entry.size)
        if keys is None:
            keys = self._by_size[entry.size] = {}
            self._refresh_present()
        keys[key] = index
        return victim

    def _forget(self, key: _Key) -> None:
        keys = self._by_size[key[0]]
        del keys[key]
        if not keys:
            del self._by_size[key[0]]
            self._refresh_present()

    def _refresh_present(self) -> None:
        self._present = tuple((size, size.bit_length() - 1) for size in sorted(self._by_size))

    def _remove(self, doomed: Callable[[TLBEntry], bool]) -> int:
        removed = 0
        for held in self._sets:
            for key, entry in list(held.items()):
                if doomed(entry):
                    del held[key]
                    self._forget(key)
                    removed += 1
                    self.stats.invalidations += 1
                    self._stats_of(entry.tag).invalidations += 1
        return removed

    def _preempting(self, tag: Hashable, entry: TLBEntry) -> list[TLBEntry]:
        """Held entries that a lookup by ``tag`` would pick over ``entry`` for some
        address inside it: smaller entries usable by ``tag`` that overlap it."""
        found: list[TLBEntry] = []
        start, end = entry.va_base, entry.va_base + entry.size
        for size, _ in self._present:
            if size >= entry.size:
                break
            for key, index in self._by_size[size].items():
                if start <= key[1] < end and (key[2] is _GLOBAL or key[2] == tag):
                    found.append(self._sets[index][key])
        return found
