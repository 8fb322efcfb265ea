"""Each unmap removes its own mapping (issue 10 item 1).

A physically addressed device sees a page at one bus address however often it is
mapped, so handles repeat.  The DMA API tells the mappings apart as Linux's dma-debug
does: by the handle, then the call kind (and for the sg calls the list itself), the
size and the direction; ties go to the oldest.  Debugging is on in raise mode (see
conftest), so any mix-up would be a report."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, MapKind, ScatterList
from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE, ProcessTable
from vcmm.share import SyncFlags, dma_buf_sync
from vcmm.share.exporter import VcmExporter
from vcmm.share.state import set_dma_api


def _kinds(dma: DmaApi, dev: str) -> list[tuple[str, str]]:
    return sorted((m.kind.value, m.direction.name) for m in dma.mappings(dev))


@pytest.mark.parametrize("sg_first", [False, True])
def test_map_page_and_map_sg_of_one_page_unmap_their_own(
    dma: DmaApi, kbuf: Callable, sg_first: bool
) -> None:
    """The repro: unmap_page used to remove the map_sg record (the newest at that
    address), and unmap_sg then failed with "belongs to map_page#1"."""
    buf = kbuf(SZ_4K)
    sgl = ScatterList([(buf.pa, SZ_4K)])
    if sg_first:
        assert dma.map_sg("dsp", sgl, 1, D.TO_DEVICE) == 1
        handle = dma.map_page("dsp", buf.pa, 0, SZ_4K, D.TO_DEVICE)
    else:
        handle = dma.map_page("dsp", buf.pa, 0, SZ_4K, D.TO_DEVICE)
        assert dma.map_sg("dsp", sgl, 1, D.TO_DEVICE) == 1
    assert sgl[0].dma_address == handle  # one bus address, two mappings
    dma.unmap_page("dsp", handle, SZ_4K, D.TO_DEVICE)
    (left,) = dma.mappings("dsp")
    assert left.kind is MapKind.SG and left.sgl is sgl
    dma.unmap_sg("dsp", sgl, 1, D.TO_DEVICE)
    assert dma.mappings("dsp") == []


def test_two_mappings_of_a_page_are_told_apart_by_size_and_direction(
    dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    h_from = dma.map_page("dsp", buf.pa, 0, 256, D.FROM_DEVICE)
    h_to = dma.map_page("dsp", buf.pa, 0, 512, D.TO_DEVICE)
    h_bidi = dma.map_page("dsp", buf.pa, 0, 256, D.BIDIRECTIONAL)
    assert h_from == h_to == h_bidi
    dma.unmap_page("dsp", h_from, 256, D.FROM_DEVICE)
    assert _kinds(dma, "dsp") == [("map_page", "BIDIRECTIONAL"), ("map_page", "TO_DEVICE")]
    dma.unmap_page("dsp", h_to, 512, D.TO_DEVICE)
    assert [(m.size, m.direction) for m in dma.mappings("dsp")] == [(256, D.BIDIRECTIONAL)]
    # A sync names its mapping the same way: the handle, size and direction.
    dma.sync_single_for_cpu("dsp", h_bidi, 256, D.BIDIRECTIONAL)
    dma.sync_single_for_device("dsp", h_bidi, 256, D.BIDIRECTIONAL)
    dma.unmap_page("dsp", h_bidi, 256, D.BIDIRECTIONAL)


def test_two_lists_of_one_page_are_told_apart_by_the_list(dma: DmaApi, kbuf: Callable) -> None:
    buf = kbuf(SZ_4K)
    first, second = ScatterList([(buf.pa, SZ_4K)]), ScatterList([(buf.pa, SZ_4K)])
    dma.map_sg("dsp", first, 1, D.FROM_DEVICE)
    dma.map_sg("dsp", second, 1, D.FROM_DEVICE)
    dma.sync_sg_for_cpu("dsp", first, 1, D.FROM_DEVICE)
    owners = {id(m.sgl): m.owner.value for m in dma.mappings("dsp")}
    assert owners == {id(first): "cpu", id(second): "device"}
    dma.sync_sg_for_device("dsp", first, 1, D.FROM_DEVICE)
    dma.unmap_sg("dsp", first, 1, D.FROM_DEVICE)
    (left,) = dma.mappings("dsp")
    assert left.sgl is second
    dma.unmap_sg("dsp", second, 1, D.FROM_DEVICE)


@pytest.mark.parametrize("unmap_first", ["a", "b"])
def test_one_device_attaching_a_buffer_twice_unmaps_each_attachment(unmap_first: str) -> None:
    """The same through dma-buf: the DSP (no IOMMU) attaches one buffer twice."""
    system = vcmm.System.default()
    api = set_dma_api(DmaApi(system, debug="raise"))
    buf = VcmExporter(system).allocate(2 * SZ_4K, contiguous=True)
    atts = {"a": buf.attach("dsp"), "b": buf.attach("dsp")}
    sgs: dict[str, Any] = {"a": atts["a"].map(D.TO_DEVICE), "b": atts["b"].map(D.FROM_DEVICE)}
    assert sgs["a"].dma_address == sgs["b"].dma_address
    # A CPU bracket over part of the buffer syncs both (dma_sync_single per attachment).
    proc = ProcessTable(system).spawn("p")
    fd = buf.install_fd(proc, O_RDWR)
    va = proc.mmap(2 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ, 0, SZ_4K)
    assert {m.owner.value for m in api.mappings("dsp")} == {"cpu"}
    assert proc.read(va, 4) == bytes(4)
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ, 0, SZ_4K)
    other = "b" if unmap_first == "a" else "a"
    atts[unmap_first].unmap(sgs[unmap_first])
    (left,) = api.mappings("dsp")
    assert left.direction is sgs[other].direction and left.sgl is sgs[other].table
    atts[other].unmap(sgs[other])
    assert api.mappings("dsp") == []
    assert api.checker is not None and api.checker.take() == []
