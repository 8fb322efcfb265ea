"""Ownership and cache maintenance: what each direction does, and what goes wrong
without it on a non-coherent device (stale data, seen byte for byte) while the
checker names the missing call."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, DmaAttr, ReportKind
from vcmm.errors import DmaApiError

DEV = "vcodec_a_mm1"


def test_device_reads_stale_data_without_sync_for_device_and_fresh_with_it(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    cpu = system.cpu
    cpu.write(buf.va, b"OLD!" * 16)
    cpu.clean_pa(buf.pa, 64)  # memory holds OLD
    cpu.write(buf.va, b"NEW!" * 16)  # the CPU cache holds NEW, dirty
    assert cpu.cache.is_dirty(buf.pa)
    handle = dma.map_page(DEV, buf.pa, 0, 64, D.TO_DEVICE, attrs=DmaAttr.SKIP_CPU_SYNC)
    dev = system.device(DEV)
    assert dma.checker is not None
    with dma.checker.warning():
        assert dev.read(handle, 64) == b"OLD!" * 16  # stale: the line was never cleaned
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_READ_STALE
    assert report.device == DEV and report.dma_addr == handle
    assert "dirty line" in report.message and "dma_sync_*_for_device" in report.message
    assert report.mapped_by is not None and report.mapped_by.call == "map_page"
    dma.sync_single_for_device(DEV, handle, 64, D.TO_DEVICE)
    assert dev.read(handle, 64) == b"NEW!" * 16
    assert not cpu.cache.is_dirty(buf.pa)
    dma.unmap_page(DEV, handle, 64, D.TO_DEVICE)


def test_in_raise_mode_the_stale_read_is_refused_before_it_happens(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    system.cpu.write(buf.va, b"dirty")
    handle = dma.map_page(DEV, buf.pa, 0, 5, D.TO_DEVICE, attrs=DmaAttr.SKIP_CPU_SYNC)
    dev = system.device(DEV)
    moved = dev.bytes_read
    with pytest.raises(DmaApiError, match="stale"):
        dev.read(handle, 5)
    assert dev.bytes_read == moved
    dma.checker.take()
    dma.unmap_page(DEV, handle, 5, D.TO_DEVICE, attrs=DmaAttr.SKIP_CPU_SYNC)


def test_cpu_reads_stale_lines_without_sync_for_cpu(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    cpu = system.cpu
    assert cpu.read(buf.va, 8) == bytes(8)  # the line is now cached (clean)
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.FROM_DEVICE, attrs=DmaAttr.SKIP_CPU_SYNC)
    system.device(DEV).write(handle, b"DEVICE!!")
    assert dma.checker is not None
    with dma.checker.warning():
        assert cpu.read(buf.va, 8) == bytes(8)  # stale line
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.CPU_READ_WITHOUT_SYNC
    assert "holds 1 line" in report.message and DEV in report.message
    dma.sync_single_for_cpu(DEV, handle, SZ_4K, D.FROM_DEVICE)
    assert cpu.read(buf.va, 8) == b"DEVICE!!"
    dma.unmap_page(DEV, handle, SZ_4K, D.FROM_DEVICE)


def test_maintenance_by_direction(system: vcmm.System, dma: DmaApi, kbuf: Callable) -> None:
    buf = kbuf(SZ_4K)
    cpu, cache = system.cpu, system.cpu.cache
    # TO_DEVICE: map cleans (line stays, now clean); unmap leaves the cache alone.
    cpu.write(buf.va, b"x")
    h = dma.map_page(DEV, buf.pa, 0, 64, D.TO_DEVICE)
    assert cache.contains(buf.pa) and not cache.is_dirty(buf.pa)
    dma.unmap_page(DEV, h, 64, D.TO_DEVICE)
    assert cache.contains(buf.pa)
    # FROM_DEVICE: map invalidates (no dirty line can later overwrite the device's data),
    # unmap invalidates again (lines the CPU may have pulled in meanwhile).
    cpu.write(buf.va, b"y")
    h = dma.map_page(DEV, buf.pa, 0, 64, D.FROM_DEVICE)
    assert not cache.contains(buf.pa)
    # The line lay wholly inside the buffer, so it was dropped, not written back: a CPU
    # write to a FROM_DEVICE buffer before mapping it is lost, as on hardware.
    assert system.memory.read(buf.pa, 1) == b"x"
    dma.unmap_page(DEV, h, 64, D.FROM_DEVICE)
    assert not cache.contains(buf.pa)
    # BIDIRECTIONAL: clean on map, invalidate on unmap.
    cpu.write(buf.va, b"z")
    h = dma.map_page(DEV, buf.pa, 0, 64, D.BIDIRECTIONAL)
    assert cache.contains(buf.pa) and not cache.is_dirty(buf.pa)
    assert system.memory.read(buf.pa, 1) == b"z"
    dma.unmap_page(DEV, h, 64, D.BIDIRECTIONAL)
    assert not cache.contains(buf.pa)


def test_invalidating_an_unaligned_buffer_keeps_the_neighbours_bytes(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    cpu = system.cpu
    cpu.write(buf.va, b"neighbour" + bytes(23))  # bytes 0..31 belong to someone else
    # The buffer starts 32 bytes into the same 64-byte line.
    handle = dma.map_page(DEV, buf.pa, 32, 96, D.FROM_DEVICE)
    system.device(DEV).write(handle, b"D" * 96)
    dma.unmap_page(DEV, handle, 96, D.FROM_DEVICE)
    assert cpu.read(buf.va, 9) == b"neighbour"
    assert cpu.read(buf.va + 32, 96) == b"D" * 96


def test_coherent_device_needs_no_maintenance(make_system: Callable, kbuf: Callable) -> None:
    system = make_system(coherent=("mdp",))
    dma = DmaApi(system, debug="raise")
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    pa = physmem.chunk_ranges[0].start
    va = system.cpu.phys_to_virt(pa)
    system.cpu.write(va, b"snooped")
    handle = dma.map_page("mdp", pa, 0, 7, D.TO_DEVICE)
    assert system.cpu.cache.is_dirty(pa)  # nothing was cleaned...
    assert system.device("mdp").read(handle, 7) == b"snooped"  # ...the device snoops
    dma.sync_single_for_device("mdp", handle, 7, D.TO_DEVICE)
    assert system.cpu.cache.is_dirty(pa)
    dma.unmap_page("mdp", handle, 7, D.TO_DEVICE)
    assert dma.checker is not None and not dma.checker.reports


def test_partial_sync_touches_only_its_bytes(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(3 * SZ_4K)
    cpu, dev = system.cpu, system.device(DEV)
    handle = dma.map_page(DEV, buf.pa, 0, 3 * SZ_4K, D.FROM_DEVICE)
    dev.write(handle, b"\x01" * (3 * SZ_4K))
    assert dma.checker is not None
    with dma.checker.warning():  # pull lines of pages 0 and 1 into the cache (a misuse)
        cpu.read(buf.va, 4)
        cpu.read(buf.va + SZ_4K, 4)
    assert len(dma.checker.take(ReportKind.CPU_READ_WITHOUT_SYNC)) == 2
    dev.write(handle, b"\x02" * (3 * SZ_4K))  # the cached lines are stale now
    dma.sync_single_for_cpu(DEV, handle + SZ_4K, SZ_4K, D.FROM_DEVICE)
    assert cpu.read(buf.va + SZ_4K, 4) == b"\x02" * 4  # page 1 was maintained
    with dma.checker.warning():
        assert cpu.read(buf.va, 4) == b"\x01" * 4  # page 0 was not: still stale
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.CPU_READ_WITHOUT_SYNC and "holds 1 line" in report.message
    dma.unmap_page(DEV, handle, 3 * SZ_4K, D.FROM_DEVICE)


def test_ownership_violations_are_reported(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(SZ_4K)
    cpu, dev = system.cpu, system.device(DEV)
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.BIDIRECTIONAL)
    assert dma.checker is not None
    with pytest.raises(DmaApiError, match="CPU write"):
        cpu.write(buf.va, b"mine")  # the device owns it
    dma.sync_single_for_cpu(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    cpu.write(buf.va, b"mine")  # fine now
    with pytest.raises(DmaApiError, match="dma_sync_\\*_for_device first"):
        dev.read(handle, 4)  # the CPU owns it
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [ReportKind.CPU_ACCESS_DEVICE_OWNED, ReportKind.DEVICE_ACCESS_CPU_OWNED]
    dma.sync_single_for_device(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    assert dev.read(handle, 4) == b"mine"
    dma.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    # Reading a TO_DEVICE buffer the device owns is harmless and allowed.
    handle = dma.map_page(DEV, buf.pa, 0, SZ_4K, D.TO_DEVICE)
    assert cpu.read(buf.va, 4) == b"mine"
    dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)


def test_sync_misuse(system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable) -> None:
    buf = kbuf(2 * SZ_4K)
    handle = dma.map_page(DEV, buf.pa, 0x100, SZ_4K, D.TO_DEVICE)
    before = state()
    with pytest.raises(DmaApiError, match="not mapped"):
        dma.sync_single_for_cpu(DEV, 0x4000_0000, 16, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="outside the mapping"):
        dma.sync_single_for_cpu(DEV, handle + 0xF00, 0x200, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match=r"mapped with TO_DEVICE\] \[synced with FROM_DEVICE"):
        dma.sync_single_for_cpu(DEV, handle, 16, D.FROM_DEVICE)
    assert state() == before
    kinds = [r.kind for r in dma.checker.take()]
    assert kinds == [
        ReportKind.SYNC_NOT_MAPPED,
        ReportKind.SYNC_OUT_OF_RANGE,
        ReportKind.SYNC_WRONG_DIRECTION,
    ]
    dma.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)
