"""Replay a parsed, attributed trace into a booted :class:`~vcmm.system.System`.

Two modes: **as traced** (the default: every map goes into the device's table at the
trace's IOVA and physical address) and **reallocate** (vcmm's own IOVA allocator,
mainline's placement under the device's DMA mask, chooses each IOVA; the report
compares the placements).  Problems are found on the replay's own interval maps
(:mod:`vcmm.trace.domain`) in trace order:

- ``overlapping-map``: a map over a live mapping (the kernel refuses such a map, so
  the trace lost an unmap or mixes domains); the table keeps the old mapping;
- ``double-unmap``: an unmap of addresses an earlier line already unmapped (named);
- ``unmap-unmapped``: an unmap of addresses never mapped in the trace;
- ``fault-after-unmap``: a fault at an address a named line unmapped;
- ``fault-unmapped``: a fault at an address the trace never mapped;
- ``leak``: a mapping still live at the end of the trace.

A fault's address is also walked in the device's real table, and the problem's
detail says what the walk found.
"""

from __future__ import annotations

from collections.abc import Iterable

from vcmm.attrs import PageAttrs
from vcmm.errors import VcmmError
from vcmm.hw.bus import SmmuDevice
from vcmm.system import System
from vcmm.trace.domain import GRANULE, Domain, Live
from vcmm.trace.errors import TraceError
from vcmm.trace.events import DmaEvent, GroupEvent, IommuMap, IommuUnmap, IoPageFault, Skipped
from vcmm.trace.intervals import holes
from vcmm.trace.perfetto import Timeline
from vcmm.trace.report import DeviceStats, Placement, Problem, ReplayReport
from vcmm.trace.tables import SharedTableMemory, TableWriter

Item = IommuMap | IommuUnmap | IoPageFault | GroupEvent | DmaEvent | Skipped


def _runs(pieces: list[tuple[int, int, Live]]) -> list[tuple[int, int]]:
    """``(table address, size)`` of the runs of adjacent pieces (sorted) that are
    adjacent in the table too (as traced always; under ``--reallocate`` when vcmm
    placed them so)."""
    runs: list[tuple[int, int]] = []
    end = -1
    for s, e, live in pieces:
        va = s + live.va_delta
        if runs and va == end:
            start, size = runs[-1]
            runs[-1] = (start, size + e - s)
        else:
            runs.append((va, e - s))
        end = va + e - s
    return runs


class Replayer:
    """Drive one System with attributed trace items (see the module notes)."""

    def __init__(
        self,
        system: System,
        *,
        reallocate: bool = False,
        tables: bool = True,
        batch: bool = True,
        timeline: Timeline | None = None,
    ) -> None:
        if not isinstance(system, System):
            raise TraceError(f"Replayer needs a System, got {type(system).__name__}")
        self.system = system
        self.reallocate = bool(reallocate)
        #: False: find problems only, leave the page tables alone (much faster).
        self.tables = bool(tables)
        #: False: one page-table call per map and unmap, as the kernel made them (the
        #: reference the batched writes of :mod:`vcmm.trace.tables` are tested against).
        self.batch = bool(batch)
        self.timeline = timeline
        self.report = ReplayReport(
            platform=system.spec.name, mode="reallocate" if reallocate else "as traced"
        )
        self._domains: dict[str, Domain | str] = {}
        self._by_ctx: dict[int, Domain] = {}
        self._attrs = PageAttrs()
        self._table_memory = SharedTableMemory()
        #: Bytes still mapped of each traced map line, and its span's name (Perfetto).
        self._span_left: dict[int, tuple[int, str]] = {}
        self._last_ts = 0.0

    # -- devices and domains ---------------------------------------------------------

    def _stats(self, device: str) -> DeviceStats:
        st = self.report.devices.get(device)
        if st is None:
            st = self.report.devices[device] = DeviceStats()
        return st

    def _domain(self, device: str) -> Domain | str:
        """The domain of ``device``, or why the device cannot be replayed."""
        known = self._domains.get(device)
        if known is not None:
            return known
        found: Domain | str | None
        name = self.system.spec.name
        try:
            dev = self.system.device(device)
        except VcmmError:
            found = f"device {device!r} is not on platform {name}"
        else:
            if not isinstance(dev, SmmuDevice):
                found = f"device {device!r} of platform {name} is not behind an IOMMU"
            elif dev.ctx.split or dev.ctx.low_table is None:
                found = f"device {device!r}: its context {dev.ctx.name!r} uses split tables"
            else:
                found = self._by_ctx.get(id(dev.ctx))
                if found is None:
                    writer = TableWriter(
                        dev.ctx,
                        dev.ctx.low_table,
                        self._attrs,
                        enabled=self.tables,
                        batch=self.batch,
                        shared=self._table_memory,
                    )
                    found = Domain(
                        dev.ctx.name,
                        dev.ctx,
                        writer,
                        mask=self.system.device_record(device).dma.mask,
                        reallocate=self.reallocate,
                    )
                    self._by_ctx[id(dev.ctx)] = found
        self._domains[device] = found
        return found

    def _skip(self, line: int, reason: str) -> None:
        self.report.skipped.append(Skipped(line, reason))

    # -- the events ------------------------------------------------------------------

    def feed(self, items: Iterable[Item]) -> None:
        """Replay ``items`` (parsed and attributed, in trace order)."""
        report = self.report
        # Maps of one device continuing each other in both addresses, replayed together.
        run: list[IommuMap] = []
        for item in items:
            if isinstance(item, IommuMap):
                if run:
                    last = run[-1]
                    if (
                        item.iova != last.iova + last.size
                        or item.paddr != last.paddr + last.size
                        or item.device != last.device
                    ):
                        self._map_run(run)
                        run = []
                run.append(item)
                continue
            if run:
                self._map_run(run)
                run = []
            if isinstance(item, DmaEvent):  # the most frequent first
                report.events += 1
                self._stats(item.device)
            elif isinstance(item, IommuUnmap):
                self._unmap(item)
            elif isinstance(item, Skipped):
                report.skipped.append(item)
            elif isinstance(item, IoPageFault):
                self._fault(item)
            elif isinstance(item, GroupEvent):
                report.events += 1
            else:
                raise TraceError(f"{item!r} is not a parsed trace event (see vcmm.trace.parser)")
        if run:
            self._map_run(run)

    def _map_run(self, run: list[IommuMap]) -> None:
        """Maps of one device continuing each other (``iommu_map_sg`` traces one per
        chunk): replayed together, with the state and problems of one at a time.
        Anything unusual (a skip, an overlap, ``--reallocate``, a timeline, the
        unbatched reference) takes them one by one."""
        if len(run) == 1:
            self._map(run[0])
            return
        first, last = run[0], run[-1]
        start, end = first.iova, last.iova + last.size
        device = first.device or ""
        dom = self._domain(device) if self.batch else None
        if (
            not isinstance(dom, Domain)
            or self.timeline is not None
            or dom.iova is not None
            or dom.check(start, end - start, first.paddr) is not None
            or dom.live.first(start, end) is not None
        ):
            for ev in run:
                self._map(ev)
            return
        writer, span, tables = dom.writer, dom.writer.leaf_span, self.tables
        smallest, pa_delta = writer.smallest_block, first.paddr - start
        starts: list[int] = []
        placed: list[tuple[int, Live]] = []  # (end, value) of each start
        writes: list[tuple[int, bool, bool]] = []
        for ev in run:
            s, size = ev.iova, ev.size
            if size <= 0 or size % GRANULE:  # one would be skipped: take them one by one
                for one in run:
                    self._map(one)
                return
            e = s + size
            small = tables and (size < smallest or writer.small_pages_only(s, ev.paddr, size))
            # Tables the run's earlier maps reached exist: ask only about the others.
            at = s - s % span
            if starts and at != s:
                at += span
            writes.append((size, small, small and (at >= e or dom.keeps_tables(at, e))))
            starts.append(s)
            placed.append((e, Live(pa_delta, ev.line, device, 0, -1, small)))
        dom.live.insert_sorted(starts, placed)
        if dom.gone.first(start, end) is not None:
            dom.gone.remove(start, end)
        writer.map_run(start, first.paddr, writes)
        self.report.events += len(run)
        st = self._stats(device)
        st.map += len(run)
        st.mapped_bytes += end - start
        if st.mapped_bytes > st.mapped_bytes_peak:
            st.mapped_bytes_peak = st.mapped_bytes

    def _place(self, dom: Domain, ev: IommuMap) -> tuple[int, int] | str:
        """(vcmm IOVA delta, allocation start) of a new mapping under ``--reallocate``,
        or why there is none."""
        assert dom.iova is not None
        try:
            ours = dom.iova.alloc(ev.size, dom.mask)
        except VcmmError as err:
            return f"vcmm's IOVA allocator has no room for it under mask {dom.mask:#x}: {err}"
        dom.alloc_left[ours] = ev.size
        placement = self.report.placements.setdefault(ev.device or "", Placement())
        placement.note(ev.iova, ours, ev.size)
        return ours - ev.iova, ours

    def _map(self, ev: IommuMap) -> None:
        device = ev.device or ""
        dom = self._domain(device)
        why = dom if isinstance(dom, str) else dom.check(ev.iova, ev.size, ev.paddr)
        if why is not None:
            self._skip(ev.line, why if isinstance(why, str) else str(why))
            return
        assert isinstance(dom, Domain)
        self.report.events += 1
        st = self._stats(device)
        st.map += 1
        start, end = ev.iova, ev.iova + ev.size
        clash = dom.live.first(start, end)
        if clash is not None:
            s, e, old = clash
            self.report.problems.append(
                Problem(
                    "overlapping-map",
                    ev.line,
                    device,
                    start,
                    f"[{start:#x}, {end:#x}) overlaps [{s:#x}, {e:#x}) mapped by {old.device} at "
                    f"line {old.line}; the kernel refuses such a map: an unmap is missing from "
                    "the trace or two domains are mixed",
                )
            )
            return
        va_delta, alloc = 0, -1
        if dom.iova is not None:
            placed = self._place(dom, ev)
            if isinstance(placed, str):
                self._skip(ev.line, placed)
                return
            va_delta, alloc = placed
        writer = dom.writer
        small = self.tables and (
            ev.size < writer.smallest_block
            or writer.small_pages_only(start + va_delta, ev.paddr, ev.size)
        )
        # As traced, a map into last-level tables that exist allocates no table page.
        quiet = small and dom.iova is None and dom.keeps_tables(start, end)
        value = Live(ev.paddr - start, ev.line, device, va_delta, alloc, small)
        dom.live.insert(start, end, value)
        if dom.gone.first(start, end) is not None:
            dom.gone.remove(start, end)
        dom.writer.map(start + va_delta, ev.paddr, ev.size, small=small, quiet=quiet)
        st.mapped_bytes += ev.size
        if st.mapped_bytes > st.mapped_bytes_peak:
            st.mapped_bytes_peak = st.mapped_bytes
        if self.timeline is not None:
            name = f"map {start:#x}+{ev.size:#x}"
            self._span_left[ev.line] = (ev.size, name)
            ts = self._ts(ev.ts)
            self.timeline.span_begin(
                device,
                ev.line,
                name,
                ts,
                {"iova": hex(start), "paddr": hex(ev.paddr), "size": ev.size, "line": ev.line},
            )
            self.timeline.counter(device, "mapped bytes", ts, st.mapped_bytes)

    def _unmap(self, ev: IommuUnmap) -> None:
        device = ev.device or ""
        dom = self._domain(device)
        why = dom if isinstance(dom, str) else dom.check(ev.iova, ev.size, None)
        if why is not None:
            self._skip(ev.line, why if isinstance(why, str) else str(why))
            return
        assert isinstance(dom, Domain)
        self.report.events += 1
        self._stats(device).unmap += 1
        start, end = ev.iova, ev.iova + ev.size
        pieces = dom.live.remove(start, end)
        line, covered, small = ev.line, 0, True  # the pieces were live, so not in ``gone``
        starts: list[int] = []
        gone: list[tuple[int, int]] = []  # (end, line) of each start
        if dom.iova is None and self.timeline is None:  # as traced: only the counts to update
            stats = self.report.devices  # every device with a live piece has them
            for s, e, live in pieces:
                covered += e - s
                stats[live.device].mapped_bytes -= e - s
                small = small and live.small
                starts.append(s)
                gone.append((e, line))
        else:
            for s, e, live in pieces:
                covered += e - s
                small = small and live.small
                starts.append(s)
                gone.append((e, line))
                self._release(dom, ev, s, e, live)
        if covered != end - start:
            self._unmap_problem(dom, ev, device, holes(start, end, pieces))
        dom.gone.insert_sorted(starts, gone)
        # As traced, an unmap that frees no table page may wait to merge (tables.py).
        deferrable = (
            self.tables and dom.iova is None and small and dom.unmap_frees_no_table(start, end)
        )
        # One table call per run of pieces adjacent in the table, as the kernel's unmap:
        # as traced, pieces covering the whole range are one.
        runs = [(start, end - start)] if covered == end - start and dom.iova is None else None
        for va, size in runs or _runs(pieces):
            dom.writer.unmap(va, size, deferrable=deferrable)
        if self.timeline is not None:
            self.timeline.instant(
                device,
                "unmap + IOTLB invalidation",
                self._ts(ev.ts),
                {"iova": hex(start), "size": ev.size, "line": ev.line},
            )

    def _unmap_problem(
        self, dom: Domain, ev: IommuUnmap, device: str, gaps: list[tuple[int, int]]
    ) -> None:
        """One problem for the holes of an unmap: double if any was unmapped before."""
        earlier = [g for a, b in gaps for g in dom.gone.overlapping(a, b)]
        missing = sum(b - a for a, b in gaps)
        where = f"{missing:#x} of its {ev.size:#x} bytes from {gaps[0][0]:#x}"
        if earlier:
            lines = sorted({line for _, _, line in earlier})
            named = ", ".join(str(n) for n in lines[:5])
            kind, why = "double-unmap", f"were already unmapped at line {named}"
        else:
            kind = "unmap-unmapped"
            why = "were never mapped in the trace (its maps may precede the trace)"
        self.report.problems.append(Problem(kind, ev.line, device, gaps[0][0], f"{where} {why}"))

    def _release(self, dom: Domain, ev: IommuUnmap, s: int, e: int, live: Live) -> None:
        """Take one live piece out of the counts (and out of vcmm's IOVA space)."""
        st = self._stats(live.device)
        st.mapped_bytes -= e - s
        if dom.iova is not None:
            left = dom.alloc_left[live.alloc] - (e - s)
            if left:
                dom.alloc_left[live.alloc] = left
            else:
                del dom.alloc_left[live.alloc]
                dom.iova.free(live.alloc)
        if self.timeline is not None:
            ts = self._ts(ev.ts)
            left, name = self._span_left[live.line]
            left -= e - s
            self._span_left[live.line] = (left, name)
            if not left:
                del self._span_left[live.line]
                self.timeline.span_end(live.device, live.line, name, ts)
            self.timeline.counter(live.device, "mapped bytes", ts, st.mapped_bytes)

    def _fault(self, ev: IoPageFault) -> None:
        dom = self._domain(ev.device)
        if isinstance(dom, str):
            self._skip(ev.line, dom)
            return
        self.report.events += 1
        self._stats(ev.device).faults += 1
        if self.timeline is not None:
            self.timeline.instant(
                ev.device,
                "io_page_fault",
                self._ts(ev.ts),
                {"iova": hex(ev.iova), "write": ev.write, "line": ev.line},
            )
        if dom.live.at(ev.iova) is not None:
            return  # mapped: a permission or other fault, not a missing mapping
        walked = self._walk(dom, ev.iova)
        access = "write" if ev.write else "read"
        gone = dom.gone.at(ev.iova)
        if gone is not None:
            self.report.problems.append(
                Problem(
                    "fault-after-unmap",
                    ev.line,
                    ev.device,
                    ev.iova,
                    f"{access} fault at an address unmapped at line {gone[2]} "
                    f"([{gone[0]:#x}, {gone[1]:#x})); {walked}",
                )
            )
        else:
            self.report.problems.append(
                Problem(
                    "fault-unmapped",
                    ev.line,
                    ev.device,
                    ev.iova,
                    f"{access} fault at an address the trace never mapped; {walked}",
                )
            )

    def _walk(self, dom: Domain, iova: int) -> str:
        """What the device's real table says about ``iova`` (as traced only)."""
        if dom.iova is not None:
            return "not walked: vcmm placed the mappings elsewhere (--reallocate)"
        if not self.tables:
            return "not walked: the replay left the tables alone (--no-tables)"
        if iova >= dom.input_limit:
            return "beyond the table's input range"
        dom.writer.sync()
        walk = dom.writer.table.walk(iova)
        if walk.ok:  # the interval map and the table disagree: a vcmm bug, say so loudly
            raise AssertionError(f"{dom.name}: {iova:#x} is unmapped but the table maps it")
        return (
            f"the table walk takes a {walk.fault.value if walk.fault else 'translation'} "
            f"fault at level {walk.level}"
        )

    def _ts(self, seconds: float) -> float:
        self._last_ts = max(self._last_ts, seconds)
        return seconds * 1e6

    # -- the end ---------------------------------------------------------------------

    def _leaks(self, dom: Domain) -> None:
        """One leak per map line with bytes still mapped (a mapping an unmap cut in two
        is still one leak)."""
        pieces: dict[int, list[tuple[int, int]]] = {}
        owner: dict[int, str] = {}
        for s, e, live in dom.live:
            pieces.setdefault(live.line, []).append((s, e))
            owner[live.line] = live.device
        for line, ranges in pieces.items():
            device = owner[line]
            self._stats(device).live_at_end += 1
            left = sum(e - s for s, e in ranges)
            where = ", ".join(f"[{s:#x}, {e:#x})" for s, e in ranges[:4])
            more = f" and {len(ranges) - 4} more ranges" if len(ranges) > 4 else ""
            self.report.problems.append(Problem(
                "leak", line, device, ranges[0][0],
                f"{where}{more} ({left:#x} bytes) mapped at line {line} still mapped at the "
                "end of the trace",
            ))  # fmt: skip
            if self.timeline is not None and line in self._span_left:
                _, name = self._span_left.pop(line)
                self.timeline.span_end(device, line, name, self._last_ts * 1e6)

    def finish(self) -> ReplayReport:
        """Write what is pending, report leaks and table peaks; the report."""
        report = self.report
        for dom in self._by_ctx.values():
            dom.writer.sync()
            report.table_calls += dom.writer.calls
            self._leaks(dom)
        for device, where in self._domains.items():
            if isinstance(where, Domain) and device in report.devices:
                report.devices[device].table_bytes_peak = (
                    where.writer.table_bytes_peak if self.tables else None
                )
        report.skipped.sort(key=lambda s: s.line)
        report.problems.sort(key=lambda p: (p.line, p.kind))
        return report
