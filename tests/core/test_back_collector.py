"""``vcm_back`` and ``vcm_unback`` pause the cycle collector and give back its state.

A backing of 16384 pages makes tens of thousands of edges, keys and tuples; the
collector's passes over them were a third of its time and free nothing.  The pause
must hold while the call plans and writes, end with the call (a failing one
included), and leave a collector the caller turned off alone.
"""

from __future__ import annotations

import gc
from unittest import mock

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.core import Attr, PhysAttr, sharing
from vcmm.errors import StateError


def _backing(system: vcmm.System) -> tuple[object, object]:
    carve = system.vcm_phys_alloc("contig", 16 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(carve, windows=[((i ^ 1) * SZ_4K, SZ_4K) for i in range(16)])
    vcm = system.vcm_create(0x4000_0000, 16 * SZ_1M)
    return system.vcm_reserve(vcm, 16 * SZ_4K, Attr.RW), view


def test_the_collector_is_off_while_planning_and_back_on_after(system: vcmm.System) -> None:
    res, view = _backing(system)
    seen: list[bool] = []
    for name in ("plan_back", "plan_unback"):
        real = getattr(sharing, name)

        def spy(*args: object, real: object = real, **kwargs: object) -> object:
            seen.append(gc.isenabled())
            return real(*args, **kwargs)  # type: ignore[operator]

        with mock.patch.object(sharing, name, spy):
            assert gc.isenabled()
            if name == "plan_back":
                system.vcm_back(res, view)
            else:
                system.vcm_unback(res)
            assert gc.isenabled()
    assert seen == [False, False]


def test_a_failing_call_gives_the_collector_back(system: vcmm.System) -> None:
    res, view = _backing(system)
    system.vcm_back(res, view)
    with pytest.raises(StateError, match="already backed"):
        system.vcm_back(res, view)
    assert gc.isenabled()
    system.vcm_unback(res)
    with pytest.raises(StateError, match="not backed"):
        system.vcm_unback(res)
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off(system: vcmm.System) -> None:
    res, view = _backing(system)
    gc.disable()
    try:
        system.vcm_back(res, view)
        assert not gc.isenabled()
        system.vcm_unback(res)
        assert not gc.isenabled()
    finally:
        gc.enable()
