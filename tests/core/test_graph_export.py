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
