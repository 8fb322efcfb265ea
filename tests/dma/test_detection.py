"""What DMA-debug used to miss (issue 10 item 11): a stale CPU read after an unmap
with DMA_ATTR_SKIP_CPU_SYNC, and a device write through ``access_batch`` into a
TO_DEVICE mapping that the IOMMU faulted."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.attrs import Access
from vcmm.dma import DmaApi, DmaAttr, ReportKind
from vcmm.errors import DeviceFaultError, DmaApiError

SKIP = DmaAttr.SKIP_CPU_SYNC


def test_a_cpu_read_after_an_unmap_that_skipped_the_sync_is_reported(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    assert system.cpu.read(buf.va, 8) == bytes(8)  # the line is now cached (clean)
    # The driver says it maintains the cache itself, then never does.
    handle = dma.map_page("dsp", buf.pa, 0, SZ_4K, D.FROM_DEVICE, SKIP)
    system.device("dsp").write(handle, b"fresh!!!")
    dma.unmap_page("dsp", handle, SZ_4K, D.FROM_DEVICE, SKIP)
    assert dma.checker is not None
    with dma.checker.warning():
        assert system.cpu.read(buf.va, 8) == bytes(8)  # stale: the old line
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.CPU_READ_WITHOUT_SYNC and report.device == "dsp"
    assert "DMA_ATTR_SKIP_CPU_SYNC" in report.message
    assert "holds 1 line(s)" in report.message
    assert report.unmapped_by is not None and report.unmapped_by.call == "unmap_page"
    # In raise mode the read is refused before it happens.
    with pytest.raises(DmaApiError, match="SKIP_CPU_SYNC"):
        system.cpu.read(buf.va + 4, 4)
    dma.checker.take()
    # A later mapping's invalidation (map FROM_DEVICE, unmap with the sync) makes the
    # bytes readable: the CPU now gets what the device wrote, and nothing is reported.
    again = dma.map_page("dsp", buf.pa, 0, SZ_4K, D.FROM_DEVICE)
    dma.unmap_page("dsp", again, SZ_4K, D.FROM_DEVICE)
    assert system.cpu.read(buf.va, 8) == b"fresh!!!"


def test_a_skipped_sync_on_a_coherent_device_leaves_nothing_to_report(
    make_system: Callable, kbuf: Callable
) -> None:
    system = make_system(coherent=("dsp",))
    dma = DmaApi(system, debug="raise")
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    pa = physmem.chunk_ranges[0].start
    handle = dma.map_page("dsp", pa, 0, SZ_4K, D.FROM_DEVICE, SKIP)
    system.device("dsp").write(handle, b"snooped")
    dma.unmap_page("dsp", handle, SZ_4K, D.FROM_DEVICE, SKIP)
    assert system.cpu.read(system.cpu.phys_to_virt(pa), 7) == b"snooped"
    assert dma.checker is not None and dma.checker.take() == []


def test_a_batch_write_into_a_to_device_mapping_is_reported_with_its_fault(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    dev = system.device("vcodec_a_mm1")
    out = dma.map_page("vcodec_a_mm1", buf.pa, 0, SZ_4K, D.FROM_DEVICE)
    src = dma.map_page("vcodec_a_mm1", buf.pa + SZ_4K, 0, SZ_4K, D.TO_DEVICE)
    # Two bursts land in the FROM_DEVICE buffer, the third hits the read-only one.
    bursts = np.array([out, out + 64, src + 128, out + 192], dtype=np.uint64)
    assert dma.checker is not None
    with dma.checker.warning(), pytest.raises(DeviceFaultError, match="permission"):
        dev.access_batch(bursts, Access.WRITE)
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_WRITE_READ_ONLY
    assert report.dma_addr == src + 128 and "DMA_TO_DEVICE" in report.message
    assert report.mapped_by is not None and report.mapped_by.call == "map_page"
    # The two bursts before the fault did write: reading them unsynced is reported,
    # and the byte after them (the faulting burst never happened) is merely device-owned.
    with dma.checker.warning():
        system.cpu.read(buf.va + 64, 8)
        system.cpu.read(buf.va + 192, 8)
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.CPU_READ_WITHOUT_SYNC, ReportKind.CPU_ACCESS_DEVICE_OWNED]
    # In raise mode the checker's error replaces the fault, and nothing was written.
    written = dev.counters()["bytes_written"]
    with pytest.raises(DmaApiError, match="mapped DMA_TO_DEVICE"):
        dev.access_batch(bursts[2:3], Access.WRITE)
    dma.checker.take()
    assert dev.counters()["bytes_written"] == written
    dma.unmap_page("vcodec_a_mm1", out, SZ_4K, D.FROM_DEVICE)
    dma.unmap_page("vcodec_a_mm1", src, SZ_4K, D.TO_DEVICE)
