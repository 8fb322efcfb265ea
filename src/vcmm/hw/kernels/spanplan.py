"""A transaction's plan, compiled: the bookkeeping around its walks.

:func:`vcmm.hw.stream.plan_span` walks a span coarse to fine (a walk per cell of the
largest leaf size, then per cell of the leaf size found where that was smaller) and
:func:`vcmm.hw.stream.plan_walks` lays the walks out as the TLB kernel's leaf
columns.  In numpy each refinement is some twenty whole-array passes (repeats,
cumulative sums, scatters) and the layout a dozen strided column copies: through
4 KiB pages, on 16,384 cells per 64 MiB, they cost more than the walks.  Here each is
one loop.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def refine_cells(
    cell_g, cell_s, ok, shift, lo, hi, gshift, gleaf, found
):  # pragma: no cover - compiled
    """One refinement of a span's cells (granule ``cell_g[c]``, log2 size ``cell_s[c]``,
    walked at its first granule inside ``[lo, hi]``; the walk found a leaf of log2 size
    ``shift[c]`` if ``ok[c]``).  A cell the leaf covers (or of one granule) is done: its
    granules get walk number ``found + c`` in ``gleaf``.  The others are cut into
    cells of the leaf's size (of one granule if the walk failed), those from the one
    holding the walked granule to the span's end; returns them."""
    total = 0
    for c in range(cell_g.shape[0]):
        size = cell_s[c]
        first = max(cell_g[c], lo)
        last = min(cell_g[c] + (np.int64(1) << (size - gshift)) - 1, hi)
        if (ok[c] and shift[c] >= size) or size <= gshift:
            for g in range(first, last + 1):
                gleaf[g - lo] = found + c
        else:
            sub = shift[c] if ok[c] and shift[c] > gshift else gshift
            step = np.int64(1) << (sub - gshift)
            head = cell_g[c] + (first - cell_g[c]) // step * step
            total += (last - head) // step + 1
    new_g = np.empty(total, dtype=np.int64)
    new_s = np.empty(total, dtype=np.int64)
    k = 0
    for c in range(cell_g.shape[0]):
        size = cell_s[c]
        if (ok[c] and shift[c] >= size) or size <= gshift:
            continue
        first = max(cell_g[c], lo)
        last = min(cell_g[c] + (np.int64(1) << (size - gshift)) - 1, hi)
        sub = shift[c] if ok[c] and shift[c] > gshift else gshift
        step = np.int64(1) << (sub - gshift)
        g = cell_g[c] + (first - cell_g[c]) // step * step
        while g <= last:
            new_g[k] = g
            new_s[k] = sub
            k += 1
            g += step
    return new_g, new_s


@njit(cache=True)
def pack_leaves(
    ok, reads, shift, base, pa_base, attr_index, allowed, global_, leaf_u, leaf_i
):  # pragma: no cover - compiled
    """The TLB kernel's leaf columns of walks: ``leaf_u[l] = (base, output base)``,
    ``leaf_i[l] = (log2 size, reads, ok, allowed, global)``; ``allowed`` and ``global_``
    are per attribute set (a walk without attributes: neither)."""
    for r in range(ok.shape[0]):
        leaf_u[r, 0] = base[r]
        leaf_u[r, 1] = pa_base[r]
        a = attr_index[r]
        leaf_i[r, 0] = shift[r]
        leaf_i[r, 1] = reads[r]
        leaf_i[r, 2] = 1 if ok[r] else 0
        leaf_i[r, 3] = 1 if a >= 0 and allowed[a] else 0
        leaf_i[r, 4] = 1 if a >= 0 and global_[a] else 0
