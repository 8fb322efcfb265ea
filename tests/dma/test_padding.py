"""map_sg padding cannot carry data between devices (issue 10 item 5).

Padding between sg slots (to a segment boundary) maps a zeroed page, writable like
the rest of a FROM_DEVICE or BIDIRECTIONAL mapping.  It used to be one page for every
device: one device wrote into its padding and another read it back through its own.
Now each DMA domain pads with a page of its own."""

from __future__ import annotations

from collections.abc import Callable

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, ScatterList

G = SZ_4K


def _padded(dma: DmaApi, dev: str, pa: int) -> tuple[ScatterList, int]:
    """A BIDIRECTIONAL sg mapping with one granule of padding after its first entry
    (16 KiB segment windows: 12K then 8K would straddle one); returns the list and
    the device address of the padding."""
    dma.set_seg_boundary(dev, 0x3FFF)
    sgl = ScatterList([(pa, 3 * G), (pa + 0x10000, 2 * G)])
    assert dma.map_sg(dev, sgl, 2, D.BIDIRECTIONAL) == 2
    return sgl, sgl[0].dma_address + 3 * G


def test_a_device_cannot_read_what_another_wrote_into_its_padding(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    codec, display = system.device("vcodec_a_mm1"), system.device("mdp")
    assert dma.domain("vcodec_a_mm1") is not dma.domain("mdp")
    a_sgl, a_pad = _padded(dma, "vcodec_a_mm1", buf.pa)
    b_sgl, b_pad = _padded(dma, "mdp", buf.pa + 0x40000)
    codec.write(a_pad, b"covert channel")
    assert display.read(b_pad, 14) == bytes(14)
    # Each domain's padding is its own page, and none of the buffer's.
    a_page, b_page = codec.ctx.translate(a_pad), display.ctx.translate(b_pad)
    assert a_page != b_page
    assert not any(p in range(buf.pa, buf.pa + (1 << 20)) for p in (a_page, b_page))
    # Devices of one domain share one page table, so they share its padding page too.
    assert codec.read(a_pad, 14) == b"covert channel"
    dma.unmap_sg("vcodec_a_mm1", a_sgl, 2, D.BIDIRECTIONAL)
    dma.unmap_sg("mdp", b_sgl, 2, D.BIDIRECTIONAL)


def test_a_new_padding_page_is_zeroed_and_given_back_with_its_domain(
    system: vcmm.System,
) -> None:
    ebi = system.target("ebi")
    free0 = ebi.free_bytes
    dma = DmaApi(system, devices=["vcodec_a_mm1"])
    assert ebi.free_bytes == free0  # nothing is taken until padding is needed
    buf = system.vcm_phys_alloc("ebi", 1 << 20, vcmm.PhysAttr.CONTIGUOUS)
    # The page the padding will get held someone's data before (freed, not zeroed).
    old = system.vcm_phys_alloc("ebi", G, vcmm.PhysAttr.CONTIGUOUS)
    system.memory.write(old.chunk_ranges[0].start, b"previous owner")
    system.vcm_phys_free(old)
    sgl, pad = _padded(dma, "vcodec_a_mm1", buf.chunk_ranges[0].start)
    assert system.device("vcodec_a_mm1").ctx.translate(pad) == old.chunk_ranges[0].start
    assert system.device("vcodec_a_mm1").read(pad, G) == bytes(G)
    dma.unmap_sg("vcodec_a_mm1", sgl, 2, D.BIDIRECTIONAL)
    system.vcm_phys_free(buf)
    dma.close()
    assert ebi.free_bytes == free0


def test_a_failed_map_sg_gives_its_new_padding_page_back(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(1 << 20)
    dma.set_seg_boundary("vcodec_a_mm1", 0x3FFF)
    dma.set_mask("vcodec_a_mm1", 0x3FFF)  # no room for the 24K range below the mask
    before = state()
    sgl = ScatterList([(buf.pa, 3 * G), (buf.pa + 0x10000, 2 * G)])
    assert dma.map_sg("vcodec_a_mm1", sgl, 2, D.BIDIRECTIONAL) == 0
    assert state() == before
