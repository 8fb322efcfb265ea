"""The debugging checker itself: reports carry the device, the addresses and the calls
that made and unmapped the mapping; it catches what the hardware would not; it can be
switched on and off."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.attrs import Access
from vcmm.dma import DebugChecker, DmaApi, ReportKind
from vcmm.errors import DmaApiError, InvalidArgumentError


def test_direct_device_access_after_unmap_is_caught_although_nothing_faults(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    dsp = system.device("dsp")
    handle = dma.map_page("dsp", buf.pa, 0, 256, D.FROM_DEVICE)
    dma.unmap_page("dsp", handle, 256, D.FROM_DEVICE)
    assert dma.checker is not None
    with dma.checker.warning():
        dsp.write(handle, b"late")  # no IOMMU: the bytes land in memory regardless
    assert system.memory.read(buf.pa, 4) == b"late"
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_ACCESS_AFTER_UNMAP and report.device == "dsp"
    assert report.dma_addr == handle
    text = str(report)
    assert text.startswith("DMA-API: dsp: device write at")
    assert "mapped by map_page(dsp, page=" in text and "unmapped by unmap_page(dsp" in text
    assert "test_debug.py" in text
    # In raise mode the same access is refused before any byte moves.
    with pytest.raises(DmaApiError, match="after the mapping there was unmapped"):
        dsp.write(handle, b"LATE")
    assert system.memory.read(buf.pa, 4) == b"late"
    dma.checker.take()


def test_checker_can_be_installed_and_removed(system: vcmm.System, kbuf: Callable) -> None:
    dma = DmaApi(system)
    assert dma.checker is None and system.cpu.observers == ()
    checker = dma.enable_debug("warn")
    assert dma.checker is checker and len(system.cpu.observers) == 1
    assert len(system.device("dsp").observers) == 1
    assert "read" not in vars(system.cpu)  # observers, not method shadows
    buf = kbuf(SZ_4K)
    handle = dma.map_page("dsp", buf.pa, 0, 16, D.TO_DEVICE)
    system.cpu.write(buf.va, b"x")  # the device owns it: reported, not refused
    assert [r.kind for r in checker.take()] == [ReportKind.CPU_ACCESS_DEVICE_OWNED]
    dma.disable_debug()
    assert dma.checker is None and system.cpu.observers == ()
    assert system.device("dsp").observers == ()
    system.cpu.write(buf.va, b"y")  # nobody watches now
    assert checker.reports == []
    dma.unmap_page("dsp", handle, 16, D.TO_DEVICE)


def test_a_checker_watches_one_api_and_modes_are_checked(system: vcmm.System) -> None:
    checker = DebugChecker("warn")
    DmaApi(system, debug=checker)
    with pytest.raises(DmaApiError, match="already watches"):
        DmaApi(vcmm.System.default(), debug=checker)
    with pytest.raises(InvalidArgumentError):
        checker.mode = "silent"


def test_user_process_access_to_a_device_owned_buffer_is_caught(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    from vcmm.proc import MAP_SHARED, PROT_READ, PROT_WRITE, File, ProcessTable, Vma

    buf = kbuf(SZ_4K)

    class Node(File):
        def mmap(self, vma: Vma) -> None:
            vma.remap([vcmm.AddressRange(buf.pa, SZ_4K)])

    proc = ProcessTable(system).spawn()
    va = proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, proc.open(Node("n")))
    handle = dma.map_page("vcodec_a_mm1", buf.pa, 0, SZ_4K, D.FROM_DEVICE)
    with pytest.raises(DmaApiError, match="CPU write"):
        proc.write(va, b"race")
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.CPU_ACCESS_DEVICE_OWNED
    dma.unmap_page("vcodec_a_mm1", handle, SZ_4K, D.FROM_DEVICE)
    proc.write(va, b"fine")
    proc.exit()


def test_cpu_read_of_a_buffer_the_device_owns_is_refused_before_it_reads(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    handle = dma.map_page("vcodec_a_mm1", buf.pa, 0, SZ_4K, D.FROM_DEVICE)
    cpu = system.cpu
    before = (cpu.cache.snapshot(), system.memory.digest())
    with pytest.raises(DmaApiError, match="CPU read of"):
        cpu.read(buf.va + 0x10, 8)
    assert (cpu.cache.snapshot(), system.memory.digest()) == before  # nothing was loaded
    assert dma.checker is not None
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.CPU_ACCESS_DEVICE_OWNED and report.device == "vcodec_a_mm1"
    # the run the hardware resolved is the one named, not a guess from the tables
    assert f"{buf.pa + 0x10:#x}" in report.message
    dma.unmap_page("vcodec_a_mm1", handle, SZ_4K, D.FROM_DEVICE)
    assert len(cpu.read(buf.va + 0x10, 8)) == 8  # the CPU's again


def test_a_device_batch_after_unmap_is_caught_vectorised(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    """A physically addressed device does not fault after unmap, so only the checker
    sees it; the batch arrives as one event and is checked as a whole."""
    buf = kbuf(4 * SZ_4K)
    dsp = system.device("dsp")
    handle = dma.map_page("dsp", buf.pa, 0, 4 * SZ_4K, D.BIDIRECTIONAL)
    inside = np.arange(handle, handle + 4 * SZ_4K, 64, dtype=np.uint64)
    assert dsp.access_batch(inside, Access.READ).transactions == inside.size  # fine: mapped
    dma.unmap_page("dsp", handle, 4 * SZ_4K, D.BIDIRECTIONAL)
    counters = dsp.counters()
    with pytest.raises(DmaApiError, match="after the mapping there was unmapped"):
        dsp.access_batch(inside, Access.WRITE)
    assert dsp.counters() == counters  # refused: the batch did not count
    assert dma.checker is not None
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_ACCESS_AFTER_UNMAP and report.dma_addr == handle
    assert f"{inside.size} burst(s)" in report.message
    assert report.unmapped_by is not None and report.unmapped_by.call == "unmap_page"


def test_device_batches_get_the_ownership_checks(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(2 * SZ_4K)
    dev = system.device("vcodec_a_mm1")
    handle = dma.map_page("vcodec_a_mm1", buf.pa, 0, 2 * SZ_4K, D.BIDIRECTIONAL)
    bursts = np.arange(handle + SZ_4K, handle + 2 * SZ_4K, 64, dtype=np.uint64)
    dma.sync_single_for_cpu("vcodec_a_mm1", handle, 2 * SZ_4K, D.BIDIRECTIONAL)
    system.cpu.write(buf.va + SZ_4K + 0x80, b"dirty")  # the CPU owns it and dirties a line
    assert dma.checker is not None
    with dma.checker.warning():
        dev.access_batch(bursts, Access.READ)
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.DEVICE_ACCESS_CPU_OWNED, ReportKind.DEVICE_READ_STALE]
    dma.sync_single_for_device("vcodec_a_mm1", handle, 2 * SZ_4K, D.BIDIRECTIONAL)
    dev.access_batch(bursts[:4], Access.WRITE)  # the device writes 256 bytes
    # A write batch is remembered burst by burst: reading those bytes without
    # sync_for_cpu is a stale read; the bytes just after it are merely device-owned.
    with dma.checker.warning():
        system.cpu.read(buf.va + SZ_4K + 0xC0, 0x40)
        system.cpu.read(buf.va + SZ_4K + 0x100, 0x40)
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.CPU_READ_WITHOUT_SYNC, ReportKind.CPU_ACCESS_DEVICE_OWNED]
    dma.unmap_page("vcodec_a_mm1", handle, 2 * SZ_4K, D.BIDIRECTIONAL)
