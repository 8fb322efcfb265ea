"""dma-buf heaps: ``/dev/dma_heap/<target>``, one allocator node per memory target.

Seed 001 discusses where shared buffers come from (CMA, ION's heaps); Linux later
replaced ION with dma-buf heaps (drivers/dma-buf/dma-heap.c): each heap is a
character device ``/dev/dma_heap/<name>``, and a process allocates a buffer with one
ioctl, ``DMA_HEAP_IOCTL_ALLOC``, on an open heap.  The argument is ``struct
dma_heap_allocation_data`` (:class:`DmaHeapAllocationData`): ``len`` in, ``fd``
out (it must be 0 going in), ``fd_flags`` for the new descriptor (``O_CLOEXEC`` and
an access mode, nothing else) and ``heap_flags`` (none are defined: it must be 0).
The kernel refuses any other value, and a length that page-aligns to 0, with EINVAL;
an unknown request is ENOTTY.

Here every memory target of the system is a heap (except a *secure* one registered at
run time: no non-secure mapping may reach its memory, and a heap's buffer is mapped
by the CPU and devices non-secure), looked up when a process opens the path, so a
target registered with ``vcm_register_target`` has a heap at once and an
unregistered one has none.  The buffer is a dma-buf of the VCMM's exporter, zeroed
and cached like the system heap's, so it works with every sharing feature: device
attach and map, ``mmap``, ``DMA_BUF_IOCTL_SYNC``, passing the fd on, and the new
descriptor's access mode bounds every mapping of it.  ``O_CLOEXEC`` is accepted and
has no effect (processes here never exec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from vcmm.checks import is_int
from vcmm.core.custom_targets import is_secure
from vcmm.core.interfaces import VcmmApi
from vcmm.errors import InvalidArgumentError, NotFoundError, OutOfMemoryError
from vcmm.proc.file import File
from vcmm.proc.flags import OpenMode
from vcmm.share.exporter import VcmExporter
from vcmm.share.lock import lock_of
from vcmm.sizes import SZ_4K, align_up
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.process import Process
    from vcmm.proc.table import ProcessTable

#: Where the heaps live.
HEAP_DIR: Final = "/dev/dma_heap"

#: ``fcntl.h`` values (asm-generic): the access modes and close-on-exec.
O_ACCMODE: Final = 0o3
O_RDONLY: Final = 0o0
O_WRONLY: Final = 0o1
O_RDWR: Final = 0o2
O_CLOEXEC: Final = 0o2000000
#: What ``fd_flags`` may hold, and ``heap_flags`` (no heap flags exist yet).
DMA_HEAP_VALID_FD_FLAGS: Final = O_CLOEXEC | O_ACCMODE
DMA_HEAP_VALID_HEAP_FLAGS: Final = 0

#: ``_IOWR('H', 0x0, struct dma_heap_allocation_data)``: read-write, 24-byte argument.
DMA_HEAP_IOCTL_ALLOC: Final = (3 << 30) | (24 << 16) | (ord("H") << 8) | 0x0

_MODES: Final = {O_RDONLY: OpenMode.RDONLY, O_WRONLY: OpenMode.WRONLY, O_RDWR: OpenMode.RDWR}
_U64: Final = 1 << 64


@dataclass
class DmaHeapAllocationData:
    """``struct dma_heap_allocation_data``: ``len``, ``fd_flags`` and ``heap_flags``
    in; ``fd`` out (0 going in)."""

    len: int
    fd: int = 0
    fd_flags: int = O_RDWR | O_CLOEXEC
    heap_flags: int = 0


def _check_allocation(call: str, data: object) -> tuple[int, OpenMode]:
    """The checks of ``dma_heap_ioctl_allocate``: the page-aligned length and the mode."""
    if not isinstance(data, DmaHeapAllocationData):
        raise InvalidArgumentError(f"{call}: {data!r} is not a DmaHeapAllocationData (EFAULT)")
    if not is_int(data.len) or not 0 <= data.len < _U64:
        raise InvalidArgumentError(f"{call}: len {data.len!r} is not a __u64 (EINVAL)")
    if data.fd != 0:
        raise InvalidArgumentError(f"{call}: fd {data.fd!r} must be 0 going in (EINVAL)")
    flags = data.fd_flags
    if not is_int(flags) or flags < 0 or flags & ~DMA_HEAP_VALID_FD_FLAGS:
        raise InvalidArgumentError(
            f"{call}: fd_flags {flags!r} has bits outside O_CLOEXEC | O_ACCMODE (EINVAL)"
        )
    if not is_int(data.heap_flags) or data.heap_flags != DMA_HEAP_VALID_HEAP_FLAGS:
        raise InvalidArgumentError(
            f"{call}: heap_flags {data.heap_flags!r} must be 0: no heap flags exist (EINVAL)"
        )
    length = align_up(data.len, SZ_4K) % _U64  # PAGE_ALIGN of a __u64 wraps
    if length == 0:
        raise InvalidArgumentError(f"{call}: len {data.len:#x} page-aligns to 0 (EINVAL)")
    mode = _MODES.get(flags & O_ACCMODE)
    if mode is None:
        raise InvalidArgumentError(
            f"{call}: fd_flags {flags:#o} asks for access mode 3, which grants neither "
            "reading nor writing (EINVAL)"
        )
    return length, mode


class DmaHeap(File):
    """``/dev/dma_heap/<target>``: allocates dma-bufs from one memory target."""

    def __init__(self, system: VcmmApi, target: str, exporter: VcmExporter) -> None:
        super().__init__(f"{HEAP_DIR}/{target}")
        self.system = system
        self.target = target
        self.exporter = exporter
        self.allocated = 0

    def ioctl(self, process: Process, fd: int, cmd: int, data: object) -> int:
        """``ioctl(fd, cmd, data)`` on an open heap: ``DMA_HEAP_IOCTL_ALLOC`` fills
        ``data.fd`` with a new dma-buf descriptor in ``process`` and returns 0."""
        call = f"ioctl on {self.name}"
        description = process.file(fd)
        if description.file is not self:
            raise InvalidArgumentError(
                f"{call}: fd {fd} of {process.name}[{process.pid}] is {description.file.name}"
            )
        if cmd != DMA_HEAP_IOCTL_ALLOC:
            raise InvalidArgumentError(
                f"{call}: request {cmd!r} is not DMA_HEAP_IOCTL_ALLOC "
                f"({DMA_HEAP_IOCTL_ALLOC:#x}) (ENOTTY)"
            )
        call = f"DMA_HEAP_IOCTL_ALLOC on {self.name}"
        length, mode = _check_allocation(call, data)
        assert isinstance(data, DmaHeapAllocationData)
        with lock_of(self.system), Transaction(call, boundary=True) as txn:
            if self.target not in self.system.targets:
                raise NotFoundError(f"{call}: memory target {self.target!r} is gone (ENODEV)")
            try:
                dmabuf = self.exporter.allocate(
                    length, target=self.target, name=f"{self.name}#{self.allocated + 1}"
                )
            except OutOfMemoryError as exc:
                raise OutOfMemoryError(f"{call}: {exc} (ENOMEM)") from exc
            txn.on_undo(dmabuf.put)
            new_fd = dmabuf.install_fd(process, mode)
            dmabuf.put()  # the descriptor holds the buffer now
        self.allocated += 1
        data.fd = new_fd
        return 0


class HeapDirectory:
    """The heaps of one system, one per (non-secure) memory target, made on first open."""

    def __init__(self, system: VcmmApi, exporter: VcmExporter) -> None:
        self.system = system
        self.exporter = exporter
        self._heaps: dict[str, DmaHeap] = {}

    def names(self) -> list[str]:
        """The targets that are heaps now."""
        return [n for n, t in self.system.targets.items() if not is_secure(t)]

    def resolve(self, name: str) -> DmaHeap | None:
        """The heap of target ``name`` (None if there is no such non-secure target)."""
        if name not in self.names():
            self._heaps.pop(name, None)  # an unregistered target's node is gone
            return None
        heap = self._heaps.get(name)
        if heap is None:
            heap = self._heaps[name] = DmaHeap(self.system, name, self.exporter)
        return heap


def register_heaps(table: ProcessTable, exporter: VcmExporter | None = None) -> HeapDirectory:
    """Mount ``/dev/dma_heap`` in ``table``'s namespace: every process of it can open
    ``/dev/dma_heap/<target>`` for each memory target of the system."""
    system = table.system
    if exporter is None:
        exporter = VcmExporter(system, "dma-heap")
    elif not isinstance(exporter, VcmExporter) or exporter.system is not system:
        raise InvalidArgumentError(f"register_heaps: {exporter!r} is not a VcmExporter of it")
    directory = HeapDirectory(system, exporter)
    table.mount(HEAP_DIR, directory.names, directory.resolve)
    return directory


def dma_heap_alloc(
    process: Process, heap_fd: int, length: int, fd_flags: int = O_RDWR | O_CLOEXEC
) -> int:
    """libdmabufheap's convenience: ``DMA_HEAP_IOCTL_ALLOC`` on ``heap_fd``; the new
    dma-buf descriptor."""
    heap = process.file(heap_fd).file
    if not isinstance(heap, DmaHeap):
        raise InvalidArgumentError(
            f"dma_heap_alloc: fd {heap_fd} of {process.name}[{process.pid}] is {heap.name}, "
            "not a dma-buf heap (ENOTTY)"
        )
    data = DmaHeapAllocationData(length, fd_flags=fd_flags)
    heap.ioctl(process, heap_fd, DMA_HEAP_IOCTL_ALLOC, data)
    return data.fd
