"""Tests of the TLB model: geometry, mixed sizes, tags, globals, invalidation, replacement.

Replacement is checked against two independent reference models: an OrderedDict LRU
for a fully associative single-size TLB, and a per-set list model that finds matches
by scanning every entry (not by the set-indexed probe the TLB uses).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import RO_WB, RW_NC, RW_WB, PageAttrs
from vcmm.errors import AlignmentError, InvalidArgumentError, UnsupportedSizeError, VcmmError
from vcmm.hw.tlb import TLB, TLBConfig, TLBEntry, TLBStats
from vcmm.sizes import SZ_1G, SZ_1M, SZ_2M, SZ_4K, SZ_16M, SZ_64K

SIZES = (SZ_4K, SZ_64K, SZ_1M, SZ_16M)


def entry(
    va: int,
    size: int = SZ_4K,
    pa: int | None = None,
    tag: Hashable = 0,
    global_: bool = False,
    attrs: PageAttrs = RW_WB,
) -> TLBEntry:
    return TLBEntry(tag, va, size, va + 0x8000_0000 if pa is None else pa, attrs, global_)


def keys(tlb: TLB) -> set[tuple[Hashable, int, int, bool]]:
    return {(e.tag, e.va_base, e.size, e.global_) for e in tlb.entries()}


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"entries": 0, "ways": 1}, "entries=0"),
        ({"entries": -4, "ways": 1}, "entries=-4"),
        ({"entries": 8, "ways": 0}, "ways=0"),
        ({"entries": 8, "ways": 3}, "divide"),
        ({"entries": 8, "ways": 16}, "divide"),
        ({"entries": 8, "ways": 2, "replacement": "plru"}, "plru"),
        ({"entries": 8.0, "ways": 2}, "integer"),
        ({"entries": True, "ways": 1}, "integer"),
        ({"entries": 8, "ways": 2, "seed": "x"}, "integer"),
    ],
)
def test_bad_config_is_refused(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        TLBConfig(**kwargs)  # type: ignore[arg-type]


def test_config_geometry() -> None:
    assert TLBConfig(64, 4).sets == 16
    assert TLBConfig(64, 64).fully_associative
    assert not TLBConfig(64, 4).fully_associative
    assert TLBConfig(12, 3).sets == 4
    with pytest.raises(InvalidArgumentError):
        TLB("64 entries")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"va": 0x1800}, AlignmentError),
        ({"va": 0x0, "pa": 0x1800}, AlignmentError),
        ({"va": 0x0, "size": 0x3000}, UnsupportedSizeError),
        ({"va": 0x0, "size": 512}, UnsupportedSizeError),
        ({"va": -SZ_4K}, InvalidArgumentError),
        ({"va": (1 << 64) - SZ_4K, "pa": 1 << 64}, InvalidArgumentError),
        ({"va": 0x0, "tag": None}, InvalidArgumentError),
        ({"va": 0x0, "tag": [1]}, InvalidArgumentError),
        ({"va": 0x0, "attrs": "rw"}, InvalidArgumentError),
    ],
)
def test_bad_entry_is_refused(kwargs: dict[str, object], error: type[Exception]) -> None:
    with pytest.raises(error):
        entry(**kwargs)  # type: ignore[arg-type]


# -- set indexing and mixed sizes ---------------------------------------------------------


def test_set_index_is_page_number_in_own_size_modulo_sets() -> None:
    tlb = TLB(TLBConfig(8, 2))  # 4 sets
    assert tlb.set_index(0x5000, SZ_4K) == 1  # page 5
    assert tlb.set_index(0x5FFF, SZ_4K) == 1
    assert tlb.set_index(0x30_0000, SZ_1M) == 3  # section 3
    assert tlb.set_index(0x30_5000, SZ_4K) == (0x305 % 4)
    assert tlb.set_index(0x7_0000, SZ_64K) == 3
    assert tlb.set_index(0x4000_0000, SZ_1G) == 1
    with pytest.raises(UnsupportedSizeError):
        tlb.set_index(0, 0x3000)


def test_direct_mapped_conflicts_follow_the_index() -> None:
    tlb = TLB(TLBConfig(4, 1))  # 4 sets of one way
    tlb.insert(entry(0x0000))
    tlb.insert(entry(0x1000))
    assert tlb.stats.evictions == 0
    victim = tlb.insert(entry(0x4000))  # page 4 -> set 0, same as page 0
    assert victim is not None and victim.va_base == 0x0000
    assert keys(tlb) == {(0, 0x1000, SZ_4K, False), (0, 0x4000, SZ_4K, False)}
    # A 1 MiB section at 0x10_0000 is section 1 -> set 1, where page 1 lives.
    victim = tlb.insert(entry(0x10_0000, SZ_1M))
    assert victim is not None and victim.va_base == 0x1000
    assert tlb.stats.evictions == 2
    assert tlb.lookup(0, 0x1000) is None
    hit = tlb.lookup(0, 0x1A_BCDE)
    assert hit is not None and hit.output(0x1A_BCDE) == 0x8010_0000 + 0xA_BCDE


def test_mixed_sizes_translate_inside_their_own_range() -> None:
    tlb = TLB(TLBConfig(16, 16))
    sizes = {SZ_4K: 0x1000, SZ_64K: 0x20000, SZ_1M: 0x100000, SZ_2M: 0x200000}
    sizes[SZ_16M] = 0x1000000
    sizes[SZ_1G] = 0x4000_0000
    for size, va in sizes.items():
        tlb.insert(entry(va, size, pa=va * 2))
    assert tlb.page_sizes() == tuple(sorted(sizes))
    for size, va in sizes.items():
        for offset in (0, 1, size // 2, size - 1):
            got = tlb.lookup(0, va + offset)
            assert got is not None and got.size == size
            assert got.output(va + offset) == va * 2 + offset
        after = tlb.lookup(0, va + size)
        assert after is None or after.va_base != va
    assert tlb.lookup(0, 0x8000_0000) is None


def test_smaller_entry_wins_over_an_overlapping_larger_one() -> None:
    # Only stale or conflicting contents overlap; the documented priority decides.
    tlb = TLB(TLBConfig(8, 8))
    tlb.insert(entry(0x100000, SZ_1M, pa=0x9000_0000))
    tlb.insert(entry(0x105000, SZ_4K, pa=0x7000_0000))
    assert tlb.lookup(0, 0x105123).output(0x105123) == 0x7000_0123  # type: ignore[union-attr]
    assert tlb.lookup(0, 0x106123).output(0x106123) == 0x9000_6123  # type: ignore[union-attr]


# -- tags and global entries -------------------------------------------------------------


def test_tags_isolate_the_same_address() -> None:
    tlb = TLB(TLBConfig(8, 2))
    tlb.insert(entry(0x5000, tag=1, pa=0x1_0000))
    tlb.insert(entry(0x5000, tag=2, pa=0x2_0000))
    assert tlb.lookup(1, 0x5004).output(0x5004) == 0x1_0004  # type: ignore[union-attr]
    assert tlb.lookup(2, 0x5004).output(0x5004) == 0x2_0004  # type: ignore[union-attr]
    assert tlb.lookup(3, 0x5004) is None
    assert tlb.lookup("ctx-a", 0x5004) is None
    assert tlb.stats_for(1).hits == 1 and tlb.stats_for(3).misses == 1
    assert (tlb.stats.lookups, tlb.stats.hits, tlb.stats.misses) == (4, 2, 2)


def test_global_entry_matches_every_tag_but_own_entry_wins() -> None:
    tlb = TLB(TLBConfig(8, 8))
    tlb.insert(entry(0xC000_0000, SZ_1M, tag=7, global_=True, pa=0x8000_0000))
    for tag in (1, 7, "asid9"):
        got = tlb.lookup(tag, 0xC000_1234)
        assert got is not None and got.output(0xC000_1234) == 0x8000_1234
    # The same page held for tag 1 too: tag 1 uses its own, others the global one.
    tlb.insert(entry(0xC000_0000, SZ_1M, tag=1, pa=0x9000_0000))
    assert tlb.lookup(1, 0xC000_0000).pa_base == 0x9000_0000  # type: ignore[union-attr]
    assert tlb.lookup(2, 0xC000_0000).pa_base == 0x8000_0000  # type: ignore[union-attr]
    assert len(tlb) == 2
    # Hits on a global entry count for the tag that looked up.
    assert [tlb.stats_for(t).hits for t in (1, 2, 7, "asid9")] == [2, 1, 1, 1]
    assert tlb.stats.hits == 5


def test_reinsert_of_the_same_key_replaces_without_eviction() -> None:
    tlb = TLB(TLBConfig(2, 2, "fifo"))
    tlb.insert(entry(0x1000, pa=0x10000))
    tlb.insert(entry(0x2000))
    tlb.insert(entry(0x1000, pa=0x20000))  # refill: becomes the newest
    assert tlb.stats.evictions == 0 and len(tlb) == 2
    assert [e.va_base for e in tlb.entries()] == [0x2000, 0x1000]
    assert tlb.lookup(0, 0x1000).pa_base == 0x20000  # type: ignore[union-attr]
    victim = tlb.insert(entry(0x3000))
    assert victim is not None and victim.va_base == 0x2000


# -- invalidation -------------------------------------------------------------------------


def populated() -> TLB:
    tlb = TLB(TLBConfig(16, 16))
    tlb.insert(entry(0x1000, tag=1))
    tlb.insert(entry(0x2000, tag=1))
    tlb.insert(entry(0x1000, tag=2))
    tlb.insert(entry(0x10_0000, SZ_1M, tag=2))
    tlb.insert(entry(0xC000_0000, SZ_1M, tag=1, global_=True))
    return tlb


def test_invalidate_all() -> None:
    tlb = populated()
    assert tlb.invalidate_all() == 5
    assert tlb.entries() == [] and tlb.page_sizes() == ()
    assert tlb.stats.invalidations == 5
    assert tlb.stats_for(1).invalidations == 3 and tlb.stats_for(2).invalidations == 2
    assert tlb.lookup(1, 0xC000_0000) is None


def test_invalidate_tag_keeps_globals_and_other_tags() -> None:
    tlb = populated()
    assert tlb.invalidate_tag(1) == 2
    assert keys(tlb) == {
        (2, 0x1000, SZ_4K, False),
        (2, 0x10_0000, SZ_1M, False),
        (1, 0xC000_0000, SZ_1M, True),
    }
    assert tlb.invalidate_tag(99) == 0


def test_invalidate_va_takes_own_and_global_entries_only() -> None:
    tlb = populated()
    assert tlb.invalidate_va(1, 0x1FFF) == 1
    assert (1, 0x1000, SZ_4K, False) not in keys(tlb)
    assert (2, 0x1000, SZ_4K, False) in keys(tlb)
    assert tlb.invalidate_va(2, 0xC00F_FFFF) == 1  # the global entry, whatever its tag
    assert (1, 0xC000_0000, SZ_1M, True) not in keys(tlb)
    assert tlb.invalidate_va(2, 0x3000) == 0


@pytest.mark.parametrize(
    ("va", "size", "tag", "gone"),
    [
        (0x0, 0x1000, None, set()),  # ends where the entries start
        (0x1FFF, 1, None, {(1, 0x1000), (2, 0x1000)}),
        (0x0, 0x2001, 1, {(1, 0x1000), (1, 0x2000)}),
        (0x1000, 0x1000, 2, {(2, 0x1000)}),
        (0x1F_FFFF, 0x2, None, {(2, 0x10_0000)}),
        (0x20_0000, SZ_1M, None, set()),
        (0xBFFF_F000, 0x2000, 2, {(1, 0xC000_0000)}),  # global goes for any tag
        (
            0x0,
            1 << 40,
            None,
            {(1, 0x1000), (1, 0x2000), (2, 0x1000), (2, 0x10_0000)} | {(1, 0xC000_0000)},
        ),
    ],
)
def test_invalidate_range_removes_exactly_the_overlapping_entries(
    va: int, size: int, tag: int | None, gone: set[tuple[int, int]]
) -> None:
    tlb = populated()
    before = {(t, v) for t, v, _, _ in keys(tlb)}
    assert tlb.invalidate_range(va, size, tag) == len(gone)
    assert {(t, v) for t, v, _, _ in keys(tlb)} == before - gone
    assert tlb.stats.invalidations == len(gone)


# -- counters -----------------------------------------------------------------------------


def test_stats_objects_are_live_copyable_and_resettable() -> None:
    tlb = TLB(TLBConfig(4, 4))
    live = tlb.stats_for("dev")
    tlb.insert(entry(0x1000, tag="dev"))
    tlb.lookup("dev", 0x1000)
    tlb.lookup("dev", 0x9000)
    copy = live.copy()
    assert (live.lookups, live.hits, live.misses) == (2, 1, 1)
    assert live.hit_rate == 0.5
    tlb.lookup("dev", 0x1000)
    assert copy.lookups == 2 and live.lookups == 3
    tlb.reset_stats()
    assert live == TLBStats() and tlb.stats == TLBStats()
    assert tlb.stats_for("dev") is live
    assert len(tlb) == 1  # resetting counters keeps the contents
    tlb.note_walk("dev", 3)
    assert (live.walks, live.walk_reads, tlb.stats.walk_reads) == (1, 3, 3)


def test_asking_for_a_new_tags_counters_does_not_change_the_snapshot() -> None:
    tlb = populated()
    before = tlb.snapshot()
    tlb.stats_for("never-used")
    assert tlb.snapshot() == before


def test_note_hits_counts_like_repeated_lookups() -> None:
    a, b = TLB(TLBConfig(4, 2)), TLB(TLBConfig(4, 2))
    for tlb in (a, b):
        for va in (0x0, 0x2000, 0x1000):
            tlb.insert(entry(va))
    held = a.probe(0, 0x0)
    assert held is not None
    a.note_hits(0, held, 5)
    for _ in range(5):
        b.lookup(0, 0x0)
    assert a.snapshot() == b.snapshot()
    assert [e.va_base for e in a.entries()] == [0x2000, 0x0, 0x1000]  # 0x0 became MRU


def test_checkpoint_restore_round_trip() -> None:
    tlb = TLB(TLBConfig(4, 2, "random", seed=3))
    live = tlb.stats_for(0)
    for va in range(0, 0x10000, 0x1000):
        tlb.insert(entry(va))
    saved, checkpoint = tlb.snapshot(), tlb.checkpoint()
    for va in range(0x20000, 0x30000, 0x1000):
        tlb.insert(entry(va, tag=5))
        tlb.lookup(0, va)
    tlb.invalidate_range(0, 0x4000)
    assert tlb.snapshot() != saved
    tlb.restore(checkpoint)
    assert tlb.snapshot() == saved
    assert tlb.stats_for(0) is live and tlb.stats_for(5).is_zero()
    with pytest.raises(InvalidArgumentError):
        TLB(TLBConfig(4, 2)).restore(checkpoint)


# -- misuse leaves state unchanged --------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.lookup(None, 0x1000),
        lambda t: t.lookup([1], 0x1000),
        lambda t: t.lookup(True, 0x1000),
        lambda t: t.lookup(1, -1),
        lambda t: t.lookup(1, 1 << 64),
        lambda t: t.lookup(1, 0x1000 * 1.0),
        lambda t: t.lookup(1, False),
        lambda t: t.probe({}, 0x1000),
        lambda t: t.insert((1, 0x1000, SZ_4K)),
        lambda t: t.invalidate_tag(None),
        lambda t: t.invalidate_va(None, 0x1000),
        lambda t: t.invalidate_va(1, -5),
        lambda t: t.invalidate_range(0x1000, 0),
        lambda t: t.invalidate_range(0x1000, -0x1000),
        lambda t: t.invalidate_range(0x1000, "4K"),
        lambda t: t.invalidate_range((1 << 64) - 0x1000, 0x2000),
        lambda t: t.invalidate_range(0x1000, 0x1000, tag=[2]),
        lambda t: t.note_hits(1, entry(0x1000, tag=1), 1),  # equal but not the held one
        lambda t: t.note_hits(2, t.probe(1, 0x1000), 1),  # tag 2 cannot use it
        lambda t: t.note_hits(1, t.probe(1, 0x1000), -1),
        lambda t: t.note_walk(1, -1),
        lambda t: t.stats_for(None),
        lambda t: t.set_index(0x1000, 3),
    ],
)
def test_misuse_raises_and_changes_nothing(call: object) -> None:
    tlb = populated()
    tlb.lookup(1, 0x1000)
    before = tlb.snapshot()
    with pytest.raises(VcmmError):
        call(tlb)  # type: ignore[operator]
    assert tlb.snapshot() == before


# -- replacement against reference models -------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 8),
    trace=st.lists(st.integers(0, 15), min_size=1, max_size=120),
)
def test_fully_associative_lru_matches_ordereddict(capacity: int, trace: list[int]) -> None:
    tlb = TLB(TLBConfig(capacity, capacity, "lru"))
    ref: OrderedDict[int, None] = OrderedDict()
    for page in trace:
        va = page * SZ_4K + 0x123
        hit = tlb.lookup(0, va) is not None
        assert hit == (page in ref)
        if hit:
            ref.move_to_end(page)
        else:
            if len(ref) == capacity:
                ref.popitem(last=False)
            ref[page] = None
            tlb.insert(entry(page * SZ_4K))
    assert [e.va_base // SZ_4K for e in tlb.entries()] == list(ref)
    assert tlb.stats.hits + tlb.stats.misses == tlb.stats.lookups == len(trace)
    assert tlb.stats.evictions == max(0, tlb.stats.misses - capacity)


@dataclass
class RefTLB:
    """Per-set reference: lists in replacement order; matches found by a full scan."""

    config: TLBConfig
    sets: list[list[TLBEntry]] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sets = [[] for _ in range(self.config.sets)]
        self.rng = random.Random(self.config.seed)
        self.counts = {"lookups": 0, "hits": 0, "misses": 0, "evictions": 0, "invalidations": 0}

    def where(self, e: TLBEntry) -> list[TLBEntry]:
        return self.sets[(e.va_base // e.size) % self.config.sets]

    def lookup(self, tag: Hashable, va: int) -> TLBEntry | None:
        self.counts["lookups"] += 1
        usable = [
            e
            for s in self.sets
            for e in s
            if e.va_base <= va < e.va_base + e.size and (e.global_ or e.tag == tag)
        ]
        if not usable:
            self.counts["misses"] += 1
            return None
        best = min(usable, key=lambda e: (e.size, e.global_))
        self.counts["hits"] += 1
        if self.config.replacement == "lru":
            s = self.where(best)
            s.remove(best)
            s.append(best)
        return best

    def insert(self, new: TLBEntry) -> None:
        s = self.where(new)
        same = [
            e
            for e in s
            if (e.size, e.va_base, e.global_) == (new.size, new.va_base, new.global_)
            and (e.global_ or e.tag == new.tag)
        ]
        if same:
            s.remove(same[0])
        elif len(s) == self.config.ways:
            k = 0 if self.config.replacement != "random" else self.rng.randrange(len(s))
            del s[k]
            self.counts["evictions"] += 1
        s.append(new)

    def invalidate(self, doomed: list[TLBEntry]) -> None:
        for s in self.sets:
            for e in [e for e in s if e in doomed]:
                s.remove(e)
                self.counts["invalidations"] += 1


GEOMETRIES = [(1, 1), (4, 1), (8, 2), (12, 3), (16, 4), (8, 8)]
WINDOW = 4 * SZ_1M


@settings(max_examples=40, deadline=None)
@given(
    policy=st.sampled_from(["lru", "fifo", "random"]),
    geometry=st.sampled_from(GEOMETRIES),
    seed=st.integers(0, 3),
    ops=st.lists(
        st.tuples(
            st.sampled_from(["lookup", "lookup", "lookup", "inv_va", "inv_range", "inv_tag"]),
            st.integers(0, 2),  # tag
            st.integers(0, WINDOW - 1),  # address
            st.sampled_from(SIZES[:3]),  # page size of the fill on a miss
            st.booleans(),  # global fill
        ),
        min_size=1,
        max_size=80,
    ),
)
def test_set_associative_policies_match_the_reference(
    policy: str, geometry: tuple[int, int], seed: int, ops: list[tuple[str, int, int, int, bool]]
) -> None:
    config = TLBConfig(*geometry, replacement=policy, seed=seed)
    tlb, ref = TLB(config), RefTLB(config)
    for op, tag, va, size, global_ in ops:
        if op == "lookup":
            got, want = tlb.lookup(tag, va), ref.lookup(tag, va)
            assert got == want
            if got is None:
                fill = entry(
                    va - va % size, size, pa=(va - va % size) * 3, tag=tag, global_=global_
                )
                tlb.insert(fill)
                ref.insert(fill)
        elif op == "inv_va":
            doomed = [e for s in ref.sets for e in s if e.matches(tag) and e.covers(va)]
            assert tlb.invalidate_va(tag, va) == len(doomed)
            ref.invalidate(doomed)
        elif op == "inv_range":
            doomed = [e for s in ref.sets for e in s if e.overlaps(va, size)]
            assert tlb.invalidate_range(va, size) == len(doomed)
            ref.invalidate(doomed)
        else:
            doomed = [e for s in ref.sets for e in s if not e.global_ and e.tag == tag]
            assert tlb.invalidate_tag(tag) == len(doomed)
            ref.invalidate(doomed)
        assert tlb.snapshot().sets == tuple(tuple(s) for s in ref.sets)
    stats = tlb.stats
    got_counts = {k: getattr(stats, k) for k in ref.counts}
    assert got_counts == ref.counts
    per_tag = [tlb.stats_for(t) for t in range(3)]
    for name in ("lookups", "hits", "misses", "evictions", "invalidations"):
        assert sum(getattr(s, name) for s in per_tag) == getattr(stats, name)


def test_random_replacement_is_seeded() -> None:
    def victims(seed: int) -> list[int]:
        tlb = TLB(TLBConfig(4, 4, "random", seed=seed))
        out = []
        for page in range(40):
            victim = tlb.insert(entry(page * SZ_4K))
            if victim is not None:
                out.append(victim.va_base // SZ_4K)
        return out

    assert victims(1) == victims(1)
    assert victims(1) != victims(2)
    # Not FIFO in disguise: some victim is not the oldest entry of the set.
    assert victims(1) != list(range(36))


def test_fifo_ignores_hits_and_lru_honours_them() -> None:
    def run(policy: str) -> int:
        tlb = TLB(TLBConfig(2, 2, policy))
        tlb.insert(entry(0x1000))
        tlb.insert(entry(0x2000))
        tlb.lookup(0, 0x1000)  # LRU: 0x2000 becomes least recent
        victim = tlb.insert(entry(0x3000))
        assert victim is not None
        return victim.va_base

    assert run("lru") == 0x2000
    assert run("fifo") == 0x1000


def test_read_only_and_nc_attrs_are_kept_verbatim() -> None:
    tlb = TLB(TLBConfig(4, 4))
    tlb.insert(entry(0x1000, attrs=RO_WB))
    tlb.insert(entry(0x2000, attrs=RW_NC))
    assert tlb.lookup(0, 0x1000).attrs == RO_WB  # type: ignore[union-attr]
    assert tlb.lookup(0, 0x2000).attrs.memtype == RW_NC.memtype  # type: ignore[union-attr]


# -- the fast path (TlbPort) ---------------------------------------------------------------


def test_one_port_per_tag_checked_once() -> None:
    tlb = TLB(TLBConfig(8, 2))
    assert tlb.port(3) is tlb.port(3) and tlb.port(3).tag == 3
    assert tlb.port(3) is not tlb.port(4)
    for bad in (None, True, [1], {}):
        with pytest.raises(InvalidArgumentError, match=r"TLB tag|cannot tag TLB entries"):
            tlb.port(bad)
    assert tlb.snapshot() == TLB(TLBConfig(8, 2)).snapshot()  # ports count nothing


@settings(max_examples=40, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["lookup", "fill", "repeat", "walk"]),
            st.integers(0, 15),
            st.sampled_from([SZ_4K, SZ_64K]),
            st.integers(1, 2),
        ),
        max_size=80,
    ),
    policy=st.sampled_from(["lru", "fifo", "random"]),
)
def test_port_calls_count_exactly_like_the_checked_api(
    ops: list[tuple[str, int, int, int]], policy: str
) -> None:
    """The same operations through a port and through the TLB's checked calls (their
    one-call-at-a-time equivalents) leave identical TLBs."""
    fast, slow = TLB(TLBConfig(8, 2, policy, seed=5)), TLB(TLBConfig(8, 2, policy, seed=5))
    last: dict[int, TLBEntry] = {}
    for op, page, size, tag in ops:
        va = page * size
        port = fast.port(tag)
        if op == "lookup":
            got = port.lookup(va)
            if got is None:
                port.miss()
            assert slow.lookup(tag, va) == got
            if got is not None:
                last[tag] = got
        elif op == "fill":
            new = entry(va, size, tag=tag)
            assert port.fill(new) == slow.insert(new)
            last[tag] = new
        elif op == "repeat" and tag in last and slow.probe(tag, last[tag].va_base) is not None:
            # repeat_hits follows the lookup or fill that made the entry most recent
            held = slow.probe(tag, last[tag].va_base)
            assert held == fast.probe(tag, last[tag].va_base)
            port.hit(held, 1)  # type: ignore[arg-type]
            port.repeat_hits(3)
            slow.note_hits(tag, held, 4)  # type: ignore[arg-type]
        elif op == "walk":
            port.miss(walk_reads=size // SZ_4K)
            slow.lookup(tag, 1 << 40)  # a miss on an address nothing maps
            slow.note_walk(tag, size // SZ_4K)
        assert fast.snapshot() == slow.snapshot()


def test_preempting_lists_smaller_usable_entries_inside() -> None:
    tlb = TLB(TLBConfig(16, 16))
    section = entry(0x10_0000, SZ_1M, tag=1)
    inside_own = entry(0x10_4000, tag=1)
    inside_global = entry(0x1F_F000, tag=2, global_=True)
    other_tag = entry(0x10_8000, tag=2)
    outside = entry(0x20_0000, tag=1)
    bigger = entry(0, SZ_16M, tag=1)
    for e in (section, inside_own, inside_global, other_tag, outside, bigger):
        tlb.insert(e)
    assert set(tlb.port(1).preempting(section)) == {inside_own, inside_global}
    assert tlb.port(1).preempting(inside_own) == []
    assert set(tlb.port(2).preempting(section)) == {inside_global, other_tag}


@pytest.mark.parametrize(
    "call",
    [
        lambda t: t.port(1).lookup(-1),
        lambda t: t.port(1).lookup(1 << 64),
        lambda t: t.port(1).lookup(4096.0),
        lambda t: t.port(1).probe(True),
        lambda t: t.port(1).fill(entry(0x5000, tag=2)),  # another tag's entry
        lambda t: t.port(1).fill((1, 0x5000)),
        lambda t: t.port(1).repeat_hits(-1),
        lambda t: t.port(1).repeat_hits(True),
        lambda t: t.port(1).miss(walk_reads=-2),
        lambda t: t.port(1).note_walk(1.5),
        lambda t: t.port(1).hit(entry(0x1000, tag=1)),  # equal but not the held one
        lambda t: t.port(2).hit(t.probe(1, 0x2000)),  # tag 2 cannot use it
    ],
)
def test_port_misuse_raises_and_changes_nothing(call: object) -> None:
    tlb = populated()
    tlb.lookup(1, 0x1000)
    before = tlb.snapshot()
    with pytest.raises(InvalidArgumentError):
        call(tlb)  # type: ignore[operator]
    assert tlb.snapshot() == before


# -- holds: does the TLB hold anything a range invalidation would remove ----------------


@settings(max_examples=80, deadline=None)
@given(
    held=st.lists(
        st.tuples(
            st.integers(0, 63),  # page number, in units of the entry's size
            st.sampled_from(SIZES),
            st.sampled_from((1, 2)),
            st.booleans(),
        ),
        max_size=24,
    ),
    start=st.integers(0, 64 * SZ_1M),
    size=st.integers(1, 8 * SZ_1M),
    tag=st.sampled_from((None, 1, 2, 3)),
)
def test_holds_answers_whether_invalidate_range_would_remove_anything(
    held: list[tuple[int, int, int, bool]], start: int, size: int, tag: int | None
) -> None:
    # the reference is the invalidation itself, run on a checkpointed TLB and undone
    tlb = TLB(TLBConfig(64, 4))
    for page, page_size, owner, global_ in held:
        tlb.insert(entry(page * page_size % SZ_1G, page_size, tag=owner, global_=global_))
    before = tlb.snapshot()
    answer = tlb.holds(tag, start, size)
    assert tlb.snapshot() == before  # a query: nothing counted, nothing moved
    saved = tlb.checkpoint()
    assert answer == (tlb.invalidate_range(start, size, tag) > 0)
    tlb.restore(saved)


def test_holds_sees_own_and_global_entries_only() -> None:
    tlb = TLB(TLBConfig(16, 16))
    tlb.insert(entry(0x10_0000, SZ_1M, tag=1))
    tlb.insert(entry(0x40_0000, tag=2, global_=True))
    tlb.insert(entry(0x80_0000, tag=2))
    assert tlb.holds(1, 0x1F_F000, 1)  # the last byte of tag 1's section
    assert not tlb.holds(1, 0x20_0000, 0x20_0000)  # the byte after it, up to 0x40_0000
    assert tlb.holds(3, 0x40_0FFF, 1)  # a global entry serves every tag
    assert not tlb.holds(1, 0x80_0000, SZ_4K)  # tag 2's own page
    assert tlb.holds(None, 0x80_0000, SZ_4K)  # None: any tag's entry
    assert not tlb.holds(None, 0x90_0000, SZ_1G)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((1, -1, 4096), "va"),
        ((1, 0, 0), "size 0"),
        ((1, 0, 4096.0), "size"),
        ((1, (1 << 64) - 4096, 8192), "64-bit"),
        ((True, 0, 4096), "tag"),
        (([1], 0, 4096), "tag"),
    ],
)
def test_holds_checks_its_arguments(args: tuple[object, object, object], words: str) -> None:
    with pytest.raises(InvalidArgumentError, match=words):
        TLB(TLBConfig(4, 4)).holds(*args)  # type: ignore[arg-type]
