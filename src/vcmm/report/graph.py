"""The mapping graph drawn for people: text, DOT and graphviz drawings of the export.

The graph itself is the core's (:func:`vcmm.core.export.graph_data`, one schema,
``vcmm graph --format json`` prints it).  This module renders the compact picture
the seed draws (000 L68-96): bus masters are associated with VCMs, VCMs hold
reservations, reservations are backed by physical allocations that come from memory
targets.  The triple mapping is the picture that matters: one allocation, three
reservations, three kinds of bus master.  Chunks and per-page mapping edges stay in
the data; page sizes on backing edges are the ones the export decoded from the page
tables in simulated memory.

Every function takes the export's data and optional ``names``: people's names of
objects (``{"physmem1": "frame"}``, as a scenario run's
:attr:`~vcmm.workload.runner.ScenarioResult.labels`), so nodes read ``frame (physmem1)``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vcmm.core.export import GraphData
from vcmm.errors import InvalidArgumentError, VcmmError
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

#: Formats graphviz's ``dot`` draws for us.
DRAWN_FORMATS = ("svg", "png", "pdf")

Node = dict[str, Any]
_Add = Callable[[str, str, str], None]


def _name(node: Node) -> str:
    """The object's own name: the id after its type (``vcm:vcm2`` -> ``vcm2``)."""
    return str(node["id"]).split(":", 1)[1]


def _named(name: str, names: Mapping[str, str], kind: str = "") -> str:
    """``frame (physmem1)`` when the caller named the object, else ``physmem1``;
    with ``kind``: ``mdp's IOVA space (vcm2, iommu)`` or ``vcm2 (iommu)``."""
    label = names.get(name)
    if label:
        return f"{label} ({name}, {kind})" if kind else f"{label} ({name})"
    return f"{name} ({kind})" if kind else name


def _pages_text(pages: Mapping[str, int]) -> str:
    return " + ".join(f"{n} x {format_size(int(s))}" for s, n in pages.items())


def address_text(res: Node, vcm_kind: str) -> str:
    """Where a reservation node is, as its devices see it (the seed's ``dev_addr``),
    with the physical address added, labelled, where that differs: ``0x68000000 (phys
    0xa8000000)``.  Empty for a reservation that has no address yet."""
    addr, addrs = res["addr"], res["dev_addrs"]
    if addr is None:
        return ""
    distinct = sorted(set(addrs.values()))
    if not distinct:
        shown = f"{addr:#x}"
    elif len(distinct) == 1:
        shown = f"{distinct[0]:#x}"
    else:
        shown = ", ".join(f"{dev} {a:#x}" for dev, a in sorted(addrs.items()))
    if vcm_kind == "one-to-one" and distinct != [addr]:
        shown += f" (phys {addr:#x})"
    return shown


@dataclass(frozen=True, slots=True)
class Drawn:
    """One node or edge of the compact picture: its id(s), kind and label."""

    source: str
    target: str
    kind: str
    label: str


def _checked(who: str, data: object, names: object) -> tuple[GraphData, Mapping[str, str]]:
    """The export and the names a rendering was given, or an error saying what is wrong."""
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("nodes"), list)
        or not isinstance(data.get("edges"), list)
    ):
        raise InvalidArgumentError(
            f"{who} needs the graph export's {{'nodes': [...], 'edges': [...]}} "
            f"(system.graph_data()), got {type(data).__name__}"
        )
    if names is not None and not isinstance(names, Mapping):
        raise InvalidArgumentError(f"{who}: names {names!r} is not a mapping of object names")
    return data, names or {}


class _Picture:
    """The export indexed for drawing: which objects the compact graph shows, their
    labels, and its edges in the direction people read (bus master to memory)."""

    def __init__(self, data: GraphData, names: Mapping[str, str]) -> None:
        self.names = names
        self.node = {n["id"]: n for n in data["nodes"]}
        self.order = {n["id"]: i for i, n in enumerate(data["nodes"])}
        self.users: dict[str, list[dict[str, Any]]] = {}
        self.backed_by: dict[str, str] = {}
        self.backing: dict[str, list[str]] = {}
        self.reservations: dict[str, list[str]] = {}
        for n in data["nodes"]:
            if n["type"] == "reservation":
                self.reservations.setdefault(f"vcm:{n['vcm']}", []).append(n["id"])
        for e in data["edges"]:
            if e["type"] == "association":
                self.users.setdefault(e["target"], []).append(e)
            elif e["type"] == "backs":
                self.backed_by[e["target"]] = e["source"]
                self.backing.setdefault(e["source"], []).append(e["target"])
        for reservations in self.backing.values():
            reservations.sort(key=self.order.__getitem__)
        # Allocations first (with their targets), then the VCMs that reach them.
        self.nodes = [n for n in data["nodes"] if n["type"] == "physmem"]
        self.nodes += [n for n in data["nodes"] if n["type"] == "vcm"]

    def vcm_of(self, res: Node) -> Node:
        return self.node[f"vcm:{res['vcm']}"]

    def device_label(self, node_id: str) -> str:
        dev = self.node[node_id]
        where = f"{dev['smmu']}/{dev['context']}" if dev["smmu"] else dev["path"]
        return f"{dev['label']} [{where}]"

    def physmem_label(self, p: Node) -> str:
        if p["parent"] is not None:
            origin = f"view of {p['parent']}"
        elif p["owner"] is not None:
            origin = f"wrap of {p['owner']}'s pages"
        else:
            origin = f"from {p['target']}"
        if p["holder"] is not None:
            origin += f", held by {p['holder']}"
        return f"{_named(p['label'], self.names)} {format_size(p['size'])} {origin}"

    def vcm_label(self, v: Node) -> str:
        # A one-to-one VCM's range is physical memory (seed 000 L176-178): say so.
        space = "phys " if v["kind"] == "one-to-one" else ""
        span = AddressRange(v["start"], v["len"])
        return f"{_named(_name(v), self.names, v['kind'])} {space}{span}"

    def res_label(self, r: Node) -> str:
        where = address_text(r, self.vcm_of(r)["kind"])
        text = f"{_named(r['label'], self.names)} {format_size(r['len'])}"
        return text + (f" @ {where}" if where else "")

    def drawn(self) -> tuple[list[Drawn], list[Drawn]]:
        """Nodes (``source`` is the id) and edges of the compact graph, in drawing order."""
        nodes: list[Drawn] = []
        edges: list[Drawn] = []
        seen: set[str] = set()

        def add(node_id: str, kind: str, label: str) -> None:
            if node_id not in seen:
                seen.add(node_id)
                nodes.append(Drawn(node_id, node_id, kind, label))

        for n in self.nodes:
            if n["type"] == "physmem":
                self._draw_physmem(n, add, edges)
            else:
                self._draw_vcm(n, add, edges)
        return nodes, edges

    def _draw_physmem(self, p: Node, add: _Add, edges: list[Drawn]) -> None:
        add(p["id"], "physmem", self.physmem_label(p))
        if p["parent"] is not None:
            edges.append(Drawn(p["id"], f"physmem:{p['parent']}", "view-of", ""))
        elif p["owner"] is None:
            add(f"target:{p['target']}", "target", f"target {p['target']}")
            edges.append(Drawn(p["id"], f"target:{p['target']}", "allocated-from", ""))
        if p["linear_mapped"]:
            add("device:cpu", "device", self.device_label("device:cpu"))
            edges.append(Drawn("device:cpu", p["id"], "linear-map", "kernel linear map"))

    def _draw_vcm(self, v: Node, add: _Add, edges: list[Drawn]) -> None:
        add(v["id"], "vcm", self.vcm_label(v))
        for a in self.users.get(v["id"], []):
            add(a["source"], "device", self.device_label(a["source"]))
            state = "active" if a["active"] else "inactive"
            edges.append(Drawn(a["source"], v["id"], "association", f"{a['name']} {state}"))
        for r in (self.node[e] for e in self.reservations.get(v["id"], [])):
            add(r["id"], "reservation", self.res_label(r))
            edges.append(Drawn(v["id"], r["id"], "reservation", ""))
            physmem = self.backed_by.get(r["id"])
            if physmem is not None:
                label = _pages_text(r["pages"]) if r["pages"] else v["kind"]
                edges.append(Drawn(r["id"], physmem, "backing", label))


# -- renderings ------------------------------------------------------------------------------

_SHAPES = {
    "device": "box",
    "vcm": "ellipse",
    "reservation": "note",
    "physmem": "box3d",
    "target": "cylinder",
}
_COLOURS = {
    "device": "#dbe9f6",
    "vcm": "#e6f4e2",
    "reservation": "#fff4d6",
    "physmem": "#f6dede",
    "target": "#eeeeee",
}


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def to_dot(data: GraphData, name: str = "vcmm", names: Mapping[str, str] | None = None) -> str:
    """Graphviz DOT text of the compact graph: bus masters on the left, memory on the
    right (node ids are the export's)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"to_dot: graph name {name!r} is not a string")
    nodes, edges = _Picture(*_checked("to_dot", data, names)).drawn()
    out = [
        f"digraph {_dot_quote(name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10, style=filled];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in nodes:
        shape, colour = _SHAPES[n.kind], _dot_quote(_COLOURS[n.kind])
        out.append(
            f"  {_dot_quote(n.source)} [label={_dot_quote(n.label)}, shape={shape}, "
            f"fillcolor={colour}];"
        )
    for e in edges:
        style = ", style=dashed" if e.kind in ("linear-map", "allocated-from") else ""
        out.append(
            f"  {_dot_quote(e.source)} -> {_dot_quote(e.target)} "
            f"[label={_dot_quote(e.label)}{style}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def to_text(data: GraphData, names: Mapping[str, str] | None = None) -> str:
    """The graph as the demo prints it: each physical allocation and every way it is
    reached (bus master -> VCM -> reservation at its device address, page sizes)."""
    picture = _Picture(*_checked("to_text", data, names))
    lines: list[str] = []
    used: set[str] = set()
    for p in (n for n in picture.nodes if n["type"] == "physmem"):
        ranges = p["ranges"]
        where = ", ".join(f"{pa:#x}+{format_size(size)}" for pa, size in ranges[:4])
        if len(ranges) > 4:
            where += f", ... ({len(ranges)} chunks)"
        lines.append(f"{picture.physmem_label(p)}: {where}")
        routes = [f"{'cpu':<14} kernel linear map (cacheable alias)"] if p["linear_mapped"] else []
        for res_id in picture.backing.get(p["id"], []):
            routes += _routes(picture, picture.node[res_id], used)
        for i, route in enumerate(routes):
            lines.append(("  `- " if i == len(routes) - 1 else "  |- ") + route)
    for v in (n for n in picture.nodes if n["type"] == "vcm" and n["id"] not in used):
        names_of = [picture.node[a["source"]]["label"] for a in picture.users.get(v["id"], [])]
        lines.append(
            f"{picture.vcm_label(v)}: no backed reservation; devices: "
            f"{', '.join(names_of) or 'none'}"
        )
    return "\n".join(lines) if lines else "(no VCMs and no physical allocations)"


def _routes(picture: _Picture, res: Node, used: set[str]) -> list[str]:
    """``device -> VCM -> reservation at address [pages]``, one per device of the VCM."""
    vcm = picture.vcm_of(res)
    used.add(vcm["id"])
    vcm_text = _named(res["vcm"], picture.names, vcm["kind"])
    res_text = _named(res["label"], picture.names)
    pages = f"  [{_pages_text(res['pages'])}]" if res["pages"] else ""
    out = []
    devices = [picture.node[a["source"]]["label"] for a in picture.users.get(vcm["id"], [])]
    for device in devices or ["(no device)"]:
        addr = res["dev_addrs"].get(device)
        at = f" at {addr:#x}" if addr is not None else ""
        if vcm["kind"] == "one-to-one" and addr not in (None, res["addr"]):
            at += f" (phys {res['addr']:#x})"
        out.append(f"{device:<14} -> {vcm_text} -> {res_text}{at}{pages}")
    return out


def dot_available() -> bool:
    return shutil.which("dot") is not None


def render_drawing(dot_text: str, path: str | Path, fmt: str = "svg") -> bool:
    """Run graphviz's ``dot -T<fmt>`` (``svg``, ``png``, ``pdf``) to draw the graph into
    ``path``; ``False`` when graphviz is not installed."""
    if fmt not in DRAWN_FORMATS:
        raise InvalidArgumentError(
            f"graphviz format {fmt!r} is not one of {', '.join(DRAWN_FORMATS)}"
        )
    exe = shutil.which("dot")
    if exe is None:
        return False
    proc = subprocess.run(
        [exe, f"-T{fmt}", "-o", str(path)],
        input=dot_text,
        text=True,
        capture_output=True,
        check=False,
    )
    if proc.returncode != 0:
        raise VcmmError(f"graphviz dot failed: {proc.stderr.strip().splitlines()[-1:]}")
    return True


def render_svg(dot_text: str, path: str | Path) -> bool:
    """Draw an SVG with graphviz; ``False`` when graphviz is not installed."""
    return render_drawing(dot_text, path, "svg")
