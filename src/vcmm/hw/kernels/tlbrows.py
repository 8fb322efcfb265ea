"""A TLB's arrays back to rows, compiled: what writing a kernel's state back reads.

One pass over the ``[set, way]`` columns of :mod:`vcmm.hw.kernels.tlbrun` gives the
held entries as rows, set by set, each set's in replacement order (by insertion
stamp): the order the reference keeps in its dicts.  Done in numpy it is a dozen
whole-array calls (select, sort by two keys, a gather and a list per column), whose
fixed costs are most of writing back a short stream.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Columns of a row: the set, log2 size, owner number and origin of the entry.
R_SET, R_SHIFT, R_OWNER, R_ORIGIN = 0, 1, 2, 3


@njit(cache=True)
def held_rows(ways_u, ways_i):  # pragma: no cover - compiled
    """Rows ``(set, shift, owner, origin)`` and input bases of the valid ways, set by
    set, each set's ways by stamp."""
    nsets, nways = ways_i.shape[1], ways_i.shape[2]
    count = 0
    for st in range(nsets):
        for w in range(nways):
            count += ways_i[0, st, w] == 1
    rows = np.empty((count, 4), dtype=np.int64)
    bases = np.empty(count, dtype=np.uint64)
    valid = np.empty(nways, dtype=np.int64)
    stamps = np.empty(nways, dtype=np.int64)
    k = 0
    for st in range(nsets):
        m = 0
        for w in range(nways):
            if ways_i[0, st, w] == 1:
                valid[m] = w
                stamps[m] = ways_i[3, st, w]
                m += 1
        for r in np.argsort(stamps[:m]):
            w = valid[r]
            rows[k, R_SET] = st
            rows[k, R_SHIFT] = ways_i[1, st, w]
            rows[k, R_OWNER] = ways_i[2, st, w]
            rows[k, R_ORIGIN] = ways_i[4, st, w]
            bases[k] = ways_u[0, st, w]
            k += 1
    return rows, bases
