"""The report building blocks: range merging, tables, graph text, plot inputs."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from vcmm.attrs import PageAttrs
from vcmm.errors import InvalidArgumentError
from vcmm.report.graph import to_dot, to_text
from vcmm.report.pagetables import merge_entries
from vcmm.report.plots import plot_sweep
from vcmm.report.tables import Table, fmt_cell
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import loads_scenario

RW = PageAttrs()
RO = PageAttrs(write=False)


@dataclass
class Entry:
    va: int
    pa: int
    size: int
    attrs: PageAttrs


def test_merge_joins_only_entries_continuing_in_both_spaces_with_equal_attributes() -> None:
    k4 = 0x1000
    entries = [
        Entry(0x10000, 0x80000, k4, RW),
        Entry(0x11000, 0x81000, k4, RW),  # continues: merged
        Entry(0x12000, 0x90000, k4, RW),  # physical jump: new range
        Entry(0x13000, 0x91000, k4, RO),  # attributes differ: new range
        Entry(0x14000, 0x92000, 0x10000, RO),  # size differs: new range
        Entry(0x30000, 0xA0000, k4, RO),  # virtual gap: new range
    ]
    ranges = merge_entries(reversed(entries))  # order of input does not matter
    assert [(r.va, r.pa, r.count, r.page_size) for r in ranges] == [
        (0x10000, 0x80000, 2, k4),
        (0x12000, 0x90000, 1, k4),
        (0x13000, 0x91000, 1, k4),
        (0x14000, 0x92000, 1, 0x10000),
        (0x30000, 0xA0000, 1, k4),
    ]
    assert ranges[0].size == 2 * k4 and ranges[2].attrs == "r-- wb-wa"


def test_merge_sign_extends_kernel_addresses() -> None:
    (r,) = merge_entries([Entry(0x8000_0000_0000, 0x80000000, 0x1000, RW)], va_offset=0xFFFF << 48)
    assert r.va == 0xFFFF_8000_0000_0000


def test_table_text_aligns_numbers_right_and_refuses_ragged_rows() -> None:
    t = Table("T", ["name", "count"])
    t.add(["a", 5])
    t.add(["bbb", 12345])
    lines = t.to_text().splitlines()
    assert lines[0] == "T"
    assert lines[1:] == ["name   count", "----  ------", "a          5", "bbb   12,345"]
    with pytest.raises(InvalidArgumentError, match="row has 1 cells, headers have 2"):
        t.add(["x"])
    html = t.to_html()
    assert '<td class="num">12,345</td>' in html and "<caption>T</caption>" in html


def test_cells_format_by_type() -> None:
    assert [fmt_cell(v) for v in (None, True, 1234567, 0.000123456, "x")] == [
        "-",
        "yes",
        "1,234,567",
        "0.0001235",
        "x",
    ]


def test_graph_text_shows_the_kernel_linear_map_alias_of_system_ram() -> None:
    text = """\
name = "ebi"
[[buffers]]
name = "b"
size = "1M"
target = "ebi"
[[steps]]
device = "mdp"
buffer = "b"
access = "read"
"""
    system = run_scenario(loads_scenario(text)).system
    assert system is not None
    out = to_text(system.graph_data())
    assert "physmem1 1M from ebi: 0x80000000+1M" in out
    assert "cpu            kernel linear map (cacheable alias)" in out
    assert "mdp            -> vcm2 (iommu) -> res4 at 0x10000000  [1 x 1M]" in out


def test_plot_sweep_draws_one_panel_per_remaining_key(tmp_path: Path) -> None:
    rows = [
        {"policy": p, "tlb_entries": e, "ways": w, "miss_rate": 1 / (e * (i + 1)), "error": ""}
        for i, p in enumerate(("4k", "1m"))
        for e in (16, 64)
        for w in (1, 4)
    ]
    png, svg = plot_sweep(rows, ["ways", "tlb_entries", "policy"], tmp_path / "p")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert ET.parse(svg).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    text = svg.read_text()  # matplotlib keeps each drawn string as a comment
    assert "ways=1" in text and "ways=4" in text and "tlb_entries=64" in text


def test_plot_sweep_refuses_a_sweep_where_everything_failed(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="every point of the sweep failed"):
        plot_sweep(
            [{"policy": "4k", "miss_rate": None, "error": "boom"}], ["policy"], tmp_path / "p"
        )
    with pytest.raises(InvalidArgumentError, match="at least one grid key"):
        plot_sweep([], [], tmp_path / "p")


def test_graph_draws_views_with_an_edge_to_their_allocation() -> None:
    import vcmm
    from vcmm import SZ_1M, SZ_4K

    system = vcmm.System.default()
    parent = system.vcm_phys_alloc("blocks", SZ_1M)
    view = system.vcm_phys_view(parent, SZ_4K, 2 * SZ_4K)
    vcm = system.vcm_create(SZ_1M, 16 * SZ_1M)
    res = system.vcm_reserve(vcm, 2 * SZ_4K)
    system.vcm_back(res, view)
    dot = to_dot(system.graph_data())
    ids = set(re.findall(r'^  "([^"]+)" \[label=', dot, re.MULTILINE))
    assert {f"physmem:{view.name}", f"physmem:{parent.name}"} <= ids
    edges = set(re.findall(r'^  "([^"]+)" -> "([^"]+)"', dot, re.MULTILINE))
    assert (f"physmem:{view.name}", f"physmem:{parent.name}") in edges  # view of
    assert (f"reservation:{res.name}", f"physmem:{view.name}") in edges  # backing
    # Every edge ends at a drawn node.
    assert all(source in ids and target in ids for source, target in edges)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: to_text([]), "to_text needs the graph export's"),
        (lambda: to_text({"nodes": []}), "to_text needs the graph export's"),
        (lambda: to_dot({"nodes": [], "edges": []}, 5), "graph name 5 is not a string"),
        (lambda: to_dot({"nodes": [], "edges": []}, "g", ["frame"]), "not a mapping"),
    ],
)
def test_renderings_refuse_what_is_not_the_export(call: Callable[[], object], needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=needle):
        call()


def test_an_empty_export_renders_as_an_empty_picture() -> None:
    empty = {"nodes": [], "edges": []}
    assert to_text(empty) == "(no VCMs and no physical allocations)"
    assert to_dot(empty, "e").splitlines()[-1] == "}"
