"""The hardware walk of many addresses at once, vectorised level by level.

:func:`walk_tables_many` gives, for every address, what :func:`~.walker.walk_tables`
would (leaf base and size, output base, level, descriptor reads, attributes) with one
gathered read of memory per level for all addresses still walking.  It is for walks
done ahead of a stream (tables do not change inside a batch), so its reads are not
counted by the memory; a stream counts the walks it uses.  A walk that faults comes
back not ``ok``: the stream leaves that access to the one-address walker, which
reports the fault exactly.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.hw import engine
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, GeoLevel, Geometry, PageTableFormat, Role
from vcmm.hw.walk import WalkArrays

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def walk_tables_many(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    root: int,
    vas: U64,
    *,
    va_bits: int | None = None,
) -> WalkArrays:
    """Walk every address of ``vas`` from ``root`` (see the module notes)."""
    out = WalkArrays.empty(int(vas.shape[0]))
    attrs: list[PageAttrs] = []
    walk_into(fmt, memory, root, np.asarray(vas, dtype=np.uint64), out, None, attrs, va_bits)
    return out.with_attrs(attrs)


def walk_into(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    root: int,
    vas: U64,
    out: WalkArrays,
    rows: I64 | None,
    attrs: list[PageAttrs],
    va_bits: int | None = None,
) -> None:
    """Walk ``vas`` and write the results into ``out`` at ``rows`` (all rows if None);
    attribute indices refer to ``attrs``, which grows as new attributes are met.

    On the compiled engine each level's descriptors are classified by one compiled
    loop (:mod:`vcmm.hw.kernels.walklevel`); else by whole-array numpy passes.  Both
    give the same rows."""
    geo = fmt.geometry(va_bits)
    if rows is None:
        rows = np.arange(vas.shape[0], dtype=np.int64)
    walking = (
        np.flatnonzero(vas < np.uint64(geo.va_limit))
        if geo.va_bits < 64
        else np.arange(vas.shape[0], dtype=np.int64)
    )
    if not engine.compiled() or not _walk_compiled(
        fmt, memory, geo, root, vas, out, rows, walking.copy(), attrs
    ):
        _walk_numpy(fmt, memory, geo, root, vas, out, rows, walking, attrs)


def _walk_compiled(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    geo: Geometry,
    root: int,
    vas: U64,
    out: WalkArrays,
    rows: I64,
    walking: I64,
    attrs: list[PageAttrs],
) -> bool:
    """:func:`walk_into`'s levels, each one gathered read and one compiled loop; False
    (rows as they were) if a level meets more attribute sets than it numbers."""
    from vcmm.hw.kernels.walklevel import decode_level, descriptor_addresses, number_attrs

    table = np.full(walking.shape, root, dtype=np.uint64)
    parent_desc = np.zeros(walking.shape, dtype=np.uint64)
    index_of: dict[PageAttrs, int] = {a: i for i, a in enumerate(attrs)}
    uniq = np.empty((ATTR_SETS, 5), dtype=np.uint64)
    for li, gl in enumerate(geo.levels):
        n = int(walking.shape[0])
        if not n:
            return True
        parent = geo.levels[li - 1].table_kind if li else None
        valid_mask, kinds, slices = _level_arrays(fmt, gl, parent)
        addr = np.empty(n, dtype=np.uint64)
        descriptor_addresses(
            vas, walking, table, np.uint64(gl.shift), np.uint64(gl.index_mask),
            np.uint64(gl.entry_bytes), addr,
        )  # fmt: skip
        words, backed = memory.peek_words(addr, gl.entry_bytes)
        count, sets = decode_level(
            words, backed, vas, walking, rows, parent_desc, table, valid_mask, kinds, slices,
            gl.level, out.ok, out.reads, out.level, out.shift, out.base, out.pa_base,
            out.attr_index, uniq[:ATTR_SETS],
        )  # fmt: skip
        if sets > ATTR_SETS:  # many attribute sets: leave the batch to numpy
            for column, empty in zip(out.columns(), WalkArrays.empty(1).columns(), strict=True):
                column[rows] = empty[0]
            return False
        if sets:
            numbers = np.empty(sets, dtype=np.int64)
            for u, (k, _, _, word, parent_word) in enumerate(uniq[:sets].tolist()):
                a = fmt.leaf_attrs(gl.kinds[k], word, parent, parent_word)
                number = index_of.get(a)
                if number is None:
                    number = index_of[a] = len(attrs)
                    attrs.append(a)
                numbers[u] = number
            number_attrs(out.attr_index, numbers)
        walking, table, parent_desc = walking[:count], table[:count], parent_desc[:count]
    return True


#: Distinct attribute sets a level's compiled loop numbers itself (past that, the batch
#: is walked by the numpy passes).
ATTR_SETS = 32
_LEVEL_ARRAYS: dict[
    tuple[int, int], tuple[PageTableFormat, GeoLevel, tuple[np.uint64, U64, U64]]
] = {}


def _level_arrays(
    fmt: PageTableFormat, gl: GeoLevel, parent: DescriptorKind | None
) -> tuple[np.uint64, U64, U64]:
    """The compiled loop's description of level ``gl``'s descriptor kinds under table
    descriptors of kind ``parent`` (see :func:`vcmm.hw.kernels.walklevel.decode_level`),
    built once per level."""
    key = (id(fmt), id(gl))
    cached = _LEVEL_ARRAYS.get(key)
    if cached is not None and cached[0] is fmt and cached[1] is gl:
        return cached[2]
    width = max((len(k.address) for k in gl.kinds), default=1)
    kinds = np.zeros((len(gl.kinds), 8), dtype=np.uint64)
    slices = np.zeros((len(gl.kinds), width, 3), dtype=np.uint64)
    for k, kind in enumerate(gl.kinds):
        is_table = kind.role is Role.TABLE
        af = 0 if is_table else fmt.access_flag_mask(kind)
        inherited = parent.attr_mask if parent is not None and kind.inherits else 0
        kinds[k] = (
            kind.type_mask, kind.type_value, int(is_table), kind.size_fault_mask, af,
            kind.size.bit_length() - 1, kind.attr_mask, inherited,
        )  # fmt: skip
        for s, piece in enumerate(kind.address):
            slices[k, s] = (piece.desc_lsb, (1 << piece.width) - 1, piece.pa_lsb)
    arrays = (np.uint64(gl.valid_mask), kinds, slices)
    _LEVEL_ARRAYS[key] = (fmt, gl, arrays)
    return arrays


def _walk_numpy(
    fmt: PageTableFormat,
    memory: PhysicalMemory,
    geo: Geometry,
    root: int,
    vas: U64,
    out: WalkArrays,
    rows: I64,
    walking: I64,
    attrs: list[PageAttrs],
) -> None:
    """:func:`walk_into`'s levels as whole-array numpy passes (no numba needed)."""
    table = np.full(walking.shape, root, dtype=np.uint64)
    parent_desc = np.zeros(walking.shape, dtype=np.uint64)
    index_of: dict[PageAttrs, int] = {a: i for i, a in enumerate(attrs)}
    for li, gl in enumerate(geo.levels):
        if not walking.size:
            return
        va = vas[walking]
        addr = table + ((va >> np.uint64(gl.shift)) & np.uint64(gl.index_mask)) * np.uint64(
            gl.entry_bytes
        )
        words, backed = memory.peek_words(addr, gl.entry_bytes)
        out.reads[rows[walking]] += backed
        nxt = np.zeros(walking.shape, dtype=np.bool_)
        valid = backed & ((words & np.uint64(gl.valid_mask)) != 0)
        claimed = ~valid
        parent = geo.levels[li - 1].table_kind if li else None
        for kind in gl.kinds:
            hit = ~claimed & kind.match_many(words)
            claimed |= hit
            if kind.size_fault_mask:
                hit &= (words & np.uint64(kind.size_fault_mask)) == 0
            if not hit.any():
                continue
            if kind.role is Role.TABLE:
                table[hit] = kind.output_many(words[hit])
                parent_desc[hit] = words[hit]
                nxt |= hit
                continue
            af = fmt.access_flag_mask(kind)
            if af:
                hit &= (words & np.uint64(af)) != 0
            sel = np.flatnonzero(hit)
            if not sel.size:
                continue
            r = rows[walking[sel]]
            shift = kind.size.bit_length() - 1
            pa = kind.output_many(words[sel])
            aligned = (pa & np.uint64(kind.size - 1)) == 0
            r, sel, pa = r[aligned], sel[aligned], pa[aligned]
            out.ok[r] = True
            out.level[r] = gl.level
            out.shift[r] = shift
            out.base[r] = (va[sel] >> np.uint64(shift)) << np.uint64(shift)
            out.pa_base[r] = pa
            out.attr_index[r] = _attr_numbers(
                fmt, kind, parent, words[sel], parent_desc[sel], attrs, index_of
            )
        walking = walking[nxt]
        table = table[nxt]
        parent_desc = parent_desc[nxt]


def _attr_numbers(
    fmt: PageTableFormat,
    kind: DescriptorKind,
    parent: DescriptorKind | None,
    words: U64,
    parent_desc: U64,
    attrs: list[PageAttrs],
    index_of: dict[PageAttrs, int],
) -> I64:
    """The index in ``attrs`` of each leaf's attributes (``words`` are leaves of one
    kind, ``parent_desc`` their table descriptors), decoding each distinct pair of
    attribute bits once: a stream's leaves mostly share a handful of attributes."""
    inherited = (
        parent_desc & np.uint64(parent.attr_mask)
        if parent is not None and kind.inherits
        else np.zeros(words.shape, dtype=np.uint64)
    )
    bits = words & np.uint64(kind.attr_mask)
    if (bits == bits[0]).all() and (inherited == inherited[0]).all():
        first, inverse = np.zeros(1, dtype=np.int64), np.zeros(words.shape, dtype=np.int64)
    else:
        keys = np.stack([bits, inherited], axis=1)
        _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    numbers = np.empty(first.shape[0], dtype=np.int64)
    for u in range(first.shape[0]):
        j = int(first[u])
        a = fmt.leaf_attrs(kind, int(words[j]), parent, int(parent_desc[j]))
        number = index_of.get(a)
        if number is None:
            number = index_of[a] = len(attrs)
            attrs.append(a)
        numbers[u] = number
    result: I64 = numbers[inverse.reshape(-1)]
    return result
