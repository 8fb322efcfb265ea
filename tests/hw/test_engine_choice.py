"""Choosing the engine (``VCMM_ENGINE``): the values it takes, what ``auto`` does with
and without numba, the warm-up that keeps short runs off the compiler, and that a run
switching engines half-way ends exactly as one that never left Python."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import vcmm
from vcmm import Attr, PhysAttr
from vcmm.attrs import Access
from vcmm.errors import InvalidArgumentError
from vcmm.hw import engine
from vcmm.sizes import SZ_4K, SZ_4M


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(engine.time, "monotonic", fake)
    return fake


@pytest.fixture
def with_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "numba_available", lambda: True)


def test_auto_keeps_a_short_run_on_python_then_goes_compiled(
    clock: Clock, with_numba: None
) -> None:
    with engine.use_engine("auto") as chosen:
        assert chosen == "numba"
        assert not engine.compiled()  # the first bulk call starts the warm-up
        clock.now += engine.AUTO_COMPILE_AFTER - 0.01
        assert not engine.compiled()
        clock.now += 0.02
        assert engine.compiled()
        clock.now -= 50.0  # once taken over, the kernels stay in use
        assert engine.compiled()


def test_the_warm_up_counts_from_the_first_bulk_call_not_from_the_choice(
    clock: Clock, with_numba: None
) -> None:
    with engine.use_engine("auto"):
        clock.now += 10 * engine.AUTO_COMPILE_AFTER  # booting, loading: not bulk work
        assert not engine.compiled()


def test_numba_named_explicitly_is_compiled_from_the_first_access(with_numba: None) -> None:
    with engine.use_engine("numba") as chosen:
        assert chosen == "numba" and engine.compiled()


def test_python_is_never_compiled(clock: Clock, with_numba: None) -> None:
    with engine.use_engine("python") as chosen:
        assert chosen == "python" and not engine.compiled()
        clock.now += 100.0
        assert not engine.compiled()


def test_use_engine_restores_the_choice_and_its_warm_up(clock: Clock, with_numba: None) -> None:
    with engine.use_engine("auto"):
        assert not engine.compiled()
        with engine.use_engine("numba"):
            assert engine.compiled()
        clock.now += 1.0
        assert not engine.compiled()  # the outer warm-up kept its start
        clock.now += engine.AUTO_COMPILE_AFTER
        assert engine.compiled()


def test_auto_without_numba_runs_python_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "numba_available", lambda: False)
    with (
        pytest.warns(RuntimeWarning, match="numba cannot be imported"),
        engine.use_engine("auto") as chosen,
    ):
        assert chosen == "python" and not engine.compiled()
    with (
        pytest.raises(InvalidArgumentError, match="VCMM_ENGINE=numba, but numba cannot"),
        engine.use_engine("numba"),
    ):
        pass


@pytest.mark.parametrize("choice", ["fast", "", "NUMBA"])
def test_an_unknown_engine_is_refused_by_name(choice: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised, engine.use_engine(choice):
        pass
    assert repr(choice) in str(raised.value) and "auto, numba, python" in str(raised.value)


@pytest.mark.parametrize(("variable", "expected"), [(None, "numba"), ("python", "python")])
def test_benchmarks_measure_one_engine_without_the_warm_up(
    monkeypatch: pytest.MonkeyPatch, with_numba: None, variable: str | None, expected: str
) -> None:
    if variable is None:
        monkeypatch.delenv(engine.ENGINE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(engine.ENGINE_VARIABLE, variable)
    with engine.measured_engine() as chosen:
        assert chosen == expected
        assert engine.compiled() is (expected == "numba")


def _traffic() -> tuple[tuple[object, ...], bytes]:
    """Whole-buffer device writes and reads and a batch of bursts through an SMMU
    context: the counters of its TLB and the bytes read back."""
    system = vcmm.System.default()
    vcm = system.vcm_create(SZ_4K, 64 * SZ_4M)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_b_mm2", 0))
    res = system.vcm_reserve(vcm, SZ_4M, Attr.READ | Attr.WRITE)
    system.vcm_back(res, system.vcm_phys_alloc("ebi", SZ_4M, PhysAttr.NONE))
    dev = system.device("vcodec_b_mm2")
    data = bytes(np.arange(SZ_4M, dtype=np.uint32).astype(np.uint8))
    dev.write(res.dev_addr, data)  # a span: compiled on the compiled engine
    bursts = np.arange(res.dev_addr, res.dev_addr + SZ_4M, 3 * SZ_4K, dtype=np.uint64)
    dev.access_batch(bursts, Access.READ)
    back = dev.read(res.dev_addr, SZ_4M)
    stats = [dataclasses.astuple(s.tlb.stats) for s in system.machine.smmus.values()]
    return tuple(stats), back


@pytest.mark.skipif(not engine.numba_available(), reason="numba is not installed")
def test_a_run_that_switches_engines_half_way_ends_as_a_python_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with engine.use_engine("python"):
        reference = _traffic()
    calls = {"n": 0}

    def clock() -> float:  # every bulk call is a second later: the switch comes mid-run
        calls["n"] += 1
        return float(calls["n"])

    monkeypatch.setattr(engine.time, "monotonic", clock)
    with engine.use_engine("auto"):
        switched = _traffic()
        assert engine.compiled()  # the kernels did take over during the run
    assert switched == reference
