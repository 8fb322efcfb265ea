"""/dev nodes per SMMU context: open, mmap and close VCM buffers like PMEM (000 L577-589)."""

from __future__ import annotations

from typing import Any

import pytest

from vcmm import SZ_4K
from vcmm.errors import DeviceFaultError, InvalidArgumentError, StateError
from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE
from vcmm.share import DmaBufFile, SyncFlags, dma_buf_sync
from vcmm.share.devnode import register_dev_nodes

SIZE = 4 * SZ_4K
RW = PROT_READ | PROT_WRITE


def test_every_smmu_context_gets_a_node_named_after_it(rig: Any) -> None:
    nodes = register_dev_nodes(rig.table, rig.exporter)
    assert sorted(nodes) == [
        "/dev/mdp",
        "/dev/vcodec_a_mm1",
        "/dev/vcodec_b_mm2",
        "/dev/vcodec_stream",
    ]
    assert rig.table.lookup("/dev/vcodec_a_mm1") is nodes["/dev/vcodec_a_mm1"]


def test_open_mmap_close_allocates_maps_and_frees_like_pmem(rig: Any) -> None:
    system = rig.system
    nodes = register_dev_nodes(rig.table, rig.exporter)
    node = nodes["/dev/vcodec_a_mm1"]
    ebi = system.target("ebi")
    free0 = ebi.free_bytes
    proc = rig.spawn("player")
    fd = proc.open("/dev/vcodec_a_mm1", O_RDWR)
    with pytest.raises(StateError, match="mmap it first"):
        node.dev_addr(proc, fd)
    va = proc.mmap(SIZE, RW, MAP_SHARED, fd)
    assert ebi.free_bytes == free0 - SIZE and node.buffers() == 1
    # The device sees the buffer at dev_addr, through smmu0's tables.
    codec = system.device("vcodec_a_mm1")
    dev_addr = node.dev_addr(proc, fd)
    assert node.buffer_size(proc, fd) == SIZE
    pa = codec.ctx.translate(dev_addr)
    codec.write(dev_addr, b"decoded frame")
    assert proc.read(va, 13) == b"decoded frame"
    # A second mmap of the same descriptor maps a window of the same buffer.
    va2 = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, SZ_4K)
    # The buffer is an IOVA range of the device's DMA domain (the first one, placed
    # top-down below the 32-bit DMA mask); the rest of the space faults in its tables.
    (mapping,) = rig.api.mappings("vcodec_a_mm1")
    assert mapping.dma_addr == dev_addr == (1 << 32) - SIZE
    with pytest.raises(DeviceFaultError, match="translation"):
        codec.read(dev_addr - SZ_4K, 4)
    codec.write(dev_addr + SZ_4K, b"page one")
    assert proc.read(va2, 8) == b"page one"
    vmas = [(v.start, v.length) for v in proc.vmas]
    with pytest.raises(InvalidArgumentError, match="beyond its"):
        proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, SIZE)
    assert [(v.start, v.length) for v in proc.vmas] == vmas
    # Closing the fd keeps the buffer while mappings hold the description.
    proc.close(fd)
    assert ebi.free_bytes == free0 - SIZE
    proc.munmap(va, SIZE)
    proc.munmap(va2, SZ_4K)
    assert ebi.free_bytes == free0 and node.buffers() == 0
    # ... and every mapping of it went with it: the device's too (its DMA domain keeps
    # running on the context, and the device now faults where the buffer was).
    assert not any(pa in chunk for chunk in system.graph.chunks())
    assert rig.api.mappings("vcodec_a_mm1") == []
    with pytest.raises(DeviceFaultError, match="translation"):
        codec.read(dev_addr, 4)


def test_each_open_is_a_separate_buffer_and_the_first_mmap_starts_at_zero(rig: Any) -> None:
    nodes = register_dev_nodes(rig.table, rig.exporter)
    node = nodes["/dev/mdp"]
    proc = rig.spawn("compositor")
    fd1, fd2 = proc.open("/dev/mdp"), proc.open("/dev/mdp")
    with pytest.raises(InvalidArgumentError, match="must start at offset 0"):
        proc.mmap(SZ_4K, RW, MAP_SHARED, fd1, SZ_4K)
    assert node.buffers() == 0
    proc.mmap(SZ_4K, RW, MAP_SHARED, fd1)
    proc.mmap(SZ_4K, RW, MAP_SHARED, fd2)
    assert node.buffers() == 2 and node.dev_addr(proc, fd1) != node.dev_addr(proc, fd2)
    other = proc.open("/dev/vcodec_stream")
    with pytest.raises(InvalidArgumentError, match="not /dev/mdp"):
        node.dev_addr(proc, other)


def test_a_node_buffer_exported_as_dmabuf_lives_until_both_let_go(rig: Any) -> None:
    system = rig.system
    nodes = register_dev_nodes(rig.table, rig.exporter)
    decoder, display = nodes["/dev/vcodec_a_mm1"], nodes["/dev/mdp"]
    ebi = system.target("ebi")
    free0 = ebi.free_bytes
    player, compositor = rig.spawn("player"), rig.spawn("compositor")
    fd = player.open("/dev/vcodec_a_mm1")
    va = player.mmap(SIZE, RW, MAP_SHARED, fd)
    buf_fd = decoder.export(player, fd)
    again = decoder.export(player, fd)
    assert player.file(buf_fd).file is player.file(again).file  # one dma-buf
    assert isinstance(player.file(buf_fd).file, DmaBufFile)
    # The player paints through its mapping, bracketed by the dma-buf sync.
    dma_buf_sync(player, buf_fd, SyncFlags.START | SyncFlags.WRITE)
    player.write(va, b"frame 1")
    dma_buf_sync(player, buf_fd, SyncFlags.END | SyncFlags.WRITE)
    # The display node imports the dma-buf (passed to the compositor) and scans it out.
    c_buf = player.send_fd(buf_fd, compositor)
    c_fd = compositor.open("/dev/mdp")
    mdp_addr = display.import_dmabuf(compositor, c_fd, c_buf)
    assert system.device("mdp").read(mdp_addr, 7) == b"frame 1"
    # mmap on the display node is forwarded to the exporter: the same physical pages.
    c_va = compositor.mmap(SIZE, PROT_READ, MAP_SHARED, c_fd)
    assert compositor.read(c_va, 7) == b"frame 1"
    cpu = system.cpu
    pa_player = cpu.translate(va, asid=player.asid, user=True).pa
    pa_compositor = cpu.translate(c_va, asid=compositor.asid, user=True).pa
    assert pa_player == pa_compositor
    assert isinstance(compositor.vma_at(c_va).file.file, DmaBufFile)  # type: ignore[union-attr]
    # The decoder's process goes away entirely: the memory stays for the compositor.
    player.exit()
    assert ebi.free_bytes == free0 - SIZE
    assert system.device("mdp").read(mdp_addr, 7) == b"frame 1"
    compositor.exit()
    assert ebi.free_bytes == free0
    assert decoder.buffers() == 0


def test_import_refuses_a_descriptor_that_already_has_a_buffer(rig: Any) -> None:
    nodes = register_dev_nodes(rig.table, rig.exporter)
    node = nodes["/dev/vcodec_b_mm2"]
    proc = rig.spawn("app")
    buf = rig.exporter.allocate(SIZE)
    buf_fd = buf.install_fd(proc)
    fd = proc.open("/dev/vcodec_b_mm2")
    proc.mmap(SZ_4K, RW, MAP_SHARED, fd)
    before = (rig.system.snapshot(), buf.snapshot())
    with pytest.raises(StateError, match="already has a buffer"):
        node.import_dmabuf(proc, fd, buf_fd)
    with pytest.raises(InvalidArgumentError, match="not a dma-buf"):
        node.import_dmabuf(proc, proc.open("/dev/vcodec_b_mm2"), fd)
    assert (rig.system.snapshot(), buf.snapshot()) == before
