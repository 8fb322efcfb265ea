"""``vcmm iova``: map/unmap calls replayed under each IOVA placement policy."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from vcmm import SZ_4K, PhysAttr, System
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi
from vcmm.platform import load_default
from vcmm.platform.loader import dumps_platform

Vcmm = Callable[..., Result]


def test_without_calls_it_shows_the_issues_example_side_by_side(vcmm: Vcmm) -> None:
    out = vcmm("iova").stdout
    assert out.startswith("IOVA placement on platform msm-default, device vcodec_a_mm1")
    row = next(line for line in out.splitlines() if line.strip().startswith("2  map 12K"))
    assert row.split()[3:] == ["0xffffc000", "0xffff8000"]  # seed, linux
    assert "max32_alloc_size 0x100000" in out


def test_json_agrees_with_the_dma_api(vcmm: Vcmm) -> None:
    calls = ["4K", "12K", "unmap:1", "8K", "4K"]
    data = json.loads(vcmm("iova", *calls, "--json").stdout)
    assert [c["call"] for c in data["calls"]] == [
        "map 4K",
        "map 12K",
        "unmap #1",
        "map 8K",
        "map 4K",
    ]
    for policy in ("seed", "linux"):
        system = System.default()
        dma = DmaApi(system, iova_policy=policy)
        pa = system.vcm_phys_alloc("ebi", 16 * SZ_4K, PhysAttr.CONTIGUOUS).chunk_ranges[0].start
        h1 = dma.map_page("vcodec_a_mm1", pa, 0, SZ_4K, D.BIDIRECTIONAL)
        h2 = dma.map_page("vcodec_a_mm1", pa, 0, 3 * SZ_4K, D.BIDIRECTIONAL)
        dma.unmap_page("vcodec_a_mm1", h1, SZ_4K, D.BIDIRECTIONAL)
        h4 = dma.map_page("vcodec_a_mm1", pa, 0, 2 * SZ_4K, D.BIDIRECTIONAL)
        h5 = dma.map_page("vcodec_a_mm1", pa, 0, SZ_4K, D.BIDIRECTIONAL)
        assert [c[policy] for c in data["calls"]] == [h1, h2, h1, h4, h5]
    # The freed page comes back from the range cache under both policies.
    assert data["calls"][4]["linux"] == data["calls"][0]["linux"] == 0xFFFF_F000
    assert data["cache"]["linux"]["rcache_hits"] == 1


def test_one_policy_and_a_platform_file_that_chooses_linux(vcmm: Vcmm, tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_text(dumps_platform(dataclasses.replace(load_default(), iova_policy="linux")))
    out = vcmm("iova", "--platform", path, "--policy", "linux", "4K", "12K").stdout
    assert "(platform iova_policy = 'linux')" in out
    header = next(line for line in out.splitlines() if line.strip().startswith("#"))
    assert header.split() == ["#", "call", "linux"]


def test_a_failed_mapping_is_shown_with_its_reason(vcmm: Vcmm) -> None:
    out = vcmm("iova", "--mask", "0x1fff", "4K", "4K").stdout
    row = next(line for line in out.splitlines() if line.strip().startswith("2  map 4K"))
    assert row.split()[3:] == ["failed", "failed"]
    assert "linux, call 2: vcm_reserve: no free 4K range" in out
    assert "(linux policy): no free 4K range aligned to 4K ending at or below limit 0x1fff" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["unmap:3"], "unmap:N must be the number of an earlier call"),
        (["4K", "unmap:1", "unmap:2"], "call 2 is an unmap"),
        (["0"], "needs at least one byte"),
        (["4Q"], "is not a whole number with an optional binary unit"),
        (["--device", "dsp"], "'dsp' is physically addressed"),
        (["--device", "nosuch"], "nosuch"),
        (["--mask", "zz"], "'zz' is not an integer"),
        (["--mask", "0x1234"], "mask"),
        (["--policy", "mainline"], "'mainline' is not one of"),
    ],
)
def test_mistakes_are_one_line(
    vcmm: Vcmm, error_line: Callable[[Result], str], args: list[str], message: str
) -> None:
    line = error_line(vcmm("iova", *args, expect=None))
    assert message in line
