"""The Mersenne Twister of CPython's :mod:`random`, compiled, for the TLB's random policy.

The reference TLB picks a victim with ``random.Random(seed).randrange(len(set))``.  A
compiled TLB must draw the very same numbers, so this is MT19937 as CPython runs it
(``genrand_uint32``) and CPython's ``_randbelow_with_getrandbits``: ``k`` bits of one
32-bit output (``k`` the bit length of ``n``), redrawn while the value is ``>= n``.
The state travels as ``random.getstate()`` gives it: 624 words and a position.
"""

from __future__ import annotations

import numpy as np
from numba import njit

N = 624
M = 397
MATRIX_A = 0x9908B0DF
UPPER = 0x80000000
LOWER = 0x7FFFFFFF
MASK32 = 0xFFFFFFFF


@njit(cache=True)
def _twist(mt: np.ndarray) -> None:  # pragma: no cover - compiled
    for kk in range(N):
        y = (mt[kk] & UPPER) | (mt[(kk + 1) % N] & LOWER)
        value = mt[(kk + M) % N] ^ (y >> 1)
        if y & 1:
            value ^= MATRIX_A
        mt[kk] = value & MASK32


@njit(cache=True)
def genrand_uint32(mt: np.ndarray, pos: np.ndarray) -> int:  # pragma: no cover - compiled
    """The next 32-bit output; ``mt`` (624 uint64 words) and ``pos[0]`` advance."""
    if pos[0] >= N:
        _twist(mt)
        pos[0] = 0
    y = mt[pos[0]]
    pos[0] += 1
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return int(y & MASK32)


@njit(cache=True)
def randbelow(mt: np.ndarray, pos: np.ndarray, n: int) -> int:  # pragma: no cover - compiled
    """CPython's ``randrange(n)`` for ``0 < n < 2**32``."""
    k = 0
    v = n
    while v:
        k += 1
        v >>= 1
    r = genrand_uint32(mt, pos) >> (32 - k)
    while r >= n:
        r = genrand_uint32(mt, pos) >> (32 - k)
    return r
