"""The mapping graph as data: the one schema every rendering of it reads.

The seed describes map management as a graph problem (000 L68-96); this module lets a
caller see that graph.  :func:`graph_data` walks a :class:`~vcmm.core.manager.Vcmm`
and returns only str/int/bool/None/list/dict values, so ``json.dumps`` takes it as
is, ``vcmm graph --format json`` prints it, and :mod:`vcmm.report.graph` draws its
text, DOT and SVG forms from it without touching vcmm's objects.  The schema is
declared once, as data: :data:`NODE_FIELDS` and :data:`EDGE_FIELDS` (documented in
docs/CLI.md, "The graph schema").

Node ids are ``"<type>:<name>"``; every node has ``id``, ``type`` and ``label`` and the
fields of its type.  Every edge has ``source``, ``target`` and ``type`` and the fields
of its type.  Page sizes (``pages``) are decoded from the page tables in simulated
memory, so the graph shows what the hardware walks, not what was asked for.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final

from vcmm.core.graph import Mapping
from vcmm.core.objects import PhysMem, Reservation, Vcm, VcmKind
from vcmm.errors import InvalidArgumentError, VcmmError
from vcmm.hw.bus import BusMaster, SmmuDevice

if TYPE_CHECKING:
    from vcmm.core.manager import Vcmm
    from vcmm.ranges import AddressRange

#: Node type -> its fields besides ``id``, ``type`` and ``label``, in output order.
NODE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "device": ("path", "coherent", "smmu", "context"),
    "linear_map": ("va", "pa", "size"),
    "target": ("linear_mapped", "free_bytes", "total_bytes"),
    "vcm": ("kind", "start", "len", "table_root", "activations"),
    "reservation": ("vcm", "addr", "len", "attr", "backed", "pages", "dev_addrs"),
    "physmem": (
        "kind", "target", "len", "size", "chunks", "ranges", "linear_mapped",
        "contiguous", "alignment", "block_sizes", "parent", "owner", "holder",
    ),
    "chunk": ("pa", "size", "physmem", "linear_mapped", "spaces", "shareable", "shared_bytes"),
}  # fmt: skip
#: Edge type -> its fields besides ``source``, ``target`` and ``type``, in output order.
EDGE_FIELDS: Final[dict[str, tuple[str, ...]]] = {
    "association": ("name", "active", "attr", "half"),
    "linear_map": (),
    "reserves": (),
    "allocates": (),
    "views": (),
    "backs": (),
    "contains": ("index",),
    "mapping": (
        "space", "va", "pa", "size", "memtype", "shareable", "read", "write", "exec", "user",
    ),
}  # fmt: skip
#: Kernel VAs are sign-extended: the CPU's table decodes VA[47:0].
_KERNEL_TOP: Final = 0xFFFF << 48

GraphData = dict[str, list[dict[str, Any]]]


def _node(node_type: str, node_id: str, label: str, /, **fields: Any) -> dict[str, Any]:
    """A node of ``node_type`` with exactly the fields :data:`NODE_FIELDS` declares
    (a missing one is a ``KeyError``, an extra one an ``AssertionError``)."""
    names = NODE_FIELDS[node_type]
    node = {"id": node_id, "type": node_type, "label": label} | {n: fields[n] for n in names}
    if len(fields) != len(names):
        raise AssertionError(f"{node_type} node fields {sorted(fields)} are not {names}")
    return node


def _edge(edge_type: str, source: str, target: str, /, **fields: Any) -> dict[str, Any]:
    """An edge of ``edge_type`` with exactly the fields :data:`EDGE_FIELDS` declares."""
    names = EDGE_FIELDS[edge_type]
    edge = {"source": source, "target": target, "type": edge_type} | {n: fields[n] for n in names}
    if len(fields) != len(names):
        raise AssertionError(f"{edge_type} edge fields {sorted(fields)} are not {names}")
    return edge


def chunk_id(chunk: AddressRange) -> str:
    return f"chunk:{chunk.start:#x}+{chunk.size:#x}"


def _mapping_edge(source: str, m: Mapping, chunk: AddressRange) -> dict[str, Any]:
    """A ``mapping`` edge.  There is one per page-table piece, so it is written out
    literally rather than through :func:`_edge`; the schema test holds it to
    :data:`EDGE_FIELDS` all the same."""
    a = m.attrs
    return {
        "source": source,
        "target": chunk_id(chunk),
        "type": "mapping",
        "space": m.space,
        "va": m.va,
        "pa": m.phys.start,
        "size": m.phys.size,
        "memtype": a.memtype.value,
        "shareable": a.shareable,
        "read": a.read,
        "write": a.write,
        "exec": a.exec,
        "user": a.user,
    }


def page_histogram(vcmm: Vcmm, res: Reservation) -> dict[int, int]:
    """Page size -> leaf entries mapping ``res``, decoded from the tables in memory
    (largest first); empty for one-to-one reservations and unplaced ones."""
    if not isinstance(res, Reservation):
        raise InvalidArgumentError(f"page_histogram needs a Reservation, got {res!r}")
    return _PageCounter(vcmm).of(res)


class _PageCounter:
    """Leaf entries of each table, decoded once, counted per reservation range."""

    def __init__(self, vcmm: Vcmm) -> None:
        self.vcmm = vcmm
        self._leaves: dict[int, tuple[list[int], list[int]]] = {}

    def _table_leaves(self, vcm: Vcm) -> tuple[list[int], list[int]]:
        key = -1 if vcm.kind is VcmKind.VMM else id(vcm.table)
        if key not in self._leaves:
            if vcm.kind is VcmKind.VMM:
                vas, sizes = self.vcmm.cpu.kernel_table.leaf_spans()
                vas = [va | _KERNEL_TOP for va in vas]  # the same top bits keep the order
            else:
                assert vcm.table is not None
                vas, sizes = vcm.table.leaf_spans()
            self._leaves[key] = (vas, sizes)
        return self._leaves[key]

    def of(self, res: Reservation) -> dict[int, int]:
        span, vcm = res.range, res.vcm
        if span is None or vcm.kind is VcmKind.ONE_TO_ONE:
            return {}
        if vcm.kind is not VcmKind.VMM and vcm.table is None:
            return {}
        vas, sizes = self._table_leaves(vcm)
        lo, hi = bisect.bisect_left(vas, span.start), bisect.bisect_left(vas, span.end)
        counts = Counter(sizes[lo:hi])
        return dict(sorted(counts.items(), reverse=True))


def dev_addrs(res: Reservation) -> dict[str, int]:
    """Device name -> the address that device uses for ``res`` (its ``dev_addr``).

    For an IOMMU or VMM VCM every device uses the reservation's virtual address; for a
    one-to-one VCM each device sees the physical memory at its own bus address.
    """
    if not isinstance(res, Reservation):
        raise InvalidArgumentError(f"dev_addrs needs a Reservation, got {res!r}")
    out: dict[str, int] = {}
    for assoc in res.vcm.associations:
        try:
            out[assoc.device.name] = res.dev_addr_for(assoc.device)
        except VcmmError:
            continue
    return out


class _Export:
    """Builds :func:`graph_data`'s nodes and edges, one object kind per method."""

    def __init__(self, vcmm: Vcmm, *, chunks: bool) -> None:
        self.vcmm = vcmm
        self.with_chunks = chunks
        self.graph = vcmm.graph
        self.pages = _PageCounter(vcmm)
        self.nodes: list[dict[str, Any]] = []
        self.edges: list[dict[str, Any]] = []
        self._chunks: set[str] = set()

    def devices(self) -> None:
        for name, dev in sorted(self.vcmm.devices.items()):
            ctx = dev.ctx if isinstance(dev, SmmuDevice) else None
            self.nodes.append(
                _node(
                    "device",
                    f"device:{name}",
                    name,
                    path=dev.path.value,
                    coherent=dev.coherent if isinstance(dev, BusMaster) else dev is self.vcmm.cpu,
                    smmu=ctx.smmu.name if ctx is not None else None,
                    context=ctx.name if ctx is not None else None,
                )
            )

    def linear_map(self) -> None:
        for i, lm in enumerate(self.graph.linear_map):
            node_id = f"linear_map:{i}"
            label = f"linear map {lm.phys}"
            self.nodes.append(
                _node("linear_map", node_id, label, va=lm.va, pa=lm.phys.start, size=lm.phys.size)
            )
            self.edges.append(_edge("linear_map", "device:cpu", node_id))

    def targets(self) -> None:
        for name, target in sorted(self.vcmm.targets.items()):
            self.nodes.append(
                _node(
                    "target",
                    f"target:{name}",
                    name,
                    linear_mapped=bool(target.linear_mapped),
                    free_bytes=int(target.free_bytes),
                    total_bytes=int(target.total_bytes),
                )
            )

    def vcm(self, vcm: Vcm) -> None:
        vcm_id = f"vcm:{vcm.name}"
        self.nodes.append(
            _node(
                "vcm",
                vcm_id,
                f"{vcm.name} ({vcm.kind.value})",
                kind=vcm.kind.value,
                start=vcm.start,
                len=vcm.len,
                table_root=vcm.table.root if vcm.table is not None else None,
                activations=vcm.activations,
            )
        )
        for a in vcm.associations:
            self.edges.append(
                _edge(
                    "association",
                    f"device:{a.device.name}",
                    vcm_id,
                    name=a.name,
                    active=a.active,
                    attr=str(a.attr),
                    half=a.half,
                )
            )
        for r in vcm.reservations:
            self.reservation(vcm_id, r)

    def reservation(self, vcm_id: str, r: Reservation) -> None:
        res_id = f"reservation:{r.name}"
        pages = self.pages.of(r)
        fields = {"vcm": r.vcm.name, "addr": r.addr, "len": r.len, "attr": str(r.attr)}
        self.nodes.append(
            _node(
                "reservation",
                res_id,
                r.name,
                **fields,
                backed=r.backed,
                pages={str(size): n for size, n in pages.items()},
                dev_addrs=dev_addrs(r),
            )
        )
        self.edges.append(_edge("reserves", vcm_id, res_id))
        if not self.with_chunks:
            return
        for m in self.graph.of_reservation(r.id):
            assert m.chunk is not None
            self.edges.append(_mapping_edge(res_id, m, m.chunk))

    def physmem(self, p: PhysMem) -> None:
        pid = f"physmem:{p.name}"
        windows = [lm.phys for lm in self.graph.linear_map]
        self.nodes.append(
            _node(
                "physmem",
                pid,
                p.name,
                kind=p.kind,
                target=p.target,
                len=p.len,
                size=p.size,
                chunks=len(p.chunk_ranges),
                ranges=[[c.start, c.size] for c in p.chunk_ranges],
                linear_mapped=any(w.overlaps(c) for w in windows for c in p.chunk_ranges),
                contiguous=p.attr.contiguous,
                alignment=p.attr.alignment,
                block_sizes=list(p.attr.block_sizes) if p.attr.block_sizes else None,
                parent=p.parent.name if p.parent is not None else None,
                owner=p.owner,
                holder=p.holder,
            )
        )
        if p.parent is not None:
            self.edges.append(_edge("views", f"physmem:{p.parent.name}", pid))
        elif p.owner is None:
            self.edges.append(_edge("allocates", f"target:{p.target}", pid))
        for r in p.backing:
            self.edges.append(_edge("backs", pid, f"reservation:{r.name}"))
        # A view's pieces lie in its allocation's chunks.
        if p.parent is None and self.with_chunks:
            self.chunks(pid, p)

    def chunks(self, pid: str, p: PhysMem) -> None:
        graph = self.graph
        for index, chunk in enumerate(p.chunk_ranges):
            cid = chunk_id(chunk)
            self.edges.append(_edge("contains", pid, cid, index=index))
            if cid in self._chunks:
                continue
            self._chunks.add(cid)
            linear = graph.linear_alias(chunk)
            shared = sum(seg.size for seg, _, rule in graph.segments(chunk) if rule)
            self.nodes.append(
                _node(
                    "chunk",
                    cid,
                    f"{chunk}",
                    pa=chunk.start,
                    size=chunk.size,
                    physmem=p.name,
                    linear_mapped=linear is not None,
                    spaces=sorted(graph.spaces(chunk)),
                    shareable=shared == chunk.size,
                    shared_bytes=shared,
                )
            )
            if linear is not None:
                self.linear_alias(linear, chunk)

    def linear_alias(self, linear: Mapping, chunk: AddressRange) -> None:
        """The mapping edge from the kernel linear map to the piece of ``chunk`` it maps."""
        i = self.graph.linear_map.index(linear)
        piece = chunk & linear.phys
        assert piece is not None
        va = linear.va + (piece.start - linear.phys.start)
        lm = Mapping(linear.space, linear.owner, piece, va, linear.attrs)
        self.edges.append(_mapping_edge(f"linear_map:{i}", lm, chunk))


def graph_data(vcmm: Vcmm, *, chunks: bool = True) -> GraphData:
    """Nodes and edges of ``vcmm``'s mapping graph (see the module notes).

    ``chunks=False`` leaves out the chunk nodes and the ``contains`` and ``mapping``
    edges: what the compact pictures of :mod:`vcmm.report.graph` do not draw, and most
    of the work on a graph of many small pieces.
    """
    if not isinstance(chunks, bool):
        raise InvalidArgumentError(f"graph_data: chunks={chunks!r} is not true or false")
    export = _Export(vcmm, chunks=chunks)
    export.devices()
    export.linear_map()
    export.targets()
    for vcm in vcmm.vcms:
        export.vcm(vcm)
    for p in vcmm.physmems + vcmm.phys_views:
        export.physmem(p)
    return {"nodes": export.nodes, "edges": export.edges}


def to_networkx(data: GraphData) -> Any:
    """A ``networkx.MultiDiGraph`` of :func:`graph_data`'s output (attributes kept)."""
    import networkx as nx

    g = nx.MultiDiGraph()
    for node in data["nodes"]:
        g.add_node(node["id"], **_without(node, ("id",)))
    for edge in data["edges"]:
        g.add_edge(edge["source"], edge["target"], **_without(edge, ("source", "target")))
    return g


def _without(item: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k not in names}
