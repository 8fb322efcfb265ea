"""Importers map attachments through the DMA API of the importing device (Linux's
``map_dma_buf`` -> ``dma_map_sg``): IOVAs from the device's domain, bus addresses for
physically addressed devices, and the DMA API's cache maintenance and ownership."""

from __future__ import annotations

from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K, SZ_64K
from vcmm.attrs import DmaDirection
from vcmm.core.flags import PhysAttr
from vcmm.dma import DmaApi, DmaAttr, Owner, ReportKind
from vcmm.errors import BusyError, DmaApiError, InvalidArgumentError, StateError
from vcmm.proc import MAP_SHARED, O_RDONLY, O_RDWR, PROT_READ, PROT_WRITE, ProcessTable
from vcmm.share import SyncFlags, dma_buf_sync
from vcmm.share.exporter import VcmExporter
from vcmm.share.state import set_dma_api, state_of

D = DmaDirection


def test_attachment_iovas_come_from_the_devices_domain_top_down_below_its_dma_mask(
    rig: Any,
) -> None:
    system, api = rig.system, rig.api
    api.set_mask("vcodec_stream", (1 << 28) - 1)  # DMA_BIT_MASK(28)
    small = rig.exporter.allocate(4 * SZ_4K)
    big = rig.exporter.allocate(SZ_64K)
    s1 = small.attach("vcodec_stream").map(D.BIDIRECTIONAL)
    s2 = big.attach("vcodec_stream").map(D.BIDIRECTIONAL)
    # Linux's IOVA allocator: top-down from the mask, each range aligned to its size
    # rounded up to a power of two.  The first 16K ends at 2^28; the 64K range is the
    # highest 64K-aligned one below it.
    assert s1.dma_address == (1 << 28) - 4 * SZ_4K == 0x0FFF_C000
    assert s2.dma_address == 0x0FFE_0000
    domain = api.domain("vcodec_stream")
    assert domain is not None
    assert sorted(int(r.addr or 0) for r in domain.vcm.reservations) == [
        s2.dma_address,
        s1.dma_address,
    ]
    assert sorted(m.dma_addr for m in api.mappings("vcodec_stream")) == [
        s2.dma_address,
        s1.dma_address,
    ]
    ctx = system.device("vcodec_stream").ctx
    for sg in (s1, s2):
        assert sg.segments() == [(sg.dma_address, sg.size)]  # one IOVA run each
        for e in sg:
            assert ctx.translate(e.dma_address) == e.phys
    # Another device has a domain of its own: its first range is at the top of its mask.
    s3 = small.attach("mdp").map(D.TO_DEVICE)
    assert s3.dma_address == (1 << 32) - 4 * SZ_4K


def test_a_physically_addressed_importer_gets_bus_addresses_through_the_direct_ops(
    rig: Any,
) -> None:
    system = rig.system
    buf = rig.exporter.allocate(2 * SZ_4K, contiguous=True)
    pa = buf.priv.physmem.chunk_ranges[0].start
    sg = buf.attach("dsp").map(D.BIDIRECTIONAL)
    bus = pa - 0x8000_0000 + 0x4000_0000  # the DSP's dma-ranges window (000 L1352)
    assert sg.segments() == [(bus, 2 * SZ_4K)]
    (rec,) = rig.api.mappings("dsp")
    assert rig.api.ops("dsp") == "direct" and rec.dma_addr == bus
    # A bracket over part of the buffer syncs only that part (dma_sync_single).
    proc = rig.spawn("writer")
    fd = buf.install_fd(proc, O_RDWR)
    va = proc.mmap(2 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE, 0, SZ_4K)
    proc.write(va, b"\x22" * (2 * SZ_4K))  # the second page is outside the bracket: a bug
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE, 0, SZ_4K)
    seen = system.device("dsp").read(bus, 2 * SZ_4K)
    assert seen[:SZ_4K] == b"\x22" * SZ_4K  # cleaned by END (for_device, BIDIRECTIONAL)
    assert seen[SZ_4K:] == bytes(SZ_4K)  # still dirty in the CPU cache: never cleaned


def test_mapping_hands_the_buffer_to_the_device_unless_the_cpu_sync_is_skipped(
    rig: Any,
) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SZ_4K)
    kmap = buf.vmap()
    mdp = system.device("mdp")
    att = buf.attach("mdp")
    # The kernel writes while nothing is mapped: the bytes sit dirty in the CPU cache.
    buf.begin_cpu_access(D.TO_DEVICE)
    kmap.write(0, b"fresh")
    buf.end_cpu_access(D.TO_DEVICE)
    sg = att.map(D.TO_DEVICE, DmaAttr.SKIP_CPU_SYNC)
    assert mdp.read(sg.dma_address, 5) == bytes(5)  # nobody cleaned the line
    att.unmap(sg)
    sg = att.map(D.TO_DEVICE)
    assert mdp.read(sg.dma_address, 5) == b"fresh"  # dma_map_sg cleaned it
    att.unmap(sg)
    # The kernel reads (the line is cached clean); the device writes memory behind it.
    buf.begin_cpu_access(D.FROM_DEVICE)
    assert kmap.read(0, 5) == b"fresh"
    buf.end_cpu_access(D.FROM_DEVICE)
    sg = att.map(D.FROM_DEVICE, DmaAttr.SKIP_CPU_SYNC)
    mdp.write(sg.dma_address, b"dev-1")
    att.unmap(sg)  # skipped: the stale line survives
    buf.begin_cpu_access(D.FROM_DEVICE)
    assert kmap.read(0, 5) == b"fresh"
    buf.end_cpu_access(D.FROM_DEVICE)
    sg = att.map(D.FROM_DEVICE)
    mdp.write(sg.dma_address, b"dev-2")
    att.unmap(sg)  # dma_unmap_sg invalidates for the CPU
    buf.begin_cpu_access(D.FROM_DEVICE)
    assert kmap.read(0, 5) == b"dev-2"
    buf.end_cpu_access(D.FROM_DEVICE)


def test_cpu_brackets_hand_the_buffer_over_through_the_dma_api() -> None:
    """With DMA debugging on, a CPU read of a buffer the device owns is reported; the
    dma-buf bracket is dma_sync_*_for_cpu / _for_device, so inside it the read is fine."""
    system = vcmm.System.default()
    api = set_dma_api(DmaApi(system, debug="raise"))
    assert api.checker is not None
    buf = VcmExporter(system).allocate(SZ_4K)
    proc = ProcessTable(system).spawn("reader")
    fd = buf.install_fd(proc, O_RDONLY)
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    att = buf.attach("vcodec_b_mm2")
    sg = att.map(D.FROM_DEVICE)
    system.device("vcodec_b_mm2").write(sg.dma_address, b"decoded")
    (rec,) = api.mappings("vcodec_b_mm2")
    assert rec.owner is Owner.DEVICE
    with pytest.raises(DmaApiError, match="no dma_sync_\\*_for_cpu"):
        proc.read(va, 7)
    assert [r.kind for r in api.checker.take()] == [ReportKind.CPU_READ_WITHOUT_SYNC]
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    assert rec.owner is Owner.CPU
    assert proc.read(va, 7) == b"decoded"
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ)
    assert rec.owner is Owner.DEVICE
    att.unmap(sg)
    att.detach()
    assert api.checker.take() == []


def test_a_refused_first_attach_leaves_no_dma_api_behind() -> None:
    """The first attach of a system creates its DMA API; if the exporter then refuses
    the device, the API is closed again, so the failed call changed nothing."""
    system = vcmm.System.default()
    exporter = VcmExporter(system)
    sram = exporter.allocate(SZ_4K, target="smi")  # on-chip SRAM, outside the DSP's window
    before = (system.snapshot(), sram.snapshot())
    with pytest.raises(InvalidArgumentError, match="cannot reach"):
        sram.attach("dsp")
    assert (system.snapshot(), sram.snapshot()) == before
    assert state_of(system).api is None
    # The DMA API made now is a fresh one, and it serves the device that was refused.
    att = sram.attach("vcodec_a_mm1")
    assert state_of(system).api is att.api and att.api.ops("dsp") == "direct"


def test_a_device_the_dma_api_no_longer_serves_cannot_attach(rig: Any) -> None:
    buf = rig.exporter.allocate(SZ_4K)
    rig.api.remove_device("camera")
    before = (rig.system.snapshot(), rig.api.snapshot(), buf.snapshot())
    with pytest.raises(StateError, match="serves no camera"):
        buf.attach("camera")
    assert (rig.system.snapshot(), rig.api.snapshot(), buf.snapshot()) == before
    rig.api.attach_device("camera")
    sg = buf.attach("camera").map(D.TO_DEVICE)
    assert sg.dma_address == buf.priv.physmem.chunk_ranges[0].start


def test_a_dma_api_built_by_a_driver_is_the_one_attachments_map_through() -> None:
    system = vcmm.System.default()
    private = DmaApi(system)  # one per system: this one is the system's
    buf = VcmExporter(system).allocate(SZ_4K)
    before = (system.snapshot(), private.snapshot(), buf.snapshot())
    with pytest.raises(BusyError, match=r"already has an open DMA API.*DmaApi\.of\(system\)"):
        DmaApi(system, rcache=False)
    assert (system.snapshot(), private.snapshot(), buf.snapshot()) == before
    assert set_dma_api(private) is private and DmaApi.of(system) is private
    assert buf.attach("mdp").api is private


def test_views_and_wraps_of_memory_export_and_import_like_allocations(rig: Any) -> None:
    """A driver may export part of an allocation (``vcm_phys_view``) or pages it owns
    (``vcm_phys_wrap``); the importer sees exactly those pages."""
    system = rig.system
    whole = system.vcm_phys_alloc("contig", 4 * SZ_4K)
    base = whole.chunk_ranges[0].start
    view = system.vcm_phys_view(whole, SZ_4K, 2 * SZ_4K)
    part = rig.exporter.export(view, name="middle")
    assert part.size == 2 * SZ_4K
    sg = part.attach("mdp").map(D.TO_DEVICE)
    mdp = system.device("mdp")
    assert [mdp.ctx.translate(sg.dma_address + k * SZ_4K) for k in (0, 1)] == [
        base + SZ_4K,
        base + 2 * SZ_4K,
    ]
    # Carve-out: the exporter pinned it with the buffer's (write-back) type.
    assert part.priv.pin is not None
    # Kernel pages wrapped: the linear map already fixes their type, so no pin.
    kernel = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    wrap = system.vcm_phys_wrap(list(kernel.chunk_ranges), owner="a driver", of=kernel)
    pages = rig.exporter.export(wrap)
    wsg = pages.attach("camera").map(D.TO_DEVICE)
    assert wsg.segments() == [(kernel.chunk_ranges[0].start, SZ_4K)]
    assert pages.priv.pin is None
    with pytest.raises(InvalidArgumentError, match="kernel RAM"):
        rig.exporter.export(
            system.vcm_phys_wrap(list(kernel.chunk_ranges), owner="x", of=kernel), cached=False
        )
