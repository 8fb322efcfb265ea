"""A device attached to a dma-buf, and the mapping it gets (``dma_buf_attachment``).

Importers attach and map (``dma_buf_attach``/``dma_buf_map_attachment``): an
:class:`Attachment` mapped for a direction yields a
:class:`~vcmm.dma.sg.MappedScatterList` of device addresses *in the importer's address
space*, made by the exporter with ``dma_map_sg`` on the importing device, through the
system's one DMA API (:func:`vcmm.share.state.dma_api`).  The buffer keeps the list of
its attachments (:meth:`DmaBuf.attach`, :meth:`DmaBuf.detach`); mapping and unmapping
are the attachment's own calls, made under the buffer's lock.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from vcmm.attrs import DmaDirection
from vcmm.checks import is_int
from vcmm.dma.attrs import DmaAttr
from vcmm.dma.sg import MappedScatterList
from vcmm.errors import InvalidArgumentError, NotFoundError, NotMappedError, StateError
from vcmm.hw.bus import BusMaster
from vcmm.proc.errors import PermissionDeniedError
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.dma.api import DmaApi
    from vcmm.hw.master import AnyMaster
    from vcmm.share.dmabuf import DmaBuf

_attachment_ids = itertools.count(1)


def _check_map_args(call: str, direction: object, attrs: object) -> DmaAttr:
    if not isinstance(direction, DmaDirection) or direction is DmaDirection.NONE:
        raise InvalidArgumentError(
            f"{call}: direction {direction!r} must be TO_DEVICE, FROM_DEVICE or BIDIRECTIONAL"
        )
    if not is_int(attrs) or attrs & ~int(DmaAttr.SKIP_CPU_SYNC):
        raise InvalidArgumentError(
            f"{call}: attrs {attrs!r} may only hold DmaAttr.SKIP_CPU_SYNC "
            f"({int(DmaAttr.SKIP_CPU_SYNC):#x})"
        )
    return DmaAttr(attrs)


class Attachment:
    """A device attached to a dma-buf (``struct dma_buf_attachment``).

    ``api`` is the system's DMA API, through which the exporter maps the buffer for
    the device; ``dma_attrs`` are the attributes of the current mapping
    (``attach->dma_map_attrs``).
    """

    def __init__(self, dmabuf: DmaBuf, device: AnyMaster, api: DmaApi) -> None:
        self.id = next(_attachment_ids)
        self.dmabuf = dmabuf
        self.device = device
        self.api = api
        self.dma_attrs = DmaAttr.NONE
        self.sg: MappedScatterList | None = None
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
            return isinstance(self.device, BusMaster) and self.device.coherent

    def map(self, direction: DmaDirection, attrs: int = DmaAttr.NONE) -> MappedScatterList:
        """``dma_buf_map_attachment``: the buffer in this device's address space.

        ``attrs`` may hold ``DmaAttr.SKIP_CPU_SYNC``: the map and the unmap then leave
        the CPU cache alone (the caller maintains it).
        """
        dmabuf = self.dmabuf
        call = f"{dmabuf.name}.map_attachment"
        with dmabuf.lock:
            dmabuf.own(call, self)
            dma_attrs = _check_map_args(call, direction, attrs)
            if self.sg is not None:
                raise StateError(
                    f"{call}: {self.device.name}'s attachment is already mapped "
                    f"({self.sg.direction.name}); unmap it first"
                )
            if direction is not DmaDirection.TO_DEVICE and not dmabuf.writable:
                raise PermissionDeniedError(
                    f"{call}: {dmabuf.name} was exported read-only; {self.device.name} may "
                    "only map it TO_DEVICE"
                )
            with Transaction(call, boundary=True) as txn:
                self.dma_attrs = dma_attrs
                txn.on_undo(setattr, self, "dma_attrs", DmaAttr.NONE)
                sg = dmabuf.exporter.map_attachment(dmabuf, self, direction)
            self.sg = sg
            return sg

    def unmap(self, sg: MappedScatterList) -> None:
        """``dma_buf_unmap_attachment``: the device loses its mapping (later accesses
        fault on a device behind an IOMMU)."""
        dmabuf = self.dmabuf
        call = f"{dmabuf.name}.unmap_attachment"
        with dmabuf.lock:
            dmabuf.own(call, self)
            if self.sg is None or sg is not self.sg:
                raise NotMappedError(
                    f"{call}: {sg!r} is not the mapping {self.device.name}'s attachment made "
                    f"(it has {'none' if self.sg is None else 'another'})"
                )
            dmabuf.exporter.unmap_attachment(dmabuf, self, sg)
            self.sg = None
            self.dma_attrs = DmaAttr.NONE

    def detach(self) -> None:
        """``dma_buf_detach``; the attachment's reference on the buffer is dropped."""
        self.dmabuf.detach(self)
