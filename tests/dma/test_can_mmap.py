"""``dma_can_mmap`` (seed 004, issue 17 item 5), answered as Linux's
kernel/dma/mapping.c does: dma-iommu ops can always mmap (``use_dma_iommu``); direct
ops ask ``dma_direct_can_mmap``, true for a coherent device, and for a non-coherent
one only when non-cacheable buffers can be had and mapped (``DMA_NONCOHERENT_MMAP``).
Every True is checked by actually mapping a buffer into a process."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, SZ_64K
from vcmm.dma import DmaApi
from vcmm.errors import InvalidArgumentError, NotFoundError, OutOfMemoryError, VcmmError
from vcmm.platform import load_default
from vcmm.platform.dmamem import PoolSpec
from vcmm.proc import MAP_SHARED, PROT_READ, File, ProcessTable, Vma


class Node(File):
    """A driver node whose mmap hook maps one coherent buffer (dma_mmap_coherent)."""

    def __init__(self, dma: DmaApi, dev: str, buf: object) -> None:
        super().__init__(f"/dev/{dev}")
        self.dma, self.dev, self.buf = dma, dev, buf

    def mmap(self, vma: Vma) -> None:
        b = self.buf
        self.dma.mmap_coherent(self.dev, vma, b.cpu_addr, b.dma_handle, b.size)  # type: ignore[attr-defined]


def _maps_into_a_process(
    system: vcmm.System, dma: DmaApi, dev: str, *, atomic: bool = False
) -> bool:
    """Allocate a coherent page for ``dev``, map it into a process, read it back."""
    try:
        buf = dma.alloc_coherent(dev, SZ_4K, atomic=atomic)
    except VcmmError:
        return False
    system.cpu.write(buf.cpu_addr, b"mmap-me!")
    proc = ProcessTable(system).spawn("user")
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, proc.open(Node(dma, dev, buf)))
    ok = proc.read(va, 8) == b"mmap-me!"
    proc.exit()
    dma.free_coherent(dev, buf.size, buf.cpu_addr, buf.dma_handle)
    return ok


@pytest.mark.parametrize(
    ("dev", "ops"),
    [("vcodec_a_mm1", "iommu"), ("mdp", "iommu"), ("dsp", "direct"), ("camera", "direct")],
)
def test_every_device_of_the_default_platform_can_mmap(dev: str, ops: str) -> None:
    system = vcmm.System.default()
    dma = DmaApi(system)
    assert dma.can_mmap(dev) is True
    assert _maps_into_a_process(system, dma, dev)


def _without_pools(
    make_system: Callable[..., vcmm.System], coherent: tuple[str, ...] = ()
) -> vcmm.System:
    spec = make_system(coherent=coherent).spec
    none = PoolSpec(size=0)
    dma = dataclasses.replace(spec.dma, coherent_pool=none, atomic_pool=none)
    return vcmm.System(dataclasses.replace(spec, dma=dma))


def test_a_non_coherent_direct_device_without_a_non_cacheable_allocator_cannot(
    make_system: Callable[..., vcmm.System],
) -> None:
    system = _without_pools(make_system)
    dma = DmaApi(system)
    assert dma.can_mmap("camera") is False
    # Consistent with the allocator: there is no buffer to map.
    with pytest.raises(OutOfMemoryError, match="has no coherent pool"):
        dma.alloc_coherent("camera", SZ_4K)
    # Behind an IOMMU the answer is the ops' (Linux: use_dma_iommu -> true).
    assert dma.can_mmap("vcodec_a_mm1") is True


def test_a_coherent_direct_device_can_without_pools(
    make_system: Callable[..., vcmm.System],
) -> None:
    system = _without_pools(make_system, coherent=("camera",))
    dma = DmaApi(system)
    assert dma.can_mmap("camera") is True
    assert _maps_into_a_process(system, dma, "camera")


def test_the_atomic_pool_alone_is_enough() -> None:
    spec = load_default()
    pools = {
        "coherent_pool": PoolSpec(size=0),
        "atomic_pool": PoolSpec(target="contig", size=SZ_64K),
    }
    system = vcmm.System(dataclasses.replace(spec, dma=dataclasses.replace(spec.dma, **pools)))
    dma = DmaApi(system)
    assert dma.atomic_pool is not None
    assert dma.can_mmap("camera") is True
    assert _maps_into_a_process(system, dma, "camera", atomic=True)


def test_misuse_is_refused_and_changes_nothing() -> None:
    system = vcmm.System.default()
    dma = DmaApi(system, devices=["vcodec_a_mm1"])
    before = (system.snapshot(), dma.snapshot())
    with pytest.raises(NotFoundError, match="camera is not attached"):
        dma.can_mmap("camera")
    with pytest.raises(InvalidArgumentError, match="the CPU is not a DMA master"):
        dma.can_mmap("cpu")
    with pytest.raises(InvalidArgumentError, match="is not a device of this system"):
        dma.can_mmap(42)
    assert (system.snapshot(), dma.snapshot()) == before
