"""/dev nodes per SMMU context: user space opens, mmaps and closes VCM buffers.

The seed (000 L577-589): "Each context is given a dev node named after the context
... /dev/vcodec_a_mm1 ... Users open, close and mmap these nodes to access VCM buffers
from userspace in the same way that they used to open, close and mmap /dev nodes that
represented large physically contiguous buffers (called PMEM buffers on Android)."

So a :class:`VcmDevNode` behaves like a PMEM node, with the VCM underneath:

- every ``open`` is a new, empty buffer slot (one per file description);
- the first ``mmap`` of a description allocates its buffer (the mapping's length,
  from a memory target through ``vcm_phys_alloc``), maps it into the context's VCM
  (a reservation backed by it, visible to the device at :meth:`VcmDevNode.dev_addr`,
  PMEM's ``GET_PHYS``) and into the process; later mmaps of the same description map
  windows of the same buffer (``offset`` + length must fit, as with PMEM);
- ``close`` of the last holder (descriptors and mappings both hold the description)
  removes the device mapping and frees the memory, unless the buffer was exported as a
  dma-buf that is still referenced: then the memory lives until that dma-buf goes;
- :meth:`VcmDevNode.export` turns the buffer into a dma-buf fd (the same dma-buf every
  time) so other devices and processes can share it;
- :meth:`VcmDevNode.import_dmabuf` makes the node an importer instead: the context's
  device attaches to a dma-buf and maps it, and ``mmap`` on the node is forwarded to
  the dma-buf's exporter (:func:`~vcmm.share.dmabuf.dma_buf_mmap`).

The CPU, the decoder and the display can thus map the same buffer at once (000
L3762-3771), each in its own address space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vcmm.attrs import DmaDirection
from vcmm.core.flags import Attr
from vcmm.core.objects import PhysMem
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.proc.file import File, OpenFile
from vcmm.proc.flags import OpenMode
from vcmm.proc.usermap import UserPiece
from vcmm.share.dmabuf import Attachment, DmaBuf, ScatterList, dma_buf_get, dma_buf_mmap
from vcmm.share.exporter import VcmExporter, chunk_pieces
from vcmm.share.spaces import SHARE_LOCK, DeviceMapping, path_of, spaces_of
from vcmm.sizes import SZ_4K, format_size

if TYPE_CHECKING:
    from vcmm.proc.process import Process
    from vcmm.proc.table import ProcessTable
    from vcmm.proc.vma import Vma


class _NodeBuffer:
    """A buffer a node allocated; freed when the node and its dma-buf both let go."""

    def __init__(self, system: Any, physmem: PhysMem, mapping: DeviceMapping) -> None:
        self.system = system
        self.physmem = physmem
        self.mapping = mapping
        self.holds = 1

    @property
    def size(self) -> int:
        return self.mapping.res.len

    def hold(self) -> None:
        self.holds += 1

    def drop(self) -> None:
        self.holds -= 1
        if self.holds == 0:
            self.system.vcm_phys_free(self.physmem)


@dataclass
class _Import:
    """A dma-buf the node's device imported through one description."""

    dmabuf: DmaBuf
    attachment: Attachment
    sg: ScatterList


class VcmDevNode(File):
    """``/dev/<context>``: PMEM-style buffers of one SMMU context's device."""

    def __init__(
        self, system: Any, device: str, exporter: VcmExporter, *, target: str | None = "ebi"
    ) -> None:
        dev = system.device(device)
        if path_of(system, dev) != "iommu":
            raise InvalidArgumentError(
                f"VcmDevNode: {dev.name} is not behind an SMMU context; only contexts get nodes"
            )
        if target is not None:
            system.target(target)
        super().__init__(f"/dev/{dev.ctx.name}")
        self.system = system
        self.device = dev
        self.exporter = exporter
        self.target = target
        self.spaces = spaces_of(system)
        self._buffers: dict[int, _NodeBuffer] = {}
        self._imports: dict[int, _Import] = {}
        self._exports: dict[int, DmaBuf] = {}

    @property
    def path(self) -> str:
        return self.name

    def buffers(self) -> int:
        """Buffers currently allocated through this node (not yet freed)."""
        return len(self._buffers)

    # -- the file hooks ---------------------------------------------------------------------

    def open(self, description: OpenFile) -> None:
        """An open node keeps its context running (its buffers live in that VCM)."""
        super().open(description)
        with SHARE_LOCK:
            self.spaces.hold(self.device)

    def mmap(self, vma: Vma) -> None:
        assert vma.file is not None
        key = vma.file.id
        with SHARE_LOCK:
            imported = self._imports.get(key)
            if imported is not None:
                dma_buf_mmap(imported.dmabuf, vma, vma.pgoff)
                return
            buf = self._buffers.get(key)
            if buf is None:
                if vma.pgoff:
                    raise InvalidArgumentError(
                        f"mmap of {self.name}: the first mmap allocates the buffer and must "
                        f"start at offset 0, not page {vma.pgoff}"
                    )
                buf = self._allocate(vma.length)
                try:
                    self._remap(vma, buf)
                except BaseException:
                    self.spaces.unmap_device(buf.mapping)
                    buf.drop()
                    raise
                self._buffers[key] = buf
                return
            npages = buf.size // SZ_4K
            if vma.pgoff >= npages or vma.npages > npages - vma.pgoff:
                raise InvalidArgumentError(
                    f"mmap of {self.name}: pages {vma.pgoff}..{vma.pgoff + vma.npages - 1} go "
                    f"beyond its {format_size(buf.size)} buffer (EINVAL)"
                )
            self._remap(vma, buf)

    def _allocate(self, length: int) -> _NodeBuffer:
        system = self.system
        physmem = system.vcm_phys_alloc(self.target, length)
        try:
            for chunk in physmem.chunk_ranges:
                system.cpu.cache.invalidate(chunk.start, chunk.size)
                system.memory.fill(chunk.start, chunk.size, 0)
            mapping = self.spaces.map_device(
                self.device, physmem, length, Attr.RW, DmaDirection.BIDIRECTIONAL
            )
        except BaseException:
            system.vcm_phys_free(physmem)
            raise
        return _NodeBuffer(system, physmem, mapping)

    def _remap(self, vma: Vma, buf: _NodeBuffer) -> None:
        pieces = chunk_pieces(buf.physmem, vma.pgoff * SZ_4K, vma.length)
        vma.remap([UserPiece(phys, chunk) for phys, chunk in pieces])

    def release(self, description: OpenFile) -> None:
        with SHARE_LOCK:
            key = description.id
            imported = self._imports.pop(key, None)
            if imported is not None:
                imported.attachment.unmap(imported.sg)
                imported.attachment.detach()
                imported.dmabuf.put()
            buf = self._buffers.pop(key, None)
            if buf is not None:
                self.spaces.unmap_device(buf.mapping)
                self._exports.pop(key, None)
                buf.drop()
            self.spaces.unhold(self.device)

    # -- ioctls ------------------------------------------------------------------------------

    def _description(self, call: str, process: Process, fd: int) -> OpenFile:
        description = process.file(fd)
        if description.file is not self:
            raise InvalidArgumentError(
                f"{call}: fd {fd} of {process.name}[{process.pid}] is "
                f"{description.file.name}, not {self.name}"
            )
        return description

    def dev_addr(self, process: Process, fd: int) -> int:
        """Where the node's device sees the buffer of ``fd`` (PMEM's ``GET_PHYS``)."""
        call = f"{self.name} GET_DEV_ADDR"
        key = self._description(call, process, fd).id
        with SHARE_LOCK:
            if key in self._imports:
                return self._imports[key].sg.dma_address
            buf = self._buffers.get(key)
            if buf is None:
                raise StateError(f"{call}: fd {fd} has no buffer yet; mmap it first")
            return buf.mapping.entries[0].dma_address

    def buffer_size(self, process: Process, fd: int) -> int:
        call = f"{self.name} GET_SIZE"
        key = self._description(call, process, fd).id
        with SHARE_LOCK:
            if key in self._imports:
                return self._imports[key].dmabuf.size
            buf = self._buffers.get(key)
            if buf is None:
                raise StateError(f"{call}: fd {fd} has no buffer yet; mmap it first")
            return buf.size

    def export(self, process: Process, fd: int, mode: OpenMode = OpenMode.RDWR) -> int:
        """Export ``fd``'s buffer as a dma-buf and return a new fd for it in ``process``.

        The same buffer always gives the same dma-buf (a second call returns another fd
        of it); the memory lives until both this node's description and the dma-buf are
        gone.
        """
        call = f"{self.name} EXPORT"
        key = self._description(call, process, fd).id
        with SHARE_LOCK:
            buf = self._buffers.get(key)
            if buf is None:
                raise StateError(
                    f"{call}: fd {fd} has no buffer of its own to export; mmap it first"
                )
            dmabuf = self._exports.get(key)
            if dmabuf is not None and not dmabuf.released:
                dmabuf.get()
            else:
                buf.hold()
                try:
                    dmabuf = self.exporter.export(buf.physmem, on_release=buf.drop)
                except BaseException:
                    buf.drop()
                    raise
                self._exports[key] = dmabuf
            try:
                return dmabuf.install_fd(process, mode)
            finally:
                dmabuf.put()

    def import_dmabuf(self, process: Process, fd: int, dmabuf_fd: int) -> int:
        """Attach the node's device to the dma-buf behind ``dmabuf_fd`` and map it for
        ``fd`` (which must have no buffer yet); returns the device address."""
        call = f"{self.name} IMPORT"
        description = self._description(call, process, fd)
        key = description.id
        with SHARE_LOCK:
            if key in self._buffers or key in self._imports:
                raise StateError(f"{call}: fd {fd} already has a buffer")
            dmabuf = dma_buf_get(process, dmabuf_fd)
            attachment = None
            try:
                attachment = dmabuf.attach(self.device)
                direction = (
                    DmaDirection.BIDIRECTIONAL if dmabuf.writable else DmaDirection.TO_DEVICE
                )
                sg = attachment.map(direction)
            except BaseException:
                if attachment is not None:
                    attachment.detach()
                dmabuf.put()
                raise
            self._imports[key] = _Import(dmabuf, attachment, sg)
            return sg.dma_address


def register_dev_nodes(
    table: ProcessTable, exporter: VcmExporter | None = None, *, target: str | None = "ebi"
) -> dict[str, VcmDevNode]:
    """Create and register ``/dev/<context>`` for every device behind an SMMU context."""
    system = table.system
    exp = exporter if exporter is not None else VcmExporter(system, "devnode")
    nodes: dict[str, VcmDevNode] = {}
    for name, dev in sorted(system.devices.items()):
        if path_of(system, dev) != "iommu":
            continue
        node = VcmDevNode(system, name, exp, target=target)
        table.register(node.path, node)
        nodes[node.path] = node
    return nodes
