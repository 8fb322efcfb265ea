"""Which granules an access stream touches, compiled: the first step of a stream's plan.

Two passes over the addresses (their granule range, then a mark per granule) and one
over the range, instead of the half dozen whole-array numpy passes (shift, minimum,
maximum, scatter, search, numbering) the same answer costs in numpy.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def granule_range(vas, gshift):  # pragma: no cover - compiled
    """The lowest and highest granule numbers of ``vas`` (not empty)."""
    s = np.uint64(gshift)
    lo = vas[0] >> s
    hi = lo
    for i in range(1, vas.shape[0]):  # branch-free: the compiler vectorises it
        g = vas[i] >> s
        lo = min(lo, g)
        hi = max(hi, g)
    return lo, hi


@njit(cache=True)
def touched(vas, gshift, lo, hi):  # pragma: no cover - compiled
    """The granules ``vas`` touch in ``[lo, hi]``, ascending, and for each granule of the
    range the number of its walk among them (-1: not touched)."""
    s = np.uint64(gshift)
    gleaf = np.full(np.int64(hi - lo) + 1, -1, dtype=np.int64)
    for i in range(vas.shape[0]):
        gleaf[np.int64((vas[i] >> s) - lo)] = 0
    count = 0
    for k in range(gleaf.shape[0]):
        if gleaf[k] == 0:
            gleaf[k] = count
            count += 1
    granules = np.empty(count, dtype=np.uint64)
    for k in range(gleaf.shape[0]):
        if gleaf[k] >= 0:
            granules[gleaf[k]] = lo + np.uint64(k)
    return granules, gleaf
