"""Many single-page mappings written at once: the fast path of ``PageTable.map_many``.

When every piece is one page of the format's smallest size (what backing a buffer
made of separate pages gives), the pieces need no planning: each is one leaf in the
last-level table covering it.  :func:`install_pages` then does with arrays what
``map`` per piece does: it follows the existing tree for all pieces a level at a
time, allocates the missing tables in the order the calls one by one would (by first
piece, parents first), writes each new table descriptor with the fields of the piece
that made it, and writes the leaves table by table in runs of consecutive slots.

Anything it cannot prove the one-by-one calls would accept (a piece mapped twice, a
slot in use, a block in the way, an inherited field that differs, an output address
a leaf cannot hold) makes it return ``False`` before writing anything; the caller
then maps the pieces one by one, which refuses with the exact error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.errors import InvalidArgumentError, VcmmError
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable.format import DescriptorKind, Geometry, PageTableFormat
from vcmm.hw.pgtable.tableset import Edit, TableSet

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


def single_pages(
    fmt: PageTableFormat, va_limit: int, pieces: Sequence[object], sizes: Sequence[object]
) -> tuple[U64, U64, I64, list[Mapping[str, int]]] | None:
    """Pieces that are each one smallest page (``sizes`` forcing it or nothing), as
    arrays for :func:`install_pages`: addresses, outputs, attribute group of each, the
    groups' field values; None if any piece is anything else (the general path then
    checks it exactly)."""
    page = fmt.min_page
    if not pieces or any(s is not None and s != page for s in sizes):
        return None
    groups: dict[PageAttrs, int] = {}
    values: list[Mapping[str, int]] = []
    rows = []
    last: object = None
    g = 0
    for piece in pieces:
        if type(piece) is not tuple or len(piece) != 4:
            return None
        va, pa, size, attrs = piece
        if (
            type(va) is not int or type(pa) is not int or size != page or type(size) is not int
            or va < 0 or pa < 0 or va % page or pa % page or va + page > va_limit
            or type(attrs) is not PageAttrs
        ):  # fmt: skip
            return None
        if attrs is not last:  # the pieces of one backing share a few attribute objects
            known = groups.get(attrs)
            if known is None:
                try:
                    values.append(fmt.attr_values(attrs))
                except VcmmError:
                    return None
                known = groups[attrs] = len(values) - 1
            last, g = attrs, known
        rows.append((va, pa, g))
    table = np.array(rows, dtype=np.uint64)
    return table[:, 0].copy(), table[:, 1].copy(), table[:, 2].astype(np.int64), values


def leaf_descriptors(
    kind: DescriptorKind, pa: int, count: int, values: Mapping[str, int]
) -> npt.NDArray[np.uint64]:
    """The slots of ``count`` consecutive leaves of ``kind`` mapping from ``pa`` (each
    repeated ``copies`` times), ready for one vectorised write."""
    if count == 1:  # one page or block (a map_page, a section): numpy costs ~10x here
        return np.array([kind.encode(pa, values)] * kind.copies, dtype=np.uint64)
    pas = np.uint64(pa) + np.arange(count, dtype=np.uint64) * np.uint64(kind.size)
    descs = kind.encode_many(pas, kind.attr_bits(values))
    return np.repeat(descs, kind.copies) if kind.copies > 1 else descs


def per_piece_sizes(op: str, page_size: object, n: int) -> Sequence[object]:
    """``map_many``'s ``page_size`` as one entry per piece (checked by each plan)."""
    if isinstance(page_size, Sequence) and not isinstance(page_size, str | bytes):
        if len(page_size) != n:
            raise InvalidArgumentError(
                f"{op}: {len(page_size)} page sizes for {n} pieces; give one per piece"
            )
        return page_size
    return [page_size] * n


def address_array(op: str, name: str, value: object) -> U64:
    """``value`` as a one-dimensional array of addresses (non-negative integers)."""
    arr = np.asarray(value)
    if arr.ndim != 1 or arr.dtype.kind not in "ui" or (arr.dtype.kind == "i" and (arr < 0).any()):
        raise InvalidArgumentError(
            f"{op}: {name} must be a one-dimensional array of non-negative integer "
            f"addresses, got {arr.dtype} of shape {arr.shape}"
        )
    return arr.astype(np.uint64)


def page_arrays(
    fmt: PageTableFormat, va_limit: int, vas: U64, pas: U64, attrs: PageAttrs
) -> tuple[U64, U64, I64, list[Mapping[str, int]]] | None:
    """``vas[i] -> pas[i]`` (one-dimensional unsigned arrays of one length) as the
    arrays of :func:`install_pages`, if every page is one aligned smallest page inside
    ``va_limit`` and ``attrs`` has an encoding; None otherwise (the caller then maps
    the pieces through the general path, which refuses with the exact error)."""
    page = np.uint64(fmt.min_page)
    if not vas.size or type(attrs) is not PageAttrs:
        return None
    if bool(((vas % page) | (pas % page)).any()) or int(vas.max()) + fmt.min_page > va_limit:
        return None
    try:
        values = fmt.attr_values(attrs)
    except VcmmError:
        return None
    return vas, pas, np.zeros(vas.shape, dtype=np.int64), [values]


def joined_pages(vas: U64, pas: U64, page: int) -> list[tuple[int, int, int]]:
    """``(va, pa, size)`` of the pages ``vas[i] -> pas[i]`` in their order, each page
    that continues the one before it in both addresses joined to it: the pieces the
    per-run path would map (a backing joins such pages into one run)."""
    step = np.uint64(page)
    cont = (vas[1:] == vas[:-1] + step) & (pas[1:] == pas[:-1] + step)
    starts = np.concatenate(([0], np.flatnonzero(~cont) + 1))
    sizes = np.diff(np.concatenate((starts, [vas.size]))) * page
    return list(zip(vas[starts].tolist(), pas[starts].tolist(), sizes.tolist(), strict=True))


def _distinct(keys: U64) -> tuple[U64, I64, I64]:
    """``np.unique(keys, return_index=True, return_inverse=True)``, by one pass over the
    differences when ``keys`` never decreases (the pages of a backing come in address
    order), by a sort otherwise."""
    if keys.size < 2 or bool((keys[1:] >= keys[:-1]).all()):
        new = np.empty(keys.shape, dtype=np.bool_)
        new[:1] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
        first = np.flatnonzero(new)
        return keys[first], first, np.cumsum(new, dtype=np.int64) - 1
    uniq, first, which = np.unique(keys, return_index=True, return_inverse=True)
    return uniq, first, which.reshape(-1)


def _all_different(keys: U64) -> bool:
    """Whether no value of ``keys`` repeats (strictly rising keys need no sort)."""
    if bool((keys[1:] > keys[:-1]).all()):
        return True
    return int(np.unique(keys).size) == int(keys.size)


def page_spans(vas: U64, page: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the address spans the pages at ``vas`` cover, sorted and
    with touching pages joined (what a TLB invalidation needs, in a few entries)."""
    if not vas.size:
        return []
    ordered = _distinct(vas)[0]
    step = np.uint64(page)
    starts = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1] + step) + 1))
    counts = np.diff(np.concatenate((starts, [ordered.size])))
    return list(zip(ordered[starts].tolist(), (counts * page).tolist(), strict=True))


def install_pages(
    fmt: PageTableFormat,
    geo: Geometry,
    memory: PhysicalMemory,
    tables: TableSet,
    root: int,
    edit: Edit,
    vas: U64,
    pas: U64,
    groups: I64,
    values: list[Mapping[str, int]],
) -> bool:
    """Map page ``vas[i] -> pas[i]`` with field values ``values[groups[i]]`` for all
    ``i`` (see the module notes); False, with nothing written, if it cannot."""
    n = int(vas.shape[0])
    li_leaf, kind = geo.leaf[fmt.min_page]
    if kind.copies != 1 or not _all_different(vas) or bool((pas >= kind.oa_limit).any()):
        return False
    eb = fmt.entry_bytes
    vm = np.uint64(fmt.valid_mask)
    table = np.full(n, root, dtype=np.uint64)
    parent_desc = np.zeros(n, dtype=np.uint64)
    missing = np.full(n, li_leaf, dtype=np.int64)  # first level whose table is absent
    here = np.ones(n, dtype=np.bool_)
    for li in range(li_leaf):
        gl = geo.levels[li]
        tk = gl.table_kind
        sel = np.flatnonzero(here)
        idx = (vas[sel] >> np.uint64(gl.shift)) & np.uint64(gl.index_mask)
        words, backed = memory.peek_words(table[sel] + idx * np.uint64(eb), eb)
        valid = (words & vm) != 0
        if tk is None or not backed.all() or bool((valid & ~tk.match_many(words)).any()):
            return False  # a block or a reserved descriptor in the way
        missing[sel[~valid]] = li
        here[sel[~valid]] = False
        table[sel[valid]] = tk.output_many(words[valid])
        parent_desc[sel[valid]] = words[valid]
    # the leaf slots of pieces whose last-level table exists must be free
    sel = np.flatnonzero(here)
    gl = geo.levels[li_leaf]
    idx_all = ((vas >> np.uint64(gl.shift)) & np.uint64(gl.index_mask)).astype(np.int64)
    words, backed = memory.peek_words(
        table[sel] + idx_all[sel].astype(np.uint64) * np.uint64(eb), eb
    )
    if not backed.all() or bool(((words & vm) != 0).any()):
        return False
    parent_kind = geo.levels[li_leaf - 1].table_kind if li_leaf else None
    if not _inherited_agree(kind, parent_kind, here, parent_desc, vas, geo, groups, values):
        return False
    new_tables = _allocate(geo, tables, edit, vas, missing, li_leaf, table, groups, values)
    leaf_table = table.copy()
    sel = np.flatnonzero(~here)
    if sel.size:
        made, _, which = _distinct(vas[sel] >> np.uint64(geo.levels[li_leaf - 1].shift))
        made_at = [new_tables[(li_leaf - 1, key)] for key in made.tolist()]
        leaf_table[sel] = np.array(made_at, dtype=np.uint64)[which.reshape(-1)]
    _write_leaves(kind, tables, edit, leaf_table, idx_all, pas, groups, values)
    return True


def _inherited_agree(
    kind: DescriptorKind,
    parent_kind: DescriptorKind | None,
    here: npt.NDArray[np.bool_],
    parent_desc: U64,
    vas: U64,
    geo: Geometry,
    groups: I64,
    values: list[Mapping[str, int]],
) -> bool:
    """Whether every piece's inherited fields equal those of the table it lands in
    (an existing one, or the new one the first piece in it makes)."""
    if not kind.inherits or parent_kind is None:
        return True
    wanted = [tuple(v.get(name, 0) for name in kind.inherits) for v in values]
    sel = np.flatnonzero(here)
    # each distinct (table descriptor, attribute group) pair is decoded once
    for g, want in enumerate(wanted):
        mine = sel[groups[sel] == g]
        for desc in _distinct(parent_desc[mine])[0].tolist():
            have = parent_kind.field_values(int(desc))
            if tuple(have.get(name, 0) for name in kind.inherits) != want:
                return False
    # the pieces landing in one new table must all want what its first piece writes
    shift = geo.levels[len(geo.levels) - 2].shift if len(geo.levels) > 1 else 0
    sel = np.flatnonzero(~here)
    if not sel.size:
        return True
    distinct = {w: i for i, w in enumerate(dict.fromkeys(wanted))}
    wanted_id = np.array([distinct[w] for w in wanted], dtype=np.uint64)[groups[sel]]
    keys = vas[sel] >> np.uint64(shift)
    pairs = keys * np.uint64(len(distinct)) + wanted_id  # one number per (table, wish)
    return int(_distinct(pairs)[0].size) == int(_distinct(keys)[0].size)


def _allocate(
    geo: Geometry,
    tables: TableSet,
    edit: Edit,
    vas: U64,
    missing: I64,
    li_leaf: int,
    table: U64,
    groups: I64,
    values: list[Mapping[str, int]],
) -> dict[tuple[int, int], int]:
    """Allocate every missing table, in the order one-by-one calls would (by first
    piece, parents first), and write the descriptors pointing at them."""
    wants: list[tuple[int, int, int]] = []  # (first piece, level index of the slot, key)
    for li in range(li_leaf):
        sel = np.flatnonzero(missing <= li)
        if not sel.size:
            continue
        keys = vas[sel] >> np.uint64(geo.levels[li].shift)
        uniq, first, _ = _distinct(keys)
        wants += [
            (int(sel[f]), li, int(k)) for f, k in zip(first.tolist(), uniq.tolist(), strict=True)
        ]
    made: dict[tuple[int, int], int] = {}
    for piece, li, key in sorted(wants):
        gl = geo.levels[li]
        tk = gl.table_kind
        parent = (
            int(table[piece])
            if li == missing[piece]
            else made[(li - 1, key >> (geo.levels[li - 1].shift - gl.shift))]
        )
        assert tk is not None  # the walk above met no level without tables
        child = tables.alloc(edit, li + 1)
        desc = tk.encode(child, values[int(groups[piece])])
        tables.write(edit, parent, key & gl.index_mask, np.array([desc], dtype=np.uint64))
        made[(li, key)] = child
    return made


def _write_leaves(
    kind: DescriptorKind,
    tables: TableSet,
    edit: Edit,
    leaf_table: U64,
    idx: I64,
    pas: U64,
    groups: I64,
    values: list[Mapping[str, int]],
) -> None:
    """Encode the leaves and write them table by table, a run of consecutive slots at
    a time."""
    descs = np.empty(pas.shape, dtype=np.uint64)
    for g, v in enumerate(values):
        sel = groups == g
        descs[sel] = kind.encode_many(pas[sel], kind.attr_bits(v))
    order = np.lexsort((idx, leaf_table))
    t, i, d = leaf_table[order], idx[order], descs[order]
    breaks = np.flatnonzero((t[1:] != t[:-1]) | (i[1:] != i[:-1] + 1)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [t.shape[0]]))
    for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
        tables.write(edit, int(t[s]), int(i[s]), d[s:e])
