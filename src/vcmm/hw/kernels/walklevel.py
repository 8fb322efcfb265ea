"""One level of a vectorised page-table walk, compiled.

:func:`vcmm.hw.pgtable.walkmany.walk_into` walks many addresses level by level: it
gathers each level's descriptors with one read of memory, then classifies them.  In
numpy the classification is some sixty whole-array passes per level (valid bit, each
kind's type bits, size-fault bits, access flag, output-address slices, alignment,
scatter into the result rows, compaction of the addresses still walking); through
4 KiB pages a 64 MiB DMA transfer is 16,384 walks, and those passes cost more than
moving the data.  Here they are one loop over the descriptors.

The format comes in as arrays, one row per descriptor kind of the level in the order
the walker tries them (the first match claims the descriptor): type mask and value,
whether it points at a table, size-fault bits, access-flag bit, log2 of the leaf
size, and the output-address slices ``(descriptor lsb, mask, address lsb)`` padded
with zero masks.  All address arithmetic stays in uint64.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def descriptor_addresses(
    vas, walking, table, shift, index_mask, entry_bytes, out
):  # pragma: no cover - compiled
    """``out[i]``: where the descriptor of ``vas[walking[i]]`` sits in ``table[i]``."""
    for i in range(walking.shape[0]):
        out[i] = table[i] + ((vas[walking[i]] >> shift) & index_mask) * entry_bytes


@njit(cache=True)
def decode_level(  # pragma: no cover - compiled
    words, backed, vas, walking, rows, parents, tables, valid_mask, kinds, slices, level,
    ok, reads, levels, shifts, bases, pa_bases, attr_index, uniq,
):  # fmt: skip
    """Classify the descriptors ``words`` read for the addresses ``vas[walking]``.

    A leaf fills its result row ``rows[walking[i]]``: ok, level, log2 size, input and
    output base, and in ``attr_index`` ``-2 - u``, ``u`` the number of its attribute
    set among the distinct ``(kind, attribute bits, inherited bits)`` of this level's
    leaves, which go to ``uniq[u] = (kind, attribute bits, inherited bits, descriptor,
    table descriptor)``: a stream's leaves share a handful, decoded once each by the
    caller, who then renumbers (:func:`number_attrs`).  A table pointer keeps the
    address walking: ``walking``, ``tables`` and ``parents`` (the table descriptor
    that led to each address, whose fields a leaf may inherit) are compacted in place
    to the addresses that walk on, with their next table and descriptor (entry ``i``
    is read before anything is written to it).  A fault, a descriptor read from a
    hole or a misaligned output leaves the row not ok.  Returns how many addresses
    walk on and how many attribute sets were met (``uniq.shape[0] + 1`` if more:
    those leaves keep -1 and the caller numbers them).

    ``kinds[k] = (type mask, type value, is table, size-fault bits, access-flag bit,
    log2 size, attribute mask, inherited mask)``; ``slices[k, s] = (descriptor lsb,
    mask, address lsb)``.
    """
    one = np.uint64(1)
    zero = np.uint64(0)
    count = 0
    sets = 0
    for i in range(walking.shape[0]):
        if not backed[i]:
            continue
        at = walking[i]
        row = rows[at]
        reads[row] += 1
        word = words[i]
        if word & valid_mask == zero:
            continue
        k = -1
        for j in range(kinds.shape[0]):
            if word & kinds[j, 0] == kinds[j, 1]:
                k = j
                break
        if k < 0 or word & kinds[k, 3] != zero:
            continue
        out = zero
        for s in range(slices.shape[1]):
            out |= ((word >> slices[k, s, 0]) & slices[k, s, 1]) << slices[k, s, 2]
        if kinds[k, 2] != zero:
            walking[count] = at
            tables[count] = out
            parents[count] = word
            count += 1
            continue
        if kinds[k, 4] != zero and word & kinds[k, 4] == zero:
            continue
        shift = kinds[k, 5]
        if out & ((one << shift) - one) != zero:
            continue
        ok[row] = True
        levels[row] = level
        shifts[row] = np.int64(shift)
        bases[row] = (vas[at] >> shift) << shift
        pa_bases[row] = out
        u, sets = _attr_set(
            uniq, sets, k, word & kinds[k, 6], parents[i] & kinds[k, 7], word, parents[i]
        )
        if u < uniq.shape[0]:
            attr_index[row] = -2 - u
    return count, sets


@njit(cache=True, inline="always")
def _attr_set(uniq, sets, k, bits, inherited, word, parent):  # pragma: no cover - compiled
    """The number of attribute set ``(k, bits, inherited)`` among the ``sets`` in
    ``uniq`` (a handful: a linear search), added if new; ``uniq.shape[0]`` and
    ``sets`` past it when there is no room.  Returns (number, sets)."""
    u = 0
    while u < sets and u < uniq.shape[0]:
        if uniq[u, 0] == k and uniq[u, 1] == bits and uniq[u, 2] == inherited:
            return u, sets
        u += 1
    if sets >= uniq.shape[0]:
        return uniq.shape[0], uniq.shape[0] + 1  # too many: the caller numbers them
    uniq[u, 0] = np.uint64(k)
    uniq[u, 1] = bits
    uniq[u, 2] = inherited
    uniq[u, 3] = word
    uniq[u, 4] = parent
    return u, sets + 1


@njit(cache=True)
def number_attrs(attr_index, numbers):  # pragma: no cover - compiled
    """Replace each level-local code ``-2 - u`` in ``attr_index`` by ``numbers[u]``."""
    for r in range(attr_index.shape[0]):
        code = attr_index[r]
        if code <= -2:
            attr_index[r] = numbers[-2 - code]
