"""Putting a trace's maps and unmaps into a device's real page table, in batches.

The replay writes each device's SMMU context table (``ctx.low_table``, the table the
context's bank walks) with the page table's own ``map_many``/``map``/``unmap``, the
lowest public layer that still writes real descriptors, inside the context's
``update_start``/``update_done`` bracket, reporting every changed range to the
context's ``tlb_gather`` as the VCMM core does for the tables it owns.  So a walk
after the replay (or a fault's check during it) reads true descriptors, the IOTLB is
invalidated as the hardware needs, and the table's pages are what
``table_bytes_peak`` counts.

Table calls are the replay's cost (each one plans, checks and logs its edits), so a
writer holds changes back and writes them together, with the same result as the
kernel's calls one by one (``batch=False`` makes those calls, one per change: the
reference the batched writer is tested against):

- **maps** that get small pages on their own (no block fits: the usual case) wait,
  page by page in trace order, and go into the table in one ``map_many``, which
  writes the same bytes and allocates table pages in the same order as one ``map``
  per page; a map that may use a block, or a very large one, is written alone;
- **unmaps** that free no table page (the table keeps the tables an unmap empties,
  as Linux's io-pgtable does, or the replay's own account shows every last-level
  table they touch keeps a small-page mapping) wait too and are written
  as runs of adjacent pages; any other unmap is written at once, after everything
  pending;
- a map and its unmap both still waiting **cancel**, without touching the table,
  when the map allocated no table page (every last-level table it touches already
  held a mapping) and the unmap frees none: the table's pages are then the same at
  every moment as with the two calls made; the range is still reported to the
  gather, as those calls would have.

The contexts' tables take their pages from one table memory, so the order of
allocations and releases across writers matters too (it decides which page each
table gets): a :class:`SharedTableMemory` names the one writer that may hold maps
that allocate, and every other writer writes those first before it queues such a map
or writes anything at once.  So table pages are allocated and released in trace
order across all contexts, and the tables come out byte for byte as the calls one by
one leave them.

Table pages only appear when maps are written and only go when an unmap that frees
one is written, and everything pending is written (and the pages counted) right
before such an unmap, after a block map, at a fault's walk and at the end; so every
count is taken at a local maximum and ``table_bytes_peak`` is the true peak.  The
changes between two syncs share one update bracket, so the IOTLB is invalidated once
per batch, as io-pgtable's gather does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection

from vcmm.attrs import PageAttrs
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu import SmmuContext
from vcmm.ranges import coalesce

#: Pending maps make at least this many runs: one ``map_many`` (a ``map_many`` of a few
#: pages cost about as much as four ``map`` calls of a run each, timed side by side).
MAP_MANY_RUNS = 4

#: Maps and unmaps of more pages than this are written alone (a page-by-page batch
#: would cost more than the call).
BATCH_PAGES = 256


def trace_runs(pages: list[tuple[int, int]], granule: int, span: int) -> list[tuple[int, int, int]]:
    """``(va, pa, size)`` runs of ``(va, pa)`` pages in trace order, each page next to
    the run's last in both addresses: upwards, or downwards inside one last-level
    span (a downward run crossing into another span would get its tables in the
    other order)."""
    runs: list[list[int]] = []
    for va, pa in pages:
        if runs:
            run = runs[-1]
            if va == run[0] + run[2] and pa == run[1] + run[2]:
                run[2] += granule
                continue
            if va + granule == run[0] and pa + granule == run[1] and va // span == run[0] // span:
                run[0], run[1], run[2] = va, pa, run[2] + granule
                continue
        runs.append([va, pa, granule])
    return [(va, pa, size) for va, pa, size in runs]


def page_runs(pages: list[int], granule: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the runs of adjacent pages in sorted ``pages``."""
    runs: list[tuple[int, int]] = []
    start = end = -1
    for page in pages:
        if page != end:
            if end > start:
                runs.append((start, end - start))
            start = page
        end = page + granule
    if end > start:
        runs.append((start, end - start))
    return runs


class SharedTableMemory:
    """The writers of one table memory: which one holds pending maps that allocate."""

    __slots__ = ("holder",)

    def __init__(self) -> None:
        #: The writer whose pending maps include one that allocates a table page.
        self.holder: TableWriter | None = None

    def before(self, writer: TableWriter) -> None:
        """Write another writer's allocating maps before ``writer`` allocates or
        releases a table page (they come first in the trace)."""
        holder = self.holder
        if holder is not None and holder is not writer:
            holder.write_allocating_maps()


class TableWriter:
    """The batched table changes of one SMMU context (see the module notes)."""

    __slots__ = (
        "_blocks",
        "_cancelled",
        "_granule",
        "_maps",
        "_open",
        "_quiet",
        "_shared",
        "_unmaps",
        "attrs",
        "batch",
        "calls",
        "ctx",
        "enabled",
        "leaf_span",
        "smallest_block",
        "table",
        "table_bytes",
        "table_bytes_peak",
    )

    def __init__(
        self,
        ctx: SmmuContext,
        table: PageTable,
        attrs: PageAttrs,
        *,
        enabled: bool = True,
        batch: bool = True,
        shared: SharedTableMemory | None = None,
    ) -> None:
        self.ctx = ctx
        #: The other writers taking pages from the same table memory.
        self._shared = SharedTableMemory() if shared is None else shared
        #: False for a replay that only looks for problems (``--no-tables``).
        self.enabled = enabled
        #: False: one table call per change, as the kernel made them (the reference).
        self.batch = batch
        self.table = table
        self.attrs = attrs
        #: Pending small-page maps, page -> physical page, in trace order.
        self._maps: dict[int, int] = {}
        #: Pages of ``_maps`` whose map allocated no table page (may cancel); always a
        #: subset of ``_maps`` (both lose a page together).
        self._quiet: set[int] = set()
        #: Pending unmapped pages (of unmaps that free no table page).
        self._unmaps: set[int] = set()
        #: Ranges of the map/unmap pairs that cancelled (reported to the gather at sync).
        self._cancelled: list[tuple[int, int]] = []
        self._open = False
        sizes = sorted(table.fmt.sizes)
        self._granule = sizes[0]
        self._blocks = sizes[1:]
        #: No map shorter than this can hold a block (what :meth:`small_pages_only`
        #: asks first; callers test it to skip the call).
        self.smallest_block = self._blocks[0] if self._blocks else 1 << 64
        last = table.geometry.levels[-1]
        #: What one last-level table translates (2 MiB for 4 KiB VMSAv8, 1 MiB ARMv7).
        self.leaf_span = 1 << (last.shift + last.index_bits)
        #: Table calls made (map_many, map and unmap of the page table).
        self.calls = 0
        self.table_bytes = self._measure()
        self.table_bytes_peak = self.table_bytes

    def _measure(self) -> int:
        return sum(size for _, size in self.table.table_pages())

    def _count_pages(self) -> None:
        self.table_bytes = self._measure()
        if self.table_bytes > self.table_bytes_peak:
            self.table_bytes_peak = self.table_bytes

    def small_pages_only(self, va: int, pa: int, size: int) -> bool:
        """Whether a call of its own would map ``[va, va+size)`` with granule pages only
        (no block size ``B`` to which va and pa align alike has a whole ``B`` inside)."""
        if size < self.smallest_block:
            return True  # too small for any block
        for block in self._blocks:
            if (va - pa) % block == 0 and -(-va // block) * block + block <= va + size:
                return False
        return True

    def _bracket(self) -> None:
        if not self._open:
            self.ctx.update_start()
            self._open = True

    def map(
        self, va: int, pa: int, size: int, *, small: bool | None = None, quiet: bool = False
    ) -> None:
        """Map ``[va, va+size)`` to ``pa`` (now or with the next batch).  ``small``: what
        :meth:`small_pages_only` says of it, if the caller asked already.  ``quiet``: the
        caller knows every last-level table the range touches exists already, so the
        map allocates no table page and may cancel against its unmap."""
        if not self.enabled:
            return
        granule = self._granule
        if small is None:
            small = self.small_pages_only(va, pa, size)
        if not self.batch or size > BATCH_PAGES * granule or not small:
            self.write_pending()
            self._write_map(va, pa, size)
            return
        pages = range(va, va + size, granule)
        unmaps = self._unmaps
        if unmaps and not unmaps.isdisjoint(pages):
            self._write_unmaps(range(0))  # the address is reused: its unmap goes first
        if not quiet:
            self._shared.before(self)
            self._shared.holder = self
        maps = self._maps
        if size == granule:
            maps[va] = pa
        else:
            for k, page in enumerate(pages):
                maps[page] = pa + k * granule
        if quiet:
            self._quiet.update(pages)

    def map_run(self, va: int, pa: int, maps: list[tuple[int, bool, bool]]) -> None:
        """Maps that continue each other in both addresses, each ``(size, small,
        quiet)`` as :meth:`map` takes them, in order: the same as one :meth:`map` each
        (which it makes when one of them would be written alone or meets a pending
        unmap), else their pages join the batch in one go."""
        if not self.enabled:
            return
        total, small, quiet = 0, True, True
        for size, one_small, one_quiet in maps:
            total += size
            small = small and one_small
            quiet = quiet and one_quiet
        granule, unmaps = self._granule, self._unmaps
        pages = range(va, va + total, granule)
        if (
            not self.batch
            or total > BATCH_PAGES * granule
            or not small
            or (unmaps and not unmaps.isdisjoint(pages))
        ):
            for size, one_small, one_quiet in maps:
                self.map(va, pa, size, small=one_small, quiet=one_quiet)
                va, pa = va + size, pa + size
            return
        if not quiet:
            self._shared.before(self)  # writes only other writers' maps: may come first
            self._shared.holder = self
        self._maps.update(zip(pages, range(pa, pa + total, granule), strict=True))
        if quiet:
            self._quiet.update(pages)
            return
        for size, _, one_quiet in maps:
            if one_quiet:
                self._quiet.update(range(va, va + size, granule))
            va += size

    def unmap(self, va: int, size: int, *, deferrable: bool = False) -> None:
        """Unmap ``[va, va+size)``.  ``deferrable``: the caller knows the unmap frees
        no table page (every last-level table it touches keeps a small-page mapping),
        so it may wait for the next batch: the table's pages, and so every peak
        measured meanwhile, are the same with it done or not."""
        if not self.enabled:
            return
        if not self.batch or size > BATCH_PAGES * self._granule:
            self.write_pending()
            self._shared.before(self)
            self._write_unmap(va, size)
            return
        pages = range(va, va + size, self._granule)
        maps, quiet = self._maps, self._quiet
        if deferrable and pages and quiet.issuperset(pages):
            # Every page waits in a quiet map (quiet pages are pending maps): the map
            # and the unmap cancel.
            deque(map(maps.pop, pages), 0)
            quiet.difference_update(pages)
            self._cancelled.append((va, size))
            return
        if maps:
            waiting = [p for p in pages if p in maps]
            if waiting:
                self._write_maps(waiting)
        if deferrable:
            self._unmaps.update(pages)
            return
        self._write_unmaps(pages)  # the pages counted before it, as the trace has them
        self._shared.before(self)
        self._write_unmap(va, size)

    def _write_map(self, va: int, pa: int, size: int) -> None:
        self._shared.before(self)
        self._bracket()
        self.calls += 1
        self.table.map(va, pa, size, self.attrs, entries=False)
        self.ctx.tlb_gather.add_range(va, size)
        self._count_pages()

    def _write_unmap(self, va: int, size: int) -> None:
        self._bracket()
        self.calls += 1
        self.table.unmap(va, size)
        self.ctx.tlb_gather.add_range(va, size)

    def write_pending_maps(self) -> None:
        """Write every pending map, in trace order."""
        self._write_maps(None)

    def write_allocating_maps(self) -> None:
        """Write the pending maps that allocate a table page, in trace order (the
        quiet ones keep waiting: they allocate nothing, whenever they are written)."""
        self._write_maps(())

    def _write_maps(self, pages: Collection[int] | None) -> None:
        """Write the pending maps of ``pages`` (each with the rest of its map) and every
        pending map that allocates a table page, in trace order; ``None``: all.

        Only the maps that allocate must keep their order (it decides which table
        page each table gets); a quiet map allocates nothing, whether it is written
        before or after them, so it may wait longer, to cancel against its unmap.
        """
        maps = self._maps
        if not maps:
            return
        quiet = self._quiet
        chosen = None if pages is None else set(pages)
        written: list[tuple[int, int]] = []
        granule, end, follows = self._granule, -1, -1
        for va, pa in maps.items():
            if chosen is None or va not in quiet or va in chosen or (va == end and pa == follows):
                written.append((va, pa))
                end, follows = va + granule, pa + granule
        if not written:
            return
        for va, _ in written:
            del maps[va]
            quiet.discard(va)
        self._install(written)
        gather = self.ctx.tlb_gather
        for va, size in page_runs(sorted(va for va, _ in written), granule):
            gather.add_range(va, size)
        if self._shared.holder is self:  # every map that allocates is written now
            self._shared.holder = None
        self._count_pages()

    def _install(self, pages: list[tuple[int, int]]) -> None:
        """Map ``(va, pa)`` pages in this order: one ``map`` of small pages per run that
        allocates its tables in the same order as the pages one by one, or one
        ``map_many`` of them all when there are more runs than a ``map_many`` costs."""
        self._bracket()
        granule = self._granule
        runs = trace_runs(pages, granule, self.leaf_span)
        if len(runs) < MAP_MANY_RUNS:
            self.calls += len(runs)
            for va, pa, size in runs:
                self.table.map(va, pa, size, self.attrs, page_size=granule, entries=False)
        else:
            self.calls += 1
            attrs = self.attrs
            self.table.map_many([(va, pa, granule, attrs) for va, pa in pages], entries=False)

    def _write_unmaps(self, then: range) -> None:
        """Write the pending unmaps, a run of adjacent pages per call, before an unmap
        of the pages ``then``.  First the pending maps that must be there: those in
        the last-level spans the unmaps touch (an unmap waited because a mapping of
        its span, live then or since, keeps its table) and those that allocate a
        table page (they come before in the trace); the others, in spans left alone,
        keep waiting."""
        span = self.leaf_span
        touched = {p // span for p in self._unmaps}
        if then:
            touched.update(range(then.start // span, (then.stop - 1) // span + 1))
        self._write_maps([p for p in self._maps if p // span in touched])
        if self._unmaps:
            pages = sorted(self._unmaps)
            self._unmaps.clear()
            for va, size in page_runs(pages, self._granule):
                self._write_unmap(va, size)

    def write_pending(self) -> None:
        """Write every pending change (maps first: no pending unmap meets them)."""
        self.write_pending_maps()
        self._write_unmaps(range(0))

    def sync(self) -> None:
        """Write what is pending and close the bracket (the IOTLB invalidation)."""
        self.write_pending()
        if self._cancelled:
            self._bracket()
            gather = self.ctx.tlb_gather
            for va, size in coalesce(self._cancelled):
                gather.add_range(va, size)  # as the calls would have
            self._cancelled.clear()
        if self._open:
            self.ctx.update_done()
            self._open = False
