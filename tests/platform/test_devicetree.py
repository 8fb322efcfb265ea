"""Devicetree import on small boards built in the tests (libfdt's writer).

Expected values come from the devicetree specification and Linux's rules, worked out
by hand in each test: the Linux device names (of_device_make_bus_id), memblock's
top-down placement of dynamic reserved regions, arm-smmu's stream-match grouping,
of_dma_configure's masks.
"""

from __future__ import annotations

import dataclasses
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from vcmm import SZ_1M, SZ_16M, SZ_64K, DmaDirection, System
from vcmm.hw.pgtable import VMSAV8_4K
from vcmm.platform import PlatformError, dumps_platform, load_platform, loads_platform
from vcmm.platform.devices import StreamSpec
from vcmm.platform.devicetree import (
    DeviceTreeError,
    DeviceTreeWarning,
    describe_stream,
    import_devicetree,
    load_devicetree,
    parse_blob,
)
from vcmm.platform.devicetree.iommu import IOMMU_MODELS
from vcmm.platform.devicetree.naming import linux_name
from vcmm.share import VcmExporter

from .dtnodes import smmu_node

MakeDtb = Callable[..., str]
GIC, SMMU, SMMU_V1, POOL, DYN, ACME = 1, 2, 3, 10, 11, 4


def board() -> dict[str, Any]:
    """A small SoC: RAM in two banks (one above 4 GiB), reserved memory of every kind,
    an MMU-500 and an MMU-401 (two table formats), a bus with a DMA offset, a coherent
    GPU, an IOMMU vcmm does not model and a PCIe host with an iommu-map."""
    return {
        "#address-cells": 2,
        "#size-cells": 2,
        "model": "vcmm test board",
        "compatible": "vcmm,test",
        "interrupt-parent": GIC,
        "memory@80000000": {"device_type": "memory", "reg": [0, 0x8000_0000, 0, 0x4000_0000]},
        "memory@880000000": {"device_type": "memory", "reg": [8, 0x8000_0000, 0, 0x4000_0000]},
        "reserved-memory": {
            "#address-cells": 2,
            "#size-cells": 2,
            "ranges": True,
            "fw@80000000": {"reg": [0, 0x8000_0000, 0, 0x10_0000], "no-map": True},
            "pool@90000000": {
                "compatible": "shared-dma-pool",
                "reg": [0, 0x9000_0000, 0, 0x40_0000],
                "no-map": True,
                "phandle": POOL,
            },
            "dyn": {
                "compatible": "shared-dma-pool",
                "size": [0, 0x20_0000],
                "alignment": [0, 0x10_0000],
                "alloc-ranges": [0, 0xA000_0000, 0, 0x1000_0000],
                "no-map": True,
                "phandle": DYN,
            },
            "linux,cma": {
                "compatible": "shared-dma-pool",
                "reusable": True,
                "size": [0, 0x100_0000],
                "linux,cma-default": True,
            },
            "off": {"reg": [0, 0xB000_0000, 0, 0x1000], "status": "disabled"},
        },
        "interrupt-controller@1000": {
            "reg": [0, 0x1000, 0, 0x1000],
            "#interrupt-cells": 3,
            "interrupt-controller": True,
            "phandle": GIC,
        },
        "soc@10000000": {
            "compatible": "simple-bus",
            "#address-cells": 1,
            "#size-cells": 1,
            "ranges": [0, 0, 0x1000_0000, 0x100_0000],
            "iommu@100000": smmu_node(
                ["vendor,soc-smmu-500", "arm,mmu-500"],
                [0x10_0000, 0x1_0000],
                SMMU,
                cells=2,
                interrupts=5,
            ),
            "iommu@110000": smmu_node(
                ["arm,mmu-401", "arm,smmu-v1"],
                [0x11_0000, 0x1_0000],
                SMMU_V1,
                interrupts=2,
                extra={"dma-coherent": True},
            ),
            "display@20000": {
                "reg": [0x2_0000, 0x1000],
                "iommus": [SMMU, 0x10, 0, SMMU, 0x11, 0],
                "memory-region": POOL,
            },
            "video@30000": {"reg": [0x3_0000, 0x1000], "iommus": [SMMU, 0x20, 0x1]},
            "video-port@31000": {"reg": [0x3_1000, 0x1000], "iommus": [SMMU, 0x21, 0]},
            "camera@40000": {
                "reg": [0x4_0000, 0x1000],
                "iommus": [SMMU_V1, 5],
                "status": "disabled",
            },
            "bus@50000": {
                "compatible": "simple-bus",
                "#address-cells": 1,
                "#size-cells": 1,
                "ranges": True,
                "dma-ranges": [0, 0x8000_0000, 0x4000_0000],
                "dsp@50000": {"reg": [0x5_0000, 0x1000], "memory-region": DYN},
            },
            "gpu@60000": {"reg": [0x6_0000, 0x1000], "dma-coherent": True},
            "iommu@70000": smmu_node("acme,iommu", [0x7_0000, 0x1000], ACME),
            "npu@71000": {"reg": [0x7_1000, 0x1000], "iommus": [ACME, 3]},
            "pcie@80000": {
                "reg": [0x8_0000, 0x1000],
                "iommu-map": [0, SMMU, 0x100, 0x10],
                "iommu-map-mask": 0xFF00,
            },
        },
    }


def imported(make_dtb: MakeDtb, tree: dict[str, Any] | None = None, **kw: Any) -> Any:
    return import_devicetree(make_dtb(tree or board()), **kw)


# -- names, IOMMUs, groups ---------------------------------------------------------------------


def test_masters_get_linux_names_and_keep_their_node_paths(make_dtb: MakeDtb) -> None:
    spec = imported(make_dtb).spec
    # soc@10000000 maps child address 0 to CPU 0x1000_0000: display@20000 is 10020000.
    names = {d.name: d.node for d in spec.devices}
    assert names == {
        "10020000.display": "/soc@10000000/display@20000",
        "10030000.video": "/soc@10000000/video@30000",
        "10031000.video-port": "/soc@10000000/video-port@31000",
        "10040000.camera": "/soc@10000000/camera@40000",
        "10050000.dsp": "/soc@10000000/bus@50000/dsp@50000",
        "10060000.gpu": "/soc@10000000/gpu@60000",
        "10071000.npu": "/soc@10000000/npu@71000",
        "10080000.pcie": "/soc@10000000/pcie@80000",
    }
    assert [s.name for s in spec.smmus] == ["10100000.iommu", "10110000.iommu"]


def test_linux_name_of_a_node_without_an_address_chains_its_parents(make_dtb: MakeDtb) -> None:
    tree = parse_blob(
        Path(
            make_dtb(
                {
                    "#address-cells": 1,
                    "#size-cells": 1,
                    "remoteproc-adsp": {"glink-edge": {}},
                    "soc": {
                        "#address-cells": 1,
                        "#size-cells": 1,
                        "ranges": True,
                        "remoteproc@5c00000": {
                            "reg": [0x5C0_0000, 0x4000],
                            "glink-edge": {
                                "fastrpc": {
                                    "#address-cells": 1,
                                    "#size-cells": 0,
                                    "compute-cb@3": {"reg": 3},
                                }
                            },
                        },
                        "clock@1000": {"reg": [0x1000, 0x100], "mask": 0x30},
                    },
                }
            ),
        ).read_bytes()
    )

    def name(path: str) -> str:
        node = tree.find(path)
        assert node is not None
        return linux_name(tree, node)

    # compute-cb@3's reg is on a bus of IDs (#size-cells 0): it has no CPU address.
    cb = "/soc/remoteproc@5c00000/glink-edge/fastrpc/compute-cb@3"
    assert name(cb) == "5c00000.remoteproc:glink-edge:fastrpc:compute-cb@3"
    assert name("/remoteproc-adsp/glink-edge") == "remoteproc-adsp:glink-edge"
    assert name("/soc/clock@1000") == "1000.4.clock"  # ffs(0x30) - 1 = 4


def test_each_smmu_gets_the_format_of_its_compatible(make_dtb: MakeDtb) -> None:
    spec = imported(make_dtb).spec
    v2, v1 = spec.smmus
    assert (v2.format, v2.model, v2.coherent) == ("vmsav8", "arm,mmu-500", False)
    assert (v1.format, v1.model, v1.coherent) == ("lpae", "arm,mmu-401", True)
    # 5 interrupts, 1 global: 4 context banks (arm,smmu binding); 2 - 1 = 1 on the v1.
    assert (v2.context_banks, v1.context_banks) == (4, 1)


def test_register_windows_sit_at_the_iommus_reg(make_dtb: MakeDtb) -> None:
    """The soc bus maps 0 to 0x1000_0000, so the MMU-500's reg 0x10_0000 is CPU address
    0x1010_0000 and the MMU-401's 0x1011_0000; both are aligned to their windows (4
    banks: 2 * 4 pages of 4K; 1 bank: 2 * 2 pages)."""
    result = imported(make_dtb)
    v2, v1 = result.spec.smmus
    assert (v2.base, v2.register_window_size) == (0x1010_0000, 0x8000)
    assert (v1.base, v1.register_window_size) == (0x1011_0000, 0x4000)
    assert not any("register window" in n for n in result.notes)
    system = System(dataclasses.replace(result.spec, smmus=(v2,), devices=()))
    assert system.smmus[v2.name].read_register(0x1010_0000 + 0x24) & 0xFF == 4  # IDR1.NUMCB


def test_a_register_window_that_cannot_sit_at_its_reg_moves_to_a_free_slot(
    make_dtb: MakeDtb,
) -> None:
    tree = board()
    # Inside the MMU-500's window once aligned down: the MMU-401 goes elsewhere.
    tree["soc@10000000"]["iommu@110000"]["reg"] = [0x10_4100, 0x100]
    result = imported(make_dtb, tree)
    v2, v1 = result.spec.smmus
    assert v2.base == 0x1010_0000
    assert v1.base == 0x0400_0000  # the first free default slot (RAM starts at 2 GiB)
    (note,) = [n for n in result.notes if "register window" in n]
    assert "0x10104100" in note and "0x4000000" in note


def test_stream_ids_and_groups_follow_arm_smmu_matching(make_dtb: MakeDtb) -> None:
    spec = imported(make_dtb).spec
    display = spec.device("10020000.display")
    video, port = spec.device("10030000.video"), spec.device("10031000.video-port")
    assert display.streams == (StreamSpec(0x10), StreamSpec(0x11))
    # 0x21 is covered by the entry 0x20 mask 0x1: one group, one context, one domain.
    assert video.streams == (StreamSpec(0x20, 0x1),) and port.streams == (StreamSpec(0x21),)
    assert video.context == port.context != display.context
    assert video.domain == port.domain == video.context
    assert display.domain is None
    camera = spec.device("10040000.camera")
    assert (
        camera.disabled and camera.smmu == "10110000.iommu" and camera.streams == (StreamSpec(5),)
    )


def test_a_stream_match_conflict_names_the_node_and_property(make_dtb: MakeDtb) -> None:
    tree = board()
    tree["soc@10000000"]["video-port@31000"]["iommus"] = [SMMU, 0x21, 0x2]  # 0x21..0x23
    with pytest.raises(DeviceTreeError, match=r"video-port@31000: iommus: .*conflict"):
        imported(make_dtb, tree)


def test_unknown_iommu_warns_and_its_masters_are_direct(make_dtb: MakeDtb) -> None:
    result = imported(make_dtb)
    npu = result.spec.device("10071000.npu")
    assert npu.kind == "physical" and npu.streams == ()
    assert any("acme,iommu" in w and "/soc@10000000/iommu@70000" in w for w in result.warnings)
    with pytest.warns(DeviceTreeWarning, match="acme,iommu"):
        load_devicetree(make_dtb(board()))


def test_pcie_iommu_map_is_recorded(make_dtb: MakeDtb) -> None:
    pcie = imported(make_dtb).spec.device("10080000.pcie")
    assert pcie.kind == "physical" and pcie.iommu_map_mask == 0xFF00
    (entry,) = pcie.iommu_map
    assert (entry.rid_base, entry.smmu, entry.sid_base, entry.length) == (
        0,
        "10100000.iommu",
        0x100,
        0x10,
    )


def test_m4u_puts_every_master_in_one_group(make_dtb: MakeDtb) -> None:
    tree: dict[str, Any] = {
        "#address-cells": 1,
        "#size-cells": 1,
        "memory@40000000": {"device_type": "memory", "reg": [0x4000_0000, 0x4000_0000]},
        "iommu@10205000": smmu_node("mediatek,mt8173-m4u", [0x1020_5000, 0x1000], 7),
        "ovl@1400c000": {"reg": [0x1400_C000, 0x1000], "iommus": [7, 0 << 5 | 0]},
        "vcodec@16020000": {"reg": [0x1602_0000, 0x1000], "iommus": [7, 1 << 5 | 0, 7, 1 << 5 | 5]},
    }
    spec = imported(make_dtb, tree, cma=0).spec
    (m4u,) = spec.smmus
    assert (m4u.format, m4u.context_banks, len(m4u.contexts)) == ("armv7s", 1, 1)
    ovl, codec = spec.devices
    assert ovl.context == codec.context and ovl.domain == codec.domain is not None
    model = IOMMU_MODELS["mediatek,mt8173-m4u"]
    assert [describe_stream(model, s) for s in codec.streams] == [
        "larb 1 port 0",
        "larb 1 port 5",
    ]


# -- memory ------------------------------------------------------------------------------------


def test_banks_reserved_regions_and_targets(make_dtb: MakeDtb) -> None:
    spec = imported(make_dtb).spec
    assert [(r.name, r.range.start, r.range.size) for r in spec.memory] == [
        ("memory@80000000", 0x8000_0000, 0x4000_0000),
        ("memory@880000000", 0x8_8000_0000, 0x4000_0000),
    ]
    regions = {r.name: r for r in spec.reserved}
    assert set(regions) == {"fw@80000000", "pool@90000000", "dyn", "linux,cma"}  # not "off"
    # dyn: 2M top-down in [0xa000_0000, 0xb000_0000), 1M aligned -> 0xafe0_0000.
    assert regions["dyn"].range.start == 0xAFE0_0000 and regions["dyn"].dynamic
    # the CMA area: 16M, aligned to 2M (pageblock), top-down over all RAM: the high bank.
    assert regions["linux,cma"].range.start == 0x8_C000_0000 - SZ_16M
    kinds = {t.name: t.kind for t in spec.targets}
    assert kinds["pool@90000000"] == kinds["dyn"] == "contiguous"
    assert kinds["linux,cma"] == "cma"
    assert spec.dma.coherent_pool.target == "linux,cma"
    # no-map and pools stay out of the linear map and every system target
    for name in ("fw@80000000", "pool@90000000", "dyn"):
        window = regions[name].range
        assert not any(w.overlaps(window) for w in spec.cpu.linear_map)
    low = [t for t in spec.targets if t.kind == "system" and t.range.end <= 1 << 32]
    assert spec.dma.kernel_target == max(low, key=lambda t: t.size).name
    assert spec.device("10020000.display").memory_regions == ("pool@90000000",)
    assert spec.device("10050000.dsp").memory_regions == ("dyn",)


def test_without_a_default_cma_region_linux_makes_one_below_4g(make_dtb: MakeDtb) -> None:
    tree = board()
    del tree["reserved-memory"]["linux,cma"]
    spec = imported(make_dtb, tree).spec
    cma = spec.target("linux,cma")
    # 32M, 2M aligned, top-down below 4 GiB: the top of the low bank.
    assert (cma.kind, cma.base, cma.size) == ("cma", 0xC000_0000 - 32 * SZ_1M, 32 * SZ_1M)
    # page tables: 16M, top-down below 4 GiB, under the CMA area
    assert spec.page_tables.end == cma.base and spec.page_tables.size == SZ_16M
    assert "linux,cma" not in {r.name for r in spec.reserved}
    no_cma = imported(make_dtb, tree, cma=0).spec
    assert (
        all(t.kind != "cma" for t in no_cma.targets) and no_cma.memory_roles().coherent_pool is None
    )


def test_a_size_zero_bank_needs_ram(make_dtb: MakeDtb) -> None:
    tree = board()
    tree["memory@880000000"]["reg"] = [8, 0x8000_0000, 0, 0]
    with pytest.raises(DeviceTreeError, match=r"/memory@880000000: reg: .*size 0.*ram="):
        imported(make_dtb, tree)
    spec = imported(make_dtb, tree, ram="2G").spec
    assert spec.region("memory@880000000").range.size == 2 << 30
    with pytest.raises(DeviceTreeError, match=r"ram=1G given, but every memory bank has a size"):
        imported(make_dtb, ram="1G")
    with pytest.raises(PlatformError, match=r"ram='5K' must be a positive multiple of 4K"):
        imported(make_dtb, tree, ram="5K")


def test_overlapping_reserved_regions_are_refused(make_dtb: MakeDtb) -> None:
    tree = board()
    tree["reserved-memory"]["late@80080000"] = {"reg": [0, 0x8008_0000, 0, 0x10_0000]}
    with pytest.raises(
        DeviceTreeError, match=r"/reserved-memory/late@80080000: reg: .*overlaps .*fw@80000000"
    ):
        imported(make_dtb, tree)


def test_bus_offsets_and_masks_come_from_dma_ranges(make_dtb: MakeDtb) -> None:
    spec = imported(make_dtb).spec
    dsp = spec.device("10050000.dsp")
    ((bus, phys, size),) = [(r.bus, r.phys, r.size) for r in dsp.dma_ranges]
    assert (bus, phys, size) == (0, 0x8000_0000, 0x4000_0000)
    assert dsp.dma.mask == dsp.dma.coherent_mask == 0x3FFF_FFFF  # end 0x3fff_ffff: 30 bits
    assert spec.device("10060000.gpu").coherent
    assert not spec.device("10020000.display").coherent


# -- files, round trip, boot -------------------------------------------------------------------


def test_import_round_trips_through_toml(make_dtb: MakeDtb, tmp_path: Any) -> None:
    spec = imported(make_dtb).spec
    text = dumps_platform(spec)
    assert loads_platform(text, source=spec.source) == spec
    path = tmp_path / "board.toml"
    path.write_text(text)
    assert load_platform(path).devices == spec.devices


def test_imported_board_boots_and_shares_a_buffer(make_dtb: MakeDtb) -> None:
    tree = board()
    tree["soc@10000000"]["iommu@110000"]["compatible"] = "arm,mmu-500"  # one table format
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeviceTreeWarning)
        system = System.from_file(make_dtb(tree))
    assert {smmu.fmt for smmu in system.smmus.values()} == {VMSAV8_4K}
    frame = VcmExporter(system).allocate(SZ_64K)
    video = frame.attach("10030000.video").map(DmaDirection.FROM_DEVICE)
    display = frame.attach("10020000.display").map(DmaDirection.TO_DEVICE)
    system.device("10030000.video").write(video.dma_address, b"frame 1")
    assert system.device("10020000.display").read(display.dma_address, 7) == b"frame 1"


def test_bad_blobs_are_one_line_errors(make_dtb: MakeDtb, tmp_path: Any) -> None:
    good = (tmp_path / "x").with_suffix(".dtb")
    data = Path(make_dtb(board())).read_bytes()
    good.write_bytes(bytes(data[:200]))
    with pytest.raises(DeviceTreeError, match=r"x\.dtb: not a valid devicetree blob \(FDT_ERR_"):
        load_devicetree(good)
    with pytest.raises(DeviceTreeError, match="not a valid devicetree blob"):
        parse_blob(b"\xd0\x0d\xfe\xed" + bytes(60))
    with pytest.raises(DeviceTreeError, match="cannot read devicetree"):
        load_devicetree(tmp_path / "missing.dtb")


def test_dangling_phandle_and_cells_mismatch_name_node_and_property(make_dtb: MakeDtb) -> None:
    tree = board()
    tree["soc@10000000"]["video@30000"]["iommus"] = [99, 0x20, 0]
    with pytest.raises(DeviceTreeError, match=r"video@30000: iommus: phandle 0x63 .*dangling"):
        imported(make_dtb, tree)
    tree = board()
    tree["soc@10000000"]["video@30000"]["iommus"] = [SMMU, 0x20]  # 2 cells expected
    with pytest.raises(DeviceTreeError, match=r"video@30000: iommus: .*#iommu-cells is 2"):
        imported(make_dtb, tree)
    tree = board()
    tree["soc@10000000"]["iommu@110000"]["#iommu-cells"] = 3
    tree["soc@10000000"]["camera@40000"]["iommus"] = [SMMU_V1, 5, 0, 0]
    with pytest.raises(
        DeviceTreeError, match=r"iommu@110000: #iommu-cells: is 3; the MMU-401 .* takes 1 or 2"
    ):
        imported(make_dtb, tree)


def test_dts_without_dtc_names_the_tool(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "board.dts"
    source.write_text("/dts-v1/;\n/ { };\n")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DeviceTreeError, match=r"board\.dts: .*'dtc'.*device-tree-compiler"):
        load_devicetree(source)


@pytest.mark.skipif(shutil.which("dtc") is None, reason="dtc (device-tree-compiler) not installed")
def test_dts_is_compiled_with_dtc(tmp_path: Any) -> None:
    source = tmp_path / "tiny.dts"
    source.write_text(
        "/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>;\n"
        '  memory@40000000 { device_type = "memory"; reg = <0x40000000 0x10000000>; };\n'
        '  smmu: iommu@1000 { compatible = "arm,mmu-401"; reg = <0x1000 0x100>;\n'
        "    #iommu-cells = <1>; #global-interrupts = <0>; };\n"
        "  lcd@2000 { reg = <0x2000 0x100>; iommus = <&smmu 3>; };\n};\n"
    )
    spec = load_devicetree(source)
    assert spec.device("2000.lcd").streams == (StreamSpec(3),)
    bad = tmp_path / "bad.dts"
    bad.write_text("/dts-v1/;\n/ { oops\n")
    with pytest.raises(DeviceTreeError, match=r"bad\.dts: dtc could not compile it"):
        load_devicetree(bad)
