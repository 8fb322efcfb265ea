"""The mapping graph of a system, as data, text, DOT, SVG and networkx.

The seed draws VCMM state as a graph: bus masters are associated with VCMs, VCMs hold
reservations, reservations are backed by physical allocations that come from memory
targets (000 L68-96).  The triple mapping is the picture that matters: one allocation,
three reservations, three kinds of bus master.  This module builds that graph from the
public objects of a :class:`~vcmm.system.System` (``vcms``, ``reservations``,
``associations``, ``physmems`` and ``phys_views``, the platform's linear map) and
renders it.

Page sizes on reservation edges are decoded from the page tables in simulated memory,
so the graph shows what the hardware walks, not what was asked for.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vcmm.core import Reservation, Vcm, VcmKind
from vcmm.errors import InvalidArgumentError, VcmmError
from vcmm.sizes import format_size
from vcmm.system import System

#: Formats graphviz's ``dot`` draws for us.
DRAWN_FORMATS = ("svg", "png", "pdf")
#: Kernel VAs are sign-extended: the CPU's table decodes VA[47:0].
_KERNEL_TOP = 0xFFFF << 48
_VA48 = (1 << 48) - 1


@dataclass
class Node:
    id: str
    kind: str
    label: str
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Edge:
    source: str
    target: str
    kind: str
    label: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MappingGraphData:
    """Nodes and edges of a system's mapping state."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise InvalidArgumentError(f"mapping graph has no node {node_id!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [
                {"id": n.id, "kind": n.kind, "label": n.label, **n.attrs} for n in self.nodes
            ],
            "edges": [
                {
                    "source": e.source,
                    "target": e.target,
                    "kind": e.kind,
                    "label": e.label,
                    **e.attrs,
                }
                for e in self.edges
            ],
        }


def page_histogram(system: System, res: Reservation) -> dict[int, int]:
    """Page size -> leaf entries mapping ``res``, decoded from the tables in memory.

    Empty for one-to-one reservations (no table) and unplaced ones.
    """
    if res.range is None or res.vcm.kind is VcmKind.ONE_TO_ONE:
        return {}
    span = res.range
    if res.vcm.kind is VcmKind.VMM:
        table = system.cpu.kernel_table
        entries = ((e.va | _KERNEL_TOP, e.size) for e in table.mappings())
    else:
        if res.vcm.table is None:
            return {}
        entries = ((e.va, e.size) for e in res.vcm.table.mappings())
    counts: Counter[int] = Counter(size for va, size in entries if span.start <= va < span.end)
    return dict(sorted(counts.items(), reverse=True))


def _pages_text(pages: dict[int, int]) -> str:
    return " + ".join(f"{n} x {format_size(s)}" for s, n in pages.items())


def _device_path(system: System, device: Any) -> str:
    if device is system.cpu:
        return "cpu"
    return "iommu" if hasattr(device, "ctx") else "physical"


def _named(name: str, labels: Mapping[str, str], kind: str = "") -> str:
    """``frame (physmem1)`` when the caller named the object, else ``physmem1``;
    with ``kind``: ``mdp's IOVA space (vcm2, iommu)`` or ``vcm2 (iommu)``."""
    label = labels.get(name)
    if label:
        return f"{label} ({name}, {kind})" if kind else f"{label} ({name})"
    return f"{name} ({kind})" if kind else name


def _vcm_label(vcm: Vcm, labels: Mapping[str, str]) -> str:
    # A one-to-one VCM's range is physical memory (seed 000 L176-178): say so.
    space = "phys " if vcm.kind is VcmKind.ONE_TO_ONE else ""
    return f"{_named(vcm.name, labels, vcm.kind.value)} {space}{vcm.range}"


def dev_addrs(res: Reservation) -> dict[str, int]:
    """Device name -> the address that device uses for ``res`` (its ``dev_addr``).

    For an IOMMU or VMM VCM every device uses the reservation's virtual address; for a
    one-to-one VCM each device sees the physical memory at its own bus address.
    """
    out: dict[str, int] = {}
    for assoc in res.vcm.associations:
        try:
            out[assoc.device.name] = res.dev_addr_for(assoc.device)
        except VcmmError:
            continue
    return out


def address_text(res: Reservation, addrs: Mapping[str, int]) -> str:
    """Where a reservation is, as its devices see it (the seed's ``dev_addr``), with the
    physical address added, labelled, where that differs: ``0x68000000 (phys
    0xa8000000)``.  Empty for a reservation that has no address yet."""
    if res.addr is None:
        return ""
    distinct = sorted(set(addrs.values()))
    if not distinct:
        shown = f"{res.addr:#x}"
    elif len(distinct) == 1:
        shown = f"{distinct[0]:#x}"
    else:
        shown = ", ".join(f"{dev} {addr:#x}" for dev, addr in sorted(addrs.items()))
    if res.vcm.kind is VcmKind.ONE_TO_ONE and distinct != [res.addr]:
        shown += f" (phys {res.addr:#x})"
    return shown


def build_graph(system: System, labels: Mapping[str, str] | None = None) -> MappingGraphData:
    """The graph of ``system``'s VCMs, reservations, allocations and their users.

    ``labels`` gives objects people's names (``{"physmem1": "frame"}``, as a scenario
    run's :attr:`~vcmm.workload.runner.ScenarioResult.labels`); nodes then read
    ``frame (physmem1)``.
    """
    if not isinstance(system, System):
        raise InvalidArgumentError(f"build_graph needs a System, got {type(system).__name__}")
    builder = _Builder(system, labels or {})
    # Allocations first, then views and wraps (memory described for backing): a view
    # points at the allocation it is a window of, a wrap names the pages' owner.
    for physmem in [*system.physmems, *system.phys_views]:
        builder.physmem(physmem)
    for vcm in system.vcms:
        builder.vcm(vcm)
    return builder.graph


class _Builder:
    """Adds a system's objects to a :class:`MappingGraphData`, each node once."""

    def __init__(self, system: System, names: Mapping[str, str]) -> None:
        self.system = system
        self.names = names
        self.graph = MappingGraphData()
        self._devices: set[str] = set()
        self._targets: set[str] = set()

    def device(self, device: Any) -> str:
        node_id = f"device:{device.name}"
        if device.name in self._devices:
            return node_id
        self._devices.add(device.name)
        path = _device_path(self.system, device)
        attrs: dict[str, Any] = {"name": device.name, "path": path}
        ctx = getattr(device, "ctx", None)
        if ctx is not None:
            attrs |= {"smmu": ctx.smmu.name, "context": ctx.name}
        label = device.name + (
            f" [{ctx.smmu.name}/{ctx.name}]" if ctx is not None else f" [{path}]"
        )
        self.graph.nodes.append(Node(node_id, "device", label, attrs))
        return node_id

    def physmem(self, physmem: Any) -> None:
        g, node_id = self.graph, f"physmem:{physmem.name}"
        if physmem.parent is not None:
            origin = f"view of {physmem.parent.name}"
        elif physmem.owner is not None:
            origin = f"wrap of {physmem.owner}'s pages"
        else:
            origin = f"from {physmem.target}"
        if physmem.holder is not None:
            origin += f", held by {physmem.holder}"
        attrs = {
            "physmem_kind": physmem.kind,
            "target": physmem.target,
            "holder": physmem.holder,
            "size": physmem.size,
            "chunks": [{"pa": pa, "size": size} for pa, size in physmem.chunks],
        }
        label = f"{_named(physmem.name, self.names)} {format_size(physmem.size)} {origin}"
        g.nodes.append(Node(node_id, "physmem", label, attrs))
        if physmem.parent is not None:
            g.edges.append(Edge(node_id, f"physmem:{physmem.parent.name}", "view-of"))
        elif physmem.owner is None:
            if physmem.target not in self._targets:
                self._targets.add(physmem.target)
                g.nodes.append(
                    Node(f"target:{physmem.target}", "target", f"target {physmem.target}")
                )
            g.edges.append(Edge(node_id, f"target:{physmem.target}", "allocated-from"))
        if any(
            w.overlaps(c) for w in self.system.spec.cpu.linear_map for c in physmem.chunk_ranges
        ):
            cpu = self.device(self.system.cpu)
            g.edges.append(Edge(cpu, node_id, "linear-map", "kernel linear map"))

    def vcm(self, vcm: Vcm) -> None:
        vcm_id = f"vcm:{vcm.name}"
        attrs = {
            "vcm_kind": vcm.kind.value,
            "start": vcm.start,
            "len": vcm.len,
            "shown": _named(vcm.name, self.names, vcm.kind.value),
        }
        self.graph.nodes.append(Node(vcm_id, "vcm", _vcm_label(vcm, self.names), attrs))
        for assoc in vcm.associations:
            dev = self.device(assoc.device)
            state = "active" if assoc.active else "inactive"
            self.graph.edges.append(
                Edge(dev, vcm_id, "association", f"{assoc.name} {state}", {"active": assoc.active})
            )
        for res in vcm.reservations:
            self.reservation(vcm_id, res)

    def reservation(self, vcm_id: str, res: Reservation) -> None:
        g, res_id = self.graph, f"res:{res.name}"
        addrs = dev_addrs(res)
        where = address_text(res, addrs)
        attrs = {
            "addr": res.addr,
            "len": res.len,
            "attr": str(res.attr),
            "dev_addrs": addrs,
            "shown": _named(res.name, self.names),
        }
        label = f"{_named(res.name, self.names)} {format_size(res.len)}"
        g.nodes.append(Node(res_id, "reservation", label + (f" @ {where}" if where else ""), attrs))
        g.edges.append(Edge(vcm_id, res_id, "reservation"))
        if res.physmem is None:
            return
        pages = page_histogram(self.system, res)
        g.edges.append(
            Edge(
                res_id,
                f"physmem:{res.physmem.name}",
                "backing",
                _pages_text(pages) if pages else res.vcm.kind.value,
                {"pages": {str(k): v for k, v in pages.items()}, "dev_addrs": addrs},
            )
        )


# -- renderings ------------------------------------------------------------------------------


def to_networkx(data: MappingGraphData) -> Any:
    """A ``networkx.MultiDiGraph`` with the nodes' and edges' attributes."""
    import networkx as nx

    graph = nx.MultiDiGraph()
    for n in data.nodes:
        graph.add_node(n.id, kind=n.kind, label=n.label, **n.attrs)
    for e in data.edges:
        graph.add_edge(e.source, e.target, kind=e.kind, label=e.label, **e.attrs)
    return graph


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


def to_dot(data: MappingGraphData, name: str = "vcmm") -> str:
    """Graphviz DOT text: bus masters on the left, memory on the right."""
    out = [
        f"digraph {_dot_quote(name)} {{",
        "  rankdir=LR;",
        '  node [fontname="Helvetica", fontsize=10, style=filled];',
        '  edge [fontname="Helvetica", fontsize=9];',
    ]
    for n in data.nodes:
        out.append(
            f"  {_dot_quote(n.id)} [label={_dot_quote(n.label)}, "
            f"shape={_SHAPES.get(n.kind, 'box')}, fillcolor={_dot_quote(_COLOURS.get(n.kind, '#ffffff'))}];"
        )
    for e in data.edges:
        style = ", style=dashed" if e.kind in ("linear-map", "allocated-from") else ""
        out.append(
            f"  {_dot_quote(e.source)} -> {_dot_quote(e.target)} [label={_dot_quote(e.label)}{style}];"
        )
    out.append("}")
    return "\n".join(out) + "\n"


def to_json(data: MappingGraphData) -> str:
    """The compact graph of :func:`build_graph` as JSON."""
    return json.dumps(data.to_dict(), indent=2)


def graph_json(system: System) -> dict[str, Any]:
    """The core's full export (``system.graph_data()``: devices, VCMs, reservations,
    allocations, chunks, every mapping edge), with each reservation node given the page
    sizes decoded from its table (``pages``, size in bytes -> entries) and the address
    each associated device uses for it (``dev_addrs``).  Falls back to the compact graph
    on a core without the export."""
    if not hasattr(system, "graph_data"):
        return build_graph(system).to_dict()
    data: dict[str, Any] = system.graph_data()
    reservations = {res.name: res for vcm in system.vcms for res in vcm.reservations}
    for node in data["nodes"]:
        res = reservations.get(node.get("label", "")) if node.get("type") == "reservation" else None
        if res is None:
            continue
        node["pages"] = {str(k): v for k, v in page_histogram(system, res).items()}
        node["dev_addrs"] = dev_addrs(res)
    return data


def to_text(data: MappingGraphData) -> str:
    """The graph as the demo prints it: each physical allocation and every way it is
    reached (bus master -> VCM -> reservation at its device address, page sizes)."""
    nodes = {n.id: n for n in data.nodes}
    lines: list[str] = []
    into: dict[str, list[Edge]] = {}
    for e in data.edges:
        into.setdefault(e.target, []).append(e)
    used_vcms: set[str] = set()
    for n in data.nodes:
        if n.kind != "physmem":
            continue
        chunks = n.attrs["chunks"]
        where = ", ".join(f"{c['pa']:#x}+{format_size(c['size'])}" for c in chunks[:4])
        if len(chunks) > 4:
            where += f", ... ({len(chunks)} chunks)"
        lines.append(f"{n.label}: {where}")
        routes: list[str] = []
        for e in into.get(n.id, []):
            if e.kind == "linear-map":
                routes.append(
                    f"{nodes[e.source].attrs['name']:<14} kernel linear map (cacheable alias)"
                )
                continue
            if e.kind != "backing":
                continue
            res = nodes[e.source]
            vcm_edges = [v for v in into.get(res.id, []) if v.kind == "reservation"]
            vcm = nodes[vcm_edges[0].source] if vcm_edges else None
            if vcm is not None:
                used_vcms.add(vcm.id)
            users: list[Edge | None] = [
                a for a in (into.get(vcm.id, []) if vcm else []) if a.kind == "association"
            ]
            pages = f"  [{e.label}]" if e.attrs.get("pages") else ""
            for assoc in users or [None]:
                dev_name = nodes[assoc.source].attrs["name"] if assoc else "(no device)"
                addr = e.attrs["dev_addrs"].get(dev_name)
                at = f" at {addr:#x}" if addr is not None else ""
                phys = res.attrs["addr"]
                if vcm and vcm.attrs["vcm_kind"] == "one-to-one" and addr not in (None, phys):
                    at += f" (phys {phys:#x})"
                vcm_text = vcm.attrs["shown"] if vcm else "?"
                routes.append(f"{dev_name:<14} -> {vcm_text} -> {res.attrs['shown']}{at}{pages}")
        for i, route in enumerate(routes):
            lines.append(("  `- " if i == len(routes) - 1 else "  |- ") + route)
    idle = [n for n in data.nodes if n.kind == "vcm" and n.id not in used_vcms]
    for n in idle:
        names = [
            nodes[e.source].attrs["name"] for e in into.get(n.id, []) if e.kind == "association"
        ]
        lines.append(f"{n.label}: no backed reservation; devices: {', '.join(names) or 'none'}")
    return "\n".join(lines) if lines else "(no VCMs and no physical allocations)"


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
