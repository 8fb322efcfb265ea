"""The translation engine: TLB lookup, page-table walk on a miss, permission check.

One :class:`Translator` stands for one translation context (an SMMU context bank, a CPU
address space): a tag, a walker and a TLB that it may share with other contexts.  The
walker is any callable ``walker(va) -> Walk``; the engine knows nothing of table
formats, which keeps the TLB model testable on its own.  It reaches the TLB only through
the documented fast path of its tag (``tlb.port(tag)``, :mod:`vcmm.hw.tlbstore`) and
``tlb.checkpoint()``/``restore()``.

Two paths give identical results, TLB state and counters:

* :meth:`Translator.translate` handles one access, the reference behaviour;
* :meth:`Translator.translate_batch` handles a whole access stream.  It runs the
  reference step only where the TLB state can change.  After a step returns entry
  ``E`` (a hit, or the leaf just inserted), every following access that stays inside
  the part of ``E`` no other held entry can pre-empt is a hit on ``E``, and hits on the
  entry just used change nothing (LRU: it is already most recent; FIFO and random:
  hits never change state).  So the run is counted in bulk and skipped: the first index
  leaving ``E``'s page is found with a precomputed change-point list for ``E``'s page
  size and a binary search, and the output addresses of the run are computed by numpy.
  A linear sweep over 12 MiB mapped by 1 MiB sections costs about 12 Python steps.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, FaultKind, PageAttrs
from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.hw import engine
from vcmm.hw.stream import BatchWalker, StreamRunner, plan_span, plan_trace
from vcmm.hw.tlb import ADDRESS_LIMIT, TLB, TLBEntry, TLBStats, check_address, check_tag
from vcmm.hw.walk import Walk

#: The walker protocol: translate one input address by reading the page tables.
Walker = Callable[[int], Walk]

U64Array = npt.NDArray[np.uint64]

#: Pages a span may have left after its first step and still be stepped in Python on
#: the compiled engine (past that, the kernel's fixed cost pays).  Measured with
#: ``benchmarks/bench_dma_copy.py``: a Python step (TLB miss and walk) costs about
#: 8 us, the compiled span about 190 us plus well under 1 us a page, so 64 MiB
#: through 1 MiB sections (64 pages a side) is 30% cheaper compiled, 4 supersections
#: four times cheaper in Python.
SPAN_STEPS_IN_PYTHON = 24


@dataclass(frozen=True, slots=True)
class Translation:
    """A successful translation of one access."""

    va: int
    pa: int
    #: Size of the page or block that mapped ``va``.
    page_size: int
    attrs: PageAttrs
    #: Whether the TLB supplied it (False: a walk did).
    hit: bool


@dataclass(frozen=True, slots=True)
class TranslationFault:
    """A failed translation: what a fault handler receives."""

    va: int
    access: Access
    kind: FaultKind
    #: Table level of the descriptor that faulted (the leaf for permission faults).
    level: int
    #: Tag of the translator (context bank, ASID) that faulted.
    tag: Hashable


@dataclass(frozen=True)
class BatchResult:
    """Outcome of :meth:`Translator.translate_batch`.

    ``pas`` holds the output addresses of ``vas[:done]``; if ``fault`` is set,
    ``vas[done]`` is the address that faulted and nothing after it was translated.
    """

    pas: U64Array
    done: int
    fault: TranslationFault | None

    @property
    def ok(self) -> bool:
        return self.fault is None


@dataclass(frozen=True)
class SpanResult:
    """Outcome of :meth:`Translator.translate_span`: one row per step (its input
    address, output address and length), the address reached and the fault that
    stopped the span there (``None``: all of it was translated)."""

    va: U64Array
    pa: U64Array
    length: U64Array
    reached: int
    fault: TranslationFault | None
    #: The attributes of each row's entry, if asked for (``with_attrs=True``).
    attrs: tuple[PageAttrs, ...] = ()


def _check_access(access: object) -> Access:
    if not isinstance(access, Access):
        raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
    return access


def _check_vas(vas: object) -> U64Array:
    if not isinstance(vas, np.ndarray):
        raise InvalidArgumentError(
            f"vas must be a numpy array of addresses, got {type(vas).__name__}"
        )
    if vas.ndim != 1:
        raise InvalidArgumentError(f"vas must be one-dimensional, got shape {vas.shape}")
    if not np.issubdtype(vas.dtype, np.integer):
        raise InvalidArgumentError(f"vas must have an integer dtype, got {vas.dtype}")
    if vas.dtype.kind == "i" and vas.size and int(vas.min()) < 0:
        raise InvalidArgumentError(f"vas holds a negative address {int(vas.min())}")
    return np.ascontiguousarray(vas, dtype=np.uint64)


class Translator:
    """Translation of one context's accesses through a (possibly shared) TLB.

    ``privileged`` is the privilege of the context's accesses (devices and the kernel
    are privileged; user processes are not).  ``honour_global`` makes leaves whose
    attributes are global (nG=0) into global TLB entries, as a CPU MMU does for kernel
    mappings; SMMU contexts leave it off so that their entries stay tagged.
    """

    def __init__(
        self,
        tlb: TLB,
        tag: Hashable,
        walker: Walker,
        *,
        privileged: bool = True,
        honour_global: bool = False,
    ) -> None:
        if not isinstance(tlb, TLB):
            raise InvalidArgumentError(f"Translator needs a TLB, got {tlb!r}")
        check_tag(tag, "Translator tag")
        if not callable(walker):
            raise InvalidArgumentError(f"walker {walker!r} is not callable")
        for name, value in (("privileged", privileged), ("honour_global", honour_global)):
            if not isinstance(value, bool):
                raise InvalidArgumentError(f"Translator {name}={value!r} must be a bool")
        self._tlb = tlb
        self._tag = tag
        #: The TLB's fast path for this tag (:mod:`vcmm.hw.tlbstore`).
        self._port = tlb.port(tag)
        self._walker = walker
        self._privileged = privileged
        self._honour_global = honour_global

    @property
    def tlb(self) -> TLB:
        return self._tlb

    @property
    def tag(self) -> Hashable:
        return self._tag

    @property
    def walker(self) -> Walker:
        return self._walker

    @property
    def privileged(self) -> bool:
        return self._privileged

    @property
    def honour_global(self) -> bool:
        return self._honour_global

    @property
    def stats(self) -> TLBStats:
        """This context's live counters in the TLB (``tlb.stats_for(tag)``)."""
        return self._tlb.stats_for(self._tag)

    def __repr__(self) -> str:
        return f"Translator(tag={self._tag!r}, privileged={self._privileged}, tlb={self._tlb!r})"

    # -- one access ---------------------------------------------------------------------

    def translate(self, va: int, access: Access) -> Translation | TranslationFault:
        """Translate one access: TLB, then a walk on a miss, then the permission check."""
        va = check_address(va)
        _check_access(access)
        step = self._step(va, access)
        if isinstance(step, TranslationFault):
            return step
        entry, hit = step
        return Translation(va, entry.pa_base + (va - entry.va_base), entry.size, entry.attrs, hit)

    def _step(self, va: int, access: Access) -> tuple[TLBEntry, bool] | TranslationFault:
        """The reference step.  Validates the walk before changing any state."""
        port = self._port
        entry = port.lookup(va)
        hit = entry is not None
        if entry is None:
            walk = self._walker(va)
            leaf = self._leaf_of(walk, va)
            port.miss(walk.reads)
            if leaf is None:
                assert walk.fault is not None
                return TranslationFault(va, access, walk.fault, walk.level, self._tag)
            port.fill(leaf)
            entry = leaf
        if not entry.attrs.allows(access, privileged=self._privileged):
            return TranslationFault(va, access, FaultKind.PERMISSION, entry.level, self._tag)
        return entry, hit

    def _leaf_of(self, walk: object, va: int) -> TLBEntry | None:
        """Check a walker's answer against the protocol; the TLB entry it yields
        (:meth:`TLBEntry.from_walk` checks the rest), or None for a fault."""
        if type(walk) is not Walk and not isinstance(walk, Walk):
            raise InvalidArgumentError(f"walker returned {walk!r}, not a vcmm.hw.walk.Walk")
        reads = walk.reads
        if walk.va != va or type(reads) is not int or reads < 0:
            raise InvalidArgumentError(
                f"walker asked for {va:#x} answered for {walk.va!r} with {reads!r} reads; "
                "a walk must be of the asked address and make an integer >= 0 of reads"
            )
        if walk.fault is not None:
            if not isinstance(walk.fault, FaultKind):
                raise InvalidArgumentError(f"walk of {va:#x} has fault {walk.fault!r}")
            return None
        global_ = self._honour_global and type(walk.attrs) is PageAttrs and walk.attrs.global_
        return TLBEntry.from_walk(walk, self._tag, global_=global_)

    # -- access streams -----------------------------------------------------------------

    def translate_batch(self, vas: npt.NDArray[np.integer], access: Access) -> BatchResult:
        """Translate ``vas`` in order up to the first fault, as ``translate`` would.

        TLB contents, replacement state and every counter end exactly as after calling
        :meth:`translate` on each address in turn.  If the walker raises, the TLB is
        rolled back and the exception propagates.
        """
        arr = _check_vas(vas)
        _check_access(access)
        if arr.size and engine.compiled() and isinstance(self._walker, BatchWalker):
            return self._batch_compiled(arr, access)
        n = int(arr.shape[0])
        tlb = self._tlb
        port = self._port
        checkpoint = tlb.checkpoint()
        starts: list[int] = []
        ends: list[int] = []
        deltas: list[int] = []
        # Per page shift: indices where the page number changes, and a search cursor.
        changes: dict[int, list[int]] = {}
        cursors: dict[int, int] = {}
        fault: TranslationFault | None = None
        i = 0
        try:
            while i < n:
                va = int(arr[i])
                step = self._step(va, access)
                if isinstance(step, TranslationFault):
                    fault = step
                    break
                entry = step[0]
                # Smaller held entries may pre-empt parts of ``entry`` (stale or other
                # contexts' globals); only then is the run bounded by more than its page.
                blockers = port.preempting(entry)
                if blockers:
                    j = _run_end_scan(arr, i, va, entry, blockers)
                else:
                    shift = entry.size.bit_length() - 1
                    points = changes.get(shift)
                    if points is None:
                        pages = arr >> np.uint64(shift)
                        points = (np.flatnonzero(pages[1:] != pages[:-1]) + 1).tolist()
                        points.append(n)
                        changes[shift] = points
                        cursors[shift] = 0
                    pos = bisect.bisect_right(points, i, cursors[shift])
                    cursors[shift] = pos
                    j = points[pos]
                if j - i > 1:
                    # The step left ``entry`` most recent; hits on it change only counters.
                    port.repeat_hits(j - i - 1)
                starts.append(i)
                ends.append(j)
                deltas.append((entry.pa_base - entry.va_base) % (1 << 64))
                i = j
        except BaseException:
            tlb.restore(checkpoint)
            raise
        done = i
        if starts:
            lengths = np.asarray(ends, dtype=np.int64) - np.asarray(starts, dtype=np.int64)
            offsets = np.repeat(np.asarray(deltas, dtype=np.uint64), lengths)
            pas = arr[:done] + offsets
        else:
            pas = np.empty(0, dtype=np.uint64)
        return BatchResult(pas, done, fault)

    def _batch_compiled(self, arr: U64Array, access: Access) -> BatchResult:
        """:meth:`translate_batch` on the compiled engine: the kernel runs the steps,
        this step handles each access it stops before (a fault, normally)."""
        walker = self._walker
        assert isinstance(walker, BatchWalker)
        flags = dict(privileged=self._privileged, honour_global=self._honour_global)
        runner = StreamRunner(
            self._port, walker, plan_trace(walker, arr, access, **flags), access, self._privileged
        )
        n = int(arr.shape[0])
        pas = np.empty(n, dtype=np.uint64)
        checkpoint = self._tlb.checkpoint()
        i = 0
        try:
            while True:
                i = runner.trace(arr, i, pas)
                if i >= n:
                    return BatchResult(pas, n, None)
                va = int(arr[i])
                step = self._step(va, access)
                if isinstance(step, TranslationFault):
                    return BatchResult(pas[:i], i, step)
                pas[i] = step[0].pa_base + (va - step[0].va_base)
                i += 1
        except BaseException:
            self._tlb.restore(checkpoint)
            raise

    def translate_span(
        self, va: int, length: int, access: Access, *, with_attrs: bool = False
    ) -> SpanResult:
        """Translate ``[va, va + length)`` as a transaction does, one step per page:
        each step covers the rest of the page (TLB entry) it used, up to the first
        fault.  TLB state and counters end as after :meth:`translate` of each step's
        address in turn.  ``with_attrs``: also each row's attributes (a CPU access
        needs the memory type of every run).
        """
        va = check_address(va)
        _check_access(access)
        if not is_int(length) or length < 0:
            raise InvalidArgumentError(f"span length {length!r} must be an integer >= 0")
        length = int(length)
        end = va + length
        if end > ADDRESS_LIMIT:
            raise InvalidArgumentError(f"span [{va:#x}, +{length:#x}) leaves the 64-bit space")
        if not isinstance(with_attrs, bool):
            raise InvalidArgumentError(f"translate_span: with_attrs={with_attrs!r} is not a bool")
        walker = self._walker
        row_attrs: list[PageAttrs] = []
        pieces: list[tuple[U64Array, U64Array, U64Array]] = []
        rows: list[tuple[int, int, int]] = []
        runner: StreamRunner | None = None
        compiled = end < ADDRESS_LIMIT and engine.compiled() and isinstance(walker, BatchWalker)
        fault = None
        while va < end:
            if runner is not None:
                run_va, run_pa, run_len, origins, va = runner.span(va, end)
                pieces.append((run_va, run_pa, run_len))
                if with_attrs:
                    row_attrs += runner.attrs_of(origins)
                if va >= end:
                    break
            step = self._step(va, access)
            if isinstance(step, TranslationFault):
                fault = step
                break
            entry = step[0]
            n = min(end, entry.va_base + entry.size) - va
            rows.append((va, entry.pa_base + va - entry.va_base, n))
            if with_attrs:
                row_attrs.append(entry.attrs)
            va += n
            if compiled and runner is None and (end - va) // entry.size > SPAN_STEPS_IN_PYTHON:
                # many pages to go: the kernel's fixed cost (plan, store to arrays and
                # back) pays; through large pages a few more Python steps are cheaper
                assert isinstance(walker, BatchWalker)
                flags = dict(privileged=self._privileged, honour_global=self._honour_global)
                p = plan_span(walker, va, end, access, **flags)
                runner = StreamRunner(self._port, walker, p, access, self._privileged)
            if runner is not None:  # the rows so far go before the kernel's
                _flush(rows, pieces)
        _flush(rows, pieces)
        if not pieces:
            empty = np.empty(0, dtype=np.uint64)
            return SpanResult(empty, empty, empty, va, fault)
        cols = [np.concatenate([piece[c] for piece in pieces]) for c in range(3)]
        return SpanResult(cols[0], cols[1], cols[2], va, fault, tuple(row_attrs))


def _flush(
    rows: list[tuple[int, int, int]], pieces: list[tuple[U64Array, U64Array, U64Array]]
) -> None:
    """Move the Python steps' ``(va, pa, length)`` rows to ``pieces`` as arrays."""
    if rows:
        table = np.array(rows, dtype=np.uint64).reshape(-1, 3)
        pieces.append((table[:, 0], table[:, 1], table[:, 2]))
        rows.clear()


def _run_end_scan(arr: U64Array, i: int, va: int, entry: TLBEntry, blockers: list[TLBEntry]) -> int:
    """First index after ``i`` whose address leaves the part of ``entry`` around ``va``
    that none of ``blockers`` (smaller entries winning the lookup) covers."""
    lo, hi = entry.va_base, entry.va_base + entry.size
    for other in blockers:
        if other.va_base + other.size <= va:
            lo = max(lo, other.va_base + other.size)
        elif other.va_base > va:
            hi = min(hi, other.va_base)
    n = int(arr.shape[0])
    k = i + 1
    width = 64
    lo64 = np.uint64(lo)
    hi64 = np.uint64(hi) if hi < ADDRESS_LIMIT else None
    while k < n:
        window = arr[k : k + width]
        outside = window < lo64
        if hi64 is not None:
            outside |= window >= hi64
        first = int(np.argmax(outside))
        if outside[first]:
            return k + first
        k += width
        width *= 2
    return n
