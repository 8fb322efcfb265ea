"""alloc_coherent is all or nothing at every step (issue 10 item 9): the pages taken
from the DMA API's pools are given back when a later step fails, including the
step right after the pool allocation (the view that describes the pages to the core).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm.dma import DmaApi
from vcmm.errors import OutOfMemoryError

DEV = "vcodec_a_mm1"  # not coherent: its buffers come from the pools


@pytest.mark.parametrize("atomic", [False, True], ids=["coherent pool", "atomic pool"])
def test_a_pool_allocation_is_given_back_when_its_view_fails(
    system: vcmm.System,
    dma: DmaApi,
    state: Callable[[], tuple[object, ...]],
    monkeypatch: pytest.MonkeyPatch,
    atomic: bool,
) -> None:
    before = state()

    def refuse(*args: object, **kwargs: object) -> None:
        raise OutOfMemoryError("vcm_phys_view: refused by the test")

    monkeypatch.setattr(system, "vcm_phys_view", refuse)
    with pytest.raises(OutOfMemoryError, match="refused by the test"):
        dma.alloc_coherent(DEV, 3 * SZ_4K, atomic=atomic)
    assert state() == before  # the pool's free lists included
    monkeypatch.undo()
    pools = dma.pool.snapshot(), dma.atomic_pool.snapshot()
    buf = dma.alloc_coherent(DEV, 3 * SZ_4K, atomic=atomic)
    assert buf.source == ("atomic pool" if atomic else "coherent pool")
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    assert (dma.pool.snapshot(), dma.atomic_pool.snapshot()) == pools
