"""The exporter's operations on its dma-bufs (``struct dma_buf_ops``).

A :class:`~vcmm.share.dmabuf.DmaBuf` calls these and nothing else of its exporter, so an
exporter is any subclass of :class:`Exporter`: the VCMM's (:mod:`vcmm.share.exporter`)
or a test's.  Defaults follow the 2012 patches: ``mmap`` and ``vmap`` are optional and
refused when not provided; the CPU-access hooks are optional and do nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.core.interfaces import VcmmApi
from vcmm.errors import InvalidArgumentError
from vcmm.share.state import check_system, state_of

if TYPE_CHECKING:
    from vcmm.dma.sg import MappedScatterList
    from vcmm.proc.file import VmaOps
    from vcmm.proc.vma import Vma
    from vcmm.ranges import AddressRange
    from vcmm.share.attachment import Attachment
    from vcmm.share.dmabuf import DmaBuf


class Exporter:
    """The exporter's operations (``struct dma_buf_ops``), called by ``DmaBuf``.

    Subclasses that hold real memory implement the rest (see
    :class:`vcmm.share.exporter.VcmExporter`).  ``system`` is the booted system whose
    devices may import the exporter's buffers.
    """

    def __init__(self, system: VcmmApi) -> None:
        self.system = check_system("Exporter", system)
        state_of(system)

    def attach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Accept or refuse a device (e.g. one that cannot reach the memory)."""

    def detach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Forget a device."""

    def map_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, direction: DmaDirection
    ) -> MappedScatterList:
        raise NotImplementedError

    def unmap_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, sg: MappedScatterList
    ) -> None:
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

    def cpu_ranges(self, dmabuf: DmaBuf, offset: int, length: int) -> list[AddressRange]:
        """The physical bytes behind ``[offset, offset+length)`` of the buffer, for the
        DMA-debug checker (an exporter that does not know them returns none)."""
        return []

    def mmap(self, dmabuf: DmaBuf, vma: Vma, ops: VmaOps) -> None:
        raise InvalidArgumentError(
            f"mmap of {dmabuf.name}: its exporter does not support mmap (ENODEV)"
        )

    def vmap(self, dmabuf: DmaBuf) -> int:
        raise InvalidArgumentError(f"vmap of {dmabuf.name}: its exporter does not support vmap")

    def vunmap(self, dmabuf: DmaBuf, va: int) -> None:
        raise NotImplementedError

    def release(self, dmabuf: DmaBuf) -> None:
        """The last reference is gone: free the memory."""
