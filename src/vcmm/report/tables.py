"""Text and HTML tables of run results: one layout, two renderings.

A :class:`Table` is a title, headers and rows of cells; numbers are right-aligned and
printed with thousands separators so that a column of miss counts can be compared at
a glance.  The same tables feed ``vcmm run`` (text), ``vcmm report`` (HTML) and the
demo, so a number shown anywhere comes from one place.
"""

from __future__ import annotations

import html
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

import click

from vcmm.errors import InvalidArgumentError
from vcmm.sizes import format_size
from vcmm.workload.buffer_collections import CollectionResult
from vcmm.workload.runner import ScenarioResult

Cell = str | int | float | None
#: A free-text column wrapped to fit a terminal keeps at least this many characters.
MIN_WRAP = 24


def fmt_cell(value: Cell) -> str:
    """``None`` is a dash, integers get separators, floats four significant digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


def fmt_chunks(chunks: dict[int, int]) -> str:
    """``3 x 1M`` / ``2 x 1M + 15 x 64K``: a physical allocation's make-up."""
    return " + ".join(f"{n} x {format_size(size)}" for size, n in chunks.items()) or "-"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    note: str = ""

    def add(self, row: Sequence[Cell]) -> None:
        if len(row) != len(self.headers):
            raise InvalidArgumentError(
                f"table {self.title!r}: row has {len(row)} cells, headers have {len(self.headers)}"
            )
        self.rows.append(list(row))

    def _numeric(self, col: int) -> bool:
        values = [r[col] for r in self.rows if r[col] is not None and r[col] != ""]
        return bool(values) and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in values
        )

    def natural_width(self) -> int:
        """Characters the widest line of :meth:`to_text` takes without a width limit."""
        cells = [[fmt_cell(c) for c in row] for row in self.rows]
        return sum(self._widths(cells, range(len(self.headers)))) + 2 * (len(self.headers) - 1)

    def _widths(self, cells: list[list[str]], cols: Sequence[int]) -> list[int]:
        return [max([len(self.headers[c])] + [len(row[c]) for row in cells]) for c in cols]

    def _blocks(self, cells: list[list[str]], width: int) -> list[list[int]]:
        """Column groups that each fit ``width`` (the free-text last column may wrap down
        to :data:`MIN_WRAP`), every group after the first repeating column 0."""
        widths = self._widths(cells, range(len(self.headers)))
        last = len(self.headers) - 1
        if not self._numeric(last):
            widths[last] = min(widths[last], MIN_WRAP)
        blocks: list[list[int]] = [[0]]
        used = widths[0]
        for c in range(1, len(self.headers)):
            if used + 2 + widths[c] > width and len(blocks[-1]) > 1:
                blocks.append([0])
                used = widths[0]
            blocks[-1].append(c)
            used += 2 + widths[c]
        return blocks

    def to_text(self, width: int | None = None, *, colour: bool = False) -> str:
        """Plain text, numbers right-aligned.  With ``width`` every line fits it: the
        last column (free text such as notes) wraps, and columns that still do not fit
        continue in a further block that repeats the first column.  ``colour`` styles
        the title, the headers and FAULT notes with ANSI codes (for terminals)."""
        cells = [[fmt_cell(c) for c in row] for row in self.rows]
        right = [self._numeric(i) for i in range(len(self.headers))]
        everything = list(range(len(self.headers)))
        blocks = [everything]
        if width is not None and self.natural_width() > width:
            blocks = self._blocks(cells, width)
        out = [click.style(self.title, bold=True) if colour else self.title] if self.title else []
        for n, cols in enumerate(blocks):
            out.extend(([""] if n else []) + self._render(cells, cols, right, width, colour))
        if self.note:
            out.append(self.note)
        return "\n".join(out)

    def _render(
        self,
        cells: list[list[str]],
        cols: list[int],
        right: list[bool],
        width: int | None,
        colour: bool,
    ) -> list[str]:
        widths = self._widths(cells, cols)
        wrap_last = not right[cols[-1]] and width is not None
        if wrap_last and width is not None:
            room = width - sum(widths[:-1]) - 2 * (len(cols) - 1)
            widths[-1] = max(min(widths[-1], room), min(widths[-1], MIN_WRAP))

        def line(values: Sequence[str]) -> str:
            parts = [
                v.rjust(w) if right[c] else v.ljust(w)
                for v, w, c in zip(values, widths, cols, strict=True)
            ]
            return "  ".join(parts).rstrip()

        head = line([self.headers[c] for c in cols])
        out = [click.style(head, bold=True) if colour else head]
        out.append("  ".join("-" * w for w in widths))
        for row in cells:
            values = [row[c] for c in cols]
            pieces = [values[-1]]
            if wrap_last and len(values[-1]) > widths[-1]:
                pieces = textwrap.wrap(values[-1], widths[-1]) or [""]
            for i, piece in enumerate(pieces):
                text = line((values[:-1] if i == 0 else [""] * (len(cols) - 1)) + [piece])
                faulty = colour and "FAULT" in values[-1]
                out.append(click.style(text, fg="red") if faulty else text)
        return out

    def to_html(self) -> str:
        right = [self._numeric(i) for i in range(len(self.headers))]
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = []
        for row in self.rows:
            tds = "".join(
                f'<td class="num">{html.escape(fmt_cell(c))}</td>'
                if r
                else f"<td>{html.escape(fmt_cell(c))}</td>"
                for c, r in zip(row, right, strict=True)
            )
            body.append(f"<tr>{tds}</tr>")
        caption = f"<caption>{html.escape(self.title)}</caption>" if self.title else ""
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f"<table>{caption}<thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>{note}"
        )


# -- the standard tables of a run ------------------------------------------------------------


def buffers_table(result: ScenarioResult) -> Table:
    t = Table(
        "Buffers",
        [
            "buffer",
            "size",
            "allocated",
            "target",
            "policy",
            "chunks",
            "device",
            "dev addr",
            "pages",
        ],
    )
    for buf in result.buffers:
        for i, m in enumerate(buf.mappings or [None]):
            first = i == 0
            t.add(
                [
                    buf.name if first else "",
                    buf.size if first else "",
                    buf.allocated if first else "",
                    buf.target if first else "",
                    buf.policy if first else "",
                    fmt_chunks(buf.chunks) if first else "",
                    m.device if m else "-",
                    f"{m.dev_addr:#x}" if m else "-",
                    (fmt_chunks(m.pages) if m.pages else m.kind) if m else "-",
                ]
            )
    return t


def devices_table(result: ScenarioResult) -> Table:
    t = Table(
        "Devices",
        ["device", "kind", "context", "transactions", "bytes read", "bytes written", "faults"],
    )
    for d in result.devices:
        t.add([d.name, d.kind, d.context, d.transactions, d.bytes_read, d.bytes_written, d.faults])
    return t


def contexts_table(result: ScenarioResult) -> Table:
    t = Table(
        "SMMU contexts",
        [
            "context",
            "smmu",
            "tlb",
            "lookups",
            "hits",
            "misses",
            "miss rate",
            "walks",
            "walk reads",
            "evictions",
            "pt bytes",
            "faults",
        ],
    )
    for c in result.contexts:
        t.add(
            [
                c.name,
                c.smmu,
                f"{c.tlb_entries}x{c.tlb_ways}w {c.tlb_replacement}",
                c.tlb["lookups"],
                c.tlb["hits"],
                c.tlb["misses"],
                c.miss_rate,
                c.tlb["walks"],
                c.tlb["walk_reads"],
                c.tlb["evictions"],
                c.table_bytes,
                c.faults,
            ]
        )
    return t


def smmus_table(result: ScenarioResult) -> Table:
    """Per SMMU: where its registers sit, banks against the contexts the run used, and
    the bank switches (an idle context's bank taken) with the TLB entries they cost."""
    t = Table(
        "SMMU banks",
        [
            "smmu",
            "registers",
            "banks",
            "contexts",
            "turns",
            "bank switches",
            "tlb entries invalidated",
        ],
    )
    if any(s.takes_turns for s in result.smmus):
        t.note = (
            "contexts outnumbering banks take turns: activated per frame, an idle bank "
            "taken from the least recently used context (a bank switch)"
        )
    for s in result.smmus:
        t.add(
            [
                s.name,
                f"{s.register_base:#x}",
                s.context_banks,
                len(s.contexts),
                "yes" if s.takes_turns else "no",
                s.bank_switches,
                s.invalidated,
            ]
        )
    return t


def fault_registers_table(result: ScenarioResult) -> Table | None:
    """The fault registers of every bank that recorded a fault (None: no bank did)."""
    rows = [(s.name, b) for s in result.smmus for b in s.banks if b.faulted]
    if not rows:
        return None
    t = Table(
        "SMMU fault registers (ARM SMMUv2 FSR, FAR, FSYNR0)",
        ["smmu", "bank", "context", "FSR", "FAR", "FSYNR0", "decoded"],
    )
    for name, b in rows:
        t.add(
            [
                name,
                b.bank,
                b.context,
                f"{b.fsr:#010x}",
                f"{b.far:#x}",
                f"{b.fsynr0:#010x}",
                b.decoded,
            ]
        )
    return t


def steps_table(result: ScenarioResult, width: int | None = None) -> Table:
    """IOTLB misses of every step, a column per frame; when that is wider than
    ``width``, frame 0 (the cold TLB) and the later frames' minimum, mean and maximum
    (every frame is in ``--json``)."""
    full = _steps_table(result, summarise=False)
    if width is None or full.natural_width() <= width:
        return full
    frames = max((len(s.frames) for s in result.steps), default=0)
    if frames < 3:
        return full
    return _steps_table(result, summarise=True)


def _steps_table(result: ScenarioResult, summarise: bool) -> Table:
    frames = max((len(s.frames) for s in result.steps), default=0)
    span = f"1-{frames - 1}"
    columns = (
        ["frame 0", f"{span} min", f"{span} mean", f"{span} max", "all frames"]
        if summarise
        else [f"frame {i}" for i in range(frames)]
    )
    t = Table(
        "IOTLB misses per frame",
        ["step", "device", "access", "buffer", "pattern", "bursts/frame", *columns, "notes"],
    )
    if summarise:
        t.note = f"{frames} frames summarised to fit the terminal; every frame: vcmm run --json"
    for s in result.steps:
        misses: list[Cell] = [f.misses for f in s.frames]
        if summarise:
            known = [m for m in misses[1:] if isinstance(m, int)]
            misses = [
                misses[0] if misses else None,
                min(known) if known else None,
                round(sum(known) / len(known), 1) if known else None,
                max(known) if known else None,
                sum(m for m in misses if isinstance(m, int)) if misses[0] is not None else None,
            ]
        else:
            misses += [None] * (frames - len(misses))
        notes = "; ".join(x for x in (s.fault and "FAULT " + s.fault, s.data_check) if x)
        where = s.buffer if s.plane == "all" else f"{s.buffer}.{s.plane}"
        t.add([s.index, s.device, s.access, where, s.pattern, s.bursts_per_frame, *misses, notes])
    return t


def totals_table(result: ScenarioResult) -> Table:
    tot = result.totals()
    t = Table(
        "Totals",
        ["lookups", "misses", "miss rate", "walk reads", "pt bytes", "faults", "bytes moved"],
    )
    t.add(
        [
            tot["lookups"],
            tot["misses"],
            tot["miss_rate"],
            tot["walk_reads"],
            tot["table_bytes"],
            tot["faults"],
            tot["bytes_moved"],
        ]
    )
    return t


def collection_table(col: CollectionResult) -> Table:
    """One buffer collection: who stated what, the fold, the choice and why."""
    t = Table(f"Buffer collection {col.name}", ["part", "item", "value"])
    for name, kind, stated, implied in col.participants:
        t.add(["participant", f"{name} ({kind})", f"states: {stated}; vcmm adds: {implied}"])
    for constraint, value in col.folded:
        t.add(["folded", constraint, value])
    for what, value in col.choice:
        t.add(["choice", what, value])
    t.add(["choice", "chunks of buffer 0", fmt_chunks(col.chunks)])
    for name, (entries, small) in col.iotlb.items():
        t.add(["IOTLB", name, f"{entries:,} entries per buffer ({small:,} with 4K pages only)"])
    for name, addresses in col.addresses.items():
        t.add(["address", name, ", ".join(f"{a:#x}" for a in addresses)])
    for reason in col.reasons:
        t.add(["why", "", reason])
    return t


def traffic_table(result: ScenarioResult) -> Table:
    """The ``[[traffic]]`` flows: packets, and how late device reads after unmap ended
    (faulted: strict invalidation; through a stale IOTLB entry: lazy)."""
    t = Table(
        "DMA traffic",
        ["device", "domain", "dir", "packets", "size", "ring", "strays", "faulted", "stale"],
        note="strays: device reads after unmap; stale: let through by the IOTLB (lazy mode)",
    )
    for f in result.traffic:
        t.add(
            [
                f.device,
                f.domain,
                f.direction,
                f.packets,
                f.packet_size,
                f.ring,
                f.strays,
                f.stray_faults,
                f.stray_stale,
            ]
        )
    return t


def invalidation_table(result: ScenarioResult) -> Table:
    """Per DMA domain: its invalidation mode, what it issued and the modelled time."""
    t = Table(
        "IOTLB invalidation",
        [
            "domain",
            "mode",
            "unmaps",
            "commands",
            "syncs",
            "time us",
            "share",
            "flushes full/timer/explicit",
            "peak held",
        ],
        note="time: modelled from each SMMU's invalidation cost; share: of the simulated time",
    )
    for d in result.invalidation:
        flushes = "/".join(str(d.flushes.get(c, 0)) for c in ("ring_full", "timeout", "explicit"))
        t.add(
            [
                d.domain,
                d.mode,
                d.unmaps,
                d.commands,
                d.syncs,
                round(d.time_ns / 1000, 1),
                d.share,
                flushes if d.mode == "lazy" else "-",
                d.peak_held,
            ]
        )
    return t


def result_tables(result: ScenarioResult, width: int | None = None) -> list[Table]:
    faults = fault_registers_table(result)
    plain = [buffers_table(result)] if result.buffers or not result.collections else []
    tables = [
        *plain,
        *(collection_table(c) for c in result.collections),
        steps_table(result, width),
        contexts_table(result),
        *([smmus_table(result)] if result.smmus else []),
        *([faults] if faults is not None else []),
        devices_table(result),
        totals_table(result),
    ]
    if result.traffic:
        tables.append(traffic_table(result))
    if result.invalidation:
        tables.append(invalidation_table(result))
    return tables


def render_result(result: ScenarioResult, width: int | None = None, *, colour: bool = False) -> str:
    """The human-readable report of ``vcmm run``; ``width`` (a terminal's) makes every
    line fit, ``colour`` adds ANSI styles."""
    params = " ".join(f"{k}={v}" for k, v in result.params.items())
    head = f"scenario {result.scenario}"
    if result.file:
        packaged = result.source.startswith("<")
        head += f" ({'packaged: ' if packaged else 'file '}{result.file})"
    head += f" on platform {result.platform}"
    head += f" ({params})" if params else ""
    head += f", {result.burst}-byte bursts, {result.elapsed:.2f} s"
    if width is not None and len(head) > width:
        head = textwrap.fill(head, width, break_long_words=False, break_on_hyphens=False)
    tables = [t.to_text(width, colour=colour) for t in result_tables(result, width)]
    return "\n\n".join([head, *tables])
