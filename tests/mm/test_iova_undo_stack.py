"""``undo_alloc`` newest first over several allocations (a buffer collection maps
several buffers per domain and, when a later step fails, takes them all back): each
undo restores the snapshot taken before that allocation, for both placement policies,
with cache hits, tree allocations and flushes mixed."""

from __future__ import annotations

import random

import pytest

from vcmm.errors import StateError
from vcmm.mm.iova_base import UNDO_DEPTH
from vcmm.mm.iova_policy import new_iova_domain
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K


@pytest.mark.parametrize("policy", ["seed", "linux"])
@pytest.mark.parametrize("seed", range(6))
def test_allocations_are_taken_back_newest_first_exactly(policy: str, seed: int) -> None:
    rnd = random.Random(seed)
    iovad = new_iova_domain(policy, SZ_4K, AddressRange(0, 512 * SZ_4K))
    warm = [iovad.alloc(rnd.choice([1, 2, 3, 8]) * SZ_4K) for _ in range(20)]
    for addr in rnd.sample(warm, 12):
        iovad.free(addr)  # some ranges parked in the cache, some holes in the tree
    history = []
    for _ in range(rnd.randint(2, 10)):
        before = iovad.snapshot()
        history.append((before, iovad.alloc(rnd.choice([1, 2, 4, 8, 16]) * SZ_4K)))
    if len(history) > 1:
        with pytest.raises(StateError, match="most recent"):
            iovad.undo_alloc(history[0][1])
    for before, addr in reversed(history):
        iovad.undo_alloc(addr)
        assert iovad.snapshot() == before


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_anything_but_an_allocation_ends_the_undo_chain(policy: str) -> None:
    iovad = new_iova_domain(policy, SZ_4K, AddressRange(0, 64 * SZ_4K))
    first = iovad.alloc(SZ_4K)
    second = iovad.alloc(SZ_4K)
    extra = iovad.alloc(SZ_4K)
    iovad.free(extra)
    with pytest.raises(StateError):
        iovad.undo_alloc(second)
    with pytest.raises(StateError):
        iovad.undo_alloc(first)


def test_the_undo_chain_is_bounded() -> None:
    iovad = new_iova_domain("seed", SZ_4K, AddressRange(0, 4 * UNDO_DEPTH * SZ_4K))
    addrs = [iovad.alloc(SZ_4K) for _ in range(UNDO_DEPTH + 3)]
    for addr in reversed(addrs[2:]):
        iovad.undo_alloc(addr)
    with pytest.raises(StateError):
        iovad.undo_alloc(addrs[1])


def test_an_allocation_that_flushed_the_cache_ends_the_chain_below_it() -> None:
    """Its undo record holds a copy of the whole domain; only one level of those is
    kept, so the allocations before it can no longer be taken back exactly."""
    from vcmm.mm.iova import IovaDomain

    iovad = IovaDomain(SZ_4K, AddressRange(0, 16 * SZ_4K))
    for addr in [iovad.alloc(SZ_4K) for _ in range(15)]:
        iovad.free(addr)
    hit = iovad.alloc(SZ_4K)  # from the range cache
    before = iovad.snapshot()
    flushing = iovad.alloc(2 * SZ_4K)  # no room in the tree: the cache is flushed
    assert iovad.counters.rcache_flushes == before.counters.rcache_flushes + 1
    iovad.undo_alloc(flushing)
    assert iovad.snapshot() == before
    with pytest.raises(StateError):
        iovad.undo_alloc(hit)
