"""What a TLB holds, and the fast path a translation engine uses to reach it.

:class:`TlbStore` is a TLB's contents and counters as plain data: the sets, an index of
the entries by page size, the probe order, the replacement generator and the counters.
The validated :class:`~vcmm.hw.tlb.TLB` and its per-tag :class:`TlbPort` objects share
one store; the store keeps its own index consistent (:meth:`TlbStore.add`,
:meth:`TlbStore.drop`) and nothing else reaches inside it.

The fast path
-------------
A translation engine (:class:`~vcmm.hw.translate.Translator`) gets ``tlb.port(tag)``
once, with the tag checked then, and from there on calls only these:

==========================  ==============================================================
``port.lookup(va)``         the entry a lookup by the port's tag returns, or ``None``; a hit
                            is counted and makes the entry most recent (LRU); a miss
                            counts nothing yet
``port.miss(walk_reads)``   count one lookup that missed, and the walk it caused
``port.fill(entry)``        insert an entry (from :meth:`TLBEntry.from_walk`), evicting by
                            the policy; returns the victim
``port.repeat_hits(n)``     ``n`` more hits on the entry the last lookup or fill made most
                            recent: under every policy they change only the counters
``port.preempting(entry)``  held entries a lookup by the tag would pick over ``entry`` for
                            some address inside it (smaller, usable by the tag)
``tlb.checkpoint()`` /      save and roll back the whole TLB around a batch
``tlb.restore(saved)``
==========================  ==============================================================

Only values cross this interface (integers, :class:`TLBEntry` values, counts), never
the store's containers, and an entry is identified by its key (size, base, owner), not
by object identity.  So the store could keep its state in arrays indexed
``[set, way]`` (tags, bases, sizes, output addresses, ages) and a compiled kernel could
implement the port, or run a whole access stream against those arrays, with the
engine unchanged; the reference implementation here is dicts per set, whose insertion
order is the replacement order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING

from vcmm.errors import InvalidArgumentError
from vcmm.hw.tlbentry import ADDRESS_LIMIT, TLBConfig, TLBEntry, TLBStats

if TYPE_CHECKING:
    from vcmm.hw.tlbarrays import TlbArrays


class _GlobalOwner:
    """Owner marker of a global entry: it sorts apart from every user tag."""

    _instance: _GlobalOwner | None = None

    def __new__(cls) -> _GlobalOwner:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "GLOBAL"


#: The owner in the key of a global entry.
GLOBAL = _GlobalOwner()

#: (size, va_base, owner): where an entry is filed; owner is its tag or :data:`GLOBAL`.
Key = tuple[int, int, Hashable]


class TlbStore:
    """The contents, replacement state and counters of one TLB, as plain data.

    ``sets[i]`` maps each key of set ``i`` to its entry, in replacement order (LRU or
    oldest first); ``by_size[size]`` maps the keys of that page size to their set;
    ``order`` is ``(size, log2 size)`` of every size held, ascending: the probe order.
    """

    __slots__ = ("by_size", "lru", "nsets", "order", "rng", "sets", "stats", "tag_stats", "ways")

    def __init__(self, config: TLBConfig) -> None:
        self.nsets = config.sets
        self.ways = config.ways
        self.lru = config.replacement == "lru"
        self.rng = random.Random(config.seed) if config.replacement == "random" else None
        self.sets: list[dict[Key, TLBEntry]] = [{} for _ in range(self.nsets)]
        self.by_size: dict[int, dict[Key, int]] = {}
        self.order: tuple[tuple[int, int], ...] = ()
        self.stats = TLBStats()
        self.tag_stats: dict[Hashable, TLBStats] = {}

    def stats_of(self, tag: Hashable) -> TLBStats:
        """The live counters of ``tag``, created at zero on first use."""
        stats = self.tag_stats.get(tag)
        if stats is None:
            stats = self.tag_stats[tag] = TLBStats()
        return stats

    def locate(self, entry: TLBEntry) -> tuple[Key, int]:
        """The key an entry is filed under and the set it lives in."""
        owner = GLOBAL if entry.global_ else entry.tag
        shift = entry.size.bit_length() - 1
        return (entry.size, entry.va_base, owner), (entry.va_base >> shift) % self.nsets

    def add(self, key: Key, index: int) -> None:
        """Index a key just filed in set ``index``."""
        keys = self.by_size.get(key[0])
        if keys is None:
            keys = self.by_size[key[0]] = {}
            self._refresh_order()
        keys[key] = index

    def drop(self, key: Key) -> None:
        """Forget the index of a key just removed from its set."""
        keys = self.by_size[key[0]]
        del keys[key]
        if not keys:
            del self.by_size[key[0]]
            self._refresh_order()

    def remove(self, doomed: Callable[[TLBEntry], bool]) -> int:
        """Remove every entry ``doomed`` selects, counting an invalidation for the tag
        stored in each; returns how many went."""
        removed = 0
        for held in self.sets:
            for key, entry in list(held.items()):
                if doomed(entry):
                    del held[key]
                    self.drop(key)
                    removed += 1
                    self.stats.invalidations += 1
                    self.stats_of(entry.tag).invalidations += 1
        return removed

    def holds(self, start: int, end: int, owners: tuple[Hashable, ...] | None) -> bool:
        """Whether an entry owned by one of ``owners`` (``None``: anyone) overlaps
        ``[start, end)``.  Per held size the cheaper of probing the range's pages by key
        and scanning that size's keys."""
        for size, shift in self.order:
            keys = self.by_size[size]
            first, last = start >> shift, (end - 1) >> shift
            if owners is not None and (last - first + 1) * len(owners) <= len(keys):
                if any(
                    (size, page << shift, owner) in keys
                    for page in range(first, last + 1)
                    for owner in owners
                ):
                    return True
                continue
            lo, hi = first << shift, last << shift
            for key in keys:
                if lo <= key[1] <= hi and (owners is None or key[2] in owners):
                    return True
        return False

    def load(self, sets: tuple[dict[Key, TLBEntry], ...]) -> None:
        """Replace the contents (in place, so ports keep seeing this store)."""
        self.sets[:] = [dict(s) for s in sets]
        self.by_size.clear()
        for index, held in enumerate(self.sets):
            for key in held:
                self.by_size.setdefault(key[0], {})[key] = index
        self._refresh_order()

    def _refresh_order(self) -> None:
        self.order = tuple((size, size.bit_length() - 1) for size in sorted(self.by_size))


class TlbPort:
    """The fast path of one tag into a TLB (see the module notes).

    Made by :meth:`vcmm.hw.tlb.TLB.port`, which checks the tag.  The methods check their
    own arguments with type and range tests cheap enough for a per-access path.
    """

    __slots__ = ("_mine", "_store", "_tag")

    def __init__(self, store: TlbStore, tag: Hashable) -> None:
        self._store = store
        self._tag = tag
        #: The tag's counters, fetched on first use (asking must not create them).
        self._mine: TLBStats | None = None

    @property
    def tag(self) -> Hashable:
        return self._tag

    def __repr__(self) -> str:
        return f"TlbPort(tag={self._tag!r})"

    def _stats(self) -> TLBStats:
        mine = self._mine
        if mine is None:
            mine = self._mine = self._store.stats_of(self._tag)
        return mine

    # -- lookup -------------------------------------------------------------------------

    def probe(self, va: int) -> TLBEntry | None:
        """The entry a lookup of ``va`` would return, without counting or touching it.

        Sizes are probed smallest first, each in the set its own page number selects,
        the tag's own entry before a global one: the first match wins.
        """
        if type(va) is not int or not 0 <= va < ADDRESS_LIMIT:
            raise InvalidArgumentError(f"TLB probe: va {va!r} is not an integer in [0, 2**64)")
        store = self._store
        sets, nsets, tag = store.sets, store.nsets, self._tag
        for size, shift in store.order:
            page = va >> shift
            held = sets[page % nsets]
            base = page << shift
            entry = held.get((size, base, tag))
            if entry is None:
                entry = held.get((size, base, GLOBAL))
            if entry is not None:
                return entry
        return None

    def lookup(self, va: int) -> TLBEntry | None:
        """Probe ``va``; a hit is counted and makes the entry most recent, a miss is
        left for :meth:`miss` (which counts it with the walk it causes)."""
        entry = self.probe(va)
        if entry is not None:  # counted inline: every access comes here
            self._touch(entry)
            global_stats, mine = self._store.stats, self._mine or self._stats()
            global_stats.lookups += 1
            global_stats.hits += 1
            mine.lookups += 1
            mine.hits += 1
        return entry

    def hit(self, entry: TLBEntry, count: int = 1) -> None:
        """Count ``count`` lookups that all hit ``entry``, a held entry the tag may use:
        the same as that many :meth:`lookup` calls returning it in a row."""
        if type(count) is not int or count < 0:
            raise InvalidArgumentError(f"hit count {count!r} must be an integer >= 0")
        if not isinstance(entry, TLBEntry) or not entry.matches(self._tag):
            raise InvalidArgumentError(f"entry {entry!r} cannot serve tag {self._tag!r}")
        key, index = self._store.locate(entry)
        if self._store.sets[index].get(key) is not entry:
            raise InvalidArgumentError(f"entry {entry!r} is not held by this TLB")
        if count:
            self._touch(entry)
            self._count_hits(count)

    def repeat_hits(self, count: int) -> None:
        """``count`` more hits on the entry the last lookup or fill made most recent.

        LRU already has it most recent; FIFO and random ignore hits: only the counters
        change, which is what lets a batch engine count a run of hits in bulk.
        """
        if type(count) is not int or count < 0:
            raise InvalidArgumentError(f"repeat hit count {count!r} must be an integer >= 0")
        global_stats, mine = self._store.stats, self._mine or self._stats()  # inlined: hot
        global_stats.lookups += count
        global_stats.hits += count
        mine.lookups += count
        mine.hits += count

    def miss(self, walk_reads: int | None = None) -> None:
        """Count one lookup that missed and, unless ``walk_reads`` is None, the walk it
        caused with its descriptor reads (counted together: the miss path is hot)."""
        if walk_reads is not None and (type(walk_reads) is not int or walk_reads < 0):
            raise InvalidArgumentError(f"walk reads {walk_reads!r} must be an integer >= 0")
        global_stats, mine = self._store.stats, self._mine or self._stats()
        global_stats.lookups += 1
        global_stats.misses += 1
        mine.lookups += 1
        mine.misses += 1
        if walk_reads is not None:
            global_stats.walks += 1
            global_stats.walk_reads += walk_reads
            mine.walks += 1
            mine.walk_reads += walk_reads

    def note_walk(self, reads: int) -> None:
        """Count one page-table walk by the tag that made ``reads`` descriptor reads."""
        if type(reads) is not int or reads < 0:
            raise InvalidArgumentError(f"walk reads {reads!r} must be an integer >= 0")
        global_stats, mine = self._store.stats, self._stats()
        global_stats.walks += 1
        global_stats.walk_reads += reads
        mine.walks += 1
        mine.walk_reads += reads

    def _touch(self, entry: TLBEntry) -> None:
        store = self._store
        if store.lru:
            key, index = store.locate(entry)
            held = store.sets[index]
            if next(reversed(held)) != key:
                held[key] = held.pop(key)

    def _count_hits(self, count: int) -> None:
        global_stats, mine = self._store.stats, self._stats()
        global_stats.lookups += count
        global_stats.hits += count
        mine.lookups += count
        mine.hits += count

    # -- fill ---------------------------------------------------------------------------

    def fill(self, entry: TLBEntry) -> TLBEntry | None:
        """Insert ``entry`` (made by this tag), evicting per the policy if its set is
        full; returns the victim (``None`` if a free way or the same key was used).

        Inserting an entry whose key is already held replaces it and counts as a
        fresh insertion; an eviction counts for the tag.
        """
        if not isinstance(entry, TLBEntry) or entry.tag != self._tag:
            raise InvalidArgumentError(
                f"TLB fill for tag {self._tag!r} needs a TLBEntry of that tag, got {entry!r}"
            )
        store = self._store
        key, index = store.locate(entry)
        held = store.sets[index]
        victim: TLBEntry | None = None
        if key in held:
            del held[key]
        elif len(held) >= store.ways:
            if store.rng is None:
                victim_key = next(iter(held))
            else:
                victim_key = list(held)[store.rng.randrange(len(held))]
            victim = held.pop(victim_key)
            store.drop(victim_key)
            store.stats.evictions += 1
            self._stats().evictions += 1
        held[key] = entry
        keys = store.by_size.get(entry.size)
        if keys is None:  # a new page size: the probe order changes
            store.add(key, index)
        else:
            keys[key] = index
        return victim

    def preempting(self, entry: TLBEntry) -> list[TLBEntry]:
        """Held entries that a lookup by the tag would pick over ``entry`` for some
        address inside it: smaller entries usable by the tag that overlap it."""
        store = self._store
        found: list[TLBEntry] = []
        start, end, tag = entry.va_base, entry.va_base + entry.size, self._tag
        for size, _ in store.order:
            if size >= entry.size:
                break
            for key, index in store.by_size[size].items():
                if start <= key[1] < end and (key[2] is GLOBAL or key[2] == tag):
                    found.append(store.sets[index][key])
        return found

    # -- whole streams, for compiled kernels ----------------------------------------------

    def export(self, access_allows: Callable[[TLBEntry], bool]) -> TlbArrays:
        """The store as arrays for a stream by this tag (:mod:`vcmm.hw.tlbarrays`);
        ``access_allows`` is the stream's permission check of a held entry."""
        from vcmm.hw.tlbarrays import export_store

        return export_store(self._store, self._tag, access_allows)

    def absorb(self, arrays: TlbArrays, new_entries: Callable[[list[int]], list[TLBEntry]]) -> None:
        """Take back the state a kernel left in ``arrays`` (from :meth:`export`);
        ``new_entries(leaves)`` builds the entries fills of those walks inserted."""
        from vcmm.hw.tlbarrays import import_store

        import_store(self._store, arrays, new_entries)
