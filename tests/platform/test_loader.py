"""The platform loader: file shape, sizes, and one test per validation rule.

Each failing case writes a platform file that breaks exactly one rule and checks that
the error is a PlatformError (an InvalidArgumentError) whose message names the file,
the key path and the offending value, and whose ``key`` is exactly that path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import InvalidArgumentError, NotFoundError
from vcmm.hw.memory import MemoryRegion
from vcmm.platform import (
    BlockPoolSpec,
    CacheSpec,
    ContextSpec,
    CpuSpec,
    DeviceSpec,
    DmaRange,
    DmaSpec,
    PlatformError,
    PlatformSpec,
    SmmuSpec,
    TargetSpec,
    TlbSpec,
    dumps_platform,
    layout_block_pools,
    load_platform,
    loads_platform,
    parse_number,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K, format_size

# A small board unlike the default: every kind of table, keys written in odd orders,
# sizes in several notations, a shared IOMMU domain.
BASE = """\
name = "board"
description = "test board"
target_priority = ["pools", "sys"]

[[memory]]
name = "dram"
kind = "ram"
base = 0x4000_0000
size = "512M"

[[memory]]
name = "ocm"
kind = "sram"
base = 0x1000_0000
size = "256K"

[cpu]
linear_map = [{ base = 0x4000_0000, size = "128M" }]
prefetch_seed = 7

[cpu.cache]
size = "16K"
ways = 2
line = 32

[cpu.tlb]
entries = 32
ways = 2
replacement = "fifo"

[page_tables]
base = "0x4800_0000"
size = "2M+4K"

[[targets]]
name = "sys"
kind = "system"
base = 0x4000_0000
size = 0x800_0000

[[targets]]
name = "pools"
kind = "blocks"
base = 0x5000_0000
blocks = { 4K = 8, 1M = 2 }

[[targets]]
name = "cma"
kind = "contiguous"
base = 0x5800_0000
size = "SZ_16M"

[[targets]]
name = "ocm"
kind = "onchip"
base = 0x1000_0000
size = "256K"

[[smmus]]
name = "iommu_a"
format = "vmsav8"
context_banks = 2
tlb = { entries = 16, ways = 4 }
contexts = [
    { name = "gpu", bank = 1 },
    { name = "jpeg", bank = 0 },
]

[[smmus]]
name = "iommu_b"
context_banks = 4
contexts = [{ name = "isp", bank = 3, tree_name = "isp_ctx" }]

[[devices]]
name = "gpu0"
kind = "smmu"
smmu = "iommu_a"
context = "gpu"
domain = "gfx"
coherent = true

[[devices]]
name = "gpu1"
kind = "smmu"
smmu = "iommu_a"
context = "gpu"
domain = "gfx"

[[devices]]
name = "jpeg"
kind = "smmu"
smmu = "iommu_a"
context = "jpeg"
dma = { mask = "0xff_ffff_ffff", max_segment_size = "1M" }

[[devices]]
name = "isp"
kind = "smmu"
smmu = "iommu_b"
context = "isp"

[[devices]]
name = "dma0"
kind = "physical"
dma_ranges = [
    { bus = 0x0, phys = 0x4000_0000, size = "256M" },
    { bus = 0x1000_0000, phys = 0x5000_0000, size = "256M" },
]
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    """Replace one exact fragment of the board (fails loudly if the fragment moved)."""
    assert text.count(old) == 1, f"fragment {old!r} must occur once"
    return text.replace(old, new)


def load_text(tmp_path: Path, text: str) -> PlatformSpec:
    path = tmp_path / "board.toml"
    path.write_text(text)
    return load_platform(path)


def load_error(tmp_path: Path, text: str) -> tuple[PlatformError, Path]:
    path = tmp_path / "board.toml"
    path.write_text(text)
    with pytest.raises(PlatformError) as info:
        load_platform(path)
    assert isinstance(info.value, InvalidArgumentError)
    return info.value, path


def check_error(tmp_path: Path, text: str, key: str, *values: str) -> PlatformError:
    err, path = load_error(tmp_path, text)
    message = str(err)
    assert message.startswith(f"{path}: {key}: "), message
    assert err.key == key
    assert err.source == str(path)
    for value in values:
        assert value in message, (value, message)
    return err


# -- the board loads as written ------------------------------------------------------------


def test_board_loads_every_value(tmp_path: Path) -> None:
    spec = load_text(tmp_path, BASE)
    assert spec.name == "board" and spec.source == str(tmp_path / "board.toml")
    assert spec.memory == (
        MemoryRegion("dram", AddressRange(0x4000_0000, 512 * SZ_1M), "ram"),
        MemoryRegion("ocm", AddressRange(0x1000_0000, 256 * 1024), "sram"),
    )
    assert spec.page_tables == AddressRange(0x4800_0000, 0x20_1000)
    assert spec.cpu.cache == CacheSpec(16 * 1024, 2, 32)
    assert spec.cpu.tlb == TlbSpec(32, 2, "fifo")
    assert spec.cpu.prefetch_seed == 7
    assert spec.cpu.linear_map_va == 0xFFFF_0000_0000_0000
    assert spec.cpu.vmalloc == AddressRange(0xFFFF_8000_0000_0000, 1 << 30)
    sys_target, pools, cma, ocm = spec.targets
    assert (sys_target.kind, sys_target.size, sys_target.max_order) == ("system", 128 * SZ_1M, 10)
    assert cma.range == AddressRange(0x5800_0000, SZ_16M)
    assert ocm.kind == "onchip" and ocm.max_order is None
    # Written 4K first; laid out 1M first: 2 x 1M at the base, then 8 x 4K.
    assert pools.blocks == (
        BlockPoolSpec(SZ_1M, 2, 0x5000_0000),
        BlockPoolSpec(SZ_4K, 8, 0x5020_0000),
    )
    assert pools.size == 2 * SZ_1M + 8 * SZ_4K
    assert spec.target_priority == ("pools", "sys")


def test_board_smmus_and_devices(tmp_path: Path) -> None:
    spec = load_text(tmp_path, BASE)
    iommu_a, iommu_b = spec.smmus
    assert (iommu_a.format, iommu_b.format) == ("vmsav8", "armv7s")
    assert iommu_a.tlb == TlbSpec(16, 4, "lru")
    assert iommu_b.tlb == TlbSpec()
    # Tree names default to ctx<n>, numbered across SMMUs in file order.
    assert iommu_a.contexts == (ContextSpec("gpu", 1, "ctx0"), ContextSpec("jpeg", 0, "ctx1"))
    assert iommu_b.contexts == (ContextSpec("isp", 3, "isp_ctx"),)
    gpu0, gpu1, jpeg, _isp, dma0 = spec.devices
    assert gpu0.coherent and not gpu1.coherent
    assert gpu0.domain == gpu1.domain == "gfx"
    assert gpu0.dma == DmaSpec()
    assert jpeg.dma == DmaSpec(
        mask=(1 << 40) - 1, coherent_mask=(1 << 40) - 1, max_segment_size=SZ_1M
    )
    assert dma0.dma_ranges == (
        DmaRange(0, 0x4000_0000, 256 * SZ_1M),
        DmaRange(0x1000_0000, 0x5000_0000, 256 * SZ_1M),
    )
    assert spec.context("isp") == (iommu_b, iommu_b.contexts[0])
    assert spec.device("jpeg") is jpeg and spec.smmu("iommu_b") is iommu_b
    assert spec.target("cma") is spec.targets[2] and spec.region("ocm") is spec.memory[1]


@pytest.mark.parametrize("lookup", ["region", "target", "smmu", "device", "context"])
def test_lookup_of_unknown_name_raises_not_found(lookup: str) -> None:
    spec = loads_platform(BASE)
    with pytest.raises(NotFoundError, match="'nothing'"):
        getattr(spec, lookup)("nothing")


def test_linear_map_defaults_to_system_targets(tmp_path: Path) -> None:
    text = edit('linear_map = [{ base = 0x4000_0000, size = "128M" }]\n', "")
    spec = load_text(tmp_path, text)
    assert spec.cpu.linear_map == (AddressRange(0x4000_0000, 128 * SZ_1M),)


def test_target_priority_defaults_to_file_order(tmp_path: Path) -> None:
    spec = load_text(tmp_path, edit('target_priority = ["pools", "sys"]\n', ""))
    assert spec.target_priority == ("sys", "pools", "cma", "ocm")


def test_linear_map_translation() -> None:
    cpu = loads_platform(BASE).cpu
    assert cpu.linear_va(0x4000_0000) == 0xFFFF_0000_0000_0000
    assert cpu.linear_va(0x4123_4567) == 0xFFFF_0000_0123_4567
    with pytest.raises(InvalidArgumentError, match="0x48000000"):
        cpu.linear_va(0x4800_0000)


def test_dumps_round_trip() -> None:
    spec = loads_platform(BASE, source="board")
    text = dumps_platform(spec)
    assert loads_platform(text, source="board") == spec
    with pytest.raises(InvalidArgumentError, match="PlatformSpec"):
        dumps_platform("board")  # type: ignore[arg-type]


# -- sizes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ('"2M+4K"', 0x20_1000),
        ('"SZ_2M + SZ_4K"', 0x20_1000),
        ('"0x201000"', 0x20_1000),
        ('"0x20_1000"', 0x20_1000),
        ("0x20_1000", 0x20_1000),
        ("2101248", 0x20_1000),
        ('"64K"', SZ_64K),
        ('"1M+64K+4K"', SZ_1M + SZ_64K + SZ_4K),
    ],
)
def test_size_notations(tmp_path: Path, written: str, expected: int) -> None:
    spec = load_text(tmp_path, edit('size = "2M+4K"', f"size = {written}"))
    assert spec.page_tables.size == expected


@settings(max_examples=40, deadline=None)
@given(pages=st.integers(min_value=1, max_value=(96 << 20) // SZ_4K))
def test_sizes_round_trip_through_the_file(pages: int) -> None:
    """format_size -> file -> loader gives the same byte count, for any page multiple."""
    size = pages * SZ_4K
    spec = loads_platform(edit('size = "2M+4K"', f'size = "{format_size(size)}"'))
    assert spec.page_tables.size == size
    assert loads_platform(dumps_platform(spec)).page_tables.size == size


def test_parse_number_rejects_non_numbers() -> None:
    assert parse_number("0x8000_0000", "address") == 0x8000_0000
    for bad in (True, 1.5, "12Q", -4096, "0x1" + "0" * 16):
        with pytest.raises(InvalidArgumentError, match="address"):
            parse_number(bad, "address")


# -- file-level errors -----------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "no_such_board.toml"
    with pytest.raises(PlatformError) as info:
        load_platform(path)
    assert str(path) in str(info.value)
    assert "cannot read" in str(info.value)


def test_invalid_toml_names_file_and_line(tmp_path: Path) -> None:
    err, path = load_error(tmp_path, edit('name = "board"', "name = board"))
    assert str(err).startswith(f"{path}: not valid TOML")
    assert "line 1" in str(err)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "board.toml"
    path.write_bytes(b'name = "\xff"\n')
    with pytest.raises(PlatformError, match="not UTF-8"):
        load_platform(path)


def test_loads_default_source_and_bad_arguments() -> None:
    with pytest.raises(PlatformError) as info:
        loads_platform(edit('name = "board"', 'name = "bo ard"'))
    assert str(info.value).startswith("<string>: name: ")
    assert "'bo ard'" in str(info.value)
    with pytest.raises(PlatformError, match="must be a str"):
        loads_platform(b"name = 1")  # type: ignore[arg-type]
    with pytest.raises(PlatformError, match="path"):
        load_platform(42)  # type: ignore[arg-type]


# -- one case per rule: (text, key path, values the message must name) -------------------------

CASES = [
    # unknown keys (typos), with a suggestion
    pytest.param(
        edit('name = "board"', 'nmae = "board"'), "nmae", ["'nmae'", "'name'"], id="typo-top"
    ),
    pytest.param(
        edit("entries = 16, ways = 4", "entires = 16, ways = 4"),
        "smmus[0].tlb.entires",
        ["'entires'", "did you mean 'entries'"],
        id="typo-smmu-tlb",
    ),
    pytest.param(
        edit('kind = "contiguous"', 'kind = "contiguous"\nszie = "1M"'),
        "targets[2].szie",
        ["'szie'", "'size'"],
        id="typo-target",
    ),
    pytest.param(
        edit("{ bus = 0x0, phys", "{ bus = 0x0, phsy"),
        "devices[4].dma_ranges[0].phsy",
        ["'phsy'", "'phys'"],
        id="typo-dma-range",
    ),
    pytest.param(
        edit("[cpu.cache]\nsize", "[cpu.cache]\nsets = 4\nsize"),
        "cpu.cache.sets",
        ["'sets'", "allowed here: size, ways, line"],
        id="unknown-cache-key",
    ),
    # missing keys
    pytest.param(
        edit('base = 0x4000_0000\nsize = "512M"', "base = 0x4000_0000"),
        "memory[0].size",
        ["'size'"],
        id="missing-region-size",
    ),
    pytest.param(
        edit('format = "vmsav8"\ncontext_banks = 2', 'format = "vmsav8"'),
        "smmus[0].context_banks",
        ["'context_banks'"],
        id="missing-context-banks",
    ),
    pytest.param(
        edit('{ name = "gpu", bank = 1 }', '{ name = "gpu", bank = "1" }'),
        "smmus[0].contexts[0].bank",
        ["expected an integer", "'1'"],
        id="bank-not-integer",
    ),
    pytest.param(
        edit('name = "isp"\nkind = "smmu"\n', 'name = "isp"\n'),
        "devices[3].kind",
        ["'kind'"],
        id="missing-device-kind",
    ),
    pytest.param(
        edit('[page_tables]\nbase = "0x4800_0000"\nsize = "2M+4K"\n', ""),
        "page_tables",
        ["'page_tables'"],
        id="missing-page-tables",
    ),
    pytest.param(
        edit(
            'name = "isp"\nkind = "smmu"\nsmmu = "iommu_b"\ncontext = "isp"',
            'name = "isp"\nkind = "smmu"\nsmmu = "iommu_b"',
        ),
        "devices[3].context",
        ["'context'"],
        id="missing-smmu-device-context",
    ),
    # wrong types
    pytest.param(
        edit("entries = 32", 'entries = "32"'),
        "cpu.tlb.entries",
        ["integer", "'32'"],
        id="type-int",
    ),
    pytest.param(
        edit("coherent = true", "coherent = 1"),
        "devices[0].coherent",
        ["true or false", "1"],
        id="type-bool",
    ),
    pytest.param(
        edit('name = "ocm"\nkind = "sram"', 'name = 5\nkind = "sram"'),
        "memory[1].name",
        ["string", "5"],
        id="type-name",
    ),
    pytest.param(
        edit('target_priority = ["pools", "sys"]', 'target_priority = "pools"'),
        "target_priority",
        ["array", "'pools'"],
        id="type-array",
    ),
    pytest.param(
        edit('dma = { mask = "0xff_ffff_ffff", max_segment_size = "1M" }', 'dma = "1M"'),
        "devices[2].dma",
        ["table", "'1M'"],
        id="type-table",
    ),
    pytest.param(
        edit('context = "isp"', "context = 3"),
        "devices[3].context",
        ["string", "3"],
        id="type-context",
    ),
    pytest.param(
        edit("size = 0x800_0000", "size = 1.5"),
        "targets[0].size",
        ["float", "1.5"],
        id="type-float-size",
    ),
    # bad sizes and addresses
    pytest.param(
        edit('size = "512M"', 'size = "512Q"'), "memory[0].size", ["'512Q'"], id="bad-size"
    ),
    pytest.param(
        edit('base = "0x4800_0000"', 'base = "0xZZ"'),
        "page_tables.base",
        ["'0xZZ'"],
        id="bad-address",
    ),
    pytest.param(
        edit('size = "SZ_16M"', "size = -4096"), "targets[2].size", ["-4096"], id="negative-size"
    ),
    pytest.param(
        edit('size = "SZ_16M"', 'size = "16M+100"'),
        "targets[2].size",
        ["0x1000064", "4K"],
        id="size-not-page-multiple",
    ),
    pytest.param(
        edit('base = 0x4000_0000\nsize = "512M"', 'base = 0x4000_0800\nsize = "512M"'),
        "memory[0]",
        ["0x40000800", "4K"],
        id="region-not-aligned",
    ),
    pytest.param(
        edit('size = "256K"\n\n[cpu]', "size = 0\n\n[cpu]"),
        "memory[1]",
        ["empty"],
        id="empty-region",
    ),
    # kinds and choices
    pytest.param(
        edit('kind = "ram"', 'kind = "rom"'), "memory[0].kind", ["'rom'", "sram"], id="region-kind"
    ),
    pytest.param(
        edit('kind = "system"', 'kind = "sytem"'), "targets[0].kind", ["'sytem'"], id="target-kind"
    ),
    pytest.param(
        edit('format = "vmsav8"', 'format = "armv9"'),
        "smmus[0].format",
        ["'armv9'", "armv7s"],
        id="smmu-format",
    ),
    pytest.param(
        edit('replacement = "fifo"', 'replacement = "mru"'),
        "cpu.tlb.replacement",
        ["'mru'", "lru"],
        id="tlb-replacement",
    ),
    pytest.param(
        edit('name = "dma0"\nkind = "physical"', 'name = "dma0"\nkind = "cpu"'),
        "devices[4].kind",
        ["'cpu'", "implicit"],
        id="device-kind-cpu",
    ),
    pytest.param(
        edit('name = "dma0"', 'name = "cpu"'),
        "devices[4].name",
        ["'cpu'", "reserved"],
        id="device-named-cpu",
    ),
    pytest.param(
        edit('size = "SZ_16M"', 'size = "SZ_16M"\nmax_order = 3'),
        "targets[2].max_order",
        ["'contiguous'"],
        id="max-order-on-carveout",
    ),
    pytest.param(
        edit("size = 0x800_0000", "size = 0x800_0000\nmax_order = 21"),
        "targets[0].max_order",
        ["21", "20"],
        id="max-order-too-large",
    ),
    pytest.param(
        edit('size = "SZ_16M"', 'size = "SZ_16M"\nblocks = { 4K = 1 }'),
        "targets[2].blocks",
        ["'contiguous'"],
        id="blocks-on-contiguous",
    ),
    pytest.param(
        edit("base = 0x5000_0000\nblocks", 'base = 0x5000_0000\nsize = "3M"\nblocks'),
        "targets[1].size",
        ["'blocks'"],
        id="size-on-blocks",
    ),
    # overlapping memory regions
    pytest.param(
        edit(
            'base = 0x1000_0000\nsize = "256K"\n\n[cpu]',
            'base = 0x5FFF_0000\nsize = "256K"\n\n[cpu]',
        ),
        "memory[1]",
        ["'ocm'", "0x5fff0000", "'dram'", "memory[0]"],
        id="regions-overlap",
    ),
    # windows outside RAM
    pytest.param(
        edit('base = "0x4800_0000"', 'base = "0x6000_0000"'),
        "page_tables",
        ["0x60000000", "'ram'"],
        id="page-tables-outside-ram",
    ),
    pytest.param(
        edit("base = 0x5800_0000", "base = 0x5FF0_0000"),
        "targets[2]",
        ["'cma'", "0x5ff00000", "0x60f00000"],
        id="target-straddles-ram-end",
    ),
    pytest.param(
        edit("linear_map = [{ base = 0x4000_0000", "linear_map = [{ base = 0x7000_0000"),
        "cpu.linear_map[0]",
        ["0x70000000", "'ram'"],
        id="linear-map-outside-ram",
    ),
    pytest.param(
        edit('kind = "onchip"\nbase = 0x1000_0000', 'kind = "onchip"\nbase = 0x5A00_0000'),
        "targets[3]",
        ["'ocm'", "0x5a000000", "'sram'"],
        id="onchip-outside-sram",
    ),
    pytest.param(
        edit(
            'name = "cma"\nkind = "contiguous"\nbase = 0x5800_0000',
            'name = "cma"\nkind = "contiguous"\nbase = 0x1000_0000',
        ),
        "targets[2]",
        ["'cma'", "0x10000000", "'ram'"],
        id="carveout-in-sram",
    ),
    # windows overlapping each other
    pytest.param(
        edit("base = 0x5800_0000", "base = 0x5000_0000"),
        "targets[2]",
        ["'cma'", "'pools'", "targets[1]", "0x50000000"],
        id="targets-overlap",
    ),
    pytest.param(
        edit('base = "0x4800_0000"', 'base = "0x5800_0000"'),
        "page_tables",
        ["'cma'", "targets[2]", "0x58000000"],
        id="page-tables-overlap-target",
    ),
    pytest.param(
        edit('{ base = 0x4000_0000, size = "128M" }', '{ base = 0x4000_0000, size = "320M" }'),
        "cpu.linear_map[0]",
        ["0x54000000", "'pools'", "targets[1]"],
        id="linear-map-covers-carveout",
    ),
    pytest.param(
        edit(
            '{ base = 0x4000_0000, size = "128M" }',
            '{ base = 0x4000_0000, size = "128M" }, { base = 0x4400_0000, size = "4K" }',
        ),
        "cpu.linear_map[1]",
        ["0x44000000", "linear_map[0]"],
        id="linear-map-windows-overlap",
    ),
    pytest.param(
        edit('{ base = 0x4000_0000, size = "128M" }', '{ base = 0x4000_0000, size = "64M" }'),
        "targets[0]",
        ["'sys'", "linear map"],
        id="system-target-outside-linear-map",
    ),
    pytest.param(
        edit("[cpu]\n", '[cpu]\nlinear_map_va = "0xffff_7fff_ffff_0000"\n'),
        "cpu.vmalloc",
        ["0xffff800000000000", "linear map"],
        id="vmalloc-overlaps-linear-va",
    ),
    # target priority
    pytest.param(
        edit('["pools", "sys"]', '["pool", "sys"]'),
        "target_priority[0]",
        ["'pool'", "pools, cma"],
        id="priority-unknown",
    ),
    pytest.param(
        edit('["pools", "sys"]', '["pools", "pools"]'),
        "target_priority[1]",
        ["'pools'", "twice"],
        id="priority-duplicate",
    ),
    # duplicate names
    pytest.param(
        edit('name = "ocm"\nkind = "sram"', 'name = "dram"\nkind = "sram"'),
        "memory[1].name",
        ["'dram'", "memory[0]"],
        id="dup-region",
    ),
    pytest.param(
        edit('name = "cma"', 'name = "sys"'),
        "targets[2].name",
        ["'sys'", "targets[0]"],
        id="dup-target",
    ),
    pytest.param(
        edit('name = "iommu_b"', 'name = "iommu_a"'),
        "smmus[1].name",
        ["'iommu_a'", "smmus[0]"],
        id="dup-smmu",
    ),
    pytest.param(
        edit('{ name = "isp", bank = 3', '{ name = "gpu", bank = 3'),
        "smmus[1].contexts[0].name",
        ["'gpu'", "smmus[0].contexts[0]"],
        id="dup-context",
    ),
    pytest.param(
        edit('tree_name = "isp_ctx"', 'tree_name = "ctx1"'),
        "smmus[1].contexts[0].tree_name",
        ["'ctx1'", "smmus[0].contexts[1]"],
        id="dup-context-tree-name",
    ),
    pytest.param(
        edit('name = "dma0"', 'name = "jpeg"'),
        "devices[4].name",
        ["'jpeg'", "devices[2]"],
        id="dup-device",
    ),
    # references
    pytest.param(
        edit('smmu = "iommu_b"', 'smmu = "iommu_c"'),
        "devices[3].smmu",
        ["'iommu_c'", "iommu_a, iommu_b"],
        id="unknown-smmu",
    ),
    pytest.param(
        edit('context = "isp"', 'context = "isq"'),
        "devices[3].context",
        ["'isq'", "'iommu_b'"],
        id="unknown-context",
    ),
    pytest.param(
        edit('context = "isp"', 'context = "jpeg"'),
        "devices[3].context",
        ["'jpeg'", "belongs to SMMU 'iommu_a'"],
        id="context-of-other-smmu",
    ),
    # two devices on one context
    pytest.param(
        edit('context = "gpu"\ndomain = "gfx"\n\n', 'context = "gpu"\n\n'),
        "devices[1].context",
        ["'gpu1'", "'gpu0'", "'gpu'", "domain"],
        id="shared-context-without-domain",
    ),
    pytest.param(
        edit('context = "gpu"\ndomain = "gfx"\n\n', 'context = "gpu"\ndomain = "gfx2"\n\n'),
        "devices[1].context",
        ["'gfx2'", "'gfx'"],
        id="shared-context-other-domain",
    ),
    pytest.param(
        edit('context = "isp"', 'context = "isp"\ndomain = "gfx"'),
        "devices[3].domain",
        ["'gfx'", "'armv7s'", "'vmsav8'"],
        id="domain-across-formats",
    ),
    pytest.param(
        edit(
            'name = "dma0"\nkind = "physical"', 'name = "dma0"\nkind = "physical"\ndomain = "gfx"'
        ),
        "devices[4].domain",
        ["'gfx'", "physical"],
        id="domain-on-physical",
    ),
    pytest.param(
        edit(
            'name = "dma0"\nkind = "physical"', 'name = "dma0"\nkind = "physical"\nsmmu = "iommu_a"'
        ),
        "devices[4].smmu",
        ["'iommu_a'", "physical"],
        id="smmu-on-physical",
    ),
    pytest.param(
        edit(
            'context = "isp"', 'context = "isp"\ndma_ranges = [{ bus = 0, phys = 0, size = "4K" }]'
        ),
        "devices[3].dma_ranges",
        ["IOVAs"],
        id="dma-ranges-on-smmu-device",
    ),
    # context banks
    pytest.param(
        edit('name = "isp", bank = 3', 'name = "isp", bank = 4'),
        "smmus[1].contexts[0].bank",
        ["bank 4", "context_banks 4"],
        id="bank-too-large",
    ),
    pytest.param(
        edit('name = "iommu_b"\n', 'name = "iommu_b"\nbase = 0x0400_1000\n'),
        "smmus[1].base",
        ["0x4001000", "not aligned", "0x8000", "4 banks"],
        id="register-base-misaligned",
    ),
    pytest.param(
        edit('name = "iommu_b"\n', 'name = "iommu_b"\nbase = 0x0400_0000\n'),
        "smmus[1].base",
        ["register window", "overlaps", "'iommu_a'", "smmus[0].base"],
        id="register-windows-overlap",
    ),
    pytest.param(
        edit('name = "iommu_b"\n', 'name = "iommu_b"\nbase = 0x4000_0000\n'),
        "smmus[1].base",
        ["register window", "overlaps memory region", "set base"],
        id="register-window-in-ram",
    ),
    pytest.param(
        edit('name = "iommu_b"\n', 'name = "iommu_b"\nbase = 0x1_0000_0000_0000\n'),
        "smmus[1].base",
        ["0x1000000000000", "2**48"],
        id="register-window-above-48-bits",
    ),
    pytest.param(
        edit("context_banks = 4", "context_banks = 129"),
        "smmus[1].context_banks",
        ["129", "maximum 128"],
        id="too-many-banks",
    ),
    pytest.param(
        edit('name = "isp", bank = 3', 'name = "isp", bank = -1'),
        "smmus[1].contexts[0].bank",
        ["-1"],
        id="bank-negative",
    ),
    pytest.param(
        edit("context_banks = 4", "context_banks = 0"),
        "smmus[1].context_banks",
        ["0", "minimum 1"],
        id="no-context-banks",
    ),
    # TLB and cache geometry
    pytest.param(
        edit("entries = 16, ways = 4", "entries = 16, ways = 3"),
        "smmus[0].tlb.ways",
        ["ways 3", "entries 16"],
        id="smmu-tlb-ways",
    ),
    pytest.param(
        edit("entries = 32\nways = 2", "entries = 32\nways = 5"),
        "cpu.tlb.ways",
        ["ways 5", "entries 32"],
        id="cpu-tlb-ways",
    ),
    pytest.param(
        edit('size = "16K"', 'size = "24K"'),
        "cpu.cache.size",
        ["24576", "384 sets"],
        id="cache-sets-not-power-of-two",
    ),
    pytest.param(edit("line = 32", "line = 48"), "cpu.cache.line", ["48"], id="cache-line"),
    # block pools
    pytest.param(
        edit("{ 4K = 8, 1M = 2 }", "{ 4K = 8, 8K = 2 }"),
        "targets[1].blocks.8K",
        ["'8K'", "16M, 1M, 64K, 4K"],
        id="block-size-not-seed",
    ),
    pytest.param(
        edit("{ 4K = 8, 1M = 2 }", "{ 4K = 8, 1M = 2, 1024K = 1 }"),
        "targets[1].blocks.1024K",
        ["'1024K'", "'1M'"],
        id="block-size-repeated",
    ),
    pytest.param(
        edit("{ 4K = 8, 1M = 2 }", "{ 4K = 8, 1M = 0 }"),
        "targets[1].blocks.1M.count",
        ["0"],
        id="block-count-zero",
    ),
    pytest.param(
        edit("base = 0x5000_0000\nblocks", "base = 0x5000_8000\nblocks"),
        "targets[1].blocks.1M.base",
        ["0x50008000", "1M"],
        id="pool-not-aligned",
    ),
    pytest.param(
        edit("blocks = { 4K = 8, 1M = 2 }", "blocks = {}"),
        "targets[1].blocks",
        ["at least one pool"],
        id="no-pools",
    ),
    # DMA
    pytest.param(
        edit("{ bus = 0x1000_0000, phys = 0x5000_0000", "{ bus = 0x0F00_0000, phys = 0x5000_0000"),
        "devices[4].dma_ranges[1]",
        ["bus", "0xf000000", "dma_ranges[0]"],
        id="dma-ranges-bus-overlap",
    ),
    pytest.param(
        edit("{ bus = 0x1000_0000, phys = 0x5000_0000", "{ bus = 0x1000_0000, phys = 0x4F00_0000"),
        "devices[4].dma_ranges[1]",
        ["phys", "0x4f000000", "dma_ranges[0]"],
        id="dma-ranges-phys-overlap",
    ),
    pytest.param(
        edit(
            '{ bus = 0x0, phys = 0x4000_0000, size = "256M" }',
            "{ bus = 0x0, phys = 0x4000_0000, size = 0 }",
        ),
        "devices[4].dma_ranges[0].size",
        ["0"],
        id="dma-range-empty",
    ),
    pytest.param(
        edit('mask = "0xff_ffff_ffff"', 'mask = "0xff_ffff_fff0"'),
        "devices[2].dma.mask",
        ["0xfffffffff0", "2^n - 1"],
        id="mask",
    ),
    pytest.param(
        edit('mask = "0xff_ffff_ffff"', 'mask = "0xff_ffff_ffff", coherent_mask = 0x1000'),
        "devices[2].dma.coherent_mask",
        ["0x1000", "2^n - 1"],
        id="coherent-mask",
    ),
    pytest.param(
        edit('max_segment_size = "1M"', 'segment_boundary_mask = "0x1_0000"'),
        "devices[2].dma.segment_boundary_mask",
        ["0x10000", "2^n - 1"],
        id="segment-boundary-mask",
    ),
    pytest.param(
        edit('max_segment_size = "1M"', "max_segment_size = 0"),
        "devices[2].dma.max_segment_size",
        ["0"],
        id="max-segment-size",
    ),
    # CPU extras
    pytest.param(
        edit("prefetch_seed = 7", "prefetch_seed = -7"),
        "cpu.prefetch_seed",
        ["-7"],
        id="prefetch-seed",
    ),
    pytest.param(
        edit("[cpu]\n", '[cpu]\nvmalloc = { base = "0xffff_8000_0000_0800", size = "1G" }\n'),
        "cpu.vmalloc",
        ["0xffff800000000800"],
        id="vmalloc-not-aligned",
    ),
]


@pytest.mark.parametrize(("text", "key", "values"), CASES)
def test_rule(tmp_path: Path, text: str, key: str, values: list[str]) -> None:
    check_error(tmp_path, text, key, *values)


def test_board_itself_breaks_no_rule(tmp_path: Path) -> None:
    """The cases above fail because of their one edit, not because the board is bad."""
    assert load_text(tmp_path, BASE).name == "board"


# -- the schema validates itself when built in code --------------------------------------------


def test_schema_classes_validate_on_construction() -> None:
    with pytest.raises(PlatformError) as info:
        TlbSpec(64, 3)
    assert info.value.key == "ways" and "ways 3" in str(info.value)
    with pytest.raises(PlatformError, match="expected an integer"):
        CacheSpec(size="32K")  # type: ignore[arg-type]
    with pytest.raises(PlatformError) as info:
        BlockPoolSpec(SZ_1M, 4, 0x1000)
    assert info.value.key == "base"
    with pytest.raises(PlatformError) as info:
        SmmuSpec(name="s", context_banks=1, contexts=(ContextSpec("a", 1, "ctx0"),))
    assert info.value.key == "contexts[0].bank"
    with pytest.raises(PlatformError) as info:
        DeviceSpec(name="d", kind="smmu", context="a")
    assert info.value.key == "smmu"
    with pytest.raises(PlatformError) as info:
        DmaSpec(mask=0xFFF0)
    assert info.value.key == "mask" and "0xfff0" in str(info.value)
    with pytest.raises(PlatformError) as info:
        CpuSpec(linear_map=(AddressRange(0, SZ_4K), AddressRange(0, SZ_4K)))
    assert info.value.key == "linear_map[1]"


def test_target_spec_checks_pool_layout() -> None:
    pools = layout_block_pools(SZ_16M, {SZ_4K: 2, SZ_16M: 1})
    assert pools == (BlockPoolSpec(SZ_16M, 1, SZ_16M), BlockPoolSpec(SZ_4K, 2, 2 * SZ_16M))
    target = TargetSpec(name="b", kind="blocks", base=SZ_16M, blocks=pools)
    assert target.size == SZ_16M + 2 * SZ_4K
    with pytest.raises(PlatformError) as info:
        TargetSpec(name="b", kind="blocks", base=SZ_16M, blocks=pools[::-1])
    assert info.value.key == "blocks.16M" and "largest block first" in str(info.value)
    gap = (pools[0], BlockPoolSpec(SZ_4K, 2, 2 * SZ_16M + SZ_4K))
    with pytest.raises(PlatformError) as info:
        TargetSpec(name="b", kind="blocks", base=SZ_16M, blocks=gap)
    assert info.value.key == "blocks.4K" and "0x2001000" in str(info.value)
    with pytest.raises(PlatformError) as info:
        TargetSpec(name="b", kind="blocks", base=SZ_16M, size=SZ_16M, blocks=pools)
    assert info.value.key == "size"


def test_platform_built_in_code_names_its_source() -> None:
    spec = loads_platform(BASE)
    fields = {name: getattr(spec, name) for name in spec.__dataclass_fields__}
    with pytest.raises(PlatformError) as info:
        PlatformSpec(**fields | {"source": "<code>", "target_priority": ("nope",)})
    assert str(info.value).startswith("<code>: target_priority[0]: ")
