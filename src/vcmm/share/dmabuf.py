"""dma-buf: one buffer, shared by reference between devices, the kernel and processes.

What the 2012 thread asked for (001), and how it is met here:

- **A reference-counted object reached through an fd.**  :class:`DmaBuf` is the kernel
  object; :attr:`DmaBuf.file` is the :class:`~vcmm.proc.file.File` processes open
  (:meth:`DmaBuf.install_fd`), dup, pass to each other and mmap.  Every holder takes a
  reference: the caller of ``export`` and of :func:`dma_buf_get` (``get_dma_buf``),
  every open file description (and so every mmap, which holds its description),
  every attachment and every kernel mapping.  The exporter's ``release`` runs after the
  last one is dropped and never before, so memory outlives any mapping of it (004).
- **Exporting the same object twice gives the same dma-buf** (001 L41-47): the
  exporter keeps its dma-bufs by object and hands out a new reference.
- **Importers attach and map** (``dma_buf_attach``/``dma_buf_map_attachment``): an
  :class:`Attachment` mapped for a direction yields a ``ScatterList`` of DMA
  addresses *in the importer's address space*, made by the exporter with
  ``dma_map_sg`` on the importing device, through the system's one DMA API
  (:func:`vcmm.share.state.dma_api`).
- **mmap on the fd goes to the exporter** (001 L227-240), and an importer's own mmap
  can be forwarded to it with ``dma_buf_mmap`` (Rob Clark, 001 L103-108).
- **CPU access is bracketed** (``DMA_BUF_IOCTL_SYNC``, ``dma_buf_sync``) with an
  access type and an optional byte range (Tom Cooksey and Alan Cox asked for both), and
  :attr:`DmaBuf.needs_sync` tells a caller on coherent hardware that the bracket has no
  cache work to do (Alan: "We don't want extra syscalls on hardware that doesn't need
  it").  The bracket is also where CPU access takes part in the buffer's fences: START
  waits for the device jobs it conflicts with (with a timeout), and until END the
  access is itself a fence that later device jobs wait for (Cooksey's "another device
  could be blocked from accessing that buffer until the client process called
  finish").  The kernel has the same bracket (:meth:`DmaBuf.begin_cpu_access`) around
  its own access through :meth:`DmaBuf.vmap`.
- **No deadlock when several buffers are acquired**: every buffer's reservation object
  is locked through a wound/wait :class:`~vcmm.share.ww.AcquireContext`
  (:mod:`vcmm.share.jobs` does so for device jobs).

Every call validates its arguments and the object's state before changing anything.

The parts live beside this module, one job each: the exporter's operations
(:mod:`~vcmm.share.ops`), attachments and their mappings (:mod:`~vcmm.share.attachment`),
CPU-access brackets (:mod:`~vcmm.share.cpuaccess`), the kernel's vmap
(:mod:`~vcmm.share.kmap`) and the fd calls (:mod:`~vcmm.share.fdcalls`).  This module is
the buffer itself: its references, attachments list, mappings and file.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int
from vcmm.errors import BusyError, InvalidArgumentError, NotMappedError, StateError
from vcmm.hw.lock import MachineLock
from vcmm.proc.errors import PermissionDeniedError
from vcmm.proc.file import File, MappingCount, OpenFile
from vcmm.proc.flags import OpenMode
from vcmm.share.attachment import Attachment
from vcmm.share.cpuaccess import KERNEL, CpuBrackets, direction_access
from vcmm.share.fence import DEFAULT_TIMEOUT, check_timeout
from vcmm.share.kmap import KernelMapping
from vcmm.share.lock import lock_of
from vcmm.share.ops import Exporter
from vcmm.share.resv import ReservationObject
from vcmm.share.state import state_of
from vcmm.sizes import SZ_4K, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.process import Process
    from vcmm.proc.vma import Vma

_dmabuf_ids = itertools.count(1)


class DmaBuf:
    """A shared buffer: exporter, size, reservation object and reference count.

    Created by an exporter (``export``) with one reference owned by the caller.
    """

    def __init__(
        self,
        exporter: Exporter,
        size: int,
        name: str = "",
        *,
        writable: bool = True,
        priv: Any = None,
    ) -> None:
        if not isinstance(exporter, Exporter):
            raise InvalidArgumentError(f"DmaBuf: {exporter!r} is not an Exporter")
        size = check_int("DmaBuf", "size", size, minimum=SZ_4K)
        if size % SZ_4K:
            raise InvalidArgumentError(f"DmaBuf: size {size:#x} is not a whole number of pages")
        if not isinstance(name, str):
            raise InvalidArgumentError(f"DmaBuf: name {name!r} is not a string")
        if not isinstance(writable, bool):
            raise InvalidArgumentError(f"DmaBuf: writable={writable!r} is not a bool")
        self.id = next(_dmabuf_ids)
        self.name = name or f"dmabuf{self.id}"
        self.exporter = exporter
        self.size = size
        self.writable = writable
        self.priv = priv
        self.resv = ReservationObject(self.name)
        self.file = DmaBufFile(self)
        self.released = False
        self._refs = 1
        self._attachments: list[Attachment] = []
        self.cpu_access = CpuBrackets(self)
        self._vmaps: list[KernelMapping] = []
        self._user_maps = MappingCount()

    def __repr__(self) -> str:
        state = "released" if self.released else f"refs={self._refs}"
        return f"<DmaBuf {self.name} {format_size(self.size)} {state}>"

    @property
    def lock(self) -> MachineLock:
        """The machine lock of the exporter's system, which every operation holds."""
        return lock_of(self.exporter.system)

    # -- references ----------------------------------------------------------------------------

    @property
    def refcount(self) -> int:
        return self._refs

    @property
    def attachments(self) -> tuple[Attachment, ...]:
        return tuple(self._attachments)

    @property
    def user_mappings(self) -> int:
        """Live user mappings (VMAs) of this buffer in any process."""
        return self._user_maps.count

    @property
    def kernel_mappings(self) -> int:
        return len(self._vmaps)

    def check_alive(self, call: str) -> None:
        """Refuse ``call`` on a released buffer."""
        if self.released:
            raise StateError(f"{call}: {self.name} was already released")

    def get(self) -> DmaBuf:
        """``get_dma_buf``: take another reference (for an exporter's cache, a driver)."""
        with self.lock:
            self.check_alive(f"{self.name}.get")
            self._refs += 1
            return self

    def put(self) -> None:
        """``dma_buf_put``: drop a reference; the last one releases the buffer."""
        with self.lock:
            self.check_alive(f"{self.name}.put")
            if self._refs == 1:
                self.exporter.release(self)  # may refuse: then nothing changed
                self.released = True
            self._refs -= 1

    def install_fd(self, process: Process, mode: OpenMode = OpenMode.RDWR) -> int:
        """``dma_buf_fd``: a new file description of this buffer in ``process``.

        The description holds its own reference (the caller keeps its own), so the fd
        can be closed, dup'd or passed on independently of the exporter.
        """
        with self.lock:
            self.check_alive(f"{self.name}.install_fd")
            return int(process.open(self.file, mode))

    def snapshot(self) -> tuple[object, ...]:
        """The buffer's own state, comparable (for all-or-nothing tests)."""
        return (
            self._refs,
            self.released,
            tuple((a.id, a.detached, a.sg) for a in self._attachments),
            self.cpu_access.snapshot(),
            self.user_mappings,
            len(self._vmaps),
            self.resv.exclusive_fence,
            self.resv.shared_fences,
        )

    # -- importers -----------------------------------------------------------------------------

    def attach(self, device: Any) -> Attachment:
        """``dma_buf_attach``: ``device`` (a name or bus master) will access the buffer.

        The system's DMA API is created here if nothing made it yet (and closed again if
        the exporter refuses the device, so a refused attach changes nothing).
        """
        call = f"{self.name}.attach"
        with self.lock:
            self.check_alive(call)
            state = state_of(self.exporter.system)
            dev = state.resolve(call, device)
            with Transaction(call, boundary=True) as txn:
                api, created = state.ensure_api()
                if created:
                    txn.on_undo(state.drop_api)
                state.serving(call, api, dev)
                att = Attachment(self, dev, api)
                self.exporter.attach(self, att)
            self._attachments.append(att)
            self._refs += 1
            return att

    def own(self, call: str, att: object) -> Attachment:
        """``att`` as a live attachment of this buffer, or why ``call`` refuses it."""
        if not isinstance(att, Attachment):
            raise InvalidArgumentError(f"{call}: {att!r} is not an Attachment")
        if att.dmabuf is not self:
            raise InvalidArgumentError(f"{call}: {att!r} belongs to {att.dmabuf.name}")
        if att.detached:
            raise StateError(f"{call}: {att.device.name}'s attachment to {self.name} was detached")
        return att

    def detach(self, attachment: Attachment) -> None:
        call = f"{self.name}.detach"
        with self.lock:
            att = self.own(call, attachment)
            if att.sg is not None:
                raise BusyError(
                    f"{call}: {att.device.name}'s attachment is still mapped; unmap it first"
                )
            self.exporter.detach(self, att)
            att.detached = True
            self._attachments.remove(att)
            self.put()

    # -- CPU access ------------------------------------------------------------------------------

    @property
    def needs_sync(self) -> bool:
        """Whether CPU-access brackets have cache work to do on this hardware now.

        False when the CPU maps the buffer uncached or every attached device snoops the
        CPU cache: then a caller that orders itself against device jobs some other way
        can skip the sync calls (Alan Cox's flag, 001 L6-10).
        """
        with self.lock:
            self.check_alive(f"{self.name}.needs_sync")
            return bool(self.exporter.needs_sync(self))

    def byte_range(self, call: str, offset: object, length: object) -> tuple[int, int]:
        """``(offset, length)`` of a CPU access, checked to lie inside the buffer
        (``length=None``: to the end)."""
        off = check_int(call, "offset", offset)
        n = self.size - off if length is None else check_int(call, "length", length, minimum=1)
        if n <= 0 or off + n > self.size:
            raise InvalidArgumentError(
                f"{call}: range [{off:#x}, +{n:#x}) is not inside {self.name} "
                f"({format_size(self.size)})"
            )
        return off, n

    def begin_cpu_access(
        self,
        direction: DmaDirection,
        offset: int = 0,
        length: int | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        """Kernel CPU access to ``[offset, offset+length)`` starts (waits for conflicting
        device jobs).  FROM_DEVICE: the CPU reads; TO_DEVICE: it writes; BIDIRECTIONAL:
        both."""
        call = f"{self.name}.begin_cpu_access"
        read, write = direction_access(call, direction)
        off, n = self.byte_range(call, offset, length)
        limit = check_timeout(call, timeout)
        if write and not self.writable:
            raise PermissionDeniedError(f"{call}: {self.name} was exported read-only")
        self.cpu_access.begin(
            call, KERNEL, read, write, off, n, limit, opener="by the kernel (begin_cpu_access)"
        )

    def end_cpu_access(
        self, direction: DmaDirection, offset: int = 0, length: int | None = None
    ) -> None:
        """Kernel CPU access ends; must match the begin call."""
        call = f"{self.name}.end_cpu_access"
        read, write = direction_access(call, direction)
        off, n = self.byte_range(call, offset, length)
        self.cpu_access.end(call, KERNEL, read, write, off, n)

    def vmap(self) -> KernelMapping:
        """``dma_buf_vmap``: a kernel virtual mapping of the whole buffer."""
        call = f"{self.name}.vmap"
        with self.lock:
            self.check_alive(call)
            va = self.exporter.vmap(self)
            mapping = KernelMapping(self, va, self.exporter.system.cpu)
            self._vmaps.append(mapping)
            self._refs += 1
            return mapping

    def vunmap(self, mapping: KernelMapping) -> None:
        call = f"{self.name}.vunmap"
        with self.lock:
            if not isinstance(mapping, KernelMapping) or not any(m is mapping for m in self._vmaps):
                raise NotMappedError(f"{call}: {mapping!r} is not a live kernel mapping of it")
            self.exporter.vunmap(self, mapping.va)
            mapping.unmapped = True
            self._vmaps.remove(mapping)
            self.put()

    # -- user space (through the file) ----------------------------------------------------------

    def mmap(self, vma: Vma) -> None:
        """mmap on the fd goes to the exporter (001 L227-240), after checking the VMA's
        pages lie inside the buffer."""
        with self.lock:
            self.check_alive(f"mmap of {self.name}")
            npages = self.size // SZ_4K
            if vma.pgoff >= npages or vma.npages > npages - vma.pgoff:
                raise InvalidArgumentError(
                    f"mmap of {self.name}: pages {vma.pgoff}..{vma.pgoff + vma.npages - 1} "
                    f"go beyond the buffer's {npages} pages ({format_size(self.size)}) (EINVAL)"
                )
            self.exporter.mmap(self, vma, self._user_maps)


class DmaBufFile(File):
    """What a process opens for a dma-buf: every description holds a buffer reference."""

    def __init__(self, dmabuf: DmaBuf) -> None:
        super().__init__(f"dmabuf:{dmabuf.name}")
        self.dmabuf = dmabuf
        self.writable = dmabuf.writable

    def open(self, description: OpenFile) -> None:
        super().open(description)
        self.dmabuf.get()

    def mmap(self, vma: Vma) -> None:
        self.dmabuf.mmap(vma)

    def release(self, description: OpenFile) -> None:
        with self.dmabuf.lock:
            self.dmabuf.cpu_access.abandon(description.id)
            self.dmabuf.put()
