"""The platform's ``[dma]`` table: which targets the DMA API and dma-buf use.

The defaults are derived from the targets (docs/PLATFORM.md): the first ``system``
target is kernel RAM and the exporters' heap, the first ``contiguous`` carve-out holds
a coherent pool of 32 MiB (at most half of it) and the 256 KiB atomic pool.  For the
default platform that is exactly what the DMA API always took: 32M + 256K of
``contig``.
"""

from __future__ import annotations

import pytest

from vcmm.mm.roles import MemoryRoles, PoolChoice
from vcmm.platform import PlatformError, dumps_platform, load_default, loads_platform
from vcmm.sizes import SZ_1M, SZ_32M, SZ_256K

# A board with no target named like the default platform's: system RAM "dram", two
# carve-outs ("frame" blocks, then "cma" contiguous in priority order), SRAM "ocm".
BOARD = """\
name = "board"
target_priority = ["frame", "cma", "dram", "ocm"]

[[memory]]
name = "ram"
base = 0x4000_0000
size = "512M"

[[memory]]
name = "sram"
kind = "sram"
base = 0x1000_0000
size = "256K"

[page_tables]
base = 0x4800_0000
size = "2M"

[[targets]]
name = "dram"
kind = "system"
base = 0x4000_0000
size = "128M"

[[targets]]
name = "frame"
kind = "blocks"
base = 0x5000_0000
blocks = { 1M = 4, 64K = 16 }

[[targets]]
name = "cma"
kind = "contiguous"
base = 0x5800_0000
size = "12M"

[[targets]]
name = "ocm"
kind = "onchip"
base = 0x1000_0000
size = "256K"
"""


def board(extra: str = "", *, drop: str = "") -> str:
    text = BOARD
    if drop:
        assert text.count(drop) == 1
        text = text.replace(drop, "")
    return text + extra


def error(text: str) -> PlatformError:
    with pytest.raises(PlatformError) as info:
        loads_platform(text, source="board.toml")
    return info.value


def test_the_default_platform_keeps_what_the_dma_api_always_took() -> None:
    assert load_default().memory_roles() == MemoryRoles(
        kernel="ebi",
        exporter="ebi",
        coherent_pool=PoolChoice("contig", SZ_32M),
        atomic_pool=PoolChoice("contig", SZ_256K),
    )


def test_defaults_follow_the_target_kinds_not_their_names() -> None:
    roles = loads_platform(board()).memory_roles()
    # cma is 12M: the coherent pool takes half; blocks targets are never a default.
    assert roles == MemoryRoles(
        kernel="dram",
        exporter="dram",
        coherent_pool=PoolChoice("cma", 6 * SZ_1M),
        atomic_pool=PoolChoice("cma", SZ_256K),
    )


def test_without_a_contiguous_carve_out_there_are_no_pools() -> None:
    text = board(
        drop='[[targets]]\nname = "cma"\nkind = "contiguous"\nbase = 0x5800_0000\nsize = "12M"\n'
    )
    text = text.replace('"frame", "cma", "dram"', '"frame", "dram"')
    roles = loads_platform(text).memory_roles()
    assert (roles.kernel, roles.coherent_pool, roles.atomic_pool) == ("dram", None, None)


def test_declared_choices_win_and_dump_back_equal() -> None:
    text = board(
        '\n[dma]\nexporter_target = "cma"\n'
        'coherent_pool = { target = "ocm", size = "128K" }\n'
        'atomic_pool = { size = "64K" }\n'
    )
    spec = loads_platform(text)
    assert spec.memory_roles() == MemoryRoles(
        kernel="dram",
        exporter="cma",
        coherent_pool=PoolChoice("ocm", 128 * 1024),
        atomic_pool=PoolChoice("ocm", 64 * 1024),  # the coherent pool's target
    )
    assert loads_platform(dumps_platform(spec)) == spec
    assert "[dma]" not in dumps_platform(loads_platform(board()))  # nothing declared


def test_size_zero_asks_for_no_pool() -> None:
    roles = loads_platform(board("\n[dma]\natomic_pool = { size = 0 }\n")).memory_roles()
    assert roles.coherent_pool == PoolChoice("cma", 6 * SZ_1M) and roles.atomic_pool is None


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('kernel_target = "ddr"', "dma.kernel_target", ["'ddr' does not exist", "dram"]),
        (
            'coherent_pool = { target = "dram" }',
            "dma.coherent_pool.target",
            ["system RAM", "linear map"],
        ),
        ('coherent_pool = { size = "13M" }', "dma.coherent_pool.size", ["13M", "'cma'", "12M"]),
        (
            'coherent_pool = { target = "frame", size = "2M" }',
            "dma.coherent_pool.size",
            ["largest block", "1M"],
        ),
        ('atomic_pool = { size = "7M" }', "dma.atomic_pool.size", ["6M", "7M", "both fit"]),
        ('atomic_pool = { size = "5000" }', "dma.atomic_pool.size", ["0x1388", "multiple of 4K"]),
        ('coherent_pool = { tagret = "cma" }', "dma.coherent_pool.tagret", ["did you mean"]),
        ("kernel = 1", "dma.kernel", ["unknown key", "kernel_target"]),
    ],
)
def test_each_rule_names_the_key(extra: str, key: str, words: list[str]) -> None:
    err = error(board(f"\n[dma]\n{extra}\n"))
    assert err.key == key and str(err).startswith(f"board.toml: {key}: ")
    for word in words:
        assert word in str(err), (word, str(err))


def test_a_pool_without_a_target_to_default_to_is_refused() -> None:
    text = board(
        '\n[dma]\ncoherent_pool = { size = "1M" }\n',
        drop='[[targets]]\nname = "cma"\nkind = "contiguous"\nbase = 0x5800_0000\nsize = "12M"\n',
    ).replace('"frame", "cma", "dram"', '"frame", "dram"')
    err = error(text)
    assert err.key == "dma.coherent_pool.target" and "no 'contiguous' carve-out" in str(err)
