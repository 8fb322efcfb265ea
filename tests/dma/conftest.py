"""Fixtures for the DMA API tests: a booted system, the DMA API with debugging on,
platform variants, and kernel buffers.

DMA debugging is on in every test (``raise`` mode): a test that provokes a report
takes it with ``dma.checker.take()``; any report left at the end fails the test, so a
test cannot misuse the API unnoticed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

import vcmm
from vcmm.dma import DmaApi
from vcmm.platform import load_default


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


@pytest.fixture
def dma(system: vcmm.System) -> Iterator[DmaApi]:
    api = DmaApi(system, debug="raise")
    yield api
    assert api.checker is not None
    left = api.checker.take()
    assert not left, "unexpected DMA-API reports:\n" + "\n".join(map(str, left))


def boot(*, coherent: tuple[str, ...] = (), domains: dict[str, str] | None = None) -> vcmm.System:
    """The default platform with some devices made coherent and/or sharing domains."""
    spec = load_default()
    domains = domains or {}
    devices = tuple(
        dataclasses.replace(
            d,
            coherent=d.coherent or d.name in coherent,
            domain=domains.get(d.name, d.domain),
        )
        for d in spec.devices
    )
    return vcmm.System(dataclasses.replace(spec, devices=devices))


@pytest.fixture
def make_system() -> Callable[..., vcmm.System]:
    return boot


@dataclass
class KernelBuffer:
    """Kernel RAM from the buddy allocator, with its linear-map address."""

    pa: int
    va: int
    size: int


@pytest.fixture
def kbuf(system: vcmm.System) -> Callable[[int], KernelBuffer]:
    def make(size: int) -> KernelBuffer:
        physmem = system.vcm_phys_alloc("ebi", size, vcmm.PhysAttr.CONTIGUOUS)
        pa = physmem.chunk_ranges[0].start
        return KernelBuffer(pa, system.cpu.phys_to_virt(pa), size)

    return make


@pytest.fixture
def state(system: vcmm.System, dma: DmaApi) -> Callable[[], tuple[object, ...]]:
    """Everything a failing call must leave alone: the system and the DMA API."""
    return lambda: (system.snapshot(), dma.snapshot())
