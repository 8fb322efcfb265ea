"""Access streams on the compiled engine: walks up front, then the TLB kernel.

A :class:`~vcmm.hw.translate.Translator` whose walker is a :class:`BatchWalker` runs
its streams here when the compiled engine is selected (:mod:`vcmm.hw.engine`):

1. every distinct granule (the format's smallest page) the stream can touch is walked
   at once (:meth:`BatchWalker.walk_many`; tables do not change inside a batch);
2. the TLB store becomes arrays (:meth:`TlbPort.export`), the kernel runs the
   reference steps over the stream (:mod:`vcmm.hw.kernels.tlbrun`) and the arrays go
   back into the store (:meth:`TlbPort.absorb`);
3. the walker is charged the descriptor reads of the walks the model made.

The kernel stops before an access that would fault; the translator's one-access step
handles it and the kernel resumes after it.  Results, TLB contents and every counter
are those of the reference paths (``tests/hw/test_engine_equivalence.py``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, PageAttrs
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.tlbarrays import TlbArrays
from vcmm.hw.tlbentry import TLBEntry
from vcmm.hw.tlbstore import TlbPort
from vcmm.hw.walk import Walk, WalkArrays

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

#: Most granules a stream walks as one dense table (beyond: sorted keys and a search).
DENSE_GRANULES = 1 << 22
#: Accesses per granule of its range from which a stream walks the whole range.
ACCESSES_PER_GRANULE = 4


class BatchWalker(abc.ABC):
    """A walker that can also walk many addresses ahead of a stream, without side
    effects, and be charged afterwards for the walks the model used."""

    #: The smallest page the tables can map: one walk answers for a whole granule.
    granule: int = 4096
    #: Every leaf size the tables can map, largest first.
    sizes: tuple[int, ...] = (4096,)

    @abc.abstractmethod
    def __call__(self, va: int) -> Walk:
        """Walk one address (the reference walker, with its side effects)."""

    @abc.abstractmethod
    def walk_many(self, vas: U64) -> WalkArrays:
        """Walk each address of ``vas`` (granule-aligned) without side effects."""

    def charge(self, reads: int) -> None:  # noqa: B027 - optional: walkers without traffic
        """Account ``reads`` descriptor reads of walks the stream made (as
        ``reads`` single walks would have)."""


def walks_from(walk: Callable[[int], Walk], vas: U64) -> WalkArrays:
    """:class:`WalkArrays` of one-address walks: what a walker without a vectorised
    walk of its own can give as :meth:`BatchWalker.walk_many` (``walk`` must have no
    side effects)."""
    out = WalkArrays.empty(int(vas.shape[0]))
    attrs: list[PageAttrs] = []
    index_of: dict[PageAttrs, int] = {}
    for row, va in enumerate(vas.tolist()):
        w = walk(va)
        out.reads[row] = w.reads
        out.level[row] = w.level
        if w.fault is not None or w.pa is None or w.attrs is None:
            continue
        size = w.page_size
        if size < 1 or size & (size - 1) or (w.pa - va) % size:
            continue  # not a leaf the TLB can hold: the one-address step says why
        number = index_of.get(w.attrs)
        if number is None:
            number = index_of[w.attrs] = len(attrs)
            attrs.append(w.attrs)
        out.ok[row] = True
        out.shift[row] = size.bit_length() - 1
        out.base[row] = va - va % size
        out.pa_base[row] = w.pa - va % size
        out.attr_index[row] = number
    return out.with_attrs(attrs)


@dataclass(frozen=True)
class StreamPlan:
    """The walks of a stream's granules, in the kernel's leaf columns."""

    walks: WalkArrays
    leaf_u: U64
    leaf_i: I64
    gkeys: U64
    gleaf: I64
    gshift: int
    g0: int
    dense: bool


def plan_walks(
    walks: WalkArrays, access: Access, *, privileged: bool, honour_global: bool
) -> tuple[U64, I64]:
    """The kernel's leaf columns of ``walks`` for a stream of ``access``."""
    from vcmm.hw.kernels.spanplan import pack_leaves

    allowed = np.array([a.allows(access, privileged=privileged) for a in walks.attrs] + [False])
    global_ = np.array([honour_global and a.global_ for a in walks.attrs] + [False])
    leaf_u = np.empty((len(walks), 2), dtype=np.uint64)
    leaf_i = np.empty((len(walks), 5), dtype=np.int64)
    pack_leaves(
        walks.ok, walks.reads, walks.shift, walks.base, walks.pa_base, walks.attr_index,
        allowed, global_, leaf_u, leaf_i,
    )  # fmt: skip
    return leaf_u, leaf_i


def plan(
    walker: BatchWalker,
    granules: U64,
    access: Access,
    *,
    privileged: bool,
    honour_global: bool,
    dense_from: int | None = None,
) -> StreamPlan:
    """Walk ``granules`` (granule numbers; sorted unique unless ``dense_from`` says they
    are every granule from that one on) and lay the leaves out for the kernel."""
    gshift = walker.granule.bit_length() - 1
    walks = walker.walk_many(granules << np.uint64(gshift))
    leaf_u, leaf_i = plan_walks(walks, access, privileged=privileged, honour_global=honour_global)
    count = int(granules.shape[0])
    if dense_from is not None:
        gleaf = np.arange(count, dtype=np.int64)
        return StreamPlan(walks, leaf_u, leaf_i, granules[:0], gleaf, gshift, dense_from, True)
    return StreamPlan(
        walks, leaf_u, leaf_i, granules, np.arange(count, dtype=np.int64), gshift, 0, False
    )


def plan_trace(
    walker: BatchWalker, vas: U64, access: Access, *, privileged: bool, honour_global: bool
) -> StreamPlan:
    """The plan of an access stream: one walk per distinct granule it touches, or per
    granule of its range when the range is small next to the stream (a scan: walking
    the few granules it skips costs less than finding which it touches; walks have
    no side effects and only those the model makes are charged)."""
    from vcmm.hw.kernels.granules import granule_range, touched

    gshift = walker.granule.bit_length() - 1
    lo, hi = (int(g) for g in granule_range(vas, gshift))
    flags = dict(privileged=privileged, honour_global=honour_global)
    if (hi - lo + 1) * ACCESSES_PER_GRANULE <= vas.shape[0]:
        every = np.arange(lo, hi + 1, dtype=np.uint64)
        return plan(walker, every, access, dense_from=lo, **flags)
    if hi - lo < DENSE_GRANULES:
        granules, gleaf = touched(vas, gshift, np.uint64(lo), np.uint64(hi))
        walked = plan(walker, granules, access, **flags)
        return StreamPlan(
            walked.walks, walked.leaf_u, walked.leaf_i, granules[:0], gleaf, gshift, lo, True
        )
    return plan(walker, np.unique(vas >> np.uint64(gshift)), access, **flags)


def plan_span(
    walker: BatchWalker, va: int, end: int, access: Access, *, privileged: bool, honour_global: bool
) -> StreamPlan:
    """The plan of a transaction over ``[va, end)``, found coarse to fine: one walk per
    cell of the largest leaf size; a cell whose walk found a leaf at least as large is
    done (the leaf covers it), the others are cut into cells of the size of the leaf
    found (of one granule after a fault) and walked again.  Through 16 MiB
    supersections a 64 MiB span costs 5 walks; through 4 KiB pages 5 + 16,384."""
    from vcmm.hw.kernels.spanplan import refine_cells

    gshift = walker.granule.bit_length() - 1
    lo, hi = va >> gshift, (end - 1) >> gshift
    gleaf = np.full(hi - lo + 1, -1, dtype=np.int64)
    parts: list[WalkArrays] = []
    found = 0
    top = max(s for s in walker.sizes).bit_length() - 1
    d = top - gshift
    cell_g: I64 = np.arange(lo >> d, (hi >> d) + 1, dtype=np.int64) << d
    cell_s: I64 = np.full(cell_g.shape, top, dtype=np.int64)
    while cell_g.size:
        first = np.maximum(cell_g, lo)
        walks = walker.walk_many(first.astype(np.uint64) << np.uint64(gshift))
        parts.append(walks)
        cell_g, cell_s = refine_cells(
            cell_g, cell_s, walks.ok, walks.shift, lo, hi, gshift, gleaf, found
        )
        found += len(walks)
    walks = concat_walks(parts)
    p = plan_walks(walks, access, privileged=privileged, honour_global=honour_global)
    return StreamPlan(walks, p[0], p[1], np.empty(0, dtype=np.uint64), gleaf, gshift, lo, True)


def concat_walks(parts: list[WalkArrays]) -> WalkArrays:
    """One table of the rows of ``parts`` in order, their attributes merged."""
    attrs: list[PageAttrs] = []
    index_of: dict[PageAttrs, int] = {}
    cols: list[list[npt.NDArray[np.generic]]] = [[] for _ in range(7)]
    for part in parts:
        remap = np.empty(len(part.attrs) + 1, dtype=np.int64)
        remap[-1] = -1
        for i, a in enumerate(part.attrs):
            number = index_of.get(a)
            if number is None:
                number = index_of[a] = len(attrs)
                attrs.append(a)
            remap[i] = number
        values = (part.ok, part.reads, part.level, part.base, part.shift, part.pa_base)
        for c, v in enumerate(values):
            cols[c].append(v)
        cols[6].append(remap[part.attr_index])
    ok, reads, level, base, shift, pa_base, attr_index = (np.concatenate(c) for c in cols)
    return WalkArrays(ok, reads, level, base, shift, pa_base, attr_index, tuple(attrs))


def _misc(arrays_misc: I64, p: StreamPlan) -> None:
    arrays_misc[4] = p.gshift
    arrays_misc[5] = p.g0
    arrays_misc[6] = int(p.dense)


class StreamRunner:
    """Runs a plan's kernel against one tag's TLB port and writes the state back."""

    def __init__(
        self, port: TlbPort, walker: BatchWalker, p: StreamPlan, access: Access, privileged: bool
    ) -> None:
        self._port = port
        self._walker = walker
        self._plan = p
        self._access = access
        self._privileged = privileged
        self._held_before: list[TLBEntry] = []

    def _export(self) -> TlbArrays:
        access, privileged = self._access, self._privileged
        arrays = self._port.export(lambda e: e.attrs.allows(access, privileged=privileged))
        _misc(arrays.misc, self._plan)
        return arrays

    def _absorb(self, arrays: TlbArrays) -> None:
        self._port.absorb(arrays, self._new_entries)
        reads = int(arrays.counters[4])
        if reads:
            self._walker.charge(reads)

    def _new_entries(self, leaves: list[int]) -> list[TLBEntry]:
        """The entries fills of walks ``leaves`` inserted (columns converted at once)."""
        w = self._plan.walks
        at = np.asarray(leaves, dtype=np.int64)
        tag: Hashable = self._port.tag
        columns = zip(
            w.base[at].tolist(),
            w.shift[at].tolist(),
            w.pa_base[at].tolist(),
            w.attr_index[at].tolist(),
            self._plan.leaf_i[at, 4].tolist(),
            w.level[at].tolist(),
            strict=True,
        )
        return [
            TLBEntry.from_leaf(tag, base, 1 << shift, pa, w.attrs[a], bool(g), level)
            for base, shift, pa, a, g, level in columns
        ]

    def trace(self, vas: U64, start: int, pas: U64) -> int:
        """Translate ``vas[start:]`` into ``pas``; the index the kernel stopped at."""
        from vcmm.hw.kernels.tlbrun import run_trace

        p = self._plan
        arrays = self._export()
        done = run_trace(
            vas, start, p.leaf_u, p.leaf_i, arrays.ways_u, arrays.ways_i, arrays.held,
            arrays.misc, arrays.counters, arrays.mt, p.gkeys, p.gleaf, pas,
        )  # fmt: skip
        self._absorb(arrays)
        return int(done)

    def span(self, va: int, end: int) -> tuple[U64, U64, U64, I64, int]:
        """Translate ``[va, end)`` page by page: the runs' addresses, outputs, lengths
        and entry origins (for :meth:`attrs_of`), and the address the kernel stopped at
        (``end`` when done)."""
        from vcmm.hw.kernels.spanmiss import stream_span
        from vcmm.hw.kernels.tlbrun import run_span

        p = self._plan
        arrays = self._export()
        self._held_before = arrays.held_before
        cap = int(p.leaf_u.shape[0]) + 1
        run_va = np.empty(cap, dtype=np.uint64)
        run_pa = np.empty(cap, dtype=np.uint64)
        run_len = np.empty(cap, dtype=np.uint64)
        run_origin = np.empty(cap, dtype=np.int64)
        count, reached = stream_span(  # a buffer streamed once: every step a miss
            np.uint64(va), np.uint64(end), p.leaf_u, p.leaf_i, arrays.ways_u, arrays.ways_i,
            arrays.held, arrays.misc, arrays.counters, p.gleaf, run_va, run_pa, run_len,
            run_origin,
        )  # fmt: skip
        if count < 0:
            count, reached = run_span(
                np.uint64(va), np.uint64(end), p.leaf_u, p.leaf_i, arrays.ways_u, arrays.ways_i,
                arrays.held, arrays.misc, arrays.counters, arrays.mt, p.gkeys, p.gleaf,
                run_va, run_pa, run_len, run_origin,
            )  # fmt: skip
        self._absorb(arrays)
        k = int(count)
        return run_va[:k], run_pa[:k], run_len[:k], run_origin[:k], int(reached)

    def attrs_of(self, origins: I64) -> list[PageAttrs]:
        """The attributes of the entries the last :meth:`span`'s runs used (its
        ``origins``: a held entry's number, or ``-(walk + 1)`` for a fill)."""
        walks = self._plan.walks
        held = self._held_before
        numbers = walks.attr_index[np.maximum(-origins - 1, 0)].tolist()
        return [
            held[o].attrs if o >= 0 else walks.attrs[a]
            for o, a in zip(origins.tolist(), numbers, strict=True)
        ]


def merged_runs(memory: PhysicalMemory, pa: U64, length: U64) -> list[tuple[int, int]]:
    """A transaction's physical runs with physically adjacent ones joined (vectorised),
    if every joined run is memory; else the runs as they are, so that the bus-fault
    check names the same page the page-by-page path names."""
    if not pa.size:
        return []
    joins = pa[1:] == pa[:-1] + length[:-1]
    heads = np.flatnonzero(np.concatenate(([True], ~joins)))
    ends = np.append(heads[1:], pa.shape[0])
    cum = np.zeros(pa.shape[0] + 1, dtype=np.uint64)
    cum[1:] = np.cumsum(length, dtype=np.uint64)
    runs = list(zip(pa[heads].tolist(), (cum[ends] - cum[heads]).tolist(), strict=True))
    if all(memory.is_backed(p, n) for p, n in runs):
        return runs
    return list(zip(pa.tolist(), length.tolist(), strict=True))
