"""Where each SMMU's registers sit (issue 17 item 3): the platform's ``base`` or the
default layout, the seed's ``smmu_get_base_addr`` on System, and dumps with optional
bank numbers and bases that load back equal."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import pytest

from vcmm.errors import InvalidArgumentError, NotFoundError
from vcmm.platform import dumps_platform, load_default, loads_platform
from vcmm.system import System

#: SMMU_IDR1 is at offset 0x24 of the global register page; NUMCB is bits [7:0].
IDR1 = 0x24


def _numcb(system: System, base: int) -> int:
    smmu = next(s for s in system.smmus.values() if s.register_base == base)
    return smmu.read_register(base + IDR1) & 0xFF


def test_default_layout_is_one_megabyte_apart_from_0x0400_0000() -> None:
    system = System.default()
    assert system.smmu_get_base_addr("vcodec_stream") == 0x0400_0000
    assert system.smmu_get_base_addr("mdp") == 0x0410_0000
    assert system.smmu_get_base_addr(system.device("mdp").ctx) == 0x0410_0000
    # The window there is the SMMU's: its IDR1 counts its banks (3 and 1).
    assert _numcb(system, 0x0400_0000) == 3
    assert _numcb(system, 0x0410_0000) == 1


def test_an_explicit_base_moves_the_window() -> None:
    spec = load_default()
    smmu1 = replace(spec.smmu("smmu1"), base=0x1800_0000)
    spec = replace(spec, smmus=(spec.smmu("smmu0"), smmu1))
    system = System(spec)
    assert system.smmu_get_base_addr("mdp") == 0x1800_0000
    assert _numcb(system, 0x1800_0000) == 1
    assert loads_platform(dumps_platform(spec), source=spec.source) == spec
    assert "base = 0x1800_0000" in dumps_platform(spec)


def test_the_banked_platform_dumps_and_loads_back_equal() -> None:
    text = resources.files("vcmm").joinpath("platforms/banked.toml").read_text("utf-8")
    spec = loads_platform(text)
    assert [c.bank for c in spec.smmu("smmu0").contexts] == [None, None, None]
    dumped = dumps_platform(spec)
    assert loads_platform(dumped) == spec
    assert "bank =" not in dumped.split('name = "smmu1"')[0].split('name = "smmu0"')[1]


def test_smmu_get_base_addr_refuses_what_is_not_a_context() -> None:
    system = System.default()
    before = system.snapshot()
    with pytest.raises(NotFoundError, match="no SMMU has a context named 'gpu'"):
        system.smmu_get_base_addr("gpu")
    with pytest.raises(InvalidArgumentError, match="neither an SMMU context nor a context name"):
        system.smmu_get_base_addr(0x0400_0000)  # type: ignore[arg-type]
    other = System.default().device("mdp").ctx
    with pytest.raises(InvalidArgumentError, match="not one of this system's"):
        system.smmu_get_base_addr(other)
    assert system.snapshot() == before
