"""A TLB's store as arrays indexed ``[set, way]``, and back: what compiled kernels run on.

:func:`export_store` lays a :class:`~vcmm.hw.tlbstore.TlbStore` out for one tag's
stream (:mod:`vcmm.hw.kernels.tlbrun` documents the columns): each set's entries in
replacement order get increasing stamps, owners become small integers (the stream's
tag first, ``-1`` for global entries), the random policy's generator state becomes
CPython's 624 words and position.  :func:`import_store` writes the kernel's result
back: each set's entries ordered by stamp (the dict order the reference keeps), held
entries reused as they were, new ones built from the walks that filled them, the
generator state and the counters added to the whole TLB's and the tag's.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.hw.tlbentry import TLBEntry
from vcmm.hw.tlbstore import GLOBAL, Key, TlbStore

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]

#: Replacement policy numbers of the kernel.
POLICIES = {"lru": 0, "fifo": 1, "random": 2}
#: Counter names in the kernel's ``counters`` order.
COUNTERS = ("lookups", "hits", "misses", "walks", "walk_reads", "evictions")
#: Shifts a held size may have (sizes are powers of two below 2**64).
SHIFTS = 64


@dataclass
class TlbArrays:
    """One tag's view of a TLB as arrays, plus what is needed to write it back."""

    ways_u: U64
    ways_i: I64
    held: I64
    misc: I64
    counters: I64
    mt: U64
    #: Owner number -> tag (index 0 is the stream's tag).
    owners: list[Hashable]
    #: Origin number -> the entry held before the stream (origins >= 0).
    held_before: list[TLBEntry]
    gauss_next: float | None = None


def export_store(
    store: TlbStore, tag: Hashable, access_allows: Callable[[TLBEntry], bool]
) -> TlbArrays:
    """Arrays of ``store`` for a stream by ``tag``; ``access_allows`` says whether the
    stream's access may use a held entry (its permission check)."""
    nsets, nways = store.nsets, store.ways
    ways_u = np.zeros((2, nsets, nways), dtype=np.uint64)
    ways_u[0] = 1  # no entry's base: an empty way never matches
    ways_i = np.zeros((8, nsets, nways), dtype=np.int64)
    ways_i[1] = -1
    held = np.zeros(SHIFTS + 1, dtype=np.int64)
    owners: list[Hashable] = [tag]
    owner_ids: dict[Hashable, int] = {tag: 0}
    before: list[TLBEntry] = []
    # one row per held entry, stored with one assignment per column (a numpy store per
    # entry costs more than the kernel on a short stream)
    at_set: list[int] = []
    at_way: list[int] = []
    bases: list[int] = []
    pas: list[int] = []
    rows: list[tuple[int, int, int, int, int, int]] = []
    for s, entries in enumerate(store.sets):
        for w, (key, entry) in enumerate(entries.items()):
            size, base, owner = key
            if owner is GLOBAL:
                number = -1
            else:
                number = owner_ids.get(owner, -2)
                if number == -2:
                    number = owner_ids[owner] = len(owners)
                    owners.append(owner)
            shift = size.bit_length() - 1
            at_set.append(s)
            at_way.append(w)
            bases.append(base)
            pas.append(entry.pa_base)
            rows.append((1, shift, number, len(before), len(before), int(access_allows(entry))))
            before.append(entry)
    clock = len(before)
    if before:
        ways_u[0, at_set, at_way] = np.array(bases, dtype=np.uint64)
        ways_u[1, at_set, at_way] = np.array(pas, dtype=np.uint64)
        columns = np.array(rows, dtype=np.int64)
        ways_i[:6, at_set, at_way] = columns.T
        np.add.at(held, columns[:, 1], 1)
    mt = np.zeros(624, dtype=np.uint64)
    misc = np.zeros(7, dtype=np.int64)
    gauss = None
    if store.rng is not None:
        _, words, gauss = store.rng.getstate()
        mt[:] = words[:624]
        misc[3] = words[624]
    misc[0] = 0
    misc[1] = POLICIES["lru" if store.lru else "fifo" if store.rng is None else "random"]
    misc[2] = clock
    return TlbArrays(
        ways_u, ways_i, held, misc, np.zeros(6, dtype=np.int64), mt, owners, before, gauss
    )


def import_store(
    store: TlbStore, arrays: TlbArrays, new_entries: Callable[[list[int]], list[TLBEntry]]
) -> None:
    """Write the kernel's state back into ``store``; ``new_entries(leaves)`` builds the
    entries fills of those walks inserted (one call for all: per-entry conversions
    of array scalars cost more than the kernel on a short stream)."""
    from vcmm.hw.kernels.tlbrows import held_rows

    rows, bases = held_rows(arrays.ways_u, arrays.ways_i)
    table = rows.tolist()
    made_leaves = sorted({-origin - 1 for *_, origin in table if origin < 0})
    made = dict(zip(made_leaves, new_entries(made_leaves), strict=True))
    sets: list[dict[Key, TLBEntry]] = [{} for _ in range(arrays.ways_i.shape[1])]
    before, owners = arrays.held_before, arrays.owners
    for (s, shift, number, origin), base in zip(table, bases.tolist(), strict=True):
        entry = before[origin] if origin >= 0 else made[-origin - 1]
        owner = GLOBAL if number == -1 else owners[number]
        sets[s][(1 << shift, base, owner)] = entry
    store.load(tuple(sets))
    if store.rng is not None:
        words = (*arrays.mt.tolist(), int(arrays.misc[3]))
        store.rng.setstate((3, words, arrays.gauss_next))
    counts = dict(zip(COUNTERS, arrays.counters.tolist(), strict=True))
    if not any(counts.values()):
        return
    mine = store.stats_of(arrays.owners[0])
    for name, value in counts.items():
        if value:
            setattr(store.stats, name, getattr(store.stats, name) + value)
            setattr(mine, name, getattr(mine, name) + value)
