"""Records declared once: the field metadata drives reading, checking and writing.

The property test builds random valid platforms in code, writes them as TOML and
reads them back: what comes back must be equal, field for field.  The other tests
declare a record of their own (as the devicetree importer will add reserved-memory
regions) to show that one class is all a new record needs, and check that the docs
name every key a platform file may hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.hw.memory import MemoryRegion
from vcmm.hw.pgtable import ARMV7_LPAE
from vcmm.mm.iova_policy import IOVA_POLICIES
from vcmm.platform import (
    SMMU_FORMATS,
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
    load_default,
    loads_platform,
)
from vcmm.platform.codecs import Address, Boolean, Integer, Records, Size, Text
from vcmm.platform.devices import InvalidationSpec, IommuMapSpec, StreamSpec
from vcmm.platform.dmamem import DmaMemorySpec, PoolSpec
from vcmm.platform.fields import check_fields, is_name, key, one_of, shape_of
from vcmm.platform.reserved import ReservedSpec
from vcmm.platform.toml_table import TomlTable, dump_record, read_record
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_16M, SZ_64K
from vcmm.system import System

DOCS = Path(__file__).resolve().parents[2] / "docs"

# -- random valid platforms ----------------------------------------------------------------

RAM = 0x8000_0000
NAMES = st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6)


@st.composite
def platforms(draw: st.DrawFn) -> PlatformSpec:
    """A RAM bank with a system target, the page-table window, a blocks and a
    contiguous carve-out, optional SRAM; SMMUs of any format with contexts; one
    device per context and a physical device; random CPU, TLB, DMA and pool values."""
    system_size = draw(st.integers(8, 64)) * SZ_2M
    tables = AddressRange(RAM + system_size, draw(st.integers(1, 64)) * SZ_64K)
    counts = draw(st.dictionaries(st.sampled_from([SZ_16M, SZ_1M, SZ_64K, SZ_4K]),
                                  st.integers(1, 8), min_size=1))  # fmt: skip
    blocks_base = RAM + 256 * SZ_1M
    pools = layout_block_pools(blocks_base, counts)
    contig = TargetSpec(name="contig", kind="contiguous", base=RAM + 512 * SZ_1M,
                        size=draw(st.integers(1, 64)) * SZ_1M)  # fmt: skip
    targets = [
        TargetSpec(name="sys", kind="system", base=RAM, size=system_size,
                   max_order=draw(st.integers(0, 20))),
        TargetSpec(name="pools", kind="blocks", base=blocks_base, blocks=pools),
        contig,
    ]  # fmt: skip
    memory = [MemoryRegion("ram", AddressRange(RAM, 1 << 30), "ram")]
    if draw(st.booleans()):
        memory.append(MemoryRegion("sram", AddressRange(0x1000_0000, SZ_64K), "sram"))
        targets.append(TargetSpec(name="ocm", kind="onchip", base=0x1000_0000, size=SZ_64K))
    smmus, devices = draw(_smmus_and_devices())
    pool = st.one_of(st.none(), st.integers(0, 4).map(lambda n: n * SZ_64K))
    dma = DmaMemorySpec(
        exporter_target=draw(st.sampled_from([None, "sys"])),
        coherent_pool=PoolSpec(size=draw(pool)),
        # With no coherent pool (size 0) the atomic pool has no default target.
        atomic_pool=PoolSpec(target=draw(st.sampled_from(["contig", None])), size=None)
        if draw(st.booleans())
        else PoolSpec(target="contig", size=draw(pool)),
    )
    return PlatformSpec(
        name=draw(NAMES),
        description=draw(st.text(max_size=20)),
        memory=tuple(memory),
        cpu=draw(_cpus(targets[0].range)),
        page_tables=tables,
        targets=tuple(targets),
        target_priority=tuple(draw(st.permutations([t.name for t in targets]))),
        smmus=smmus,
        devices=devices,
        iova_policy=draw(st.sampled_from(IOVA_POLICIES)),
        dma=dma,
        source="<string>",
    )


@st.composite
def _cpus(draw: st.DrawFn, linear: AddressRange) -> CpuSpec:
    ways = draw(st.sampled_from([1, 2, 4, 8]))
    line = draw(st.sampled_from([32, 64, 128]))
    sets = draw(st.sampled_from([16, 64, 256]))
    return CpuSpec(
        cache=CacheSpec(ways * line * sets, ways, line),
        tlb=draw(_tlbs()),
        linear_map=(linear,),
        prefetch_seed=draw(st.one_of(st.none(), st.integers(0, 2**31))),
    )


@st.composite
def _tlbs(draw: st.DrawFn) -> TlbSpec:
    ways = draw(st.sampled_from([1, 2, 4]))
    replacement = draw(st.sampled_from(["lru", "fifo", "random"]))
    return TlbSpec(ways * draw(st.integers(1, 32)), ways, replacement)


@st.composite
def _smmus_and_devices(draw: st.DrawFn) -> tuple[tuple[SmmuSpec, ...], tuple[DeviceSpec, ...]]:
    smmus, devices = [], []
    for s in range(draw(st.integers(0, 2))):
        banks = draw(st.integers(1, 4))
        # More contexts than banks: a context names a bank (shared or not) or none.
        used = draw(st.lists(st.one_of(st.none(), st.integers(0, banks - 1)), max_size=6))
        contexts = tuple(ContextSpec(f"c{s}_{i}", b, f"t{s}_{i}") for i, b in enumerate(used))
        base = draw(st.sampled_from([None, 0x2000_0000 + s * SZ_1M]))
        smmus.append(SmmuSpec(name=f"smmu{s}", format=draw(st.sampled_from(SMMU_FORMATS)),
                              context_banks=banks, base=base, tlb=draw(_tlbs()),
                              contexts=contexts))  # fmt: skip
        for ctx in contexts:
            bits = draw(st.integers(24, 48))
            dma = DmaSpec(mask=(1 << bits) - 1, max_segment_size=draw(st.integers(1, 1 << 22)))
            devices.append(DeviceSpec(name=f"d_{ctx.name}", kind="smmu", smmu=f"smmu{s}",
                                      context=ctx.name, coherent=draw(st.booleans()), dma=dma))  # fmt: skip
    ranges = (DmaRange(0x4000_0000, RAM, 1 << 30),) if draw(st.booleans()) else ()
    devices.append(DeviceSpec(name="phys", kind="physical", dma_ranges=ranges))
    return tuple(smmus), tuple(devices)


@settings(max_examples=40, deadline=None)
@given(spec=platforms())
def test_any_platform_dumps_and_loads_back_equal(spec: PlatformSpec) -> None:
    text = dumps_platform(spec)
    assert loads_platform(text) == spec
    # And the dump is stable: writing what was read gives the same text.
    assert dumps_platform(loads_platform(text)) == text


def test_any_text_survives_the_dump() -> None:
    """TOML refuses raw control characters (U+0000-U+001F but tab, and U+007F) in
    strings; the writer escapes them, and a lone surrogate no file can hold is refused
    when the record is built."""
    base = load_default()
    for text in ('quote " and \\ backslash', "del \x7f nul \x00 tab \t", "résumé 幅"):
        spec = PlatformSpec(**{**_fields(base), "description": text})
        assert loads_platform(dumps_platform(spec), source=base.source).description == text
    with pytest.raises(PlatformError) as info:
        PlatformSpec(**{**_fields(base), "description": "half \ud800 pair"})
    assert info.value.key == "description" and "surrogate" in str(info.value)


def _fields(spec: PlatformSpec) -> dict[str, object]:
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


def test_the_default_platform_dumps_back_equal() -> None:
    spec = load_default()
    assert loads_platform(dumps_platform(spec), source=spec.source) == spec


# -- one class is all a new record needs -----------------------------------------------------


class ReservedError(PlatformError):
    """The error class the example record raises (any KeyedError subclass works)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserved:
    """A reserved-memory region as a devicetree importer might declare it."""

    name: str = field(metadata=key(Text(), is_name))
    base: int = field(metadata=key(Address()))
    size: int = field(metadata=key(Size(minimum=1)))
    no_map: bool = field(default=False, metadata=key(Boolean(), name="no-map"))
    policy: str = field(default="keep", metadata=key(Text(), one_of(("keep", "reuse"))))
    align: int = field(default=SZ_4K, metadata=key(Integer(minimum=1), omit_default=True))

    def __post_init__(self) -> None:
        check_fields(self, ReservedError)


@dataclass(frozen=True, slots=True, kw_only=True)
class Board:
    regions: tuple[Reserved, ...] = field(metadata=key(Records(Reserved)))


def _read_board(text: str) -> Board:
    import tomllib

    shape = shape_of(Board)
    table = TomlTable(tomllib.loads(text), "", "b.toml", shape.allowed(), ReservedError)
    board: Board = read_record(shape, table)
    return board


BOARD = """
[[regions]]
name = "fw"
base = 0x8e00_0000
size = "2M"
no-map = true

[[regions]]
name = "cma"
base = "0x9000_0000"
size = "16M"
policy = "reuse"
align = 0x1000
"""


def test_a_record_declared_in_one_class_reads_checks_and_dumps() -> None:
    board = _read_board(BOARD)
    assert board.regions == (
        Reserved(name="fw", base=0x8E00_0000, size=SZ_2M, no_map=True),
        Reserved(name="cma", base=0x9000_0000, size=SZ_16M, policy="reuse"),
    )
    text = dump_record(board)
    assert "no-map = true" in text and "align" not in text  # default left out
    assert _read_board(text) == board


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (("no-map = true", "nomap = true"), "regions[0].nomap", ["did you mean 'no-map'"]),
        (('size = "2M"', ""), "regions[0].size", ["missing required key 'size'"]),
        (('size = "2M"', "size = 0"), "regions[0].size", ["value 0 is below the minimum 1"]),
        (('policy = "reuse"', 'policy = "reus"'), "regions[1].policy", ["did you mean 'reuse'"]),
        (("no-map = true", 'no-map = "yes"'), "regions[0].no-map", ["true or false"]),
        (('name = "fw"', 'name = "f w"'), "regions[0].name", ["'f w'", "letters"]),
    ],
)
def test_the_example_record_keys_its_errors(
    edit: tuple[str, str], key: str, words: list[str]
) -> None:
    with pytest.raises(ReservedError) as info:
        _read_board(BOARD.replace(*edit, 1))
    assert info.value.key == key and str(info.value).startswith(f"b.toml: {key}: ")
    for word in words:
        assert word in str(info.value)


def test_records_built_in_code_are_checked_by_the_same_declarations() -> None:
    with pytest.raises(ReservedError) as info:
        Reserved(name="x", base=-1, size=1)
    assert info.value.key == "base" and "minimum 0" in str(info.value)
    with pytest.raises(PlatformError) as err:
        SmmuSpec(name="s", format="armv9", context_banks=1)
    assert err.value.key == "format" and "lpae" in str(err.value)
    with pytest.raises(PlatformError) as err:
        DeviceSpec(name="d", kind="physical", coherent=1)  # type: ignore[arg-type]
    assert err.value.key == "coherent" and "true or false" in str(err.value)


def test_the_machinery_refuses_what_is_not_a_record() -> None:
    from vcmm.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="not a record class"):
        shape_of(int)
    with pytest.raises(InvalidArgumentError, match="not a record class"):
        dump_record("board")
    with pytest.raises(InvalidArgumentError, match="omit_default"):
        key(Integer(), derive=lambda reading: 1, omit_default=True)
    with pytest.raises(InvalidArgumentError, match="needs a derive function"):
        key(None, name=None)
    with pytest.raises(InvalidArgumentError, match="callables"):
        key(Integer(), 5)  # type: ignore[arg-type]


# -- the lpae format -------------------------------------------------------------------------


def test_an_lpae_smmu_boots_with_long_descriptor_tables() -> None:
    """LPAE (ARM ARM B3.6) has 4K pages, 2M and 1G blocks and no 1M sections, so a
    2M-aligned 2M buffer is one block entry, where ARMv7 short descriptors use two 1M
    sections."""
    from vcmm import Attr, PhysAttr

    text = dumps_platform(load_default()).replace('format = "armv7s"', 'format = "lpae"')
    spec = loads_platform(text)
    assert {s.format for s in spec.smmus} == {"lpae"}
    pages = {}
    for platform in (load_default(), spec):
        system = System(platform)
        dev = system.device("vcodec_a_mm1")
        vcm = system.vcm_create(SZ_2M, 64 * SZ_1M)
        system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
        res = system.vcm_reserve(vcm, SZ_2M, Attr.RW)
        system.vcm_back(res, system.vcm_phys_alloc("contig", SZ_2M, PhysAttr.CONTIGUOUS))
        dev.write(res.dev_addr, b"lpae")
        assert dev.read(res.dev_addr, 4) == b"lpae"
        pages[platform.smmus[0].format] = sorted(e.size for e in vcm.table.mappings())
        if platform is spec:
            assert system.smmus["smmu0"].fmt is ARMV7_LPAE
    assert pages == {"armv7s": [SZ_1M, SZ_1M], "lpae": [SZ_2M]}


# -- the docs name every key ------------------------------------------------------------------


def _keys(cls: type) -> set[str]:
    return set(shape_of(cls).allowed())


def test_docs_platform_names_every_platform_key() -> None:
    text = (DOCS / "PLATFORM.md").read_text(encoding="utf-8")
    written = {word for span in re.findall(r"`([^`]*)`", text) for word in re.findall(r"\w+", span)}
    classes = (PlatformSpec, MemoryRegion, CpuSpec, CacheSpec, TlbSpec, TargetSpec, SmmuSpec,
               ContextSpec, DeviceSpec, DmaSpec, DmaRange, DmaMemorySpec, PoolSpec,
               ReservedSpec, StreamSpec, IommuMapSpec, InvalidationSpec)  # fmt: skip
    for cls in classes:
        missing = _keys(cls) - written
        assert not missing, f"docs/PLATFORM.md does not name {cls.__name__} keys {missing}"
