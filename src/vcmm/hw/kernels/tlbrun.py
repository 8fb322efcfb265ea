"""The TLB over an access stream, compiled: the reference model's steps on arrays.

The state is :class:`vcmm.hw.tlbarrays.TlbArrays`: per ``[set, way]`` the key (valid,
log2 size, base, owner: a tag number or -1 for a global entry), the output address,
whether the batch's access may use it, an insertion stamp (the replacement order: a
dict's order in the reference) and where the entry came from.  ``held[s]`` counts the
entries of size ``2**s``; a lookup probes the held sizes smallest first, in each the
set its own page number selects, the tag's entry before a global one, exactly as
:meth:`vcmm.hw.tlbstore.TlbPort.probe`.

A step is :meth:`vcmm.hw.translate.Translator._step`: a hit is counted and made most
recent (LRU); a miss counts the lookup, the walk and its reads and fills the leaf the
walk found (replacing an equal key, else evicting the oldest, or under ``random`` the
entry CPython's ``randrange`` picks in replacement order).  Leaves come from walks
done before the kernel runs (tables do not change inside a batch), found by the
granule of the address.  The kernel stops *before* any access that would fault (a
walk that faults, a leaf or an entry the access may not use) and returns its index:
the Python step then handles it, so faults, hooks and errors stay in one place.

Columns, each a contiguous ``[set, way]`` plane: ``ways_u = (base, pa)`` (an invalid
way's base is 1, which no entry's base can be); ``ways_i = (valid, shift, owner, stamp,
origin, allowed)``; ``leaf_u[l] = (base, pa)``; ``leaf_i[l] = (shift, reads, ok,
allowed, global)``; ``misc = (tag, policy, clock, mt position, granule shift, first
granule, dense)``; ``counters = (lookups, hits, misses, walks, walk reads,
evictions)``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from vcmm.hw.kernels.mt19937 import randbelow

VALID, SHIFT, OWNER, STAMP, ORIGIN, ALLOWED = 0, 1, 2, 3, 4, 5
L_SHIFT, L_READS, L_OK, L_ALLOWED, L_GLOBAL = 0, 1, 2, 3, 4
M_TAG, M_POLICY, M_CLOCK, M_MTPOS, M_GSHIFT, M_G0, M_DENSE = 0, 1, 2, 3, 4, 5, 6
C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_READS, C_EVICTIONS = 0, 1, 2, 3, 4, 5
LRU, FIFO, RANDOM = 0, 1, 2


@njit(cache=True)
def _order(held: np.ndarray, order: np.ndarray) -> int:  # pragma: no cover - compiled
    """The held sizes' shifts ascending into ``order``; returns how many."""
    n = 0
    for s in range(held.shape[0]):
        if held[s] > 0:
            order[n] = s
            n += 1
    return n


@njit(cache=True)
def _lookup(va, tag, order, norder, ways_u, ways_i):  # pragma: no cover
    nsets = ways_i.shape[1]
    nways = ways_i.shape[2]
    for oi in range(norder):
        s = order[oi]
        page = va >> np.uint64(s)
        base = page << np.uint64(s)
        st = np.int64(page % np.uint64(nsets))
        glob = -1
        bases = ways_u[0, st]
        shifts = ways_i[SHIFT, st]
        for w in range(nways):
            if bases[w] == base and shifts[w] == s:
                owner = ways_i[OWNER, st, w]
                if owner == tag:
                    return st, w
                if owner == -1 and glob < 0:
                    glob = w
        if glob >= 0:
            return st, glob
    return -1, -1


@njit(cache=True)
def _victim(st, ways_i, misc, mt, mtpos):  # pragma: no cover
    """The way to evict from full set ``st``: oldest stamp, or a random rank."""
    nways = ways_i.shape[2]
    if misc[M_POLICY] != RANDOM:
        best = 0
        for w in range(1, nways):
            if ways_i[STAMP, st, w] < ways_i[STAMP, st, best]:
                best = w
        return best
    rank = randbelow(mt, mtpos, nways)
    # the way whose stamp has exactly ``rank`` smaller stamps in the set
    for w in range(nways):
        smaller = 0
        for v in range(nways):
            if ways_i[STAMP, st, v] < ways_i[STAMP, st, w]:
                smaller += 1
        if smaller == rank:
            return w
    return 0


@njit(cache=True)
def _fill(
    leaf, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, mt, mtpos
):  # pragma: no cover
    """Insert leaf ``leaf``; returns (set, way, whether the held sizes changed)."""
    nsets = ways_i.shape[1]
    nways = ways_i.shape[2]
    s = leaf_i[leaf, L_SHIFT]
    base = leaf_u[leaf, 0]
    owner = -1 if leaf_i[leaf, L_GLOBAL] else misc[M_TAG]
    st = np.int64((base >> np.uint64(s)) % np.uint64(nsets))
    same = -1
    free = -1
    count = 0
    for w in range(nways):
        if ways_i[VALID, st, w] == 1:
            count += 1
            if (
                ways_i[SHIFT, st, w] == s
                and ways_u[0, st, w] == base
                and ways_i[OWNER, st, w] == owner
            ):
                same = w
        elif free < 0:
            free = w
    changed = False
    if same >= 0:
        way = same
    elif count >= nways:
        way = _victim(st, ways_i, misc, mt, mtpos)
        old = ways_i[SHIFT, st, way]
        held[old] -= 1
        changed = held[old] == 0
        counters[C_EVICTIONS] += 1
    else:
        way = free
    if same < 0:
        held[s] += 1
        changed = changed or held[s] == 1
    ways_i[VALID, st, way] = 1
    ways_i[SHIFT, st, way] = s
    ways_i[OWNER, st, way] = owner
    ways_i[STAMP, st, way] = misc[M_CLOCK]
    misc[M_CLOCK] += 1
    ways_i[ORIGIN, st, way] = -(leaf + 1)
    ways_i[ALLOWED, st, way] = leaf_i[leaf, L_ALLOWED]
    ways_u[0, st, way] = base
    ways_u[1, st, way] = leaf_u[leaf, 1]
    return st, way, changed


@njit(cache=True)
def _leaf_of(va, misc, gkeys, gleaf):  # pragma: no cover
    g = va >> np.uint64(misc[M_GSHIFT])
    if misc[M_DENSE]:
        return gleaf[np.int64(g - np.uint64(misc[M_G0]))]
    return gleaf[np.searchsorted(gkeys, g)]


@njit(cache=True)
def _step(
    va, leaf_u, leaf_i, ways_u, ways_i, held, order, norder, misc, counters, mt, mtpos, gkeys, gleaf
):  # pragma: no cover
    """One access; returns (set, way, norder) or set -1 to stop before it."""
    tag = misc[M_TAG]
    st, w = _lookup(va, tag, order, norder, ways_u, ways_i)
    if st >= 0:
        if ways_i[ALLOWED, st, w] == 0:
            return -1, -1, norder
        counters[C_LOOKUPS] += 1
        counters[C_HITS] += 1
        if misc[M_POLICY] == LRU:
            ways_i[STAMP, st, w] = misc[M_CLOCK]
            misc[M_CLOCK] += 1
        return st, w, norder
    leaf = _leaf_of(va, misc, gkeys, gleaf)
    if leaf < 0 or leaf_i[leaf, L_OK] == 0 or leaf_i[leaf, L_ALLOWED] == 0:
        return -1, -1, norder
    counters[C_LOOKUPS] += 1
    counters[C_MISSES] += 1
    counters[C_WALKS] += 1
    counters[C_READS] += leaf_i[leaf, L_READS]
    st, w, changed = _fill(leaf, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, mt, mtpos)
    if changed:
        norder = _order(held, order)
    return st, w, norder


@njit(cache=True)
def run_trace(
    vas, start, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, mt, gkeys, gleaf, pas
):  # pragma: no cover
    """Translate ``vas[start:]`` into ``pas``; returns the index of the first access
    left to the Python step (``len(vas)`` when all were done)."""
    order = np.zeros(held.shape[0], dtype=np.int64)
    norder = _order(held, order)
    mtpos = np.zeros(1, dtype=np.int64)
    mtpos[0] = misc[M_MTPOS]
    n = vas.shape[0]
    last_page = np.uint64(0)
    have_last = False
    last_base = np.uint64(0)
    last_pa = np.uint64(0)
    for i in range(start, n):
        va = vas[i]
        if have_last and (va >> np.uint64(order[0])) == last_page:
            # the same smallest-size page as the access before: the lookup finds the
            # entry just used, already most recent; only the counters move
            counters[C_LOOKUPS] += 1
            counters[C_HITS] += 1
            pas[i] = last_pa + (va - last_base)
            continue
        st, w, norder = _step(
            va,
            leaf_u,
            leaf_i,
            ways_u,
            ways_i,
            held,
            order,
            norder,
            misc,
            counters,
            mt,
            mtpos,
            gkeys,
            gleaf,
        )
        if st < 0:
            misc[M_MTPOS] = mtpos[0]
            return i
        last_base = ways_u[0, st, w]
        last_pa = ways_u[1, st, w]
        pas[i] = last_pa + (va - last_base)
        last_page = va >> np.uint64(order[0])
        have_last = True
    misc[M_MTPOS] = mtpos[0]
    return n


@njit(cache=True)
def run_span(
    va0,
    end,
    leaf_u,
    leaf_i,
    ways_u,
    ways_i,
    held,
    misc,
    counters,
    mt,
    gkeys,
    gleaf,
    run_va,
    run_pa,
    run_len,
):  # pragma: no cover
    """Translate ``[va0, end)`` page by page as a transaction does: each step covers the
    rest of the entry it used.  Fills ``run_*``; returns (runs, address reached)."""
    order = np.zeros(held.shape[0], dtype=np.int64)
    norder = _order(held, order)
    mtpos = np.zeros(1, dtype=np.int64)
    mtpos[0] = misc[M_MTPOS]
    va = va0
    k = 0
    while va < end and k < run_va.shape[0]:
        st, w, norder = _step(
            va,
            leaf_u,
            leaf_i,
            ways_u,
            ways_i,
            held,
            order,
            norder,
            misc,
            counters,
            mt,
            mtpos,
            gkeys,
            gleaf,
        )
        if st < 0:
            break
        base = ways_u[0, st, w]
        page_end = base + (np.uint64(1) << np.uint64(ways_i[SHIFT, st, w]))
        stop = end if page_end == 0 or page_end > end else page_end
        run_va[k] = va
        run_pa[k] = ways_u[1, st, w] + (va - base)
        run_len[k] = stop - va
        k += 1
        va = stop
    misc[M_MTPOS] = mtpos[0]
    return k, va
