"""More contexts than context banks, through the VCMM (issue 15 item 3, seed 000's
``smmu_ctx_bind``): ``vcm_activate`` binds a free bank or steals the least recently
used idle one, ``vcm_deactivate`` parks the context on its bank, and with every bank
active the activation is refused, naming the SMMU, its banks and their contexts.

The packaged ``banked`` platform is the default SoC with smmu0's three video-codec
contexts sharing two banks.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import pytest

from vcmm import SZ_4K, SZ_64K
from vcmm.core import Attr, PhysAttr
from vcmm.errors import BusyError
from vcmm.platform import load_platform
from vcmm.system import System

DEVICES = ("vcodec_a_mm1", "vcodec_b_mm2", "vcodec_stream")
PAGES = 8


@pytest.fixture
def banked() -> System:
    path = resources.files("vcmm").joinpath("platforms/banked.toml")
    with resources.as_file(path) as file:
        return System(load_platform(file))


def _setup(system: System, name: str, fill: int):
    """A VCM for ``name`` backed by PAGES 4 KiB blocks filled with ``fill``, associated
    (not active)."""
    vcm = system.vcm_create(0x1000_0000, 0x1000_0000)
    res = system.vcm_reserve(vcm, PAGES * SZ_4K, Attr.RW)
    pm = system.vcm_phys_alloc("blocks", PAGES * SZ_4K, PhysAttr(block_sizes=(SZ_4K,)))
    for pa, size in pm.chunks:
        system.memory.write(pa, bytes([fill]) * size)
    system.vcm_back(res, pm)
    return system.vcm_assoc(vcm, system.device(name)), res


def _touch(system: System, name: str, res, fill: int) -> None:
    """Read every page of ``res`` through ``name`` and check the bytes."""
    dev = system.device(name)
    for page in range(PAGES):
        assert dev.read(res.dev_addr + page * SZ_4K, 16) == bytes([fill]) * 16


def test_third_activation_is_refused_naming_the_banks(banked: System) -> None:
    work = {name: _setup(banked, name, i + 1) for i, name in enumerate(DEVICES)}
    for name in DEVICES[:2]:
        banked.vcm_activate(work[name][0])
    before = banked.snapshot()
    with pytest.raises(BusyError) as err:
        banked.vcm_activate(work["vcodec_stream"][0])
    text = str(err.value)
    for part in (
        "vcm_activate",
        "'vcodec_stream'",
        "SMMU 'smmu0'",
        "all its 2 context banks are active",
        "bank 0: 'vcodec_a_mm1' (active)",
        "bank 1: 'vcodec_b_mm2' (active)",
        "vcm_deactivate one of them first",
    ):
        assert part in text
    assert banked.snapshot() == before
    assert not work["vcodec_stream"][0].active


def test_idle_bank_is_stolen_and_the_victim_rebinds_and_works(banked: System) -> None:
    smmu = banked.smmus["smmu0"]
    (a, res_a), (b, res_b), (c, res_c) = (
        _setup(banked, name, i + 1) for i, name in enumerate(DEVICES)
    )
    ctx_a = banked.device("vcodec_a_mm1").ctx
    banked.vcm_activate(a)
    banked.vcm_activate(b)
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    _touch(banked, "vcodec_b_mm2", res_b, 2)
    bank_a = ctx_a.bank
    banked.vcm_deactivate(a)
    # Parked: still bound, its PAGES translations still tagged with its bank.
    assert ctx_a.is_bound and not ctx_a.is_active
    assert smmu.bank_stats().switches == 0
    banked.vcm_activate(c)
    # c took a's idle bank: one switch, which invalidated a's PAGES 4 KiB entries.
    assert banked.device("vcodec_stream").ctx.bank == bank_a
    assert not ctx_a.is_bound and ctx_a.stats().evictions == 1
    assert (smmu.bank_stats().switches, smmu.bank_stats().invalidated) == (1, PAGES)
    _touch(banked, "vcodec_stream", res_c, 3)
    # a comes back once b is parked: it rebinds (stealing b's bank) and reads its bytes.
    banked.vcm_deactivate(b)
    banked.vcm_activate(a)
    assert ctx_a.is_active and ctx_a.bank != bank_a
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    assert smmu.bank_stats().switches == 2


def test_the_least_recently_used_idle_bank_goes(banked: System) -> None:
    """Use means translation: of two parked contexts, the one whose last activation
    translated earlier loses its bank, whatever order they were parked in."""
    (a, res_a), (b, res_b), (c, _) = (_setup(banked, name, i + 1) for i, name in enumerate(DEVICES))
    banked.vcm_activate(a)
    banked.vcm_activate(b)
    _touch(banked, "vcodec_b_mm2", res_b, 2)  # b used first ...
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    banked.vcm_deactivate(b)  # ... and parked first: its stamp is the older
    banked.vcm_deactivate(a)
    banked.vcm_activate(c)
    assert banked.device("vcodec_b_mm2").ctx.is_bound is False
    assert banked.device("vcodec_a_mm1").ctx.is_bound is True


def test_a_named_bank_is_taken_from_its_idle_holder_only() -> None:
    """Two contexts naming the same bank (allowed now): the second activation waits
    for the first to be deactivated, then takes bank 0 although bank 1 is free."""
    spec = System.default().spec
    smmu0 = spec.smmu("smmu0")
    contexts = tuple(replace(ctx, bank=0) for ctx in smmu0.contexts)
    spec = replace(spec, smmus=(replace(smmu0, contexts=contexts), spec.smmu("smmu1")))
    system = System(spec)
    (a, _), (b, res_b) = (_setup(system, name, i + 1) for i, name in enumerate(DEVICES[:2]))
    system.vcm_activate(a)
    before = system.snapshot()
    with pytest.raises(BusyError, match=r"binds bank 0 of SMMU 'smmu0', which runs the active"):
        system.vcm_activate(b)
    assert system.snapshot() == before
    system.vcm_deactivate(a)
    system.vcm_activate(b)
    assert system.device("vcodec_b_mm2").ctx.bank == 0
    assert system.smmus["smmu0"].free_banks() == [1, 2]
    _touch(system, "vcodec_b_mm2", res_b, 2)


def test_deassociating_gives_the_parked_bank_back(banked: System) -> None:
    smmu = banked.smmus["smmu0"]
    a, _ = _setup(banked, "vcodec_a_mm1", 1)
    after_setup = smmu.snapshot()
    banked.vcm_activate(a)
    banked.vcm_deactivate(a)
    assert smmu.free_banks() == [1]
    banked.vcm_deassoc(a)
    assert smmu.free_banks() == [0, 1]
    # Nothing translated, so the LRU clock and bank counters are as before.
    assert smmu.snapshot().bindings == after_setup.bindings
    assert smmu.snapshot().last_used == after_setup.last_used
    assert smmu.bank_stats() == after_setup.bank_stats


def test_dma_api_refuses_a_third_device_clearly(banked: System) -> None:
    from vcmm.attrs import DmaDirection
    from vcmm.dma import DmaApi

    api = DmaApi(banked)
    pa = banked.vcm_phys_alloc("ebi", SZ_64K, PhysAttr.NONE).chunks[0][0]
    for name in DEVICES[:2]:
        api.map_page(name, pa, 0, SZ_4K, DmaDirection.TO_DEVICE)
    before = banked.snapshot()
    # dma_map_page fails as Linux's does (the all-ones handle), the reason kept.
    handle = api.map_page("vcodec_stream", pa, 0, SZ_4K, DmaDirection.TO_DEVICE)
    assert api.mapping_error("vcodec_stream", handle)
    err = api.last_error
    assert isinstance(err, BusyError)
    assert "all its 2 context banks are active" in str(err)
    assert "'vcodec_stream'" in str(err)
    assert banked.snapshot() == before


def _misses(system: System, name: str, res, fill: int) -> int:
    ctx = system.device(name).ctx
    before = ctx.stats().tlb.misses
    _touch(system, name, res, fill)
    return ctx.stats().tlb.misses - before


def test_a_parked_context_back_on_its_own_bank_keeps_its_tlb_entries(banked: System) -> None:
    a, res_a = _setup(banked, "vcodec_a_mm1", 1)
    banked.vcm_activate(a)
    assert _misses(banked, "vcodec_a_mm1", res_a, 1) == PAGES  # cold: one walk a page
    banked.vcm_deactivate(a)
    banked.vcm_activate(a)  # nobody took the bank, the table is the same
    assert _misses(banked, "vcodec_a_mm1", res_a, 1) == 0


def test_a_stolen_bank_comes_back_cold(banked: System) -> None:
    (a, res_a), (b, _), (c, res_c) = (_setup(banked, n, i + 1) for i, n in enumerate(DEVICES))
    banked.vcm_activate(a)
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    banked.vcm_deactivate(a)
    banked.vcm_activate(b)
    banked.vcm_activate(c)  # takes a's bank
    _touch(banked, "vcodec_stream", res_c, 3)
    banked.vcm_deactivate(c)
    banked.vcm_activate(a)  # takes c's bank back: the entries there are c's, dropped
    assert _misses(banked, "vcodec_a_mm1", res_a, 1) == PAGES


def test_changes_while_parked_reach_the_parked_bank(banked: System) -> None:
    """The warm return must not serve stale translations: unbacking and backing the
    reservation with other pages while the context is parked flushes its bank."""
    a, res_a = _setup(banked, "vcodec_a_mm1", 1)
    banked.vcm_activate(a)
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    banked.vcm_deactivate(a)
    old = res_a.physmem
    banked.vcm_unback(res_a)
    fresh = banked.vcm_phys_alloc("blocks", PAGES * SZ_4K, PhysAttr(block_sizes=(SZ_4K,)))
    for pa, size in fresh.chunks:
        banked.memory.write(pa, b"\x07" * size)
    banked.vcm_back(res_a, fresh)
    banked.vcm_phys_free(old)
    banked.vcm_activate(a)
    # Every page walks again (the unmap flushed them) and reads the new bytes.
    assert _misses(banked, "vcodec_a_mm1", res_a, 7) == PAGES


def test_unbacked_while_parked_faults_after_the_return(banked: System) -> None:
    from vcmm.errors import DeviceFaultError

    a, res_a = _setup(banked, "vcodec_a_mm1", 1)
    banked.vcm_activate(a)
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    banked.vcm_deactivate(a)
    banked.vcm_unback(res_a)
    banked.vcm_activate(a)
    with pytest.raises(DeviceFaultError):
        banked.device("vcodec_a_mm1").read(res_a.dev_addr, 4)


def test_another_vcm_on_the_parked_context_starts_cold(banked: System) -> None:
    a, res_a = _setup(banked, "vcodec_a_mm1", 1)
    a2, res_2 = _setup(banked, "vcodec_a_mm1", 9)  # same device, its second VCM
    banked.vcm_activate(a)
    _touch(banked, "vcodec_a_mm1", res_a, 1)
    banked.vcm_deactivate(a)
    banked.vcm_activate(a2)  # same bank, other table: a context switch
    assert res_2.dev_addr == res_a.dev_addr  # same IOVAs, other memory
    assert _misses(banked, "vcodec_a_mm1", res_2, 9) == PAGES
    banked.vcm_deactivate(a2)
    banked.vcm_activate(a)  # back to the first table: cold again, right bytes
    assert _misses(banked, "vcodec_a_mm1", res_a, 1) == PAGES
