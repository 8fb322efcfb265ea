"""A device's ``memory-region`` (a ``shared-dma-pool``) is its coherent memory:
``alloc_coherent`` for it comes from that region and nowhere else, as Linux's
``dma_alloc_from_dev_coherent`` serves a device with its own coherent memory."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from vcmm import SZ_1M, SZ_64K, System
from vcmm.attrs import MemType
from vcmm.dma import DmaApi
from vcmm.errors import OutOfMemoryError
from vcmm.inject import fail_nth
from vcmm.ranges import AddressRange

from .mixed_board import mixed_tree, reference_walk

MakeDtb = Callable[..., str]
DISPLAY, VIDEO, HDLCD = "ae00000.display", "aa00000.video", "7ff50000.hdlcd"
POOL = AddressRange(0xB000_0000, 4 * SZ_1M)  # pool@b0000000 of the mixed board
CMA = AddressRange(0xA000_0000, 8 * SZ_1M)  # the default CMA area: the DMA API's pool


def boot(make_dtb: MakeDtb, tree: dict[str, Any] | None = None) -> System:
    return System.from_file(make_dtb(tree or mixed_tree()))


def test_a_device_with_a_memory_region_allocates_there(make_dtb: MakeDtb) -> None:
    system = boot(make_dtb)
    api = DmaApi.of(system)
    buf = api.alloc_coherent(DISPLAY, SZ_64K)
    (chunk,) = buf.chunks
    assert chunk.start in POOL and buf.memtype is MemType.NORMAL_NC
    system.cpu.write(buf.cpu_addr + 16, b"from the region")
    assert system.device(DISPLAY).read(buf.dma_handle + 16, 15) == b"from the region"
    root = system.device(DISPLAY).ctx.ttbr0
    assert root is not None
    assert reference_walk("vmsav8", system.memory, root, buf.dma_handle) == chunk.start
    other = api.alloc_coherent(VIDEO, SZ_64K)  # no memory-region: the DMA API's pool
    assert all(c.start in CMA for c in other.chunks)


def test_a_full_region_does_not_fall_back(make_dtb: MakeDtb) -> None:
    system = boot(make_dtb)
    api = DmaApi.of(system)
    api.alloc_coherent(DISPLAY, 3 * SZ_1M)
    before = (system.snapshot(), api.snapshot())
    with pytest.raises(OutOfMemoryError, match=r"coherent pool \[0xb0000000"):
        api.alloc_coherent(DISPLAY, 2 * SZ_1M)  # 1M left; the CMA area has 8M free
    assert (system.snapshot(), api.snapshot()) == before


def test_devices_naming_one_region_share_it_and_close_gives_it_back(make_dtb: MakeDtb) -> None:
    tree = mixed_tree()
    tree["hdlcd@7ff50000"]["memory-region"] = 20
    tree["hdlcd@7ff50000"]["dma-coherent"] = True
    system = boot(make_dtb, tree)
    pool = system.target("pool@b0000000")
    api = DmaApi.of(system)
    assert pool.free_bytes == 0  # carved whole for its devices
    one = api.alloc_coherent(DISPLAY, SZ_64K)
    two = api.alloc_coherent(HDLCD, SZ_64K)
    assert {one.chunks[0].start in POOL, two.chunks[0].start in POOL} == {True}
    assert one.chunks[0] != two.chunks[0]
    # a coherent device gets the region's non-cacheable buffer too (Linux remaps it WC)
    assert two.memtype is MemType.NORMAL_NC
    api.free_coherent(DISPLAY, SZ_64K, one.cpu_addr, one.dma_handle)
    api.free_coherent(HDLCD, SZ_64K, two.cpu_addr, two.dma_handle)
    api.close()
    assert pool.free_bytes == POOL.size


def test_every_failing_allocation_of_setup_and_alloc_changes_nothing(make_dtb: MakeDtb) -> None:
    """The DMA API's creation (domains, pools, the region pool) and a coherent buffer
    from the region, each allocation made to fail in turn (Linux's fail-nth)."""
    system = boot(make_dtb)
    for call in ("create", "alloc"):
        api = DmaApi.of(system) if call == "alloc" else None
        before = system.snapshot()
        for n in range(1, 200):
            with fail_nth(n) as injector:
                try:
                    if api is None:
                        DmaApi(system).close()
                    else:
                        buf = api.alloc_coherent(DISPLAY, SZ_64K)
                        api.free_coherent(DISPLAY, SZ_64K, buf.cpu_addr, buf.dma_handle)
                except OutOfMemoryError:
                    assert injector.fired
                    assert system.snapshot() == before, (call, n)
                    continue
            if not injector.fired:
                break
        assert n > 2, call
