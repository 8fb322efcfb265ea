"""/dev nodes per SMMU context: user space opens, mmaps and closes VCM buffers.

The seed (000 L577-589): "Each context is given a dev node named after the context
... /dev/vcodec_a_mm1 ... Users open, close and mmap these nodes to access VCM buffers
from userspace in the same way that they used to open, close and mmap /dev nodes that
represented large physically contiguous buffers (called PMEM buffers on Android)."

So a :class:`VcmDevNode` behaves like a PMEM node, with the VCM underneath:

- every ``open`` is a new, empty buffer slot (one per file description);
- the first ``mmap`` of a description allocates its buffer (the mapping's length)
  through the node's exporter, as a dma-buf the node holds one reference to; the
  node's device attaches to it and maps it ``BIDIRECTIONAL`` through the DMA API (an
  IOVA in its DMA domain, :meth:`VcmDevNode.dev_addr`, PMEM's ``GET_PHYS``), and the
  process maps it; later mmaps of the same description map windows of the same
  buffer (``offset`` + length must fit, as with PMEM).  The VMAs hold the node's
  description, so the device mapping lives as long as any of them;
- ``close`` of the last holder (descriptors and mappings both hold the description)
  unmaps the device and drops the node's reference: the memory is freed, unless the
  buffer was exported (:meth:`VcmDevNode.export`) and that dma-buf is still held;
- :meth:`VcmDevNode.import_dmabuf` makes the node an importer instead: the context's
  device attaches to a dma-buf and maps it, and ``mmap`` on the node is forwarded to
  the dma-buf's exporter (:func:`~vcmm.share.fdcalls.dma_buf_mmap`).  The descriptor
  that granted the buffer bounds both: a buffer imported through an ``O_RDONLY`` fd
  is mapped ``TO_DEVICE`` and never mmapped writable, whatever the node's own mode.

The CPU, the decoder and the display can thus map the same buffer at once (000
L3762-3771), each in its own address space.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.core.interfaces import VcmmApi
from vcmm.dma.sg import MappedScatterList
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.bus import SmmuDevice
from vcmm.proc.file import File, OpenFile
from vcmm.proc.flags import OpenMode
from vcmm.share.attachment import Attachment
from vcmm.share.dmabuf import DmaBuf
from vcmm.share.exporter import VcmExporter
from vcmm.share.fdcalls import dma_buf_get, dma_buf_mmap
from vcmm.share.lock import lock_of
from vcmm.share.state import EXPORTER_DEFAULT, TargetChoice, exporter_target, state_of
from vcmm.sizes import SZ_4K, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.process import Process
    from vcmm.proc.table import ProcessTable
    from vcmm.proc.vma import Vma


@dataclass
class _Slot:
    """The buffer behind one description: the node's own or an imported one (then
    ``grant`` is the dma-buf description it came through, whose mode bounds it)."""

    dmabuf: DmaBuf
    attachment: Attachment
    sg: MappedScatterList
    imported: bool
    grant: OpenFile | None = None

    def close(self) -> None:
        self.attachment.unmap(self.sg)
        self.attachment.detach()
        self.dmabuf.put()
        if self.grant is not None:
            self.grant.put()


class VcmDevNode(File):
    """``/dev/<context>``: PMEM-style buffers of one SMMU context's device."""

    def __init__(
        self,
        system: VcmmApi,
        device: str,
        exporter: VcmExporter,
        *,
        target: TargetChoice = EXPORTER_DEFAULT,
    ) -> None:
        dev = system.device(device)
        if not isinstance(dev, SmmuDevice):
            raise InvalidArgumentError(
                f"VcmDevNode: {dev.name} is not behind an SMMU context; only contexts get nodes"
            )
        if not isinstance(exporter, VcmExporter) or exporter.system is not system:
            raise InvalidArgumentError(
                f"VcmDevNode: {exporter!r} is not a VcmExporter of this system"
            )
        target = exporter_target(system, target)
        if target is not None:
            system.target(target)
        super().__init__(f"/dev/{dev.ctx.name}")
        self.system = system
        self.device = dev
        self.exporter = exporter
        self.target = target
        state_of(system)
        self._slots: dict[int, _Slot] = {}

    @property
    def path(self) -> str:
        return self.name

    def buffers(self) -> int:
        """Buffers currently allocated through this node (not yet released by it)."""
        return sum(not s.imported for s in self._slots.values())

    # -- the file hooks ---------------------------------------------------------------------

    def mmap(self, vma: Vma) -> None:
        assert vma.file is not None
        key = vma.file.id
        with lock_of(self.system):
            slot = self._slots.get(key)
            if slot is not None and slot.imported:
                dma_buf_mmap(slot.dmabuf, vma, vma.pgoff, via=slot.grant)
                return
            if slot is None:
                if vma.pgoff:
                    raise InvalidArgumentError(
                        f"mmap of {self.name}: the first mmap allocates the buffer and must "
                        f"start at offset 0, not page {vma.pgoff}"
                    )
                with Transaction(f"mmap of {self.name}", boundary=True) as txn:
                    slot = self._allocate(vma.length)
                    txn.on_undo(slot.close)  # while rolling back: no IOVA left in the cache
                    slot.dmabuf.mmap(vma)
                self._slots[key] = slot
                return
            npages = slot.dmabuf.size // SZ_4K
            if vma.pgoff >= npages or vma.npages > npages - vma.pgoff:
                raise InvalidArgumentError(
                    f"mmap of {self.name}: pages {vma.pgoff}..{vma.pgoff + vma.npages - 1} go "
                    f"beyond its {format_size(slot.dmabuf.size)} buffer (EINVAL)"
                )
            slot.dmabuf.mmap(vma)

    def _allocate(self, length: int) -> _Slot:
        with Transaction(f"{self.name} allocate", boundary=True) as txn:
            dmabuf = self.exporter.allocate(length, target=self.target, name=f"{self.name}#buf")
            txn.on_undo(dmabuf.put)
            attachment = dmabuf.attach(self.device)
            txn.on_undo(attachment.detach)
            sg = attachment.map(DmaDirection.BIDIRECTIONAL)
        return _Slot(dmabuf, attachment, sg, imported=False)

    def release(self, description: OpenFile) -> None:
        with lock_of(self.system):
            slot = self._slots.pop(description.id, None)
            if slot is not None:
                slot.close()

    # -- ioctls ------------------------------------------------------------------------------

    def _description(self, call: str, process: Process, fd: int) -> OpenFile:
        description = process.file(fd)
        if description.file is not self:
            raise InvalidArgumentError(
                f"{call}: fd {fd} of {process.name}[{process.pid}] is "
                f"{description.file.name}, not {self.name}"
            )
        return description

    def _slot(self, call: str, process: Process, fd: int) -> _Slot:
        key = self._description(call, process, fd).id
        slot = self._slots.get(key)
        if slot is None:
            raise StateError(f"{call}: fd {fd} has no buffer yet; mmap it first")
        return slot

    def dev_addr(self, process: Process, fd: int) -> int:
        """Where the node's device sees the buffer of ``fd`` (PMEM's ``GET_PHYS``)."""
        with lock_of(self.system):
            return self._slot(f"{self.name} GET_DEV_ADDR", process, fd).sg.dma_address

    def buffer_size(self, process: Process, fd: int) -> int:
        with lock_of(self.system):
            return self._slot(f"{self.name} GET_SIZE", process, fd).dmabuf.size

    def export(self, process: Process, fd: int, mode: OpenMode = OpenMode.RDWR) -> int:
        """Export ``fd``'s buffer as a dma-buf and return a new fd for it in ``process``.

        The same buffer always gives the same dma-buf (a second call returns another fd
        of it); the memory lives until both this node's description and the dma-buf are
        gone.
        """
        call = f"{self.name} EXPORT"
        with lock_of(self.system):
            slot = self._slot(call, process, fd)
            if slot.imported:
                raise StateError(
                    f"{call}: fd {fd} has no buffer of its own to export; it imported "
                    f"{slot.dmabuf.name}"
                )
            return slot.dmabuf.install_fd(process, mode)

    def import_dmabuf(self, process: Process, fd: int, dmabuf_fd: int) -> int:
        """Attach the node's device to the dma-buf behind ``dmabuf_fd`` and map it for
        ``fd`` (which must have no buffer yet); returns the device address.

        The access mode of ``dmabuf_fd`` bounds everything the node does with the
        buffer, not the mode ``fd`` was opened with: granted read-only, the device maps
        it ``TO_DEVICE`` (its writes fault) and mmaps of ``fd`` are read-only.
        """
        call = f"{self.name} IMPORT"
        description = self._description(call, process, fd)
        key = description.id
        with lock_of(self.system):
            if key in self._slots:
                raise StateError(f"{call}: fd {fd} already has a buffer")
            with Transaction(call, boundary=True) as txn:
                dmabuf = dma_buf_get(process, dmabuf_fd)
                txn.on_undo(dmabuf.put)
                grant = process.file(dmabuf_fd).get()
                txn.on_undo(grant.put)
                attachment = dmabuf.attach(self.device)
                txn.on_undo(attachment.detach)
                writable = dmabuf.writable and grant.mode.writable
                direction = DmaDirection.BIDIRECTIONAL if writable else DmaDirection.TO_DEVICE
                sg = attachment.map(direction)
            self._slots[key] = _Slot(dmabuf, attachment, sg, imported=True, grant=grant)
            return sg.dma_address


def register_dev_nodes(
    table: ProcessTable,
    exporter: VcmExporter | None = None,
    *,
    target: TargetChoice = EXPORTER_DEFAULT,
) -> dict[str, VcmDevNode]:
    """Create and register ``/dev/<context>`` for every SMMU context a device sits
    behind.  Devices sharing a context (an IOMMU group) share its one node, which maps
    for the first of them by name: the group has one table and one domain, so every
    member reaches what it maps."""
    system = table.system
    exp = exporter if exporter is not None else VcmExporter(system, "devnode")
    nodes: dict[str, VcmDevNode] = {}
    for name, dev in sorted(system.devices.items()):
        if not isinstance(dev, SmmuDevice) or f"/dev/{dev.ctx.name}" in nodes:
            continue
        node = VcmDevNode(system, name, exp, target=target)
        table.register(node.path, node)
        nodes[node.path] = node
    return nodes
