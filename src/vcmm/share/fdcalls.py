"""The calls a process (or a driver acting for it) makes with a dma-buf's fd.

``dma_buf_get`` takes a reference through the fd, ``DMA_BUF_IOCTL_SYNC`` opens and
closes a CPU-access bracket keyed by the file description, and ``dma_buf_mmap``
forwards an importer's mmap to the exporter (Rob Clark, 001 L103-108) under the
description that granted the buffer.  Each works through the buffer's public calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.checks import check_int
from vcmm.errors import InvalidArgumentError
from vcmm.proc.errors import PermissionDeniedError
from vcmm.proc.file import OpenFile
from vcmm.proc.flags import OpenMode
from vcmm.share.cpuaccess import SyncFlags, check_sync_flags
from vcmm.share.dmabuf import DmaBuf, DmaBufFile
from vcmm.share.fence import DEFAULT_TIMEOUT, check_timeout
from vcmm.share.lock import lock_of
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.process import Process
    from vcmm.proc.vma import Vma


def _description(call: str, process: Process, fd: int) -> tuple[OpenFile, DmaBuf]:
    description = process.file(fd)
    if not isinstance(description.file, DmaBufFile):
        raise InvalidArgumentError(
            f"{call}: fd {fd} of {process.name}[{process.pid}] is {description.file.name}, "
            "not a dma-buf (ENOTTY)"
        )
    return description, description.file.dmabuf


def dma_buf_get(process: Process, fd: int) -> DmaBuf:
    """``dma_buf_get``: the dma-buf behind ``process``'s ``fd``, with a new reference.

    Only a process holding the fd reaches the buffer: any other gets EBADF.
    """
    with lock_of(process.system):
        _, dmabuf = _description("dma_buf_get", process, fd)
        return dmabuf.get()


def dma_buf_sync(
    process: Process,
    fd: int,
    flags: int,
    offset: int = 0,
    length: int | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
) -> None:
    """``ioctl(fd, DMA_BUF_IOCTL_SYNC, {flags})`` with an optional byte range.

    START waits (up to ``timeout``) for the device jobs the access conflicts with,
    prepares the CPU cache and makes the access a fence of the buffer; END (same flags
    and range) cleans written lines and signals that fence.  READ needs a readable,
    WRITE a writable descriptor.
    """
    description, dmabuf = _description("DMA_BUF_IOCTL_SYNC", process, fd)
    call = f"DMA_BUF_IOCTL_SYNC on {dmabuf.name}"
    f = check_sync_flags(call, flags)
    off, n = dmabuf.byte_range(call, offset, length)
    limit = check_timeout(call, timeout)
    read, write = bool(f & SyncFlags.READ), bool(f & SyncFlags.WRITE)
    if write and not description.mode.writable:
        raise PermissionDeniedError(
            f"{call}: SYNC_WRITE through a descriptor opened {description.mode.name} (EACCES)"
        )
    if read and not description.mode.readable:
        raise PermissionDeniedError(
            f"{call}: SYNC_READ through a descriptor opened {description.mode.name} (EACCES)"
        )
    if f & SyncFlags.END:
        dmabuf.cpu_access.end(call, description.id, read, write, off, n)
    else:
        writers = {p.asid: f"{p.name}[{p.pid}]" for p in process.table.processes}
        opener = f"by {process.name}[{process.pid}] on fd {fd}"
        dmabuf.cpu_access.begin(
            call, description.id, read, write, off, n, limit, opener=opener, writers=writers
        )


def dma_buf_needs_sync(process: Process, fd: int) -> bool:
    """Whether sync calls on ``fd`` have cache work to do (see :attr:`DmaBuf.needs_sync`)."""
    _, dmabuf = _description("dma_buf_needs_sync", process, fd)
    return dmabuf.needs_sync


def _grant(call: str, dmabuf: DmaBuf, vma: Vma, via: object) -> OpenFile:
    """The description a forwarded mapping will hold: ``via`` (the one that granted
    the buffer to the importer, whose mode bounds the mapping) with a new holder, or a
    new read-only one; never a new read-write description."""
    if via is None:
        if vma.writable:
            raise PermissionDeniedError(
                f"{call}: a writable mapping of {dmabuf.name} needs the descriptor that "
                "granted write access (via=); without one the mapping is read-only (EACCES)"
            )
        return OpenFile.open(dmabuf.file, OpenMode.RDONLY)
    if not isinstance(via, OpenFile) or via.file is not dmabuf.file:
        raise InvalidArgumentError(f"{call}: via={via!r} is not a description of {dmabuf.name}")
    if not via.mode.readable or (vma.writable and not via.mode.writable):
        raise PermissionDeniedError(
            f"{call}: {'a writable' if vma.writable else 'a'} mapping of {dmabuf.name} through "
            f"a descriptor opened {via.mode.name} (EACCES): the descriptor that granted the "
            "buffer bounds every mapping of it"
        )
    return via.get()


def dma_buf_mmap(dmabuf: DmaBuf, vma: Vma, pgoff: int, *, via: OpenFile | None = None) -> None:
    """Forward an importer's mmap to the exporter (``dma_buf_mmap``).

    For a driver whose own file maps an imported buffer: the VMA starts ``pgoff`` pages
    into the buffer, and from now on holds a description of the dma-buf instead of the
    importer's file, as Linux swaps ``vma->vm_file``.  That description is ``via``, the
    one the importer got the buffer through, so its access mode bounds the mapping (a
    buffer granted through an ``O_RDONLY`` fd is never mapped writable, whatever the
    importer's own file allows); without ``via`` only a read-only mapping is made.
    """
    call = "dma_buf_mmap"
    if not isinstance(dmabuf, DmaBuf):
        raise InvalidArgumentError(f"{call}: {dmabuf!r} is not a DmaBuf")
    pgoff = check_int(call, "pgoff", pgoff)
    with dmabuf.lock:
        dmabuf.check_alive(call)
        with Transaction(call, boundary=True) as txn:
            own = _grant(call, dmabuf, vma, via)
            txn.on_undo(own.put)
            txn.on_undo(setattr, vma, "pgoff", vma.pgoff)
            vma.pgoff = pgoff
            dmabuf.mmap(vma)
        previous, vma.file = vma.file, own
        if previous is not None:
            previous.put()
