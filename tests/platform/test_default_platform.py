"""The shipped default platform matches the seed's SoC and is internally sound.

Expected values are written out from the seed (000 L534-560 for the SMMU tree and
/dev names, L1352-1356 for the DSP's bus offset, 003 L51-53 for the codec's two ports)
and from the brief's address map, not read back from the loader's own tables.
"""

from __future__ import annotations

from importlib import resources
from itertools import combinations
from pathlib import Path

from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.platform import (
    DEFAULT_SOURCE,
    BlockPoolSpec,
    CacheSpec,
    DmaRange,
    DmaSpec,
    TlbSpec,
    dumps_platform,
    load_default,
    load_platform,
    loads_platform,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_4K, SZ_16M, SZ_64K

MiB = SZ_1M


def test_loads_from_package_resource() -> None:
    spec = load_default()
    assert spec.source == DEFAULT_SOURCE == "<default>"
    assert spec.name == "msm-default"
    assert load_default() is spec  # immutable, so loaded once
    resource = resources.files("vcmm").joinpath("platforms/default.toml")
    assert resource.is_file()
    assert loads_platform(resource.read_text(), source="<default>") == spec


def test_file_on_disk_loads_equal(tmp_path: Path) -> None:
    path = tmp_path / "copy.toml"
    path.write_text(resources.files("vcmm").joinpath("platforms/default.toml").read_text())
    copy = load_platform(path)
    assert copy.source == str(path)
    assert dumps_platform(copy) == dumps_platform(load_default())


def test_memory_map() -> None:
    spec = load_default()
    assert spec.memory == (
        MemoryRegion("ram", AddressRange(0x8000_0000, SZ_1G), "ram"),
        MemoryRegion("smi", AddressRange(0x2000_0000, SZ_1M), "sram"),
    )
    # The regions feed PhysicalMemory unchanged.
    memory = PhysicalMemory(spec.memory)
    assert memory.region("smi").base == 0x2000_0000


def test_targets_and_priority() -> None:
    spec = load_default()
    assert [(t.name, t.kind) for t in spec.targets] == [
        ("ebi", "system"),
        ("blocks", "blocks"),
        ("contig", "contiguous"),
        ("smi", "onchip"),
    ]
    assert spec.target("ebi").range == AddressRange(0x8000_0000, 256 * MiB)
    assert spec.target("ebi").max_order == 10
    assert spec.target("contig").range == AddressRange(0xA800_0000, 64 * MiB)
    assert spec.target("smi").range == AddressRange(0x2000_0000, SZ_1M)
    assert spec.page_tables == AddressRange(0x9000_0000, 8 * MiB)
    assert spec.target_priority == ("blocks", "contig", "ebi")


def test_block_pools_largest_first_and_aligned() -> None:
    blocks = load_default().target("blocks")
    # 2 x 16M = 32M from 0xA000_0000, then 64 x 1M = 64M, 256 x 64K = 16M, 1024 x 4K = 4M.
    assert blocks.blocks == (
        BlockPoolSpec(SZ_16M, 2, 0xA000_0000),
        BlockPoolSpec(SZ_1M, 64, 0xA200_0000),
        BlockPoolSpec(SZ_64K, 256, 0xA600_0000),
        BlockPoolSpec(SZ_4K, 1024, 0xA700_0000),
    )
    assert blocks.range == AddressRange(0xA000_0000, 0x0740_0000)
    for pool in blocks.blocks:
        assert pool.base % pool.block_size == 0


def test_all_windows_inside_memory_and_disjoint() -> None:
    spec = load_default()
    windows = {f"target {t.name}": t.range for t in spec.targets}
    windows["page tables"] = spec.page_tables
    ram = AddressRange(0x8000_0000, SZ_1G)
    sram = AddressRange(0x2000_0000, SZ_1M)
    for name, window in windows.items():
        home = sram if name == "target smi" else ram
        assert home.start <= window.start and window.start + window.size <= home.end, name
    for (name_a, a), (name_b, b) in combinations(windows.items(), 2):
        assert a.start + a.size <= b.start or b.start + b.size <= a.start, (name_a, name_b)
    # The unused rest of RAM: from the end of contig to the end of the bank.
    assert max(w.end for w in windows.values() if w.start >= ram.start) == 0xAC00_0000


def test_cpu() -> None:
    cpu = load_default().cpu
    assert cpu.cache == CacheSpec(32 * 1024, 4, 64)
    assert cpu.cache.sets == 128
    assert cpu.tlb == TlbSpec(64, 4, "lru")
    # Linear map is exactly system RAM (the ebi window): no carve-out is cacheable-aliased.
    assert cpu.linear_map == (AddressRange(0x8000_0000, 256 * MiB),)
    assert cpu.linear_map_va == 0xFFFF_0000_0000_0000
    assert cpu.linear_va(0x8000_1000) == 0xFFFF_0000_0000_1000
    assert cpu.vmalloc == AddressRange(0xFFFF_8000_0000_0000, SZ_1G)
    assert cpu.prefetch_seed is None


def test_smmu_tree_matches_seed() -> None:
    spec = load_default()
    tree = {
        smmu.name: [(c.tree_name, c.name, c.bank) for c in smmu.contexts] for smmu in spec.smmus
    }
    assert tree == {
        "smmu0": [
            ("ctx0", "vcodec_a_mm1", 0),
            ("ctx1", "vcodec_b_mm2", 1),
            ("ctx2", "vcodec_stream", 2),
        ],
        "smmu1": [("ctx3", "mdp", 0)],
    }
    smmu0, smmu1 = spec.smmus
    assert (smmu0.format, smmu0.context_banks, smmu0.tlb) == ("armv7s", 3, TlbSpec(64, 4, "lru"))
    assert (smmu1.format, smmu1.context_banks, smmu1.tlb.entries) == ("armv7s", 1, 32)
    # The /dev nodes are named after the contexts (vcmm.share.devnode).
    names = [c.name for s in spec.smmus for c in s.contexts]
    assert names[:3] == ["vcodec_a_mm1", "vcodec_b_mm2", "vcodec_stream"]
    assert spec.context("vcodec_stream") == (smmu0, smmu0.contexts[2])


def test_codec_ports_each_have_their_own_context() -> None:
    spec = load_default()
    port_a, port_b = spec.device("vcodec_a_mm1"), spec.device("vcodec_b_mm2")
    assert port_a.kind == port_b.kind == "smmu"
    assert (port_a.smmu, port_a.context) == ("smmu0", "vcodec_a_mm1")
    assert (port_b.smmu, port_b.context) == ("smmu0", "vcodec_b_mm2")
    banks = {spec.context(d.context)[1].bank for d in (port_a, port_b) if d.context}
    assert banks == {0, 1}
    assert port_a.domain is None and port_b.domain is None


def test_devices() -> None:
    spec = load_default()
    assert [(d.name, d.kind) for d in spec.devices] == [
        ("vcodec_a_mm1", "smmu"),
        ("vcodec_b_mm2", "smmu"),
        ("vcodec_stream", "smmu"),
        ("mdp", "smmu"),
        ("dsp", "physical"),
        ("camera", "physical"),
    ]
    assert not any(d.coherent for d in spec.devices)
    mask32 = 0xFFFF_FFFF
    for device in spec.devices:
        segment = 64 * 1024 if device.name in ("vcodec_a_mm1", "vcodec_b_mm2") else 4 * MiB
        assert device.dma == DmaSpec(
            mask=mask32,
            coherent_mask=mask32,
            max_segment_size=segment,
            segment_boundary_mask=mask32,
        )
    assert spec.device("mdp").smmu == "smmu1"
    assert spec.device("camera").dma_ranges == ()  # identity: bus address = physical


def test_dsp_sees_ram_at_a_different_bus_address() -> None:
    """000 L1352-1356: RAM at 0x80000000 physical is 0x40000000 to the DMA device."""
    dsp = load_default().device("dsp")
    assert dsp.dma_ranges == (DmaRange(bus=0x4000_0000, phys=0x8000_0000, size=SZ_1G),)
    (entry,) = dsp.dma_ranges
    buffer_pa = 0x8000_0000
    assert entry.bus + (buffer_pa - entry.phys) == 0x4000_0000
    assert entry.phys_range == AddressRange(0x8000_0000, SZ_1G)  # covers the whole RAM bank


def test_dump_round_trip() -> None:
    spec = load_default()
    assert loads_platform(dumps_platform(spec), source=DEFAULT_SOURCE) == spec
