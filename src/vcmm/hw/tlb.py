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

Layout: the values (:class:`TLBConfig`, :class:`TLBEntry`, :class:`TLBStats`) live in
:mod:`vcmm.hw.tlbentry`; the contents and the per-tag fast path a translation engine
uses (:meth:`TLB.port`) in :mod:`vcmm.hw.tlbstore`.  The methods of :class:`TLB` check
every argument and then use that same store and port, so each operation is written
once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeAlias

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError, UnsupportedSizeError
from vcmm.hw.tlbentry import (
    ADDRESS_LIMIT,
    MIN_PAGE_SIZE,
    REPLACEMENT_POLICIES,
    TLBConfig,
    TLBEntry,
    TLBStats,
    check_address,
    check_tag,
)
from vcmm.hw.tlbstore import GLOBAL, Key, TlbPort, TlbStore
from vcmm.sizes import is_power_of_two

__all__ = [
    "ADDRESS_LIMIT",
    "MIN_PAGE_SIZE",
    "REPLACEMENT_POLICIES",
    "TLB",
    "RngState",
    "TLBCheckpoint",
    "TLBConfig",
    "TLBEntry",
    "TLBSnapshot",
    "TLBStats",
    "TlbPort",
    "check_address",
    "check_tag",
]

#: The state of the ``random`` policy's generator (``random.Random.getstate()``: the
#: version, CPython's 624 Mersenne Twister words plus their position, and the cached
#: Gaussian), or ``None`` under ``lru`` and ``fifo``, which have no generator.
RngState: TypeAlias = tuple[int, tuple[int, ...], float | None] | None


@dataclass(frozen=True)
class TLBSnapshot:
    """Everything observable about a TLB, as a comparable value.

    ``sets`` lists each set's entries in replacement order (LRU or oldest first);
    ``tag_stats`` holds only tags with a non-zero counter, so merely asking for a tag's
    counters does not change the snapshot.
    """

    sets: tuple[tuple[TLBEntry, ...], ...]
    rng_state: RngState
    stats: TLBStats
    tag_stats: dict[Hashable, TLBStats]


@dataclass(frozen=True)
class TLBCheckpoint:
    """Saved state of one TLB, for rolling back a compound operation that failed."""

    owner: int
    sets: tuple[dict[Key, TLBEntry], ...]
    rng_state: RngState
    stats: TLBStats
    tag_stats: dict[Hashable, TLBStats]


class TLB:
    """Finite set-associative TLB (see the module docstring for the exact model)."""

    def __init__(self, config: TLBConfig) -> None:
        if not isinstance(config, TLBConfig):
            raise InvalidArgumentError(f"TLB needs a TLBConfig, got {config!r}")
        self._config = config
        self._store = TlbStore(config)
        self._ports: dict[Hashable, TlbPort] = {}
        #: The live counters of the whole TLB.
        self.stats = self._store.stats

    # -- configuration and inspection --------------------------------------------

    @property
    def config(self) -> TLBConfig:
        return self._config

    def __len__(self) -> int:
        return sum(len(s) for s in self._store.sets)

    def __repr__(self) -> str:
        c = self._config
        return (
            f"TLB(entries={c.entries}, ways={c.ways}, replacement={c.replacement!r}, "
            f"held={len(self)})"
        )

    def port(self, tag: Hashable) -> TlbPort:
        """The fast path of ``tag`` (:mod:`vcmm.hw.tlbstore`), for translation engines.

        One port per tag, made on first use; the tag is checked here once.
        """
        port = None
        if tag is not None and not isinstance(tag, bool):  # None and bools never get one
            with contextlib.suppress(TypeError):  # unhashable: check_tag says so below
                port = self._ports.get(tag)
        if port is None:
            port = self._ports[check_tag(tag)] = TlbPort(self._store, tag)
        return port

    def entries(self) -> list[TLBEntry]:
        """Current entries, set by set, each set in replacement order."""
        return [e for s in self._store.sets for e in s.values()]

    def page_sizes(self) -> tuple[int, ...]:
        """Page sizes currently held, ascending (the probe order of a lookup)."""
        return tuple(size for size, _ in self._store.order)

    def set_index(self, va: int, size: int) -> int:
        """The set an entry of ``size`` covering ``va`` lives in."""
        va = check_address(va)
        if not is_power_of_two(size) or size < MIN_PAGE_SIZE:
            raise UnsupportedSizeError(
                f"page size {size!r} must be a power of two >= {MIN_PAGE_SIZE:#x}"
            )
        return (va >> (size.bit_length() - 1)) % self._store.nsets

    def stats_for(self, tag: Hashable) -> TLBStats:
        """The live counters of ``tag`` (created at zero on first use)."""
        return self._store.stats_of(check_tag(tag))

    def reset_stats(self) -> None:
        """Zero the global and every per-tag counter, in place."""
        self._store.stats.reset()
        for stats in self._store.tag_stats.values():
            stats.reset()

    def snapshot(self) -> TLBSnapshot:
        """Contents, replacement state and counters as one comparable value."""
        store = self._store
        return TLBSnapshot(
            sets=tuple(tuple(s.values()) for s in store.sets),
            rng_state=store.rng.getstate() if store.rng is not None else None,
            stats=store.stats.copy(),
            tag_stats={t: s.copy() for t, s in store.tag_stats.items() if not s.is_zero()},
        )

    def checkpoint(self) -> TLBCheckpoint:
        """Save the whole state so that :meth:`restore` can undo what follows."""
        store = self._store
        return TLBCheckpoint(
            owner=id(self),
            sets=tuple(dict(s) for s in store.sets),
            rng_state=store.rng.getstate() if store.rng is not None else None,
            stats=store.stats.copy(),
            tag_stats={t: s.copy() for t, s in store.tag_stats.items()},
        )

    def restore(self, checkpoint: TLBCheckpoint) -> None:
        """Return to a checkpoint of this TLB.  Counter objects are reset in place."""
        if not isinstance(checkpoint, TLBCheckpoint) or checkpoint.owner != id(self):
            raise InvalidArgumentError(f"{checkpoint!r} is not a checkpoint of {self!r}")
        store = self._store
        store.load(checkpoint.sets)
        if store.rng is not None and checkpoint.rng_state is not None:
            store.rng.setstate(checkpoint.rng_state)
        store.stats.assign(checkpoint.stats)
        for tag, stats in store.tag_stats.items():
            saved = checkpoint.tag_stats.get(tag)
            if saved is None:
                stats.reset()
            else:
                stats.assign(saved)

    # -- lookup and fill, one call at a time --------------------------------------------

    def probe(self, tag: Hashable, va: int) -> TLBEntry | None:
        """The entry a lookup would return, without counting or touching anything."""
        port = self.port(tag)
        return port.probe(check_address(va))

    def lookup(self, tag: Hashable, va: int) -> TLBEntry | None:
        """Look ``va`` up for ``tag``: counts a hit or a miss and updates replacement."""
        port = self.port(tag)
        entry = port.lookup(check_address(va))
        if entry is None:
            port.miss()
        return entry

    def note_hits(self, tag: Hashable, entry: TLBEntry, count: int = 1) -> None:
        """Account ``count`` lookups by ``tag`` that all hit ``entry``.

        The same as ``count`` calls of :meth:`lookup` returning ``entry`` in a row, for
        translation engines that prove a run of hits in bulk.
        """
        self.port(tag).hit(entry, count)

    def note_walk(self, tag: Hashable, reads: int) -> None:
        """Account one page-table walk by ``tag`` that made ``reads`` descriptor reads."""
        self.port(tag).note_walk(reads)

    def insert(self, entry: TLBEntry) -> TLBEntry | None:
        """Insert ``entry``, evicting per the policy if its set is full.

        Returns the evicted entry (``None`` if a free way or the same key was used).
        """
        if not isinstance(entry, TLBEntry):
            raise InvalidArgumentError(f"TLB.insert needs a TLBEntry, got {entry!r}")
        return self.port(entry.tag).fill(entry)

    # -- invalidation -------------------------------------------------------------------

    def invalidate_all(self) -> int:
        """Remove every entry.  Returns how many were removed."""
        return self._store.remove(lambda e: True)

    def invalidate_tag(self, tag: Hashable) -> int:
        """Remove ``tag``'s non-global entries (global ones survive, as with TLBIASID)."""
        check_tag(tag)
        return self._store.remove(lambda e: not e.global_ and e.tag == tag)

    def invalidate_va(self, tag: Hashable, va: int) -> int:
        """Remove entries covering ``va`` usable by ``tag``: its own and global ones."""
        check_tag(tag)
        va = check_address(va)
        return self._store.remove(lambda e: e.matches(tag) and e.covers(va))

    def invalidate_range(self, va: int, size: int, tag: Hashable | None = None) -> int:
        """Remove entries overlapping ``[va, va + size)``.

        With ``tag`` None every tag's entries go; otherwise that tag's and global ones.
        """
        va, size = _check_range("invalidate_range", va, size)
        if tag is None:
            return self._store.remove(lambda e: e.overlaps(va, size))
        check_tag(tag)
        return self._store.remove(lambda e: e.matches(tag) and e.overlaps(va, size))

    # -- queries ------------------------------------------------------------------------

    def holds(self, tag: Hashable | None, va: int, size: int) -> bool:
        """Whether :meth:`invalidate_range` of the same arguments would remove anything:
        an entry overlapping ``[va, va + size)`` that ``tag`` may use (its own or a
        global one; with ``tag`` None, any entry).  Counts and changes nothing.

        Lets an unmap skip the invalidation (and its cost) when the TLB holds nothing
        of the range, the way a driver's lazy flush does.  Cheap: per held page size, a
        direct probe of each page of the range when the range spans fewer pages than
        entries of that size are held, else a scan of those entries.
        """
        va, size = _check_range("holds", va, size)
        if tag is not None:
            check_tag(tag)
        owners = None if tag is None else (tag, GLOBAL)
        return self._store.holds(va, va + size, owners)


def _check_range(what: str, va: int, size: int) -> tuple[int, int]:
    """``(va, size)`` of a range argument, checked: inside 64 bits, ``size`` > 0."""
    va = check_address(va)
    if not is_int(size) or size <= 0:
        raise InvalidArgumentError(f"{what} size {size!r} must be an integer > 0")
    if va + size > ADDRESS_LIMIT:
        raise InvalidArgumentError(f"{what} [{va:#x}, +{size:#x}) leaves the 64-bit address space")
    return va, int(size)
