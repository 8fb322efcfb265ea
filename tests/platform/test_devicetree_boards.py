"""The three real boards of ``../shared/data/dts`` (SDM845, MT8173, Juno): import,
boot, and a buffer shared between two of their masters, read back through tables
decoded from memory by the SMMU's own format.  Skipped when the folder is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from vcmm import SZ_64K, DmaDirection, System
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K
from vcmm.platform import dumps_platform, loads_platform
from vcmm.platform.devicetree import DeviceTreeError, import_devicetree
from vcmm.report.pagetables import device_tables
from vcmm.share import VcmExporter
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import loads_scenario

DTS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "dts"
pytestmark = pytest.mark.skipif(not DTS.is_dir(), reason=f"{DTS} is absent")

#: board -> (RAM for a size-0 bank, IOMMUs, masters with iommus, reserved regions,
#: the pair sharing a buffer, their table format)
BOARDS = {
    "sdm845-db845c": ("4G", 2, 31, 23, ("aa00000.video-codec", "ae00000.display-subsystem"), VMSAV8_4K),
    "mt8173-evb": (None, 1, 16, 2, ("16020000.vcodec", "1400c000.ovl"), ARMV7S),
    "juno": (None, 7, 6, 0, ("7ff50000.hdlcd", "7ff60000.hdlcd"), ARMV7_LPAE),
}  # fmt: skip


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_imports_with_its_counts(board: str) -> None:
    ram, iommus, users, reserved, pair, _ = BOARDS[board]
    result = import_devicetree(DTS / f"{board}.dtb", ram=ram)
    spec = result.spec
    assert len(spec.smmus) == iommus
    assert len([d for d in spec.devices if d.streams]) == users
    assert len(spec.reserved) == reserved
    assert set(pair) <= {d.name for d in spec.devices}
    assert loads_platform(dumps_platform(spec), source=spec.source) == spec
    assert not result.warnings


def test_sdm845_needs_ram_and_names_its_node() -> None:
    with pytest.raises(DeviceTreeError, match=r"sdm845-db845c\.dtb: /memory@80000000: reg: .*ram="):
        import_devicetree(DTS / "sdm845-db845c.dtb")


def test_board_facts_linux_shows() -> None:
    juno = import_devicetree(DTS / "juno.dtb").spec
    assert [(r.range.start, r.range.size) for r in juno.memory] == [
        (0x8000_0000, 0x7F00_0000),
        (0x8_8000_0000, 0x1_8000_0000),
    ]
    assert {d.name for d in juno.devices if d.coherent} == {"2d000000.gpu", "40000000.pcie"}
    assert sum(s.coherent for s in juno.smmus) == 5  # 7 dma-coherent nodes in all
    usb = [d for d in juno.devices if d.name.endswith(".usb")]
    assert len({d.context for d in usb}) == 1 and usb[0].domain is not None  # SID 0 twice
    pcie = juno.device("40000000.pcie")
    assert pcie.disabled and [(r.bus, r.phys, r.size) for r in pcie.dma_ranges] == [
        (0x8000_0000, 0x8000_0000, 0x8000_0000),
        (0x8_0000_0000, 0x8_0000_0000, 0x2_0000_0000),
    ]
    sdm = import_devicetree(DTS / "sdm845-db845c.dtb", ram="4G").spec
    fastrpc = sdm.reserved_region("fastrpc")
    # 16M, alignment 4M, in [0, 0xffffffff): top-down -> round_down(0xffffffff - 16M, 4M)
    assert (fastrpc.range.start, fastrpc.reusable, fastrpc.dynamic) == (0xFEC0_0000, True, True)
    assert sdm.target("fastrpc").kind == "cma"
    assert len({s.format for s in sdm.smmus}) == 1


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_board_boots_and_two_masters_share_a_buffer(board: str) -> None:
    ram, _, _, _, (writer, reader), fmt = BOARDS[board]
    system = System.from_file(DTS / f"{board}.dtb", ram=ram)
    frame = VcmExporter(system).allocate(SZ_64K)
    out = frame.attach(writer).map(DmaDirection.FROM_DEVICE)
    into = frame.attach(reader).map(DmaDirection.TO_DEVICE)
    payload = bytes(range(256)) * 4
    system.device(writer).write(out.dma_address, payload)
    assert system.device(reader).read(into.dma_address, len(payload)) == payload
    pas = []
    for name, sg in ((writer, out), (reader, into)):
        dev = system.device(name)
        assert dev.ctx.smmu.fmt is fmt
        (dump,) = device_tables(system, name)
        hit = [r for r in dump.ranges if r.va <= sg.dma_address < r.va + r.size]
        assert len(hit) == 1, dump.ranges
        pas.append(hit[0].pa + sg.dma_address - hit[0].va)
    kernel = system.spec.target(system.memory_roles.kernel)
    assert pas[0] == pas[1] and pas[0] in kernel.range


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_a_scenario_runs_on_each_board(board: str) -> None:
    """``vcmm run`` on a real board: a scenario naming the board file, its RAM and two
    of its masters; the codec writes a frame and the display reads it without faults."""
    ram, _, _, _, (writer, reader), _ = BOARDS[board]
    text = SCENARIO.format(
        path=str(DTS / f"{board}.dtb").replace("\\", "/"),
        ram=f'ram = "{ram}"' if ram else "",
        writer=writer,
        reader=reader,
    )
    result = run_scenario(loads_scenario(text, source=f"<{board}>"))
    moved = {d.name: (d.bytes_written, d.bytes_read, d.faults) for d in result.devices}
    frame = 320 * 240 * 3 // 2
    assert moved == {writer: (frame, 0, 0), reader: (0, frame, 0)}


SCENARIO = """\
platform = "{path}"
{ram}
buffers = [{{ name = "frame", size = "320x240 nv12", policy = "4k" }}]
steps = [
  {{ device = "{writer}", buffer = "frame", access = "write", pattern = "raster" }},
  {{ device = "{reader}", buffer = "frame", access = "read", pattern = "tiled", tile = "64x8" }},
]
"""
