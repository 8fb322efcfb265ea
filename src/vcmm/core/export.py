"""The mapping graph as data: nodes and edges in plain dicts, and as a networkx graph.

The seed describes map management as a graph problem (000 L68-96); this module lets a
caller see that graph.  :func:`graph_data` walks a :class:`~vcmm.core.manager.Vcmm`
and returns only str/int/bool/None/list values, so ``json.dumps`` takes it as is and a
renderer (the CLI's DOT/SVG/JSON output) needs nothing from vcmm's classes.

Node ids are ``"<type>:<name>"``; every node has ``type`` and ``label``:

==============  ============================================================================
type            fields
==============  ============================================================================
``device``      ``path`` (``cpu``/``iommu``/``physical``), ``coherent``, ``smmu``, ``context``
``vcm``         ``kind``, ``start``, ``len``, ``table_root``, ``activations``
``reservation`` ``vcm``, ``addr``, ``len``, ``attr``, ``backed``
``physmem``     ``kind`` (``allocation``/``view``/``wrap``), ``target``, ``len``, ``size``,
                ``chunks``, ``contiguous``, ``alignment``, ``block_sizes``, ``parent``,
                ``owner``, ``holder``
``target``      ``linear_mapped``, ``free_bytes``, ``total_bytes``
``chunk``       ``pa``, ``size``, ``physmem``, ``linear_mapped``, ``spaces``, ``shareable``
                (every page of it is), ``shared_bytes``
``linear_map``  ``va``, ``pa``, ``size``
==============  ============================================================================

Edges have ``source``, ``target`` and ``type``: ``association`` (device -> VCM, with
``name``, ``active``, ``attr``, ``half``), ``reserves`` (VCM -> reservation),
``allocates`` (target -> physmem), ``views`` (allocation -> a view of it),
``contains`` (allocation or wrap -> chunk, with ``index``),
``backs`` (physmem -> reservation), ``mapping`` (reservation or linear map -> chunk,
with ``space``, ``va``, ``pa``, ``size``, ``memtype``, ``shareable``, ``read``,
``write``, ``exec``, ``user``) and ``linear_map`` (the CPU -> its linear map windows).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vcmm.core.graph import Mapping

if TYPE_CHECKING:
    from vcmm.core.manager import Vcmm
    from vcmm.ranges import AddressRange


def _chunk_id(chunk: AddressRange) -> str:
    return f"chunk:{chunk.start:#x}+{chunk.size:#x}"


def _mapping_edge(source: str, m: Mapping, chunk: AddressRange) -> dict[str, Any]:
    a = m.attrs
    return {
        "source": source,
        "target": _chunk_id(chunk),
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


def graph_data(vcmm: Vcmm) -> dict[str, Any]:
    """Nodes and edges of ``vcmm``'s mapping graph (see the module notes)."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    graph = vcmm.graph
    for name, dev in sorted(vcmm.devices.items()):
        ctx = getattr(dev, "ctx", None)
        path = "cpu" if dev is vcmm.cpu else ("iommu" if ctx is not None else "physical")
        nodes.append(
            {
                "id": f"device:{name}",
                "type": "device",
                "label": name,
                "path": path,
                "coherent": bool(getattr(dev, "coherent", path == "cpu")),
                "smmu": ctx.smmu.name if ctx is not None else None,
                "context": ctx.name if ctx is not None else None,
            }
        )
    for i, lm in enumerate(graph.linear_map):
        lid = f"linear_map:{i}"
        nodes.append(
            {
                "id": lid,
                "type": "linear_map",
                "label": f"linear map {lm.phys}",
                "va": lm.va,
                "pa": lm.phys.start,
                "size": lm.phys.size,
            }
        )
        edges.append({"source": "device:cpu", "target": lid, "type": "linear_map"})
    for name, target in sorted(vcmm.targets.items()):
        nodes.append(
            {
                "id": f"target:{name}",
                "type": "target",
                "label": name,
                "linear_mapped": bool(getattr(target, "linear_mapped", False)),
                "free_bytes": int(target.free_bytes),
                "total_bytes": int(target.total_bytes),
            }
        )
    for vcm in vcmm.vcms:
        vid = f"vcm:{vcm.name}"
        nodes.append(
            {
                "id": vid,
                "type": "vcm",
                "label": f"{vcm.name} ({vcm.kind.value})",
                "kind": vcm.kind.value,
                "start": vcm.start,
                "len": vcm.len,
                "table_root": vcm.table.root if vcm.table is not None else None,
                "activations": vcm.activations,
            }
        )
        for a in vcm.associations:
            edges.append(
                {
                    "source": f"device:{a.device.name}",
                    "target": vid,
                    "type": "association",
                    "name": a.name,
                    "active": a.active,
                    "attr": str(a.attr),
                    "half": a.half,
                }
            )
        for r in vcm.reservations:
            rid = f"reservation:{r.name}"
            nodes.append(
                {
                    "id": rid,
                    "type": "reservation",
                    "label": r.name,
                    "vcm": vcm.name,
                    "addr": r.addr,
                    "len": r.len,
                    "attr": str(r.attr),
                    "backed": r.backed,
                }
            )
            edges.append({"source": vid, "target": rid, "type": "reserves"})
            for m in graph.of_reservation(r.id):
                assert m.chunk is not None
                edges.append(_mapping_edge(rid, m, m.chunk))
    seen_chunks: set[str] = set()
    for p in vcmm.physmems + vcmm.phys_views:
        pid = f"physmem:{p.name}"
        nodes.append(
            {
                "id": pid,
                "type": "physmem",
                "label": p.name,
                "kind": p.kind,
                "target": p.target,
                "len": p.len,
                "size": p.size,
                "chunks": len(p.chunk_ranges),
                "contiguous": p.attr.contiguous,
                "alignment": p.attr.alignment,
                "block_sizes": list(p.attr.block_sizes) if p.attr.block_sizes else None,
                "parent": p.parent.name if p.parent is not None else None,
                "owner": p.owner,
                "holder": p.holder,
            }
        )
        if p.parent is not None:
            edges.append({"source": f"physmem:{p.parent.name}", "target": pid, "type": "views"})
        elif p.owner is None:
            edges.append({"source": f"target:{p.target}", "target": pid, "type": "allocates"})
        for r in p.backing:
            edges.append({"source": pid, "target": f"reservation:{r.name}", "type": "backs"})
        if p.parent is not None:
            continue  # a view's pieces lie in its allocation's chunks
        for index, chunk in enumerate(p.chunk_ranges):
            cid = _chunk_id(chunk)
            edges.append({"source": pid, "target": cid, "type": "contains", "index": index})
            if cid in seen_chunks:
                continue
            seen_chunks.add(cid)
            spaces = sorted(graph.spaces(chunk))
            linear = graph.linear_alias(chunk)
            shared = sum(seg.size for seg, _, rule in graph.segments(chunk) if rule)
            nodes.append(
                {
                    "id": cid,
                    "type": "chunk",
                    "label": f"{chunk}",
                    "pa": chunk.start,
                    "size": chunk.size,
                    "physmem": p.name,
                    "linear_mapped": linear is not None,
                    "spaces": spaces,
                    "shareable": shared == chunk.size,
                    "shared_bytes": shared,
                }
            )
            if linear is not None:
                i = graph.linear_map.index(linear)
                piece = chunk & linear.phys
                assert piece is not None
                lm = Mapping(
                    linear.space,
                    linear.owner,
                    piece,
                    linear.va + (piece.start - linear.phys.start),
                    linear.attrs,
                )
                edges.append(_mapping_edge(f"linear_map:{i}", lm, chunk))
    return {"nodes": nodes, "edges": edges}


def to_networkx(data: dict[str, Any]) -> Any:
    """A ``networkx.MultiDiGraph`` of :func:`graph_data`'s output (attributes kept)."""
    import networkx as nx

    g = nx.MultiDiGraph()
    for node in data["nodes"]:
        attrs = {k: v for k, v in node.items() if k != "id"}
        g.add_node(node["id"], **attrs)
    for edge in data["edges"]:
        attrs = {k: v for k, v in edge.items() if k not in ("source", "target")}
        g.add_edge(edge["source"], edge["target"], **attrs)
    return g
