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
  :class:`Attachment` mapped for a direction yields a :class:`ScatterList` of DMA
  addresses *in the importer's address space*, made by the exporter with
  ``dma_map_sg`` on the importing device, through the system's one DMA API
  (:func:`vcmm.share.state.dma_api`).
- **mmap on the fd goes to the exporter** (001 L227-240), and an importer's own mmap
  can be forwarded to it with :func:`dma_buf_mmap` (Rob Clark, 001 L103-108).
- **CPU access is bracketed** (``DMA_BUF_IOCTL_SYNC``, :func:`dma_buf_sync`) with an
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
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vcmm.attrs import DmaDirection
from vcmm.checks import check_int, is_int
from vcmm.dma.attrs import DmaAttr
from vcmm.errors import (
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    NotMappedError,
    StateError,
)
from vcmm.hw.lock import MachineLock
from vcmm.hw.memory import Bytes, as_u8
from vcmm.proc.errors import PermissionDeniedError
from vcmm.proc.file import File, OpenFile
from vcmm.proc.flags import OpenMode
from vcmm.share.dmamap import SgEntry
from vcmm.share.fence import DEFAULT_TIMEOUT, Deadline, Fence, FenceTimeline, check_timeout
from vcmm.share.lock import lock_of
from vcmm.share.resv import ReservationObject
from vcmm.share.state import check_system, state_of
from vcmm.sizes import SZ_4K, format_size

if TYPE_CHECKING:
    from vcmm.dma.api import DmaApi
    from vcmm.dma.sg import ScatterList as DmaScatterList
    from vcmm.proc.process import Process
    from vcmm.proc.vma import Vma


class SyncFlags(enum.IntFlag):
    """``DMA_BUF_SYNC_*``: an access type (READ, WRITE or RW) and START or END."""

    START = 0
    READ = 1
    WRITE = 2
    RW = 3
    END = 4


#: Bits ``DMA_BUF_IOCTL_SYNC`` accepts.
SYNC_VALID_FLAGS = int(SyncFlags.RW | SyncFlags.END)

#: Fences of CPU accesses (user and kernel brackets) come from this timeline.
CPU_TIMELINE = FenceTimeline("cpu-access")

#: Key of the kernel's own CPU-access bracket (user brackets are keyed by description).
KERNEL = "kernel"

_dmabuf_ids = itertools.count(1)
_attachment_ids = itertools.count(1)


def check_sync_flags(call: str, flags: object) -> SyncFlags:
    """Validate a sync flag word: known bits only, and READ and/or WRITE."""
    if not is_int(flags):
        raise InvalidArgumentError(f"{call}: flags {flags!r} is not a SyncFlags word")
    if flags & ~SYNC_VALID_FLAGS:
        raise InvalidArgumentError(
            f"{call}: flags {flags:#x} has bits outside DMA_BUF_SYNC_* ({SYNC_VALID_FLAGS:#x})"
        )
    if not flags & SyncFlags.RW:
        raise InvalidArgumentError(
            f"{call}: flags {flags:#x} name no access; add SyncFlags.READ and/or WRITE"
        )
    return SyncFlags(flags)


def _direction_access(call: str, direction: object) -> tuple[bool, bool]:
    """(read, write) of a kernel CPU access named as the DMA API names it."""
    if not isinstance(direction, DmaDirection):
        raise InvalidArgumentError(f"{call}: direction {direction!r} is not a DmaDirection")
    if direction is DmaDirection.NONE:
        raise InvalidArgumentError(
            f"{call}: direction NONE names no access; FROM_DEVICE (CPU reads), "
            "TO_DEVICE (CPU writes) or BIDIRECTIONAL"
        )
    return (
        direction is not DmaDirection.TO_DEVICE,
        direction is not DmaDirection.FROM_DEVICE,
    )


@dataclass(frozen=True)
class ScatterList:
    """What mapping an attachment yields: the buffer's pieces at their addresses in the
    importer's address space (``entries``, in buffer order), and the DMA API's own list
    as ``dma_map_sg`` filled it (``table``: merged segments on its first entries)."""

    device: str
    direction: DmaDirection
    entries: tuple[SgEntry, ...]
    table: DmaScatterList | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return sum(e.length for e in self.entries)

    @property
    def dma_address(self) -> int:
        """Device address of the first byte."""
        return self.entries[0].dma_address

    def segments(self) -> list[tuple[int, int]]:
        """``(dma_address, length)`` runs, joined where the device addresses run on (an
        IOMMU makes scattered memory one run; a one-to-one device sees it as it is)."""
        out: list[tuple[int, int]] = []
        for e in self.entries:
            if out and out[-1][0] + out[-1][1] == e.dma_address:
                out[-1] = (out[-1][0], out[-1][1] + e.length)
            else:
                out.append((e.dma_address, e.length))
        return out

    def __iter__(self) -> Iterator[SgEntry]:
        return iter(self.entries)


class Exporter:
    """The exporter's operations (``struct dma_buf_ops``), called by :class:`DmaBuf`.

    Defaults follow the 2012 patches: ``mmap`` and ``vmap`` are optional and refused
    when not provided; the CPU-access hooks are optional and do nothing.  Subclasses
    that hold real memory implement the rest (see :class:`vcmm.share.exporter.VcmExporter`).
    ``system`` is the booted system whose devices may import the exporter's buffers.
    """

    def __init__(self, system: Any) -> None:
        self.system = check_system("Exporter", system)
        state_of(system)

    def attach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Accept or refuse a device (e.g. one that cannot reach the memory)."""

    def detach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Forget a device."""

    def map_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, direction: DmaDirection
    ) -> ScatterList:
        raise NotImplementedError

    def unmap_attachment(self, dmabuf: DmaBuf, attachment: Attachment, sg: ScatterList) -> None:
        raise NotImplementedError

    def needs_sync(self, dmabuf: DmaBuf) -> bool:
        """Whether CPU-access brackets have cache maintenance to do."""
        return False

    def begin_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """Make ``[offset, offset+length)`` safe for the CPU to access."""

    def end_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """Make the CPU's writes to the range visible to devices."""

    def mmap(self, dmabuf: DmaBuf, vma: Vma, ops: Any) -> None:
        raise InvalidArgumentError(
            f"mmap of {dmabuf.name}: its exporter does not support mmap (ENODEV)"
        )

    def vmap(self, dmabuf: DmaBuf) -> int:
        raise InvalidArgumentError(f"vmap of {dmabuf.name}: its exporter does not support vmap")

    def vunmap(self, dmabuf: DmaBuf, va: int) -> None:
        raise NotImplementedError

    def release(self, dmabuf: DmaBuf) -> None:
        """The last reference is gone: free the memory."""


@dataclass
class CpuSession:
    """One open CPU-access bracket: what it covers and the fence devices wait for."""

    key: object
    read: bool
    write: bool
    offset: int
    length: int
    fence: Fence


class Attachment:
    """A device attached to a dma-buf (``struct dma_buf_attachment``).

    ``api`` is the system's DMA API, through which the exporter maps the buffer for
    the device; ``dma_attrs`` are the attributes of the current mapping
    (``attach->dma_map_attrs``).
    """

    def __init__(self, dmabuf: DmaBuf, device: Any, api: DmaApi) -> None:
        self.id = next(_attachment_ids)
        self.dmabuf = dmabuf
        self.device = device
        self.api = api
        self.dma_attrs = DmaAttr.NONE
        self.sg: ScatterList | None = None
        self.detached = False
        #: The exporter's per-attachment data.
        self.priv: Any = None

    def __repr__(self) -> str:
        state = "detached" if self.detached else ("mapped" if self.sg else "attached")
        return f"<Attachment {self.device.name} to {self.dmabuf.name} {state}>"

    @property
    def coherent(self) -> bool:
        """Whether the device snoops the CPU cache (its DMA API parameters say)."""
        try:
            return bool(self.api.params(self.device).coherent)
        except NotFoundError:
            return bool(getattr(self.device, "coherent", False))

    def map(self, direction: DmaDirection, attrs: int = DmaAttr.NONE) -> ScatterList:
        """``dma_buf_map_attachment``: the buffer in this device's address space.

        ``attrs`` may hold ``DmaAttr.SKIP_CPU_SYNC``: the map and the unmap then leave
        the CPU cache alone (the caller maintains it).
        """
        return self.dmabuf._map(self, direction, attrs)

    def unmap(self, sg: ScatterList) -> None:
        """``dma_buf_unmap_attachment``: the device loses its mapping (later accesses
        fault on a device behind an IOMMU)."""
        self.dmabuf._unmap(self, sg)

    def detach(self) -> None:
        """``dma_buf_detach``; the attachment's reference on the buffer is dropped."""
        self.dmabuf.detach(self)


class KernelMapping:
    """A kernel virtual mapping of a whole dma-buf (``dma_buf_vmap``).

    Reads and writes must happen inside a kernel CPU-access bracket that covers them
    (:meth:`DmaBuf.begin_cpu_access`), so the kernel never sees stale cache lines or
    races a device job.
    """

    def __init__(self, dmabuf: DmaBuf, va: int, cpu: Any) -> None:
        self.dmabuf = dmabuf
        self.va = va
        self.cpu = cpu
        self.unmapped = False

    def _check(self, call: str, offset: object, n: int, write: bool) -> int:
        dmabuf = self.dmabuf
        if self.unmapped:
            raise StateError(f"{call}: the kernel mapping of {dmabuf.name} was vunmapped")
        off = check_int(call, "offset", offset)
        if off + n > dmabuf.size:
            raise InvalidArgumentError(
                f"{call}: [{off:#x}, {off + n:#x}) runs past the end of {dmabuf.name} "
                f"({format_size(dmabuf.size)})"
            )
        session = dmabuf._sessions.get(KERNEL)
        allowed = session is not None and (session.write if write else session.read)
        if (
            session is None
            or not allowed
            or off < session.offset
            or off + n > session.offset + session.length
        ):
            kind = "write" if write else "read"
            raise StateError(
                f"{call}: kernel {kind} of [{off:#x}, {off + n:#x}) of {dmabuf.name} is outside "
                "an open begin_cpu_access bracket allowing it"
            )
        return off

    def read(self, offset: int, n: int) -> bytes:
        """Load ``n`` bytes at ``offset`` through the kernel mapping."""
        n = check_int("vmap.read", "length", n)
        off = self._check("vmap.read", offset, n, write=False)
        with self.dmabuf._lock:
            return bytes(self.cpu.read(self.va + off, n))

    def write(self, offset: int, data: Bytes) -> None:
        """Store ``data`` at ``offset`` through the kernel mapping."""
        src = as_u8(data)
        off = self._check("vmap.write", offset, int(src.size), write=True)
        with self.dmabuf._lock:
            self.cpu.write(self.va + off, src)

    def unmap(self) -> None:
        """``dma_buf_vunmap``."""
        self.dmabuf.vunmap(self)


class _UserMappings:
    """VmaOps counting the user mappings (VMAs) of one dma-buf."""

    def __init__(self) -> None:
        self.count = 0

    def open(self, vma: Vma) -> None:
        self.count += 1

    def close(self, vma: Vma) -> None:
        self.count -= 1


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
        self._sessions: dict[object, CpuSession] = {}
        self._vmaps: list[KernelMapping] = []
        self._user_maps = _UserMappings()

    def __repr__(self) -> str:
        state = "released" if self.released else f"refs={self._refs}"
        return f"<DmaBuf {self.name} {format_size(self.size)} {state}>"

    @property
    def _lock(self) -> MachineLock:
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

    def _alive(self, call: str) -> None:
        if self.released:
            raise StateError(f"{call}: {self.name} was already released")

    def get(self) -> DmaBuf:
        """``get_dma_buf``: take another reference (for an exporter's cache, a driver)."""
        with self._lock:
            self._alive(f"{self.name}.get")
            self._refs += 1
            return self

    def put(self) -> None:
        """``dma_buf_put``: drop a reference; the last one releases the buffer."""
        with self._lock:
            self._alive(f"{self.name}.put")
            if self._refs == 1:
                self.exporter.release(self)  # may refuse: then nothing changed
                self.released = True
            self._refs -= 1

    def install_fd(self, process: Process, mode: OpenMode = OpenMode.RDWR) -> int:
        """``dma_buf_fd``: a new file description of this buffer in ``process``.

        The description holds its own reference (the caller keeps its own), so the fd
        can be closed, dup'd or passed on independently of the exporter.
        """
        with self._lock:
            self._alive(f"{self.name}.install_fd")
            return int(process.open(self.file, mode))

    def snapshot(self) -> tuple[object, ...]:
        """The buffer's own state, comparable (for all-or-nothing tests)."""
        return (
            self._refs,
            self.released,
            tuple((a.id, a.detached, a.sg) for a in self._attachments),
            tuple(
                sorted(
                    (str(k), s.read, s.write, s.offset, s.length) for k, s in self._sessions.items()
                )
            ),
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
        with self._lock:
            self._alive(call)
            state = state_of(self.exporter.system)
            dev = state.resolve(call, device)
            api, created = state.ensure_api()
            try:
                state.serving(call, api, dev)
                att = Attachment(self, dev, api)
                self.exporter.attach(self, att)
            except BaseException:
                if created:
                    state.drop_api()
                raise
            self._attachments.append(att)
            self._refs += 1
            return att

    def _own(self, call: str, att: object) -> Attachment:
        if not isinstance(att, Attachment):
            raise InvalidArgumentError(f"{call}: {att!r} is not an Attachment")
        if att.dmabuf is not self:
            raise InvalidArgumentError(f"{call}: {att!r} belongs to {att.dmabuf.name}")
        if att.detached:
            raise StateError(f"{call}: {att.device.name}'s attachment to {self.name} was detached")
        return att

    def detach(self, attachment: Attachment) -> None:
        call = f"{self.name}.detach"
        with self._lock:
            att = self._own(call, attachment)
            if att.sg is not None:
                raise BusyError(
                    f"{call}: {att.device.name}'s attachment is still mapped; unmap it first"
                )
            self.exporter.detach(self, att)
            att.detached = True
            self._attachments.remove(att)
            self.put()

    def _map(self, attachment: Attachment, direction: DmaDirection, attrs: object) -> ScatterList:
        call = f"{self.name}.map_attachment"
        with self._lock:
            att = self._own(call, attachment)
            if not isinstance(direction, DmaDirection) or direction is DmaDirection.NONE:
                raise InvalidArgumentError(
                    f"{call}: direction {direction!r} must be TO_DEVICE, FROM_DEVICE or "
                    "BIDIRECTIONAL"
                )
            if (
                isinstance(attrs, bool)
                or not isinstance(attrs, int)
                or attrs & ~int(DmaAttr.SKIP_CPU_SYNC)
            ):
                raise InvalidArgumentError(
                    f"{call}: attrs {attrs!r} may only hold DmaAttr.SKIP_CPU_SYNC "
                    f"({int(DmaAttr.SKIP_CPU_SYNC):#x})"
                )
            if att.sg is not None:
                raise StateError(
                    f"{call}: {att.device.name}'s attachment is already mapped "
                    f"({att.sg.direction.name}); unmap it first"
                )
            if direction is not DmaDirection.TO_DEVICE and not self.writable:
                raise PermissionDeniedError(
                    f"{call}: {self.name} was exported read-only; {att.device.name} may only "
                    "map it TO_DEVICE"
                )
            att.dma_attrs = DmaAttr(attrs)
            try:
                sg = self.exporter.map_attachment(self, att, direction)
            except BaseException:
                att.dma_attrs = DmaAttr.NONE
                raise
            att.sg = sg
            return sg

    def _unmap(self, attachment: Attachment, sg: ScatterList) -> None:
        call = f"{self.name}.unmap_attachment"
        with self._lock:
            att = self._own(call, attachment)
            if att.sg is None or sg is not att.sg:
                raise NotMappedError(
                    f"{call}: {sg!r} is not the mapping {att.device.name}'s attachment made "
                    f"(it has {'none' if att.sg is None else 'another'})"
                )
            self.exporter.unmap_attachment(self, att, sg)
            att.sg = None
            att.dma_attrs = DmaAttr.NONE

    # -- CPU access ------------------------------------------------------------------------------

    @property
    def needs_sync(self) -> bool:
        """Whether CPU-access brackets have cache work to do on this hardware now.

        False when the CPU maps the buffer uncached or every attached device snoops the
        CPU cache: then a caller that orders itself against device jobs some other way
        can skip the sync calls (Alan Cox's flag, 001 L6-10).
        """
        with self._lock:
            self._alive(f"{self.name}.needs_sync")
            return bool(self.exporter.needs_sync(self))

    def _range(self, call: str, offset: object, length: object) -> tuple[int, int]:
        off = check_int(call, "offset", offset)
        n = self.size - off if length is None else check_int(call, "length", length, minimum=1)
        if n <= 0 or off + n > self.size:
            raise InvalidArgumentError(
                f"{call}: range [{off:#x}, +{n:#x}) is not inside {self.name} "
                f"({format_size(self.size)})"
            )
        return off, n

    def _begin(
        self,
        call: str,
        key: object,
        read: bool,
        write: bool,
        offset: int,
        length: int,
        timeout: float | None,
    ) -> None:
        with self._lock:
            self._alive(call)
            if key in self._sessions:
                raise StateError(
                    f"{call}: a CPU access to {self.name} is already open here; END it first"
                )
        kind = "w" if write else "r"
        fence = CPU_TIMELINE.create(f"{self.name}:cpu-{kind}")
        self._publish(call, fence, write, timeout)
        with self._lock:
            if key in self._sessions or self.released:
                fence.signal()  # nothing was accessed: release whoever waits on it
                raise StateError(f"{call}: a CPU access to {self.name} was opened concurrently")
            self.exporter.begin_cpu_access(self, read, write, offset, length)
            self._sessions[key] = CpuSession(key, read, write, offset, length, fence)

    def _publish(self, call: str, fence: Fence, write: bool, timeout: float | None) -> None:
        """Wait for conflicting jobs, then add the CPU access's own fence, atomically
        under the buffer lock (retrying if a job was queued in between)."""
        deadline = Deadline(timeout)
        resv = self.resv
        while True:
            resv.wait(for_write=write, timeout=deadline.remaining())
            resv.lock(timeout=deadline.remaining())
            try:
                if not resv.test_signaled(for_write=write):
                    continue
                if write:
                    resv.add_exclusive_fence(fence)
                else:
                    resv.add_shared_fence(fence)
                return
            finally:
                resv.unlock()

    def _end(
        self, call: str, key: object, read: bool, write: bool, offset: int, length: int
    ) -> None:
        with self._lock:
            self._alive(call)
            session = self._sessions.get(key)
            if session is None:
                raise StateError(
                    f"{call}: END without START: no CPU access to {self.name} is open here"
                )
            started = (session.read, session.write, session.offset, session.length)
            if started != (read, write, offset, length):
                raise StateError(
                    f"{call}: END (read={read}, write={write}, [{offset:#x}, +{length:#x})) "
                    f"does not match the START (read={session.read}, write={session.write}, "
                    f"[{session.offset:#x}, +{session.length:#x}))"
                )
            self.exporter.end_cpu_access(self, read, write, offset, length)
            del self._sessions[key]
        session.fence.signal()

    def _abandon(self, key: object) -> None:
        """A description went away with its bracket open (the process closed or died):
        finish the bracket as END would, so devices waiting for it go on."""
        session = self._sessions.pop(key, None)
        if session is None:
            return
        self.exporter.end_cpu_access(
            self, session.read, session.write, session.offset, session.length
        )
        session.fence.signal()

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
        read, write = _direction_access(call, direction)
        off, n = self._range(call, offset, length)
        limit = check_timeout(call, timeout)
        if write and not self.writable:
            raise PermissionDeniedError(f"{call}: {self.name} was exported read-only")
        self._begin(call, KERNEL, read, write, off, n, limit)

    def end_cpu_access(
        self, direction: DmaDirection, offset: int = 0, length: int | None = None
    ) -> None:
        """Kernel CPU access ends; must match the begin call."""
        call = f"{self.name}.end_cpu_access"
        read, write = _direction_access(call, direction)
        off, n = self._range(call, offset, length)
        self._end(call, KERNEL, read, write, off, n)

    def vmap(self) -> KernelMapping:
        """``dma_buf_vmap``: a kernel virtual mapping of the whole buffer."""
        call = f"{self.name}.vmap"
        with self._lock:
            self._alive(call)
            va = self.exporter.vmap(self)
            mapping = KernelMapping(self, va, self.exporter.system.cpu)
            self._vmaps.append(mapping)
            self._refs += 1
            return mapping

    def vunmap(self, mapping: KernelMapping) -> None:
        call = f"{self.name}.vunmap"
        with self._lock:
            if not isinstance(mapping, KernelMapping) or not any(m is mapping for m in self._vmaps):
                raise NotMappedError(f"{call}: {mapping!r} is not a live kernel mapping of it")
            self.exporter.vunmap(self, mapping.va)
            mapping.unmapped = True
            self._vmaps.remove(mapping)
            self.put()

    # -- user space (through the file) ----------------------------------------------------------

    def _sync(
        self,
        description: OpenFile,
        flags: object,
        offset: object,
        length: object,
        timeout: object,
    ) -> None:
        call = f"DMA_BUF_IOCTL_SYNC on {self.name}"
        f = check_sync_flags(call, flags)
        off, n = self._range(call, offset, length)
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
            self._end(call, description.id, read, write, off, n)
        else:
            self._begin(call, description.id, read, write, off, n, limit)

    def _mmap(self, vma: Vma) -> None:
        with self._lock:
            self._alive(f"mmap of {self.name}")
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
        self.dmabuf._mmap(vma)

    def release(self, description: OpenFile) -> None:
        with self.dmabuf._lock:
            self.dmabuf._abandon(description.id)
            self.dmabuf.put()


# -- the calls a process (or a driver acting for it) makes with an fd --------------------------


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
    dmabuf._sync(description, flags, offset, length, timeout)


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
    with dmabuf._lock:
        dmabuf._alive(call)
        own = _grant(call, dmabuf, vma, via)
        old_pgoff = vma.pgoff
        vma.pgoff = pgoff
        try:
            dmabuf._mmap(vma)
        except BaseException:
            vma.pgoff = old_pgoff
            own.put()
            raise
        previous, vma.file = vma.file, own
        if previous is not None:
            previous.put()
