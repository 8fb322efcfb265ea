"""The DMA-debug checker reports a CPU write inside a DMA_BUF_SYNC_START|READ bracket
(seed 001's debug aid); without the checker nothing changes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from vcmm import SZ_4K, DmaDirection
from vcmm.dma.debug import ReportKind
from vcmm.errors import DmaApiError, StateError
from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE
from vcmm.share import SyncFlags, dma_buf_sync

RW = PROT_READ | PROT_WRITE
SIZE = 4 * SZ_4K
KIND = ReportKind.CPU_WRITE_IN_READ_BRACKET


def _shared(rig: Any, name: str = "frame") -> tuple[Any, Any, int, int]:
    """A dma-buf mapped by a process ``producer``: (buffer, process, fd, va)."""
    buf = rig.exporter.allocate(SIZE, name=name)
    proc = rig.spawn("producer")
    fd = buf.install_fd(proc, O_RDWR)
    va = proc.mmap(SIZE, RW, MAP_SHARED, fd)
    return buf, proc, fd, va


def test_a_user_write_in_a_read_bracket_is_reported(rig: Any) -> None:
    checker = rig.api.enable_debug("warn")
    buf, proc, fd, va = _shared(rig)
    pa = buf.priv.physmem.chunk_ranges[0].start
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ, SZ_4K, SZ_4K)
    proc.write(va, b"outside the range")  # page 0: not in the bracket's range
    assert checker.take(KIND) == []
    proc.write(va + SZ_4K + 8, b"inside")
    (report,) = checker.take(KIND)
    assert report.device == "frame"
    text = str(report)
    assert f"process producer[{proc.pid}] (ASID {proc.asid})" in text  # the writer
    assert f"va {va + SZ_4K + 8:#x}" in text and f"{pa + SZ_4K + 8:#x}" in text  # where
    assert f"by producer[{proc.pid}] on fd {fd}" in text  # the bracket's opener
    assert proc.read(va + SZ_4K + 8, 6) == b"inside"  # warn mode: the write happened
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ, SZ_4K, SZ_4K)
    proc.write(va + SZ_4K, b"after END")
    assert checker.take(KIND) == []


def test_reads_and_read_write_brackets_are_not_reported(rig: Any) -> None:
    checker = rig.api.enable_debug("raise")
    _, proc, fd, va = _shared(rig)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    assert proc.read(va, 4) == b"\0\0\0\0"
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.RW)
    proc.write(va, b"fine")
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.RW)
    assert checker.take(KIND) == []


def test_raise_mode_refuses_the_write_before_it_lands(rig: Any) -> None:
    checker = rig.api.enable_debug("raise")
    buf, proc, fd, va = _shared(rig)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    with pytest.raises(DmaApiError, match=re.escape("inside the DMA_BUF_SYNC_START|READ bracket")):
        proc.write(va, b"late")
    assert proc.read(va, 4) == b"\0\0\0\0"
    assert [r.kind for r in checker.take()] == [KIND]
    del buf


def test_another_process_writing_is_named(rig: Any) -> None:
    checker = rig.api.enable_debug("warn")
    buf, proc, fd, _ = _shared(rig)
    other = rig.spawn("scribbler")
    theirs = proc.send_fd(fd, other)
    ova = other.mmap(SIZE, RW, MAP_SHARED, theirs)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    other.write(ova, b"x")
    (report,) = checker.take(KIND)
    assert f"process scribbler[{other.pid}]" in str(report)
    assert f"by producer[{proc.pid}]" in str(report)
    del buf


def test_closing_the_fd_ends_the_watch(rig: Any) -> None:
    checker = rig.api.enable_debug("warn")
    _, proc, fd, va = _shared(rig)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    dup = proc.dup(fd)
    proc.close(fd)  # the description lives on (dup, mapping): the bracket too
    proc.write(va, b"1")
    assert len(checker.take(KIND)) == 1
    proc.munmap(va, SIZE)
    proc.close(dup)  # the description goes: the bracket is abandoned
    assert not checker.read_brackets


def test_a_kernel_vmap_write_is_refused_as_before_and_reported(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE, name="kbuf")
    kmap = buf.vmap()
    buf.begin_cpu_access(DmaDirection.FROM_DEVICE)  # the kernel only reads
    with pytest.raises(StateError, match="outside an open begin_cpu_access"):
        kmap.write(0, b"x")
    buf.end_cpu_access(DmaDirection.FROM_DEVICE)
    checker = rig.api.enable_debug("raise")
    buf.begin_cpu_access(DmaDirection.FROM_DEVICE, SZ_4K, SZ_4K)
    with pytest.raises(StateError, match="outside an open begin_cpu_access"):
        kmap.write(0, b"x")  # outside the bracket's range: refused, not this report
    assert checker.take(KIND) == []
    with pytest.raises(StateError, match="outside an open begin_cpu_access"):
        kmap.write(SZ_4K + 16, b"x")  # still refused, and now recorded without raising
    (report,) = checker.take(KIND)
    pa = buf.priv.physmem.chunk_ranges[0].start + SZ_4K + 16
    assert "the kernel wrote" in str(report) and f"vmap va {kmap.va + SZ_4K + 16:#x}" in str(report)
    assert f"{pa:#x}" in str(report) and "by the kernel (begin_cpu_access)" in str(report)
    buf.end_cpu_access(DmaDirection.FROM_DEVICE, SZ_4K, SZ_4K)
    assert not checker.read_brackets


def test_without_the_checker_behaviour_is_unchanged(rig: Any) -> None:
    _, proc, fd, va = _shared(rig)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ)
    proc.write(va, b"unchecked")  # nobody watches: the write simply happens
    assert proc.read(va, 9) == b"unchecked"
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ)
    assert rig.api.checker is None
