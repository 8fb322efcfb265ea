"""Every command on an imported board: ``run``, ``report``, ``graph``, ``pt dump`` and
``iova`` with ``--platform board.dtb`` (or a scenario naming the board), and ``--ram`` /
a scenario's ``ram`` for a board whose memory bank has size 0."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

Vcmm = Callable[..., Result]

#: A board whose bootloader fills in the RAM size (reg size 0, as on SDM845), an
#: MMU-500 with a video codec and a display, and a display controller on an MMU-401.
BOARD: dict[str, Any] = {
    "#address-cells": 1,
    "#size-cells": 1,
    "model": "board of the command tests",
    "memory@80000000": {"device_type": "memory", "reg": [0x8000_0000, 0]},
    "iommu@1000": {
        "compatible": "arm,mmu-500",
        "reg": [0x1000, 0x100],
        "#iommu-cells": 1,
        "#global-interrupts": 0,
        "phandle": 1,
    },
    "iommu@4000": {
        "compatible": "arm,mmu-401",
        "reg": [0x4000, 0x100],
        "#iommu-cells": 1,
        "#global-interrupts": 0,
        "phandle": 2,
    },
    "video@2000": {"reg": [0x2000, 0x100], "iommus": [1, 4]},
    "display@3000": {"reg": [0x3000, 0x100], "iommus": [1, 5]},
    "hdlcd@5000": {"reg": [0x5000, 0x100], "iommus": [2, 1]},
}

SCENARIO = """\
name = "board_pipeline"
{head}
[[buffers]]
name = "frame"
size = "256x64 nv12"

[[steps]]
device = "2000.video"
buffer = "frame"
access = "write"

[[steps]]
device = "{reader}"
buffer = "frame"
access = "read"
"""


@pytest.fixture
def board(make_dtb: Callable[..., str]) -> str:
    return make_dtb(BOARD)


def scenario(tmp_path: Path, head: str = "", reader: str = "3000.display") -> Path:
    path = tmp_path / "pipeline.toml"
    path.write_text(SCENARIO.format(head=head, reader=reader), encoding="utf-8")
    return path


def test_run_with_platform_and_ram(vcmm: Vcmm, board: str, tmp_path: Path) -> None:
    result = vcmm("run", scenario(tmp_path), "--platform", board, "--ram", "256M", "--json")
    data = json.loads(result.stdout)
    assert data["platform"] == "board"
    moved = {d["name"]: (d["bytes_written"], d["bytes_read"]) for d in data["devices"]}
    nv12 = 256 * 64 * 3 // 2
    assert moved == {"2000.video": (nv12, 0), "3000.display": (0, nv12)}
    assert data["totals"]["faults"] == 0


def test_a_scenario_names_the_board_and_its_ram(
    vcmm: Vcmm, board: str, tmp_path: Path, error_line: Callable[[Result], str]
) -> None:
    # the display controller sits behind an LPAE SMMU, the codec behind a VMSAv8 one
    path = scenario(tmp_path, f'platform = "{board}"\nram = "256M"', reader="5000.hdlcd")
    data = json.loads(vcmm("run", path, "--json", "--no-progress").stdout)
    assert {d["name"]: d["faults"] for d in data["devices"]} == {"2000.video": 0, "5000.hdlcd": 0}
    line = error_line(vcmm("run", scenario(tmp_path, f'platform = "{board}"'), expect=1))
    assert "/memory@80000000: reg:" in line and "ram=" in line
    line = error_line(vcmm("run", scenario(tmp_path, 'ram = "1G"'), expect=1))
    assert "ram: a RAM size applies to a devicetree platform" in line
    line = error_line(
        vcmm("run", scenario(tmp_path, f'platform = "{board}"\nram = "lots"'), expect=1)
    )
    assert "pipeline.toml: ram:" in line and "'lots'" in line


def test_graph_and_pt_dump_on_the_board(vcmm: Vcmm, board: str, tmp_path: Path) -> None:
    path = scenario(tmp_path)
    graph = json.loads(
        vcmm("graph", path, "--platform", board, "--ram", "256M", "-f", "json").stdout
    )
    devices = {n["label"]: n for n in graph["nodes"] if n["type"] == "device"}
    assert {"2000.video", "3000.display", "5000.hdlcd"} <= set(devices)
    assert (devices["5000.hdlcd"]["smmu"], devices["5000.hdlcd"]["path"]) == ("4000.iommu", "iommu")
    # both devices are associated with a VCM whose reservation the frame backs
    assert {"association", "backs", "mapping"} <= {e["type"] for e in graph["edges"]}
    dump = vcmm("pt", "dump", "3000.display", "-s", path, "--platform", board, "--ram", "256M")
    assert "VMSAv8-64" in dump.stdout and "mapped in 1 range" in dump.stdout
    booted = vcmm("graph", "--platform", board, "--ram", "256M")
    assert "no VCMs" in booted.stdout


def test_report_and_iova_on_the_board(vcmm: Vcmm, board: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    path = scenario(tmp_path)
    vcmm("report", path, "-o", out, "--platform", board, "--ram", "256M", "--no-policies")
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "2000.video" in page and "3000.display" in page
    iova = vcmm("iova", "--platform", board, "--ram", "256M", "-d", "5000.hdlcd", "--json")
    data = json.loads(iova.stdout)
    assert data["device"] == "5000.hdlcd"


def test_ram_without_a_devicetree_is_one_line(
    vcmm: Vcmm, tmp_path: Path, error_line: Callable[[Result], str]
) -> None:
    assert "--ram applies to a devicetree" in error_line(vcmm("graph", "--ram", "1G", expect=1))
    line = error_line(vcmm("run", "video_1080p", "--ram", "1G", expect=1))
    assert "--ram: a RAM size applies to a devicetree platform" in line
