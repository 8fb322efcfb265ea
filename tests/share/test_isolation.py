"""Isolation through the sharing layer (issue 10): the descriptor that granted a
dma-buf bounds every later mapping of it, an exported allocation outlives every user
of the dma-buf, and DMA-debug reports CPU writes one importer's cache maintenance
discards under another."""

from __future__ import annotations

from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm.attrs import DmaDirection
from vcmm.core.flags import PhysAttr
from vcmm.dma import DmaApi, ReportKind
from vcmm.errors import BusyError, DeviceFaultError, DmaApiError, InvalidArgumentError
from vcmm.proc import MAP_SHARED, O_RDONLY, O_RDWR, PROT_READ, PROT_WRITE, File, ProcessTable
from vcmm.proc.errors import PermissionDeniedError
from vcmm.share import SyncFlags, dma_buf_mmap, dma_buf_sync
from vcmm.share.devnode import register_dev_nodes
from vcmm.share.exporter import VcmExporter
from vcmm.share.state import set_dma_api

D = DmaDirection

RW = PROT_READ | PROT_WRITE


def _procs_state(rig: Any, *procs: Any) -> tuple[object, ...]:
    return (
        rig.system.snapshot(),
        rig.api.snapshot(),
        tuple(tuple((v.start, v.length, int(v.prot)) for v in p.vmas) for p in procs),
        tuple(tuple(sorted((fd, d.id, d.refs) for fd, d in p.fds.items())) for p in procs),
    )


def test_a_read_only_dmabuf_fd_stays_read_only_through_a_dev_node(rig: Any) -> None:
    """Issue 10 item 2: import an O_RDONLY dma-buf fd into a node opened O_RDWR."""
    system = rig.system
    nodes = register_dev_nodes(rig.table, rig.exporter)
    node = nodes["/dev/vcodec_b_mm2"]
    buf = rig.exporter.allocate(SZ_4K, name="frame")
    owner = rig.spawn("owner")
    ro_fd = buf.install_fd(owner, O_RDONLY)
    buf.put()
    node_fd = owner.open("/dev/vcodec_b_mm2", O_RDWR)
    dev_addr = node.import_dmabuf(owner, node_fd, ro_fd)
    # The device got a read-only (TO_DEVICE) mapping: its writes fault.
    (mapping,) = rig.api.mappings("vcodec_b_mm2")
    assert mapping.direction is DmaDirection.TO_DEVICE
    codec = system.device("vcodec_b_mm2")
    with pytest.raises(DeviceFaultError, match="permission"):
        codec.write(dev_addr, b"forged")
    # A writable mmap of the node is refused, naming the mode; nothing changed.
    before = _procs_state(rig, owner)
    with pytest.raises(PermissionDeniedError, match="opened RDONLY"):
        owner.mmap(SZ_4K, RW, MAP_SHARED, node_fd)
    assert _procs_state(rig, owner) == before
    # A read-only one works and holds the granting description, not a new one.
    va = owner.mmap(SZ_4K, PROT_READ, MAP_SHARED, node_fd)
    (vma,) = [v for v in owner.vmas if v.start == va]
    assert vma.file is owner.file(ro_fd)
    owner.munmap(va, SZ_4K)
    owner.close(node_fd)
    owner.close(ro_fd)
    assert buf.released


def test_a_writable_grant_still_maps_writable(rig: Any) -> None:
    nodes = register_dev_nodes(rig.table, rig.exporter)
    node = nodes["/dev/vcodec_b_mm2"]
    buf = rig.exporter.allocate(SZ_4K)
    proc = rig.spawn("owner")
    fd = buf.install_fd(proc, O_RDWR)
    node_fd = proc.open("/dev/vcodec_b_mm2", O_RDWR)
    dev_addr = node.import_dmabuf(proc, node_fd, fd)
    (mapping,) = rig.api.mappings("vcodec_b_mm2")
    assert mapping.direction is DmaDirection.BIDIRECTIONAL
    rig.system.device("vcodec_b_mm2").write(dev_addr, b"decoded")
    va = proc.mmap(SZ_4K, RW, MAP_SHARED, node_fd)
    proc.write(va + 8, b"painted")


class _Importer(File):
    """A driver file whose mmap forwards to a dma-buf through ``via``."""

    def __init__(self, dmabuf: Any, via: Any) -> None:
        super().__init__("importer")
        self.dmabuf = dmabuf
        self.via = via

    def mmap(self, vma: Any) -> None:
        dma_buf_mmap(self.dmabuf, vma, 0, via=self.via)


def test_dma_buf_mmap_never_opens_a_read_write_description_of_its_own(rig: Any) -> None:
    buf = rig.exporter.allocate(SZ_4K, name="shared")
    other = rig.exporter.allocate(SZ_4K, name="other")
    proc = rig.spawn("p")
    ro, rw = buf.install_fd(proc, O_RDONLY), buf.install_fd(proc, O_RDWR)
    elsewhere = other.install_fd(proc, O_RDWR)
    for via, error, match in (
        (None, PermissionDeniedError, "needs the descriptor that granted write access"),
        (proc.file(ro), PermissionDeniedError, "opened RDONLY"),
        (proc.file(elsewhere), InvalidArgumentError, "is not a description of shared"),
    ):
        fd = proc.open(_Importer(buf, via), O_RDWR)
        before = _procs_state(rig, proc)
        with pytest.raises(error, match=match):
            proc.mmap(SZ_4K, RW, MAP_SHARED, fd)
        assert _procs_state(rig, proc) == before
        proc.close(fd)
    # Read-only without a grant: a new read-only description of the buffer.
    fd = proc.open(_Importer(buf, None), O_RDONLY)
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    (vma,) = [v for v in proc.vmas if v.start == va]
    assert vma.file is not None and vma.file.file is buf.file and vma.file.mode is O_RDONLY
    # Through the read-write grant, the writable mapping is made and holds that grant.
    fd = proc.open(_Importer(buf, proc.file(rw)), O_RDWR)
    va = proc.mmap(SZ_4K, RW, MAP_SHARED, fd)
    (vma,) = [v for v in proc.vmas if v.start == va]
    assert vma.file is proc.file(rw)
    proc.write(va, b"ok")


def test_an_exported_allocation_cannot_be_freed_while_its_dmabuf_lives(rig: Any) -> None:
    """Issue 10 item 3: freeing it handed its page to the next allocation, and a process
    mapping the dma-buf read the new owner's data."""
    system = rig.system
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    page = physmem.chunk_ranges[0]
    buf = rig.exporter.export(physmem, name="frame")
    viewer = rig.spawn("viewer")
    fd = buf.install_fd(viewer, O_RDONLY)
    buf.put()
    before = (system.snapshot(), buf.snapshot())
    with pytest.raises(BusyError, match=rf"{physmem.name} is pinned by dma-buf frame"):
        system.vcm_phys_free(physmem)
    assert (system.snapshot(), buf.snapshot()) == before
    # So the next allocation gets other memory, and the dma-buf shows only its own.
    secret = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS)
    assert secret.chunk_ranges[0] != page
    system.memory.write(secret.chunk_ranges[0].start, b"new owner")
    va = viewer.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert viewer.read(va, 9) == bytes(9)
    # When every user of the dma-buf is gone, the owner frees it as usual.
    viewer.munmap(va, SZ_4K)
    viewer.close(fd)
    assert buf.released and physmem.pins == []
    system.vcm_phys_free(physmem)


def _painter(system: Any) -> tuple[Any, Any, Any, int, int]:
    """A DMA API with debugging, a buffer a process paints through its fd, and the
    process: (api, buffer, process, fd, va)."""
    api = set_dma_api(DmaApi(system, debug="raise"))
    buf = VcmExporter(system).allocate(SZ_4K, name="frame")
    proc = ProcessTable(system).spawn("painter")
    fd = buf.install_fd(proc, O_RDWR)
    va = proc.mmap(SZ_4K, RW, MAP_SHARED, fd)
    return api, buf, proc, fd, va


def test_a_second_importer_mapping_from_device_inside_a_write_bracket_is_reported() -> None:
    """Issue 10 item 10: the map's invalidation (ARMv7, FROM_DEVICE) drops the CPU's
    dirty lines; the display and the process then read zeros.  The behaviour stays, the
    checker reports it naming both attachments."""
    system = vcmm.System.default()
    api, buf, proc, fd, va = _painter(system)
    assert api.checker is not None
    display = buf.attach("mdp")
    shown = display.map(D.TO_DEVICE)
    codec = buf.attach("vcodec_b_mm2")
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    proc.write(va, b"painted")
    # Raise mode: refused before the map changes anything.
    before = (system.snapshot(), api.snapshot(), buf.snapshot())
    with pytest.raises(DmaApiError, match="discards 1 dirty line") as raised:
        codec.map(D.FROM_DEVICE)
    assert (system.snapshot(), api.snapshot(), buf.snapshot()) == before
    text = str(raised.value)
    assert f"attachment #{codec.id} of vcodec_b_mm2 to frame" in text
    assert f"attachment #{display.id} of mdp to frame" in text
    (report,) = api.checker.take()
    assert report.kind is ReportKind.CPU_WRITES_DISCARDED and report.device == "vcodec_b_mm2"
    # Warn mode: the ARMv7 behaviour happens, reported once.
    with api.checker.warning():
        decoded = codec.map(D.FROM_DEVICE)
    assert [r.kind for r in api.checker.take()] == [ReportKind.CPU_WRITES_DISCARDED]
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE)
    assert system.device("mdp").read(shown.dma_address, 7) == bytes(7)
    codec.unmap(decoded)
    # Mapped after END, the writes are in memory and nothing is lost or reported.
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    proc.write(va, b"painted")
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE)
    decoded = codec.map(D.FROM_DEVICE)
    assert system.device("mdp").read(shown.dma_address, 7) == b"painted"
    assert api.checker.take() == []


def test_a_from_device_importer_synced_first_at_end_of_bracket_is_reported() -> None:
    """The same loss without a late map: END syncs each attachment for the device in
    turn, and a FROM_DEVICE one first invalidates what the TO_DEVICE one was to see."""
    system = vcmm.System.default()
    api, buf, proc, fd, va = _painter(system)
    assert api.checker is not None
    codec = buf.attach("vcodec_b_mm2")
    codec.map(D.FROM_DEVICE)
    display = buf.attach("mdp")
    shown = display.map(D.TO_DEVICE)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    proc.write(va, b"painted")
    with api.checker.warning():
        dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE)
    (report,) = api.checker.take()
    assert report.kind is ReportKind.CPU_WRITES_DISCARDED
    assert "sync_sg_for_device" in str(report) and "attachment #" in report.message
    assert system.device("mdp").read(shown.dma_address, 7) == bytes(7)


def test_a_coherent_buffer_whose_memory_was_exported_is_not_freed_under_it(rig: Any) -> None:
    api = rig.api
    buf = api.alloc_coherent("vcodec_a_mm1", 2 * SZ_4K)
    shared = rig.exporter.export(buf.physmem, cached=False, name="coherent")
    before = (rig.system.snapshot(), api.snapshot())
    with pytest.raises(BusyError, match="pinned by dma-buf coherent"):
        api.free_coherent("vcodec_a_mm1", 2 * SZ_4K, buf.cpu_addr, buf.dma_handle)
    assert (rig.system.snapshot(), api.snapshot()) == before
    shared.put()
    api.free_coherent("vcodec_a_mm1", 2 * SZ_4K, buf.cpu_addr, buf.dma_handle)
    assert api.buffers("vcodec_a_mm1") == []
