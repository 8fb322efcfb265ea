"""The VCMM as a dma-buf exporter: physical allocations shared by reference.

:class:`VcmExporter` exports a :class:`~vcmm.core.objects.PhysMem` (one allocation
from a memory target) as a :class:`~vcmm.share.dmabuf.DmaBuf`.  Every mapping of the
buffer goes through the VCMM core, so it is an edge of the mapping graph and obeys its
rules:

- an importer's mapping is ``dma_map_sg`` of the buffer's chunks on the importing
  device, through the system's one DMA API (:mod:`vcmm.share.dmamap`): an IOVA in the
  device's DMA domain, or bus addresses for a physically addressed device.  A device
  mapped ``TO_DEVICE`` gets a read-only mapping, so a stray write faults;
- user mappings are ``remap`` of the allocation's pieces into the process (the
  process model makes them reservations of the process's VCM);
- the kernel's ``vmap`` is a reservation in a VMM VCM.

A buffer is *cached* (write-back, like kernel RAM) or *uncached* (Normal
non-cacheable everywhere, which needs a carve-out because the kernel's linear map of
RAM is cacheable and every alias must agree).  The DMA API gives a new alias the
memory type the existing aliases have; kernel RAM always has one (the linear map),
but carve-out memory nobody maps yet has none, and the DMA API would then choose by
the device's coherence (non-cacheable for a non-coherent device), which may disagree
with the buffer's type and make the processes' mappings impossible.  So before the
first device mapping of such a buffer the exporter maps it into the kernel with the
buffer's type, for the buffer's life (its *pin*): that alias fixes the type every
importer then gets, as the linear map does for RAM.  (Better would be a DMA API that
takes the memory type of memory without aliases from the caller.)

Every alias's shareable bit is the core's business: it rewrites all of them (the
processes' too, which are reservations of their VCMs) when the number of address
spaces mapping the memory changes, so any order of process, device and kernel
mappings works.

Cache maintenance follows the DMA API: mapping an attachment hands the buffer to the
device, unmapping hands it back, and a CPU-access bracket syncs every mapped
attachment for the CPU at its start and for the device at its end, on the bracket's
byte range only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection, MemType
from vcmm.checks import is_int
from vcmm.core.flags import Attr, PhysAttr
from vcmm.core.interfaces import VcmmApi
from vcmm.core.objects import PhysMem, Reservation
from vcmm.core.ownership import Pin
from vcmm.dma.sg import MappedScatterList
from vcmm.errors import InvalidArgumentError, NotMappedError, StateError
from vcmm.proc.usermap import UserPiece
from vcmm.ranges import AddressRange
from vcmm.share import dmamap
from vcmm.share.attachment import Attachment
from vcmm.share.dmabuf import DmaBuf
from vcmm.share.lock import lock_of
from vcmm.share.ops import Exporter
from vcmm.share.state import EXPORTER_DEFAULT, TargetChoice, exporter_target, state_of
from vcmm.sizes import SZ_4K, align_up
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.file import VmaOps
    from vcmm.proc.vma import Vma


@dataclass
class VcmBuffer:
    """What a :class:`VcmExporter` keeps per exported buffer (``dmabuf.priv``)."""

    physmem: PhysMem
    cached: bool
    owned: bool
    on_release: Callable[[], None] | None = None
    vmaps: dict[int, Reservation] = field(default_factory=dict)
    #: The exporter's own kernel mapping of a buffer outside the linear map.
    pin: Reservation | None = None
    #: The core's pin on ``physmem``: it cannot be freed while the dma-buf lives.
    hold: Pin | None = None

    @property
    def memtype(self) -> MemType:
        return MemType.NORMAL_WB_WA if self.cached else MemType.NORMAL_NC

    def attr(self, write: bool) -> Attr:
        """Reservation attributes for a mapping that may (or may not) write."""
        rw = Attr.RW if write else Attr.READ
        return rw if self.cached else rw | Attr.NONCACHED

    def pieces(self, offset: int, length: int) -> list[tuple[AddressRange, AddressRange]]:
        """(physical piece, its chunk) behind bytes ``[offset, offset+length)``."""
        return chunk_pieces(self.physmem, offset, length)


def chunk_pieces(
    physmem: PhysMem, offset: int, length: int
) -> list[tuple[AddressRange, AddressRange]]:
    """(physical piece, its chunk) behind bytes ``[offset, offset+length)`` of an
    allocation whose chunks are laid end to end."""
    want = AddressRange(offset, length)
    out = []
    pos = 0
    for chunk in physmem.chunk_ranges:
        inside = AddressRange(pos, chunk.size) & want
        if inside is not None:
            out.append((AddressRange(chunk.start + inside.start - pos, inside.size), chunk))
        pos += chunk.size
    return out


class VcmExporter(Exporter):
    """Exports VCMM physical allocations; the same allocation always gives one dma-buf."""

    def __init__(self, system: VcmmApi, name: str = "vcm") -> None:
        super().__init__(system)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"VcmExporter name {name!r} must be a non-empty string")
        self.name = name
        self.state = state_of(system)
        self._exported: dict[int, DmaBuf] = {}

    def __repr__(self) -> str:
        return f"<VcmExporter {self.name} exported={len(self._exported)}>"

    @property
    def exported(self) -> tuple[DmaBuf, ...]:
        """Live dma-bufs of this exporter."""
        return tuple(self._exported.values())

    # -- making buffers ------------------------------------------------------------------------

    def allocate(
        self,
        size: int,
        *,
        target: TargetChoice = EXPORTER_DEFAULT,
        contiguous: bool = False,
        cached: bool = True,
        writable: bool = True,
        name: str = "",
        attr: PhysAttr = PhysAttr.NONE,
    ) -> DmaBuf:
        """Allocate zeroed memory (whole pages) and export it; freed on release.

        ``target`` is a memory target as for ``vcm_phys_alloc`` (by default the
        platform's exporter target, kernel RAM unless its ``[dma]`` table says otherwise:
        a dma-buf system heap); ``contiguous`` asks for one physical chunk (a
        physically addressed importer without scatter-gather needs it);
        ``attr`` adds allocation attributes (alignment, block sizes: a buffer collection
        asks for blocks and alignments its IOMMUs map as large pages).
        """
        call = f"{self.name}.allocate"
        if not is_int(size) or size <= 0:
            raise InvalidArgumentError(f"{call}: size {size!r} must be a positive integer")
        for label, flag in (("contiguous", contiguous), ("cached", cached)):
            if not isinstance(flag, bool):
                raise InvalidArgumentError(f"{call}: {label}={flag!r} is not a bool")
        target = exporter_target(self.system, target)
        if target is not None and not cached:
            self._check_uncached(call, target)
        length = align_up(size, SZ_4K)
        if not isinstance(attr, PhysAttr):
            raise InvalidArgumentError(f"{call}: attr {attr!r} is not a PhysAttr")
        if contiguous:
            attr = attr | PhysAttr.CONTIGUOUS
        with lock_of(self.system), Transaction(call, boundary=True) as txn:
            physmem = self.system.vcm_phys_alloc(target, length, attr)
            txn.on_undo(self.system.vcm_phys_free, physmem)
            if not cached:
                self._check_uncached_memory(call, physmem)
            for chunk in physmem.chunk_ranges:
                self.system.cpu.cache.invalidate(chunk.start, chunk.size)
                self.system.memory.fill(chunk.start, chunk.size, 0)
            return self.export(physmem, cached=cached, writable=writable, owned=True, name=name)

    def _linear(self, physmem: PhysMem) -> bool:
        """Whether the kernel's linear map (cacheable) covers every piece of ``physmem``
        (an allocation, a view of one, or a wrap of someone's pages)."""
        graph = self.system.graph
        for piece in physmem.chunk_ranges:
            window = graph.linear_alias(piece)
            if window is None or piece not in window.phys:
                return False
        return True

    def _check_uncached_memory(self, call: str, physmem: PhysMem) -> None:
        if any(self.system.graph.linear_alias(p) is not None for p in physmem.chunk_ranges):
            raise InvalidArgumentError(
                f"{call}: {physmem.name} is kernel RAM, mapped cacheable by the linear map; "
                "an uncached buffer must come from a carve-out (every alias of a page must "
                "agree on cache policy)"
            )

    def _check_uncached(self, call: str, target: str) -> None:
        if self.system.target(target).linear_mapped:
            raise InvalidArgumentError(
                f"{call}: target {target!r} is kernel RAM, mapped cacheable by the linear "
                "map; an uncached buffer must come from a carve-out (every alias of a page "
                "must agree on cache policy)"
            )

    def export(
        self,
        physmem: PhysMem,
        *,
        cached: bool = True,
        writable: bool = True,
        owned: bool = False,
        on_release: Callable[[], None] | None = None,
        name: str = "",
    ) -> DmaBuf:
        """``dma_buf_export``: share ``physmem``; the caller gets a reference.

        Exporting an allocation that is already exported returns the same dma-buf with
        a new reference, never a second buffer (001 L41-47); the sharing options must
        then be the same.  The allocation is pinned while the dma-buf lives:
        ``vcm_phys_free`` of it is refused, naming the dma-buf, so its pages are never
        handed to a new owner under an importer's or a process's mapping.  ``owned``:
        free the allocation at release; ``on_release``: called at release (an owner that
        keeps the memory drops its hold there).  An
        allocation outside the linear map is mapped into the kernel with the buffer's
        memory type (refused, nothing changed, if an existing alias has another).
        """
        call = f"{self.name}.export"
        if not isinstance(physmem, PhysMem) or physmem.freed:
            raise InvalidArgumentError(f"{call}: {physmem!r} is not a live PhysMem")
        if on_release is not None and not callable(on_release):
            raise InvalidArgumentError(f"{call}: on_release {on_release!r} is not callable")
        with lock_of(self.system):
            existing = self._exported.get(physmem.id)
            if existing is not None:
                buf: VcmBuffer = existing.priv
                if (buf.cached, existing.writable) != (cached, writable):
                    raise InvalidArgumentError(
                        f"{call}: {physmem.name} is already exported as {existing.name} with "
                        f"cached={buf.cached}, writable={existing.writable}; a second export "
                        "must not change how it is shared"
                    )
                return existing.get()
            if not cached:
                self._check_uncached_memory(call, physmem)
            size = align_up(physmem.len, SZ_4K)
            buffer = VcmBuffer(physmem, cached, owned, on_release)
            dmabuf = DmaBuf(
                self, size, name or f"{self.name}:{physmem.name}", writable=writable, priv=buffer
            )
            buffer.hold = self.system.vcm_phys_pin(physmem, holder=f"dma-buf {dmabuf.name}")
            self._exported[physmem.id] = dmabuf
            return dmabuf

    # -- dma_buf_ops -----------------------------------------------------------------------------

    def attach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Refuse early a device the DMA API does not serve, or a physically addressed
        device that cannot reach every piece of the buffer (bus window and DMA mask)."""
        device = attachment.device
        call = f"attach {device.name} to {dmabuf.name}"
        api = attachment.api
        if self.state.serving(call, api, device) != "direct":
            return
        buf: VcmBuffer = dmabuf.priv
        mask = api.params(device).mask
        for piece, _ in buf.pieces(0, dmabuf.size):
            try:
                first, last = device.phys_to_bus(piece.start), device.phys_to_bus(piece.last)
            except NotMappedError as exc:
                raise InvalidArgumentError(f"{call}: the device cannot reach it: {exc}") from None
            if last > mask or last - first != piece.size - 1:
                raise InvalidArgumentError(
                    f"{call}: the device cannot reach {piece}: bus addresses "
                    f"[{first:#x}, {last:#x}] are not one run below its DMA mask {mask:#x}"
                )

    def map_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, direction: DmaDirection
    ) -> MappedScatterList:
        """``map_dma_buf``: ``dma_map_sg`` of the buffer's chunks on the importer."""
        buf: VcmBuffer = dmabuf.priv
        device = attachment.device
        api = attachment.api
        call = f"map {dmabuf.name} for {device.name}"
        pieces = [p for p, _ in buf.pieces(0, dmabuf.size)]
        with Transaction(call, boundary=True) as txn:
            if self._pin(dmabuf):
                txn.on_undo(self._unpin, buf)
            label = f"attachment #{attachment.id} of {device.name} to {dmabuf.name}"
            mapping = dmamap.map_pieces(
                call, api, device, pieces, direction, attachment.dma_attrs, label
            )
        attachment.priv = mapping
        return MappedScatterList(device.name, direction, mapping.entries, mapping.table)

    def _pin(self, dmabuf: DmaBuf) -> bool:
        """Map a carve-out buffer nobody maps yet into the kernel, for good (see the
        module docstring); whether this call did."""
        buf: VcmBuffer = dmabuf.priv
        physmem = buf.physmem
        graph = self.system.graph
        if (
            buf.pin is not None
            or self._linear(physmem)
            or any(graph.of_chunk(c) for c in physmem.chunk_ranges)
        ):
            return False
        buf.pin = self.state.map_kernel(physmem, dmabuf.size, buf.attr(dmabuf.writable))
        return True

    def _unpin(self, buf: VcmBuffer) -> None:
        if buf.pin is not None:
            self.state.unmap_kernel(buf.pin)
            buf.pin = None

    def unmap_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, sg: MappedScatterList
    ) -> None:
        """``unmap_dma_buf``: ``dma_unmap_sg`` (the device's later accesses fault)."""
        mapping: dmamap.DeviceMapping = attachment.priv
        dmamap.unmap(mapping)
        attachment.priv = None

    def needs_sync(self, dmabuf: DmaBuf) -> bool:
        buf: VcmBuffer = dmabuf.priv
        if not buf.cached:
            return False
        return any(not a.coherent for a in dmabuf.attachments)

    def _sync_mapped(self, dmabuf: DmaBuf, offset: int, length: int, for_cpu: bool) -> None:
        for att in dmabuf.attachments:
            if att.sg is not None:
                dmamap.sync_range(att.priv, offset, length, for_cpu=for_cpu)

    def begin_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """``dma_sync_*_for_cpu`` on every mapped attachment, over the range: lines a
        device may have written under are dropped, and the CPU owns the bytes."""
        self._sync_mapped(dmabuf, offset, length, for_cpu=True)

    def end_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """``dma_sync_*_for_device`` on every mapped attachment, over the range: the
        CPU's writes reach memory and the devices own the bytes again."""
        self._sync_mapped(dmabuf, offset, length, for_cpu=False)

    def cpu_ranges(self, dmabuf: DmaBuf, offset: int, length: int) -> list[AddressRange]:
        buf: VcmBuffer = dmabuf.priv
        return [piece for piece, _ in buf.pieces(offset, length)]

    def mmap(self, dmabuf: DmaBuf, vma: Vma, ops: VmaOps) -> None:
        buf: VcmBuffer = dmabuf.priv
        pieces = [UserPiece(p, c) for p, c in buf.pieces(vma.pgoff * SZ_4K, vma.length)]
        vma.remap(pieces, buf.memtype, ops)

    def vmap(self, dmabuf: DmaBuf) -> int:
        buf: VcmBuffer = dmabuf.priv
        res = self.state.map_kernel(buf.physmem, dmabuf.size, buf.attr(dmabuf.writable))
        assert res.addr is not None
        buf.vmaps[res.addr] = res
        return res.addr

    def vunmap(self, dmabuf: DmaBuf, va: int) -> None:
        buf: VcmBuffer = dmabuf.priv
        res = buf.vmaps.pop(va, None)
        if res is None:
            raise StateError(f"vunmap of {dmabuf.name}: nothing is mapped at {va:#x}")
        self.state.unmap_kernel(res)

    def release(self, dmabuf: DmaBuf) -> None:
        buf: VcmBuffer = dmabuf.priv
        self._exported.pop(buf.physmem.id, None)
        self._unpin(buf)
        if buf.hold is not None:
            self.system.vcm_phys_unpin(buf.hold)
            buf.hold = None
        if buf.owned:
            self.system.vcm_phys_free(buf.physmem)
        if buf.on_release is not None:
            buf.on_release()
