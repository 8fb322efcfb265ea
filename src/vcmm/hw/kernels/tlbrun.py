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

So that a step costs the same whatever the associativity, each kernel call first
builds two indexes over the ways: a key index and, per set, a doubly linked list in
replacement order (head: the next victim).  The key index is a table by granule for
the stream's own entries of the smallest page size inside the plan's dense range (one
read answers a lookup), and an open-addressing hash table (linear probing, deletion by
backward shift) for every other key.  A lookup is one or two probes per held size, a
fill or an LRU update a few pointer moves, as in a hardware CAM.

The loops run without numba's reference counting (:func:`lean`): the helpers are
inlined with their array arguments, and numba counts a reference (an atomic
increment and decrement) for each such argument at each inlined call, which cost
more than the whole TLB step.  The drivers allocate what the loops need first.

Columns, each a contiguous ``[set, way]`` plane: ``ways_u = (base, pa)`` (an invalid
way's base is 1, which no entry's base can be); ``ways_i = (valid, shift, owner, stamp,
origin, allowed, previous, next)``; ``leaf_u[l] = (base, pa)``; ``leaf_i[l] = (shift,
reads, ok, allowed, global)``; ``misc = (tag, policy, clock, mt position, granule
shift, first granule, dense)``; ``counters = (lookups, hits, misses, walks, walk
reads, evictions)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numba import njit

from vcmm.hw.kernels.mt19937 import randbelow

# The step's helpers are inlined into the two drivers, whose loops keep the hit path
# (a lookup and an LRU move) apart from the miss path: measured, either a call
# between compiled functions or one inlined step serving both costs several times a
# whole TLB hit.
INLINE: Literal["always"] = "always"

VALID, SHIFT, OWNER, STAMP, ORIGIN, ALLOWED, PREV, NEXT = 0, 1, 2, 3, 4, 5, 6, 7
L_SHIFT, L_READS, L_OK, L_ALLOWED, L_GLOBAL = 0, 1, 2, 3, 4
# a leaf's packed record ``(base, pa, info)``: info's bits
I_SHIFT_MASK, I_OK, I_ALLOWED, I_GLOBAL, I_READS_AT = 0xFF, 1 << 8, 1 << 9, 1 << 10, 16
M_TAG, M_POLICY, M_CLOCK, M_MTPOS, M_GSHIFT, M_G0, M_DENSE = 0, 1, 2, 3, 4, 5, 6
C_LOOKUPS, C_HITS, C_MISSES, C_WALKS, C_READS, C_EVICTIONS = 0, 1, 2, 3, 4, 5
LRU, FIFO, RANDOM = 0, 1, 2
HEAD, TAIL, COUNT = 0, 1, 2
X_HBITS, X_GSHIFT, X_G0, X_NGRAN, X_GLOBALS, X_WSHIFT = 0, 1, 2, 3, 4, 5
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Accesses a run of hits on one page is checked by at a time (see _same_page_run).
BLOCK = 16


def lean(fn: Callable[..., Any]) -> Any:
    """Compile a loop without reference counting (it must not allocate); on a numba
    without that option, with it (the same results, slower)."""
    lean_options: dict[str, Any] = {"cache": True, "_nrt": False}  # not in numba's stubs
    try:
        return njit(**lean_options)(fn)
    except KeyError:  # pragma: no cover - the option is numba's own (numba >= 0.26)
        return njit(cache=True)(fn)


@njit(cache=True)
def _order(held, order):  # pragma: no cover - compiled
    """The held sizes' shifts ascending into ``order``; returns how many."""
    n = 0
    for s in range(held.shape[0]):
        if held[s] > 0:
            order[n] = s
            n += 1
    return n


@njit(cache=True, inline=INLINE)
def _meta(shift, owner):  # pragma: no cover - compiled
    return shift + 64 * (owner + 2)  # never 0: 0 marks an empty slot


@njit(cache=True, inline=INLINE)
def _home(base, meta, hbits):  # pragma: no cover - compiled
    h = (base ^ np.uint64(meta)) * GOLDEN
    return np.int64(h >> np.uint64(64 - hbits))


@njit(cache=True, inline=INLINE)
def _find(base, meta, keys):  # pragma: no cover - compiled
    """The hash slot of key (``base``, ``meta``), or -1."""
    hk_base, hk_meta, _, _, xs = keys
    mask = hk_meta.shape[0] - 1
    i = _home(base, meta, xs[X_HBITS])
    while hk_meta[i] != 0:
        if hk_meta[i] == meta and hk_base[i] == base:
            return i
        i = (i + 1) & mask
    return -1


@njit(cache=True, inline=INLINE)
def _insert(base, meta, slot, keys):  # pragma: no cover - compiled
    hk_base, hk_meta, hv, _, xs = keys
    mask = hk_meta.shape[0] - 1
    i = _home(base, meta, xs[X_HBITS])
    while hk_meta[i] != 0:
        i = (i + 1) & mask
    hk_base[i] = base
    hk_meta[i] = meta
    hv[i] = slot


@njit(cache=True, inline=INLINE)
def _delete(i, keys):  # pragma: no cover - compiled
    """Empty hash slot ``i``, shifting later members of its probe run back."""
    hk_base, hk_meta, hv, _, xs = keys
    mask = hk_meta.shape[0] - 1
    hk_meta[i] = 0
    j = i
    while True:
        j = (j + 1) & mask
        if hk_meta[j] == 0:
            return
        k = _home(hk_base[j], hk_meta[j], xs[X_HBITS])
        if (i <= j and i < k <= j) or (i > j and (k > i or k <= j)):
            continue  # its home lies after the hole: it stays reachable
        hk_base[i] = hk_base[j]
        hk_meta[i] = hk_meta[j]
        hv[i] = hv[j]
        hk_meta[j] = 0
        i = j


@njit(cache=True, inline=INLINE)
def _direct(base, shift, owner, xs):  # pragma: no cover - compiled
    """Where the granule table files key (``shift``, ``base``, ``owner``); -1: the
    hash does (another owner or size, or outside the plan's dense range)."""
    if owner != 0 or shift != xs[X_GSHIFT]:
        return -1
    g = np.int64(base >> np.uint64(shift)) - xs[X_G0]
    if g < 0 or g >= xs[X_NGRAN]:
        return -1
    return g


@njit(cache=True, inline=INLINE)
def _key_find(base, shift, owner, keys):  # pragma: no cover - compiled
    """The slot (``set * ways + way``) holding the key, or -1."""
    d = _direct(base, shift, owner, keys[4])
    if d >= 0:
        return keys[3][d, 0]
    i = _find(base, _meta(shift, owner), keys)
    return keys[2][i] if i >= 0 else -1


@njit(cache=True, inline=INLINE)
def _key_add(base, shift, owner, slot, keys):  # pragma: no cover - compiled
    xs = keys[4]
    d = _direct(base, shift, owner, xs)
    if d >= 0:
        keys[3][d, 0] = slot
    else:
        _insert(base, _meta(shift, owner), slot, keys)
    if owner == -1:
        xs[X_GLOBALS] += 1


@njit(cache=True, inline=INLINE)
def _key_drop(base, shift, owner, keys):  # pragma: no cover - compiled
    xs = keys[4]
    d = _direct(base, shift, owner, xs)
    if d >= 0:
        keys[3][d, 0] = -1
    else:
        _delete(_find(base, _meta(shift, owner), keys), keys)
    if owner == -1:
        xs[X_GLOBALS] -= 1


@njit(cache=True, inline=INLINE)
def _set_of(page, nsets):  # pragma: no cover - compiled
    """The set a page number selects (a mask when the count is a power of two: a
    division costs more than the rest of a TLB step)."""
    if nsets & (nsets - 1) == 0:
        return np.int64(page & np.uint64(nsets - 1))
    return np.int64(page % np.uint64(nsets))


@njit(cache=True, inline=INLINE)
def _unlink(st, w, ways_i, sets_i):  # pragma: no cover - compiled
    p = ways_i[PREV, st, w]
    n = ways_i[NEXT, st, w]
    if p >= 0:
        ways_i[NEXT, st, p] = n
    else:
        sets_i[HEAD, st] = n
    if n >= 0:
        ways_i[PREV, st, n] = p
    else:
        sets_i[TAIL, st] = p


@njit(cache=True, inline=INLINE)
def _append(st, w, ways_i, sets_i, misc):  # pragma: no cover - compiled
    """Make way ``w`` the most recent of its set (and stamp it so)."""
    t = sets_i[TAIL, st]
    ways_i[PREV, st, w] = t
    ways_i[NEXT, st, w] = -1
    if t >= 0:
        ways_i[NEXT, st, t] = w
    else:
        sets_i[HEAD, st] = w
    sets_i[TAIL, st] = w
    ways_i[STAMP, st, w] = misc[M_CLOCK]
    misc[M_CLOCK] += 1


@njit(cache=True)
def _index(ways_u, ways_i, misc, gleaf, lrec):  # pragma: no cover - compiled
    """Build the key index and the per-set lists from the ways (see the notes).  The
    granule table keeps each granule's slot next to its leaf's number, packed
    attributes and output base (32 bytes): one cache line answers a lookup and gives
    the walk of a miss."""
    nsets = ways_i.shape[1]
    nways = ways_i.shape[2]
    xs = np.zeros(6, dtype=np.int64)
    while (1 << xs[X_WSHIFT]) < nways:
        xs[X_WSHIFT] += 1
    xs[X_HBITS] = 4
    while (1 << xs[X_HBITS]) < 4 * nsets * nways:
        xs[X_HBITS] += 1
    xs[X_GSHIFT] = misc[M_GSHIFT]
    xs[X_G0] = misc[M_G0]
    xs[X_NGRAN] = gleaf.shape[0] if misc[M_DENSE] else 0
    hsize = 1 << xs[X_HBITS]
    gmap = np.full((xs[X_NGRAN], 4), -1, dtype=np.int64)
    for g in range(xs[X_NGRAN]):
        leaf = gleaf[g]
        gmap[g, 1] = leaf
        if leaf >= 0:
            gmap[g, 2] = np.int64(lrec[leaf, 2])
            gmap[g, 3] = np.int64(lrec[leaf, 1])
    keys = (
        np.zeros(hsize, dtype=np.uint64),
        np.zeros(hsize, dtype=np.int64),
        np.zeros(hsize, dtype=np.int64),
        gmap,
        xs,
    )
    sets_i = np.full((3, nsets), -1, dtype=np.int64)
    for st in range(nsets):
        stamps = ways_i[STAMP, st].copy()
        count = 0
        for w in range(nways):
            if ways_i[VALID, st, w] == 1:
                count += 1
                base, shift, owner = ways_u[0, st, w], ways_i[SHIFT, st, w], ways_i[OWNER, st, w]
                _key_add(base, shift, owner, (st << xs[X_WSHIFT]) | w, keys)
            else:
                stamps[w] = np.iinfo(np.int64).max
        sets_i[COUNT, st] = count
        prev = -1
        for w in np.argsort(stamps)[:count]:
            ways_i[PREV, st, w] = prev
            ways_i[NEXT, st, w] = -1
            if prev >= 0:
                ways_i[NEXT, st, prev] = w
            else:
                sets_i[HEAD, st] = w
            prev = w
        sets_i[TAIL, st] = prev
    return keys, sets_i


@njit(cache=True, inline=INLINE)
def _lookup(va, order, norder, keys):  # pragma: no cover - compiled
    """The slot a lookup by the stream's tag (owner 0) finds for ``va``, or -1."""
    globals_held = keys[4][X_GLOBALS] > 0
    for oi in range(norder):
        s = order[oi]
        base = (va >> np.uint64(s)) << np.uint64(s)
        slot = _key_find(base, s, 0, keys)
        if slot < 0 and globals_held:
            slot = _key_find(base, s, -1, keys)
        if slot >= 0:
            return slot
    return -1


@njit(cache=True, inline=INLINE)
def _victim(st, ways_i, sets_i, misc, mt, mtpos):  # pragma: no cover - compiled
    """The way to evict from full set ``st``: the oldest, or a random rank of the
    replacement order."""
    w = sets_i[HEAD, st]
    if misc[M_POLICY] == RANDOM:
        rank = randbelow(mt, mtpos, sets_i[COUNT, st])
        for _ in range(rank):
            w = ways_i[NEXT, st, w]
    return w


@njit(cache=True, inline=INLINE)
def _fill(va, leaf, info, pa, state, keys, sets_i):  # pragma: no cover - compiled
    """Insert leaf ``leaf`` (packed ``info``, output base ``pa``), the walk of ``va``;
    returns (slot, whether the held sizes changed)."""
    ways_u, ways_i, held, misc, counters, mt, mtpos = state
    nsets = ways_i.shape[1]
    nways = ways_i.shape[2]
    s = info & I_SHIFT_MASK
    base = (va >> np.uint64(s)) << np.uint64(s)  # a leaf is aligned and holds va
    owner = -1 if info & I_GLOBAL else 0
    st = _set_of(base >> np.uint64(s), nsets)
    changed = False
    same = _key_find(base, s, owner, keys)
    if same >= 0:  # the same key: replaced, a fresh insertion
        way = same & ((1 << keys[4][X_WSHIFT]) - 1)
        _unlink(st, way, ways_i, sets_i)
        _key_drop(base, s, owner, keys)
    elif sets_i[COUNT, st] >= nways:
        way = _victim(st, ways_i, sets_i, misc, mt, mtpos)
        _unlink(st, way, ways_i, sets_i)
        old = ways_i[SHIFT, st, way]
        _key_drop(ways_u[0, st, way], old, ways_i[OWNER, st, way], keys)
        held[old] -= 1
        changed = held[old] == 0
        counters[C_EVICTIONS] += 1
    else:
        way = 0
        while ways_i[VALID, st, way] == 1:
            way += 1
        sets_i[COUNT, st] += 1
    if same < 0:
        held[s] += 1
        changed = changed or held[s] == 1
    ways_i[VALID, st, way] = 1
    ways_i[SHIFT, st, way] = s
    ways_i[OWNER, st, way] = owner
    ways_i[ORIGIN, st, way] = -(leaf + 1)
    ways_i[ALLOWED, st, way] = 1 if info & I_ALLOWED else 0
    ways_u[0, st, way] = base
    ways_u[1, st, way] = pa
    _append(st, way, ways_i, sets_i, misc)
    slot = (st << keys[4][X_WSHIFT]) | way
    _key_add(base, s, owner, slot, keys)
    return slot, changed


@njit(cache=True, inline=INLINE)
def _hit(st, w, ways_i, sets_i, misc, counters):  # pragma: no cover - compiled
    """A lookup found way ``w`` of set ``st``: count the hit and make it most recent
    (LRU); False if the access may not use the entry (nothing counted: the Python
    step decides)."""
    if ways_i[ALLOWED, st, w] == 0:
        return False
    counters[C_LOOKUPS] += 1
    counters[C_HITS] += 1
    if misc[M_POLICY] == LRU and sets_i[TAIL, st] != w:
        _unlink(st, w, ways_i, sets_i)
        _append(st, w, ways_i, sets_i, misc)
    return True


@njit(cache=True, inline=INLINE)
def _walk_leaf(va, plan, misc, counters, gmap):  # pragma: no cover - compiled
    """A lookup missed: (leaf, packed info, output base) of the walk of ``va``, its
    miss and walk counted; leaf -1 if the walk faults or the access may not use the
    leaf (nothing counted)."""
    lrec, gkeys, gleaf = plan
    g = va >> np.uint64(misc[M_GSHIFT])
    if misc[M_DENSE]:
        d = np.int64(g - np.uint64(misc[M_G0]))
        leaf, info, pa = gmap[d, 1], gmap[d, 2], np.uint64(gmap[d, 3])
    else:
        leaf = gleaf[np.searchsorted(gkeys, g)]
        info, pa = np.int64(lrec[leaf, 2]), lrec[leaf, 1]
    if leaf < 0 or info & (I_OK | I_ALLOWED) != I_OK | I_ALLOWED:
        return -1, info, pa
    counters[C_LOOKUPS] += 1
    counters[C_MISSES] += 1
    counters[C_WALKS] += 1
    counters[C_READS] += info >> I_READS_AT
    return leaf, info, pa


@njit(cache=True, inline=INLINE)
def _step(va, plan, state, keys, sets_i, order, norder):  # pragma: no cover - compiled
    """One access: a hit, or a miss filled from its walk.  Returns (slot, held sizes
    in probe order); slot -1 if the Python step must take the access."""
    ways_i, held, misc, counters = state[1], state[2], state[3], state[4]
    slot = _lookup(va, order, norder, keys)
    if slot >= 0:
        wshift = keys[4][X_WSHIFT]
        if not _hit(slot >> wshift, slot & ((1 << wshift) - 1), ways_i, sets_i, misc, counters):
            return -1, norder
        return slot, norder
    leaf, info, pa = _walk_leaf(va, plan, misc, counters, keys[3])
    if leaf < 0:
        return -1, norder
    slot, changed = _fill(va, leaf, info, pa, state, keys, sets_i)
    if changed:
        norder = _order(held, order)
    return slot, norder


@njit(cache=True)
def _prepare(leaf_u, leaf_i, ways_u, ways_i, held, misc, gleaf):  # pragma: no cover
    """What a loop needs allocated: the leaves packed one record each, the key index,
    the set lists, the probe order and the generator position."""
    n = leaf_u.shape[0]
    lrec = np.zeros((n, 4), dtype=np.uint64)  # 32 bytes: a miss reads one cache line
    for leaf in range(n):
        lrec[leaf, 0] = leaf_u[leaf, 0]
        lrec[leaf, 1] = leaf_u[leaf, 1]
        info = leaf_i[leaf, L_SHIFT] | (leaf_i[leaf, L_READS] << I_READS_AT)
        info |= (I_OK if leaf_i[leaf, L_OK] else 0) | (I_GLOBAL if leaf_i[leaf, L_GLOBAL] else 0)
        info |= I_ALLOWED if leaf_i[leaf, L_ALLOWED] else 0
        lrec[leaf, 2] = np.uint64(info)
    keys, sets_i = _index(ways_u, ways_i, misc, gleaf, lrec)
    order = np.zeros(held.shape[0], dtype=np.int64)
    mtpos = np.zeros(1, dtype=np.int64)
    mtpos[0] = misc[M_MTPOS]
    return lrec, keys, sets_i, order, mtpos


@njit(cache=True)
def run_trace(
    vas, start, leaf_u, leaf_i, ways_u, ways_i, held, misc, counters, mt, gkeys, gleaf, pas
):  # pragma: no cover
    """Translate ``vas[start:]`` into ``pas``; returns the index of the first access
    left to the Python step (``len(vas)`` when all were done)."""
    lrec, keys, sets_i, order, mtpos = _prepare(leaf_u, leaf_i, ways_u, ways_i, held, misc, gleaf)
    plan = (lrec, gkeys, gleaf)
    state = (ways_u, ways_i, held, misc, counters, mt, mtpos)
    done, repeats = _trace(vas, start, pas, plan, state, keys, sets_i, order)
    misc[M_MTPOS] = mtpos[0]
    counters[C_LOOKUPS] += repeats
    counters[C_HITS] += repeats
    return done


@lean
def _trace(vas, start, pas, plan, state, keys, sets_i, order):  # pragma: no cover
    """The loop of :func:`run_trace`; returns (where it stopped, hits on the page just
    used, counted in bulk: a store per access would bound the loop).

    After each step, the accesses that stay in the same smallest-size page as the
    step's find the entry just used, already most recent: only the counters move.
    They run in an inner loop of locals (shift, page, output delta) that does no more
    than a load, a compare and a store per access."""
    ways_u, held = state[0], state[2]
    wshift = keys[4][X_WSHIFT]
    wmask = (1 << wshift) - 1
    norder = _order(held, order)
    n = vas.shape[0]
    repeats = 0
    i = start
    while i < n:
        va = vas[i]
        slot, norder = _step(va, plan, state, keys, sets_i, order, norder)
        if slot < 0:
            return i, repeats
        st = slot >> wshift
        w = slot & wmask
        delta = ways_u[1, st, w] - ways_u[0, st, w]  # modulo 2**64, as the output is
        pas[i] = va + delta
        s0 = np.uint64(order[0])
        page = va >> s0
        i += 1
        j = _same_page_run(vas, pas, i, s0, page, delta)
        repeats += j - i
        i = j
    return n, repeats


@njit(cache=True, inline=INLINE)
def _same_page_run(vas, pas, i, s0, page, delta):  # pragma: no cover - compiled
    """The first index from ``i`` whose address leaves page ``page`` (of shift ``s0``),
    with the outputs up to it written.  The first :data:`BLOCK` accesses go one by one
    (short runs, as in a tiled scan, end there); a longer run goes on in blocks
    without a branch per access (the compiler vectorises them), and a block that
    leaves the page has written outputs past the run, which the steps that follow
    overwrite."""
    n = vas.shape[0]
    j = i
    first = min(n, i + BLOCK)
    while j < first and (vas[j] >> s0) == page:
        pas[j] = vas[j] + delta
        j += 1
    if j < first:
        return j
    while j + BLOCK <= n:
        left = np.uint64(0)
        for k in range(BLOCK):
            v = vas[j + k]
            pas[j + k] = v + delta
            left |= (v >> s0) ^ page
        if left != 0:
            break
        j += BLOCK
    while j < n and (vas[j] >> s0) == page:
        pas[j] = vas[j] + delta
        j += 1
    return j


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
    run_origin,
):  # pragma: no cover
    """Translate ``[va0, end)`` page by page as a transaction does: each step covers the
    rest of the entry it used.  Fills ``run_*`` (``run_origin``: where the entry used
    came from, as the ways' origin column); returns (runs, address reached)."""
    lrec, keys, sets_i, order, mtpos = _prepare(leaf_u, leaf_i, ways_u, ways_i, held, misc, gleaf)
    plan = (lrec, gkeys, gleaf)
    state = (ways_u, ways_i, held, misc, counters, mt, mtpos)
    runs = (run_va, run_pa, run_len, run_origin)
    k, va = _span(va0, end, runs, plan, state, keys, sets_i, order)
    misc[M_MTPOS] = mtpos[0]
    return k, va


@lean
def _span(va0, end, runs, plan, state, keys, sets_i, order):  # pragma: no cover
    """The loop of :func:`run_span`."""
    run_va, run_pa, run_len, run_origin = runs
    ways_u, ways_i, held = state[0], state[1], state[2]
    wshift = keys[4][X_WSHIFT]
    wmask = (1 << wshift) - 1
    norder = _order(held, order)
    va = va0
    k = 0
    while va < end and k < run_va.shape[0]:
        slot, norder = _step(va, plan, state, keys, sets_i, order, norder)
        if slot < 0:
            break
        st = slot >> wshift
        w = slot & wmask
        base = ways_u[0, st, w]
        page_end = base + (np.uint64(1) << np.uint64(ways_i[SHIFT, st, w]))
        stop = end if page_end == 0 or page_end > end else page_end
        run_va[k] = va
        run_pa[k] = ways_u[1, st, w] + (va - base)
        run_len[k] = stop - va
        run_origin[k] = ways_i[ORIGIN, st, w]
        k += 1
        va = stop
    return k, va
