"""dma_mmap_coherent into a user process (seed 004): the page offset of the VMA, what
does not fit refused, the cache rules kept, and the memory outliving the mapping."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, MemType
from vcmm.dma import CoherentBuffer, DmaApi, ReportKind
from vcmm.errors import AttributeConflictError, BusyError, InvalidArgumentError
from vcmm.proc import (
    MAP_SHARED,
    O_RDONLY,
    PROT_READ,
    PROT_WRITE,
    File,
    ProcessTable,
    Vma,
)

DEV = "vcodec_a_mm1"


class BufferNode(File):
    """A driver's /dev node whose mmap maps its coherent buffer (like seed 004's ALSA)."""

    def __init__(self, dma: DmaApi, buf: CoherentBuffer) -> None:
        super().__init__("/dev/vcodec_a_mm1")
        self.dma, self.buf = dma, buf

    def mmap(self, vma: Vma) -> None:
        b = self.buf
        self.dma.mmap_coherent(DEV, vma, b.cpu_addr, b.dma_handle, b.size)


def setup(system: vcmm.System, dma: DmaApi, pages: int = 4) -> tuple[CoherentBuffer, BufferNode]:
    buf = dma.alloc_coherent(DEV, pages * SZ_4K)
    for i in range(pages):
        system.cpu.write(buf.cpu_addr + i * SZ_4K, bytes([0x41 + i]) * 16)
    return buf, BufferNode(dma, buf)


def test_process_sees_the_same_bytes_at_the_page_offset(system: vcmm.System, dma: DmaApi) -> None:
    buf, node = setup(system, dma)
    proc = ProcessTable(system).spawn("player")
    fd = proc.open(node)
    va = proc.mmap(2 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset=SZ_4K)
    # Page 1 of the buffer appears at the start of the mapping (vma->vm_pgoff = 1).
    assert proc.read(va, 16) == b"B" * 16
    assert proc.read(va + SZ_4K, 16) == b"C" * 16
    dev = system.device(DEV)
    dev.write(buf.dma_handle + SZ_4K + 100, b"frame")
    assert proc.read(va + 100, 5) == b"frame"
    proc.write(va + SZ_4K + 8, b"user")
    assert dev.read(buf.dma_handle + 2 * SZ_4K + 8, 4) == b"user"
    assert system.cpu.read(buf.cpu_addr + 2 * SZ_4K + 8, 4) == b"user"
    # The user PTEs are non-cacheable like the kernel alias, and in the mapping graph.
    walk = system.cpu.address_space(proc.asid).walk(va)
    assert walk.attrs is not None and walk.attrs.memtype is MemType.NORMAL_NC
    assert walk.attrs.user and walk.pa == buf.chunks[0].start + SZ_4K
    edges = [m for c in buf.chunks for m in system.graph.of_chunk(c) if m.space == proc.space]
    assert sum(m.phys.size for m in edges) == 2 * SZ_4K
    assert buf.user_maps == 1
    proc.exit()
    assert buf.user_maps == 0
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_what_does_not_fit_is_refused(system: vcmm.System, dma: DmaApi, state: Callable) -> None:
    buf, node = setup(system, dma, pages=4)
    proc = ProcessTable(system).spawn()
    fd = proc.open(node)
    before = state()
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        proc.mmap(2 * SZ_4K, PROT_READ, MAP_SHARED, fd, offset=3 * SZ_4K)
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, offset=4 * SZ_4K)
    with pytest.raises(InvalidArgumentError, match="does not fit"):
        proc.mmap(5 * SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert state() == before and proc.vmas == [] and buf.user_maps == 0
    va = proc.mmap(4 * SZ_4K, PROT_READ, MAP_SHARED, fd)  # exactly fits
    assert proc.read(va + 3 * SZ_4K, 4) == b"DDDD"
    proc.exit()
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_memory_outlives_the_user_mapping(
    system: vcmm.System, dma: DmaApi, state: Callable
) -> None:
    buf, node = setup(system, dma)
    proc = ProcessTable(system).spawn()
    fd = proc.open(node)
    va = proc.mmap(4 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    proc.close(fd)  # the mapping keeps the file (and the buffer) alive
    before = state()
    with pytest.raises(BusyError, match=r"still mapped into user space \(proc\[1\]"):
        dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    assert state() == before
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.FREE_WHILE_MAPPED and report.device == DEV
    # A partial munmap splits the VMA: still mapped, still refused.
    proc.munmap(va + SZ_4K, SZ_4K)
    assert buf.user_maps == 2
    assert proc.read(va + 3 * SZ_4K, 4) == b"DDDD"
    with pytest.raises(BusyError):
        dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
    dma.checker.take()
    proc.munmap(va, 4 * SZ_4K)
    assert buf.user_maps == 0
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_a_mapping_breaking_the_cache_rules_is_refused(
    system: vcmm.System, dma: DmaApi, state: Callable
) -> None:
    buf, _ = setup(system, dma)

    class CacheableNode(File):
        """A buggy driver asking for a cacheable user view of a non-cacheable buffer."""

        def mmap(self, vma: Vma) -> None:
            vma.remap(list(buf.chunks), MemType.NORMAL_WB_WA)

    proc = ProcessTable(system).spawn()
    fd = proc.open(CacheableNode("/dev/buggy"))
    before = state()
    with pytest.raises(AttributeConflictError, match="normal-wb-wa"):
        proc.mmap(4 * SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert state() == before and proc.vmas == []
    proc.exit()
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)


def test_read_only_descriptor_maps_read_only(system: vcmm.System, dma: DmaApi) -> None:
    buf, node = setup(system, dma)
    table = ProcessTable(system)
    proc = table.spawn()
    fd = proc.open(node, O_RDONLY)
    with pytest.raises(PermissionError):
        proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert proc.read(va, 2) == b"AA"
    with pytest.raises(vcmm.errors.SegmentationFault):
        proc.write(va, b"no")
    proc.exit()
    dma.free_coherent(DEV, buf.size, buf.cpu_addr, buf.dma_handle)
