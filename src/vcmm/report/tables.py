"""Text and HTML tables of run results: one layout, two renderings.

A :class:`Table` is a title, headers and rows of cells; numbers are right-aligned and
printed with thousands separators so that a column of miss counts can be compared at
a glance.  The same tables feed ``vcmm run`` (text), ``vcmm report`` (HTML) and the
demo, so a number shown anywhere comes from one place.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field

from vcmm.errors import InvalidArgumentError
from vcmm.sizes import format_size
from vcmm.workload.runner import ScenarioResult

Cell = str | int | float | None


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

    def to_text(self) -> str:
        cells = [[fmt_cell(c) for c in row] for row in self.rows]
        widths = [len(h) for h in self.headers]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        right = [self._numeric(i) for i in range(len(self.headers))]

        def line(values: Sequence[str]) -> str:
            parts = [
                v.rjust(w) if r else v.ljust(w)
                for v, w, r in zip(values, widths, right, strict=True)
            ]
            return "  ".join(parts).rstrip()

        out = [self.title] if self.title else []
        out.append(line(self.headers))
        out.append("  ".join("-" * w for w in widths))
        out.extend(line(row) for row in cells)
        if self.note:
            out.append(self.note)
        return "\n".join(out)

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


def steps_table(result: ScenarioResult) -> Table:
    frames = max((len(s.frames) for s in result.steps), default=0)
    t = Table(
        "IOTLB misses per frame",
        ["step", "device", "access", "buffer", "pattern", "bursts/frame"]
        + [f"frame {i}" for i in range(frames)]
        + ["notes"],
    )
    for s in result.steps:
        misses: list[Cell] = [f.misses for f in s.frames]
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


def result_tables(result: ScenarioResult) -> list[Table]:
    return [
        buffers_table(result),
        steps_table(result),
        contexts_table(result),
        devices_table(result),
        totals_table(result),
    ]


def render_result(result: ScenarioResult) -> str:
    """The human-readable report of ``vcmm run``."""
    params = " ".join(f"{k}={v}" for k, v in result.params.items())
    head = f"scenario {result.scenario}"
    if result.file:
        packaged = result.source.startswith("<")
        head += f" ({'packaged: ' if packaged else 'file '}{result.file})"
    head += f" on platform {result.platform}"
    head += f" ({params})" if params else ""
    head += f", {result.burst}-byte bursts, {result.elapsed:.2f} s"
    return "\n\n".join([head] + [t.to_text() for t in result_tables(result)])
