"""The debugging checker itself: reports carry the device, the addresses and the calls
that made and unmapped the mapping; it catches what the hardware would not; it can be
switched on and off."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
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
    assert dma.checker is None and "read" not in vars(system.cpu)
    checker = dma.enable_debug("warn")
    assert dma.checker is checker and "read" in vars(system.cpu)
    assert "read_array" in vars(system.device("dsp"))
    buf = kbuf(SZ_4K)
    handle = dma.map_page("dsp", buf.pa, 0, 16, D.TO_DEVICE)
    system.cpu.write(buf.va, b"x")  # the device owns it: reported, not refused
    assert [r.kind for r in checker.take()] == [ReportKind.CPU_ACCESS_DEVICE_OWNED]
    dma.disable_debug()
    assert dma.checker is None and "read" not in vars(system.cpu)
    assert "read_array" not in vars(system.device("dsp"))
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
