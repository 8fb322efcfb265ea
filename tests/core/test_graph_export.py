"""The mapping graph as data (000 L68-96): nodes and edges a renderer can draw."""

from __future__ import annotations

import json

import networkx as nx

from vcmm import SZ_1M, SZ_4K, SZ_16M
from vcmm.core import Attr, PhysAttr


def _triple(system):
    """The walk-through's triple mapping: one allocation, three bus masters."""
    physmem = system.vcm_phys_alloc("contig", SZ_1M + SZ_4K, PhysAttr.CONTIGUOUS)
    ((pa, size),) = physmem.chunks
    iommu = system.vcm_create(SZ_16M, SZ_16M)
    one = system.vcm_create(pa, size)
    vmm = system.vcm_create_from_prebuilt(0)
    a = system.vcm_assoc(iommu, "vcodec_a_mm1", 0)
    system.vcm_activate(a)
    system.vcm_assoc(one, "dsp", 0)
    system.vcm_activate(system.vcm_assoc(vmm, "cpu", 0))
    reservations = [system.vcm_reserve(v, size, Attr.RW) for v in (iommu, one, vmm)]
    for r in reservations:
        system.vcm_back(r, physmem)
    return physmem, (iommu, one, vmm), reservations, a


def test_graph_data_is_plain_json_with_every_object(system) -> None:
    physmem, vcms, reservations, _avcm = _triple(system)
    kernel = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    data = system.graph_data()
    text = json.dumps(data)  # only JSON types inside
    assert json.loads(text) == data
    nodes = {n["id"]: n for n in data["nodes"]}
    types = {n["type"] for n in data["nodes"]}
    assert types == {
        "device", "vcm", "reservation", "physmem", "chunk", "target", "linear_map",
    }  # fmt: skip
    assert nodes["device:vcodec_a_mm1"]["path"] == "iommu"
    assert nodes["device:dsp"]["path"] == "physical" and nodes["device:cpu"]["path"] == "cpu"
    for vcm, kind in zip(vcms, ("iommu", "one-to-one", "vmm"), strict=True):
        assert nodes[f"vcm:{vcm.name}"]["kind"] == kind
    assert nodes[f"vcm:{vcms[0].name}"]["table_root"] == vcms[0].table.root

    ((pa, size),) = physmem.chunks
    chunk = nodes[f"chunk:{pa:#x}+{size:#x}"]
    # Three address spaces map it (the device's, the DSP's, the CPU's): shareable.
    assert chunk["spaces"] == sorted(["cpu", vcms[0].name, vcms[1].name]) and chunk["shareable"]
    maps = [e for e in data["edges"] if e["type"] == "mapping" and e["target"] == chunk["id"]]
    assert sorted(e["source"] for e in maps) == sorted(
        f"reservation:{r.name}" for r in reservations
    )
    assert all(e["memtype"] == "normal-wb-wa" and e["shareable"] for e in maps)
    iommu_edge = next(e for e in maps if e["source"] == f"reservation:{reservations[0].name}")
    assert (iommu_edge["va"], iommu_edge["pa"], iommu_edge["size"]) == (
        reservations[0].dev_addr, pa, size,
    )  # fmt: skip

    assocs = [e for e in data["edges"] if e["type"] == "association"]
    active = {(e["source"], e["target"]): e["active"] for e in assocs}
    assert active[("device:vcodec_a_mm1", f"vcm:{vcms[0].name}")] is True
    assert active[("device:dsp", f"vcm:{vcms[1].name}")] is False

    # Kernel RAM: the linear map is one of its mappers, before any reservation maps it.
    ((kpa, ksize),) = kernel.chunks
    kchunk = nodes[f"chunk:{kpa:#x}+{ksize:#x}"]
    assert kchunk["linear_mapped"] and kchunk["spaces"] == ["cpu"] and kchunk["shareable"]
    linear = [e for e in data["edges"] if e["type"] == "mapping" and e["target"] == kchunk["id"]]
    assert len(linear) == 1 and linear[0]["source"].startswith("linear_map:")
    assert linear[0]["va"] == system.cpu.phys_to_virt(kpa)


def test_to_networkx_keeps_the_structure(system) -> None:
    physmem, vcms, reservations, _ = _triple(system)
    g = system.to_networkx()
    assert isinstance(g, nx.MultiDiGraph)
    ((pa, size),) = physmem.chunks
    chunk = f"chunk:{pa:#x}+{size:#x}"
    # From each bus master there is a path to the chunk through its VCM and reservation.
    for dev, vcm, res in zip(("vcodec_a_mm1", "dsp", "cpu"), vcms, reservations, strict=True):
        path = nx.shortest_path(g, f"device:{dev}", chunk)
        assert path == [f"device:{dev}", f"vcm:{vcm.name}", f"reservation:{res.name}", chunk]
    assert g.nodes[chunk]["type"] == "chunk"
    assert g.number_of_edges() == len(system.graph_data()["edges"])


def test_graph_empties_after_teardown(system) -> None:
    physmem, _vcms, reservations, _avcm = _triple(system)
    for r in reservations:
        system.vcm_unback(r)
        system.vcm_unreserve(r)
    system.vcm_phys_free(physmem)
    assert system.graph.is_empty()
    data = system.graph_data()
    assert not [n for n in data["nodes"] if n["type"] in ("reservation", "chunk", "physmem")]
    assert not [e for e in data["edges"] if e["type"] == "mapping" and "reservation" in e["source"]]


def test_views_and_wraps_in_the_export(system) -> None:
    """A view's mappings are drawn to its allocation's chunk; a wrap has chunks of its
    own; a chunk says how many of its bytes are shared."""
    physmem = system.vcm_phys_alloc("contig", 4 * SZ_4K, PhysAttr.CONTIGUOUS)
    ((pa, _size),) = physmem.chunks
    iommu = system.vcm_create(SZ_16M, SZ_16M)
    vmm = system.vcm_create_from_prebuilt(0)
    whole = system.vcm_reserve(iommu, 4 * SZ_4K, Attr.RW)
    system.vcm_back(whole, physmem)
    view = system.vcm_phys_view(physmem, SZ_4K, SZ_4K)
    part = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    system.vcm_back(part, view)
    kernel = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    wrap = system.vcm_phys_wrap(list(kernel.chunk_ranges), owner="a driver", of=kernel)
    data = system.graph_data()
    nodes = {n["id"]: n for n in data["nodes"]}
    assert nodes[f"physmem:{view.name}"]["kind"] == "view"
    assert nodes[f"physmem:{view.name}"]["parent"] == physmem.name
    assert nodes[f"physmem:{wrap.name}"]["kind"] == "wrap"
    assert nodes[f"physmem:{wrap.name}"]["owner"] == "a driver"
    assert {
        "source": f"physmem:{physmem.name}",
        "target": f"physmem:{view.name}",
        "type": "views",
    } in data["edges"]
    chunk = nodes[f"chunk:{pa:#x}+{4 * SZ_4K:#x}"]
    assert chunk["shared_bytes"] == SZ_4K and not chunk["shareable"]
    into = [e for e in data["edges"] if e["type"] == "mapping" and e["target"] == chunk["id"]]
    assert {e["source"] for e in into} == {f"reservation:{whole.name}", f"reservation:{part.name}"}
    assert sorted((e["pa"], e["size"], e["shareable"]) for e in into) == [
        (pa, SZ_4K, False),
        (pa + SZ_4K, SZ_4K, True),
        (pa + SZ_4K, SZ_4K, True),
        (pa + 2 * SZ_4K, 2 * SZ_4K, False),
    ]
    # The wrap's page shares its chunk node with the allocation it lies in.
    page = kernel.chunk_ranges[0]
    assert nodes[f"chunk:{page.start:#x}+{SZ_4K:#x}"]["linear_mapped"]


def test_every_node_and_edge_follows_the_one_schema(system) -> None:
    """Whatever the state (three kinds of VCM, a view, a wrap, the DMA API's pools
    and a process), each node and edge has exactly its type's declared fields."""
    from vcmm import DmaDirection
    from vcmm.core.export import EDGE_FIELDS, NODE_FIELDS
    from vcmm.dma import DmaApi
    from vcmm.proc import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, ProcessTable

    physmem, _vcms, _reservations, _ = _triple(system)
    system.vcm_phys_view(physmem, SZ_4K, SZ_4K)
    kernel = system.vcm_phys_alloc("ebi", SZ_4K)
    system.vcm_phys_wrap(list(kernel.chunk_ranges), owner="me", of=kernel)
    dma = DmaApi(system, devices=["mdp"])
    page = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS).chunk_ranges[0].start
    dma.map_page("mdp", page, 0, SZ_4K, DmaDirection.TO_DEVICE)
    ProcessTable(system).spawn("p").mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
    data = system.graph_data()
    seen_nodes = {n["type"] for n in data["nodes"]}
    seen_edges = {e["type"] for e in data["edges"]}
    assert seen_nodes == set(NODE_FIELDS) and seen_edges == set(EDGE_FIELDS)
    for node in data["nodes"]:
        assert list(node) == ["id", "type", "label", *NODE_FIELDS[node["type"]]], node
    for edge in data["edges"]:
        assert list(edge) == ["source", "target", "type", *EDGE_FIELDS[edge["type"]]], edge


def test_reservations_carry_decoded_page_sizes_and_device_addresses(system) -> None:
    """1M+4K, 1M aligned: ARMv7 short descriptors map it with one 1M section and one
    4K page; the CPU's VMSAv8-64 4K-granule table has no 1M block, so 257 4K pages.
    The DSP reaches RAM 0x4000_0000 below its physical address (its dma-ranges)."""
    physmem, _vcms, reservations, _ = _triple(system)
    data = system.graph_data()
    nodes = {n["id"]: n for n in data["nodes"]}
    res_iommu, res_one, res_vmm = (nodes[f"reservation:{r.name}"] for r in reservations)
    assert res_iommu["pages"] == {str(SZ_1M): 1, str(SZ_4K): 1}
    assert res_vmm["pages"] == {str(SZ_4K): 257}
    assert res_one["pages"] == {}  # no table: one-to-one
    ((pa, size),) = physmem.chunks
    assert res_one["dev_addrs"] == {"dsp": pa - 0x4000_0000}
    assert res_iommu["dev_addrs"] == {"vcodec_a_mm1": reservations[0].dev_addr}
    node = nodes[f"physmem:{physmem.name}"]
    assert node["ranges"] == [[pa, size]] and not node["linear_mapped"]  # a carve-out
    kernel = system.vcm_phys_alloc("ebi", SZ_4K)
    exported = {n["id"]: n for n in system.graph_data()["nodes"]}
    assert exported[f"physmem:{kernel.name}"]["linear_mapped"]  # system RAM


def test_docs_describe_every_type_and_field_of_the_schema() -> None:
    import re
    from pathlib import Path

    from vcmm.core.export import EDGE_FIELDS, NODE_FIELDS

    docs = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"
    text = docs.read_text(encoding="utf-8")
    section = text[text.index("#### The graph schema") :]
    nodes, edges = section.split("| edge type |", 1)
    for table, schema in ((nodes, NODE_FIELDS), (edges, EDGE_FIELDS)):
        rows = {m[0]: m[1] for m in re.findall(r"^\| `(\w+)` \|(.*)$", table, re.MULTILINE)}
        for kind, fields in schema.items():
            assert kind in rows, f"docs/CLI.md's graph schema has no row for {kind!r}"
            for name in fields:
                assert f"`{name}`" in rows[kind], f"docs/CLI.md: {kind} lacks field {name!r}"


def test_the_export_without_chunks_is_the_full_one_less_chunk_detail(system) -> None:
    from vcmm.core.export import graph_data

    _triple(system)
    full, compact = system.graph_data(), graph_data(system, chunks=False)
    assert [n for n in full["nodes"] if n["type"] != "chunk"] == compact["nodes"]
    detail = ("contains", "mapping")
    kept = [e for e in full["edges"] if e["type"] not in detail]
    assert kept == compact["edges"] and len(kept) < len(full["edges"])


def test_export_calls_refuse_bad_arguments(system) -> None:
    import pytest

    from vcmm.core.export import dev_addrs, graph_data, page_histogram
    from vcmm.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="chunks='no' is not true or false"):
        graph_data(system, chunks="no")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="page_histogram needs a Reservation"):
        page_histogram(system, "res1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="dev_addrs needs a Reservation"):
        dev_addrs(None)  # type: ignore[arg-type]
