"""Every command on a tiny scenario: outputs parse and agree with the library."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import networkx as nx
import pytest
from click.testing import Result

from vcmm.core.export import to_networkx
from vcmm.report import graph as graph_module
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import load_scenario

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}svg"

Vcmm = Callable[..., Result]


def test_help_lists_every_command(vcmm: Vcmm) -> None:
    out = vcmm("--help").stdout
    for command in ("demo", "run", "sweep", "graph", "pt", "report", "scenarios"):
        assert f"  {command}" in out


def test_scenarios_lists_the_packaged_examples(vcmm: Vcmm) -> None:
    out = vcmm("scenarios").stdout
    assert {line.split()[0] for line in out.splitlines()} >= {
        "video_1080p",
        "codec_tiled",
        "camera_dsp",
    }


# -- run -------------------------------------------------------------------------------------


def test_run_json_agrees_with_the_library(vcmm: Vcmm, tiny: Path) -> None:
    data = json.loads(vcmm("run", tiny, "--json").stdout)
    direct = run_scenario(load_scenario(tiny))
    assert data["totals"] == pytest.approx(direct.totals())
    assert [s["frames"][0]["misses"] for s in data["steps"]] == [
        s.frames[0].misses for s in direct.steps
    ]
    ctx = {c["name"]: c for c in data["contexts"]}
    assert ctx["mdp"]["tlb"] == direct.context("mdp").tlb
    # The tiny frame is 12 pages of 4K: the writer's first raster pass misses each once.
    assert data["steps"][0]["frames"][0]["misses"] == 12


def test_run_prints_tables_for_people(vcmm: Vcmm, tiny: Path) -> None:
    out = vcmm("run", tiny).stdout
    assert out.startswith(f"scenario tiny (file {tiny}) on platform msm-default")
    for title in ("Buffers", "IOTLB misses per frame", "SMMU contexts", "Devices", "Totals"):
        assert f"\n{title}\n" in out
    line = next(ln for ln in out.splitlines() if ln.lstrip().startswith("0  vcodec_a_mm1"))
    assert line.split()[6:8] == ["12", "0"]  # 12 pages: 12 compulsory misses, then all fit


def test_run_set_overrides_a_parameter(vcmm: Vcmm, tiny: Path) -> None:
    data = json.loads(
        vcmm("run", tiny, "--set", "policy=64k", "--set", "frames=1", "--json").stdout
    )
    assert data["params"] == {"policy": "64k", "frames": 1}
    assert data["buffers"][0]["chunks"] == {"64K": 1}
    assert data["steps"][0]["frames"][0]["misses"] == 1


def test_run_accepts_a_packaged_scenario_name(vcmm: Vcmm) -> None:
    data = json.loads(vcmm("run", "camera_dsp", "--json").stdout)
    assert [s["data_check"] for s in data["steps"]] == ["written", "ok"]


# -- sweep -----------------------------------------------------------------------------------


def test_sweep_writes_csv_json_and_plots(vcmm: Vcmm, tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    result = vcmm(
        "sweep",
        tiny,
        "--grid",
        "policy=4k,64k",
        "--grid",
        "tlb_entries=16,64",
        "--jobs",
        "2",
        "--out",
        out,
    )
    assert "wrote" in result.stdout
    with (out / "sweep.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = [r for r in rows if r["context"] == "all"]
    assert [(r["policy"], r["tlb_entries"]) for r in summary] == [
        ("4k", "16"),
        ("4k", "64"),
        ("64k", "16"),
        ("64k", "64"),
    ]
    data = json.loads((out / "sweep.json").read_text())
    assert len(data["rows"]) == len(rows)
    # Each point agrees with a direct run of the same parameters.
    direct = run_scenario(load_scenario(tiny).with_params(policy="64k", tlb_entries=16))
    assert int(summary[2]["misses"]) == direct.totals()["misses"]
    png = out / "miss_rate.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert ET.parse(out / "miss_rate.svg").getroot().tag == SVG


def test_sweep_json_prints_rows(vcmm: Vcmm, tiny: Path, tmp_path: Path) -> None:
    data = json.loads(
        vcmm("sweep", tiny, "--grid", "ways=1,4", "--out", tmp_path, "--no-plots", "--json").stdout
    )
    assert data["grid"] == {"ways": [1, 4]}
    assert not (tmp_path / "miss_rate.png").exists()


# -- graph -----------------------------------------------------------------------------------


def test_graph_text_of_the_demo_shows_three_bus_masters(vcmm: Vcmm) -> None:
    out = vcmm("graph").stdout
    assert "physmem1 2M+4K from contig" in out
    for device in ("vcodec_a_mm1", "dsp", "cpu"):
        assert device in out


def test_graph_json_is_the_core_export_with_decoded_page_sizes(
    vcmm: Vcmm, tiny: Path, tmp_path: Path
) -> None:
    path = tmp_path / "g.json"
    vcmm("graph", tiny, "-o", path)
    data = json.loads(path.read_text())
    graph = nx.MultiDiGraph()
    graph.add_nodes_from((n["id"], n) for n in data["nodes"])
    graph.add_edges_from((e["source"], e["target"], e) for e in data["edges"])
    (physmem,) = [n for n in data["nodes"] if n["type"] == "physmem"]
    # 4k policy: the 48K frame is 12 chunks of 4K.
    assert physmem["chunks"] == 12
    assert sum(1 for n in data["nodes"] if n["type"] == "chunk") == 12
    backed = sorted(
        t for _, t, e in graph.out_edges(physmem["id"], data=True) if e["type"] == "backs"
    )
    assert len(backed) == 2
    for device in ("device:vcodec_a_mm1", "device:mdp"):
        # device -> VCM -> reservation, and the allocation backs that reservation.
        (vcm,) = [t for _, t, e in graph.out_edges(device, data=True) if e["type"] == "association"]
        (res,) = [t for _, t, e in graph.out_edges(vcm, data=True) if e["type"] == "reserves"]
        assert res in backed
        assert graph.nodes[res]["pages"] == {"4096": 12}
        assert graph.nodes[res]["dev_addrs"] == {
            device.removeprefix("device:"): graph.nodes[res]["addr"]
        }


def test_graph_to_networkx_keeps_attributes() -> None:
    system = run_scenario(load_scenario("video_1080p")).system
    assert system is not None
    g = to_networkx(system.graph_data())
    types = nx.get_node_attributes(g, "type")
    assert sorted(types.values()).count("reservation") == 2
    assert g.nodes["physmem:physmem1"]["size"] == 3 * (1 << 20)


def test_graph_dot(vcmm: Vcmm, tmp_path: Path) -> None:
    path = tmp_path / "g.dot"
    vcmm("graph", "--format", "dot", "-o", path)
    text = path.read_text()
    assert text.startswith('digraph "demo" {') and text.rstrip().endswith("}")
    assert '"device:dsp" -> "vcm:' in text


@pytest.mark.parametrize("name", ["g.svg", "g.png", "g.pdf"])
def test_a_drawing_without_graphviz_fails_on_stderr_and_leaves_the_dot_file(
    vcmm: Vcmm,
    error_line: Callable[[Result], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    monkeypatch.setattr(graph_module.shutil, "which", lambda name: None)
    result = vcmm("graph", "-o", tmp_path / name, expect=1)
    assert result.stdout == ""
    line = error_line(result)
    assert "graphviz is not installed" in line and f"{name} was not drawn" in line
    assert (tmp_path / "g.dot").read_text().startswith("digraph")
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["-o", "graph.xyz"], "cannot tell the format of 'graph.xyz' from its extension .xyz"),
        (["-o", "graph"], "from its extension (none)"),
        (["-f", "dot", "-o", "graph.svg"], "--format dot does not match 'graph.svg'"),
        (["-f", "json", "-o", "graph.png"], "whose extension says png"),
        (["-f", "png"], "--format png needs --output FILE"),
    ],
)
def test_graph_refuses_to_guess_a_format(
    vcmm: Vcmm,
    error_line: Callable[[Result], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    needle: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert needle in error_line(vcmm("graph", *args, expect=2))
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize(
    ("name", "start"), [("g.gv", "digraph"), ("g.txt", "physmem1"), ("g.json", "{")]
)
def test_graph_takes_the_format_from_the_extension(
    vcmm: Vcmm, tmp_path: Path, name: str, start: str
) -> None:
    vcmm("graph", "-o", tmp_path / name)
    assert (tmp_path / name).read_text().startswith(start)


def test_the_dsp_reservation_has_one_address_in_text_and_dot(vcmm: Vcmm) -> None:
    """The seed's dev_addr is what the device uses: the DSP's bus address.  The
    default platform's DSP sees RAM 0x4000_0000 lower than the CPU (its dma-ranges),
    so the 0xa800_0000 allocation is at 0x6800_0000 for it."""
    from vcmm.cli.topology import triple_mapping

    system = triple_mapping().system
    (res,) = [r for v in system.vcms if v.kind.value == "one-to-one" for r in v.reservations]
    phys = res.physmem.chunks[0][0]
    bus = phys - 0x4000_0000
    assert res.dev_addr_for(system.device("dsp")) == bus
    text = vcmm("graph").stdout
    dot = vcmm("graph", "-f", "dot").stdout
    route = next(line for line in text.splitlines() if "dsp" in line)
    assert route.endswith(f"{res.name} at {bus:#x} (phys {phys:#x})")
    label = next(
        line for line in dot.splitlines() if line.startswith(f'  "reservation:{res.name}"')
    )
    assert f"@ {bus:#x} (phys {phys:#x})" in label


def test_graph_of_a_scenario_names_its_buffers(vcmm: Vcmm, tiny: Path) -> None:
    text = vcmm("graph", tiny).stdout
    dot = vcmm("graph", tiny, "-f", "dot").stdout
    assert text.startswith("frame (physmem1) 48K from blocks")
    assert "mdp            -> mdp's IOVA space (" in text and "-> frame (res" in text
    labels = [
        ln.split("label=", 1)[1]
        for ln in dot.splitlines()
        if ln.startswith('  "reservation:') and "->" not in ln
    ]
    assert len(labels) == 2 and all(label.startswith('"frame (res') for label in labels)


@pytest.mark.skipif(not graph_module.dot_available(), reason="graphviz is not installed")
def test_graph_svg_with_graphviz(vcmm: Vcmm, tmp_path: Path) -> None:
    vcmm("graph", "-f", "svg", "-o", tmp_path / "g.svg")
    root = ET.parse(tmp_path / "g.svg").getroot()
    assert root.tag == SVG
    assert "vcodec_a_mm1" in (tmp_path / "g.svg").read_text()
    vcmm("graph", "-o", tmp_path / "g.png")
    vcmm("graph", "-o", tmp_path / "g.pdf")
    assert (tmp_path / "g.png").read_bytes()[:8] == PNG_MAGIC
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"


# -- pt dump ---------------------------------------------------------------------------------


def test_pt_dump_of_the_demo_shows_two_sections_and_a_page(vcmm: Vcmm) -> None:
    out = vcmm("pt", "dump", "vcodec_a_mm1").stdout
    assert out.splitlines()[-1].startswith("registers: smmu0 at 0x4000000, bank 0")
    lines = [ln.split() for ln in out.splitlines()[1:] if ln.startswith("  ")]
    # VA range, ->, PA range, count, x, size, attrs...
    assert [(ln[3], ln[5]) for ln in lines] == [("2", "1M"), ("1", "4K")]
    start, end = (int(x, 16) for x in lines[0][2].split("-"))
    assert end - start + 1 == 2 << 20


def test_pt_dump_json_covers_the_buffer(vcmm: Vcmm, tiny: Path) -> None:
    data = json.loads(vcmm("pt", "dump", "mdp", "--scenario", tiny, "--json").stdout)
    (table,) = data
    assert sum(r["size"] for r in table["ranges"]) == 12 * 4096
    # 4K blocks from a block pool are consecutive here, so the 12 entries merge.
    assert [(r["count"], r["page_size"]) for r in table["ranges"]] == [(12, 4096)]
    assert table["table_bytes"] == 16 * 1024 + 1024  # ARMv7 L1 (16K) + one L2 (1K)


FAULTING = """\
name = "ro"
frames = 1
buffers = [{ name = "buf", size = "64K", policy = "4k", access = "ro" }]
steps = [{ device = "vcodec_b_mm2", buffer = "buf", access = "write" }]
"""


def test_pt_dump_shows_the_bank_fault_registers_after_a_fault(vcmm: Vcmm, tmp_path: Path) -> None:
    path = tmp_path / "ro.toml"
    path.write_text(FAULTING, encoding="utf-8")
    out = vcmm("pt", "dump", "vcodec_b_mm2", "--scenario", path).stdout
    # smmu0 (default layout: 0x0400_0000) has 3 banks, so NUMPAGE 4 and 4 KiB pages:
    # bank 1's page is at base + (4 + 1) * 4 KiB (SMMUv2 SMMU_CBn_BASE).
    line = out.splitlines()[-1]
    assert line.startswith("registers: smmu0 at 0x4000000, bank 1 page 0x4005000: ")
    # FSR.PF (bit 3); FAR the write's IOVA; FSYNR0 WNR (bit 4), PNU (bit 5), PLVL 2.
    assert "FSR=0x00000008 [PF Format=0]" in line
    assert "FAR=0x10000000" in line
    assert "FSYNR0=0x00000032 [WNR PNU PLVL=2]" in line
    data = json.loads(vcmm("pt", "dump", "vcodec_b_mm2", "-s", path, "--json").stdout)
    regs = data[0]["registers"]
    assert (regs["fsr"] >> 3 & 1, regs["fsynr0"] >> 4 & 1, regs["far"]) == (1, 1, 0x1000_0000)
    assert (regs["register_base"], regs["bank"], regs["bank_base"]) == (0x400_0000, 1, 0x400_5000)


def test_pt_dump_of_the_cpu_shows_the_linear_map(vcmm: Vcmm) -> None:
    out = vcmm("pt", "dump", "cpu").stdout
    assert "0xffff000000000000-0xffff00000fffffff  ->  0x80000000-0x8fffffff" in out


# -- report ----------------------------------------------------------------------------------


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_writes_a_page_with_tables_plots_and_graph(
    vcmm: Vcmm, tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "rep"
    vcmm("report", tiny, "-o", out)
    page = (out / "index.html").read_text()
    parser = _Collect()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert tags.count("table") >= 6
    images = [a["src"] for t, a in parser.tags if t == "img"]
    assert "frames.png" in images and "policies.png" in images
    for src in images:
        path = out / str(src)
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == PNG_MAGIC
        else:
            assert ET.parse(path).getroot().tag == SVG
    assert (out / "graph.dot").read_text().startswith("digraph")
    if not graph_module.dot_available():
        assert "graphviz is not installed" in page
    assert "vcodec_a_mm1" in page and "Page tables" in page


# -- user mistakes ---------------------------------------------------------------------------


def test_a_missing_file_is_one_line(
    vcmm: Vcmm, error_line: Callable[[Result], str], tmp_path: Path
) -> None:
    result = vcmm("run", tmp_path / "nope.toml", expect=1)
    assert "nope.toml: cannot read scenario file" in error_line(result)


def test_a_bad_key_names_file_and_key(
    vcmm: Vcmm, error_line: Callable[[Result], str], tiny: Path
) -> None:
    tiny.write_text(tiny.read_text().replace('pattern = "tiled"', 'patern = "tiled"'))
    line = error_line(vcmm("run", tiny, expect=1))
    assert f"{tiny}: steps[1].patern: unknown key 'patern' (did you mean 'pattern'?)" in line


def test_an_unknown_device_is_one_line(
    vcmm: Vcmm, error_line: Callable[[Result], str], tiny: Path
) -> None:
    line = error_line(vcmm("pt", "dump", "gpu", "--scenario", tiny, expect=1))
    assert "no device named 'gpu'" in line
    tiny.write_text(tiny.read_text().replace('device = "mdp"', 'device = "gpu"'))
    line = error_line(vcmm("graph", tiny, expect=1))
    assert "steps[1].device: unknown device 'gpu'" in line


def test_a_physical_device_has_no_tables_to_dump(
    vcmm: Vcmm, error_line: Callable[[Result], str]
) -> None:
    assert "addresses memory physically" in error_line(vcmm("pt", "dump", "dsp", expect=1))


def test_usage_errors_are_one_line(
    vcmm: Vcmm, error_line: Callable[[Result], str], tiny: Path
) -> None:
    line = error_line(vcmm("sweep", tiny, expect=2))
    assert "Missing option '--grid'" in line and "vcmm sweep --help" in line
    line = error_line(vcmm("sweep", tiny, "--grid", "size=1", expect=1))
    assert "--grid size: unknown parameter 'size'" in line
    line = error_line(vcmm("run", tiny, "--set", "policy=4k,1m", expect=1))
    assert "--set policy: give one value" in line
    line = error_line(vcmm("graph", "-f", "svg", expect=2))
    assert "--format svg needs --output FILE" in line
    line = error_line(vcmm("nosuchcommand", expect=2))
    assert "No such command 'nosuchcommand'" in line


def test_an_unwritable_output_is_one_line(
    vcmm: Vcmm, error_line: Callable[[Result], str], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = error_line(vcmm("graph", "-o", blocker / "g.json", expect=1))
    assert str(blocker) in line
