"""A transaction through pages the TLB does not hold, compiled: every step a miss.

A DMA transfer streams a buffer once: when no entry the stream could hit (its tag's
or a global one) overlaps the span, each step of :func:`vcmm.hw.kernels.tlbrun.run_span`
misses, walks and fills, and no step can hit an earlier step's fill (each starts
where the last one's page ends).  Without hits LRU and FIFO are the same order, so
the outcome is known without the per-step machinery (key index, per-set lists, one
eviction at a time): the counters add up, and each set ends holding the newest of
its entries before the span followed by its fills, in order, as many as it has
ways.  Here that is two passes over the steps and one over the sets, instead of the
general kernel's index of every granule of the span and a hash probe per step.

:func:`stream_span` declines (returns -1) when its premises do not hold: the random
policy (each eviction draws from the generator), a sparse plan, or a held entry that
a lookup in the span could find.  The general kernel then runs; both leave the same
state (``tests/hw/test_engine_equivalence.py``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from vcmm.hw.kernels.tlbrun import (
    ALLOWED,
    C_EVICTIONS,
    C_LOOKUPS,
    C_MISSES,
    C_READS,
    C_WALKS,
    L_ALLOWED,
    L_GLOBAL,
    L_OK,
    L_READS,
    L_SHIFT,
    M_CLOCK,
    M_DENSE,
    M_G0,
    M_GSHIFT,
    M_POLICY,
    ORIGIN,
    OWNER,
    RANDOM,
    SHIFT,
    STAMP,
    VALID,
)


@njit(cache=True)
def _nothing_held_in(va0, end, ways_u, ways_i):  # pragma: no cover - compiled
    """Whether no valid entry of the stream's tag (owner 0) or global (-1) overlaps
    ``[va0, end)``."""
    for st in range(ways_i.shape[1]):
        for w in range(ways_i.shape[2]):
            if ways_i[VALID, st, w] != 1 or ways_i[OWNER, st, w] > 0:
                continue  # empty, or another tag's (only ever evicted)
            base = ways_u[0, st, w]
            last = base + ((np.uint64(1) << np.uint64(ways_i[SHIFT, st, w])) - np.uint64(1))
            if base < end and last >= va0:
                return False
    return True


@njit(cache=True)
def _set_of(page, nsets):  # pragma: no cover - compiled
    if nsets & (nsets - 1) == 0:
        return np.int64(page & np.uint64(nsets - 1))
    return np.int64(page % np.uint64(nsets))


@njit(cache=True)
def stream_span(
    va0, end, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, gleaf,
    run_va, run_pa, run_len, run_origin,
):  # fmt: skip  # pragma: no cover - compiled
    """:func:`~vcmm.hw.kernels.tlbrun.run_span` when every step misses (see the module
    notes): the same runs, state and counters.  Returns (runs, address reached), or
    (-1, ``va0``) with nothing changed if its premises do not hold."""
    if misc[M_POLICY] == RANDOM or misc[M_DENSE] == 0:
        return -1, va0
    if not _nothing_held_in(va0, end, ways_u, ways_i):
        return -1, va0
    gshift = np.uint64(misc[M_GSHIFT])
    g0 = np.uint64(misc[M_G0])
    one = np.uint64(1)
    va = va0
    k = 0
    reads = 0
    while va < end and k < run_va.shape[0]:
        leaf = gleaf[np.int64((va >> gshift) - g0)]
        if leaf < 0 or leaf_i[leaf, L_OK] == 0 or leaf_i[leaf, L_ALLOWED] == 0:
            break  # the walk faults or the access may not use the leaf: Python's step
        s = np.uint64(leaf_i[leaf, L_SHIFT])
        base = (va >> s) << s
        page_end = base + (one << s)
        stop = end if page_end == 0 or page_end > end else page_end
        run_va[k] = va
        run_pa[k] = leaf_u[leaf, 1] + (va - base)
        run_len[k] = stop - va
        run_origin[k] = -(leaf + 1)
        reads += leaf_i[leaf, L_READS]
        k += 1
        va = stop
    _settle(k, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, run_va, run_origin)
    counters[C_LOOKUPS] += k
    counters[C_MISSES] += k
    counters[C_WALKS] += k
    counters[C_READS] += reads
    return k, va


@njit(cache=True)
def _settle(
    steps, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, run_va, run_origin
):  # pragma: no cover - compiled
    """Leave each set as ``steps`` fills in order would: the newest of its entries and
    fills, as many as it has ways; count the evictions."""
    nsets, nways = ways_i.shape[1], ways_i.shape[2]
    fills = np.zeros(nsets, dtype=np.int64)
    sets = np.empty(steps, dtype=np.int64)
    for k in range(steps):
        leaf = -run_origin[k] - 1
        s = np.uint64(leaf_i[leaf, L_SHIFT])
        sets[k] = _set_of(run_va[k] >> s, nsets)
        fills[sets[k]] += 1
    for st in range(nsets):
        count = 0
        for w in range(nways):
            count += ways_i[VALID, st, w] == 1
        evicted = max(0, count + fills[st] - nways)
        counters[C_EVICTIONS] += evicted
        for _ in range(min(count, evicted)):  # the oldest held entries go first
            oldest = -1
            for w in range(nways):
                if ways_i[VALID, st, w] == 1 and (
                    oldest < 0 or ways_i[STAMP, st, w] < ways_i[STAMP, st, oldest]
                ):
                    oldest = w
            ways_i[VALID, st, oldest] = 0
            held[ways_i[SHIFT, st, oldest]] -= 1
        fills[st] = min(fills[st], nways)  # the fills this set keeps: its newest
    clock = misc[M_CLOCK]
    for k in range(steps - 1, -1, -1):
        st = sets[k]
        if fills[st] == 0:
            continue
        fills[st] -= 1
        way = 0
        while ways_i[VALID, st, way] == 1:
            way += 1
        leaf = -run_origin[k] - 1
        s = leaf_i[leaf, L_SHIFT]
        ways_u[0, st, way] = (run_va[k] >> np.uint64(s)) << np.uint64(s)
        ways_u[1, st, way] = leaf_u[leaf, 1]
        ways_i[VALID, st, way] = 1
        ways_i[SHIFT, st, way] = s
        ways_i[OWNER, st, way] = -1 if leaf_i[leaf, L_GLOBAL] else 0
        ways_i[STAMP, st, way] = clock + k
        ways_i[ORIGIN, st, way] = run_origin[k]
        ways_i[ALLOWED, st, way] = 1
        held[s] += 1
    misc[M_CLOCK] = clock + steps
