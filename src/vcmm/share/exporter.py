"""The VCMM as a dma-buf exporter: physical allocations shared by reference.

:class:`VcmExporter` exports a :class:`~vcmm.core.objects.PhysMem` (one allocation
from a memory target) as a :class:`~vcmm.share.dmabuf.DmaBuf`.  Everything it does
goes through the VCMM core, so every mapping of the buffer is an edge of the mapping
graph and obeys its rules:

- importers' mappings come from :mod:`vcmm.share.spaces` (a reservation in the
  device's IOMMU VCM, or a one-to-one VCM for a physically addressed device); a
  device mapped ``TO_DEVICE`` gets a read-only mapping, so a stray write faults;
- user mappings are ``remap`` of the allocation's chunks into the process (the
  process model enters them into the graph);
- the kernel's ``vmap`` is a reservation in the kernel's VMM VCM.

Cache maintenance uses the CPU's data cache on the physical pieces of the requested
byte range only.  A buffer is *cached* (write-back, like kernel RAM) or *uncached*
(Normal non-cacheable everywhere, which needs a carve-out because the kernel's linear
map of RAM is cacheable and every alias must agree); an uncached buffer never needs
cache maintenance, nor does a cached one whose attached devices all snoop the cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vcmm.attrs import DmaDirection, MemType
from vcmm.core.flags import Attr, PhysAttr
from vcmm.core.objects import PhysMem, Reservation
from vcmm.errors import InvalidArgumentError, StateError, VcmmError
from vcmm.proc.usermap import UserPiece
from vcmm.ranges import AddressRange
from vcmm.share.dmabuf import Attachment, DmaBuf, Exporter, ScatterList
from vcmm.share.spaces import SHARE_LOCK, DeviceMapping, path_of, spaces_of
from vcmm.sizes import SZ_4K, align_up

if TYPE_CHECKING:
    from vcmm.proc.vma import Vma


@dataclass
class VcmBuffer:
    """What a :class:`VcmExporter` keeps per exported buffer (``dmabuf.priv``)."""

    physmem: PhysMem
    cached: bool
    owned: bool
    on_release: Callable[[], None] | None = None
    vmaps: dict[int, Reservation] = field(default_factory=dict)

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

    def __init__(self, system: Any, name: str = "vcm") -> None:
        super().__init__(system)
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"VcmExporter name {name!r} must be a non-empty string")
        self.name = name
        self.spaces = spaces_of(system)
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
        target: str | None = "ebi",
        contiguous: bool = False,
        cached: bool = True,
        writable: bool = True,
        name: str = "",
    ) -> DmaBuf:
        """Allocate zeroed memory (whole pages) and export it; freed on release.

        ``target`` is a memory target as for ``vcm_phys_alloc`` (kernel RAM by default,
        like a dma-buf system heap); ``contiguous`` asks for one physical chunk, which a
        physically addressed importer (the camera) needs.
        """
        call = f"{self.name}.allocate"
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise InvalidArgumentError(f"{call}: size {size!r} must be a positive integer")
        for label, flag in (("contiguous", contiguous), ("cached", cached)):
            if not isinstance(flag, bool):
                raise InvalidArgumentError(f"{call}: {label}={flag!r} is not a bool")
        if target is not None and not cached:
            self._check_uncached(call, target)
        length = align_up(size, SZ_4K)
        attr = PhysAttr.CONTIGUOUS if contiguous else PhysAttr.NONE
        with SHARE_LOCK:
            physmem = self.system.vcm_phys_alloc(target, length, attr)
            try:
                if not cached:
                    self._check_uncached(call, physmem.target)
                for chunk in physmem.chunk_ranges:
                    self.system.cpu.cache.invalidate(chunk.start, chunk.size)
                    self.system.memory.fill(chunk.start, chunk.size, 0)
                return self.export(physmem, cached=cached, writable=writable, owned=True, name=name)
            except BaseException:
                self.system.vcm_phys_free(physmem)
                raise

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
        then be the same.  ``owned``: free the allocation at release; ``on_release``:
        called at release (an owner that keeps the memory drops its hold there).
        """
        call = f"{self.name}.export"
        if not isinstance(physmem, PhysMem) or physmem.freed:
            raise InvalidArgumentError(f"{call}: {physmem!r} is not a live PhysMem")
        if on_release is not None and not callable(on_release):
            raise InvalidArgumentError(f"{call}: on_release {on_release!r} is not callable")
        with SHARE_LOCK:
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
                self._check_uncached(call, physmem.target)
            size = align_up(physmem.len, SZ_4K)
            buffer = VcmBuffer(physmem, cached, owned, on_release)
            dmabuf = DmaBuf(
                self, size, name or f"{self.name}:{physmem.name}", writable=writable, priv=buffer
            )
            self._exported[physmem.id] = dmabuf
            return dmabuf

    # -- dma_buf_ops -----------------------------------------------------------------------------

    def attach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        """Refuse early a physically addressed device the buffer cannot serve; keep an
        IOMMU device's context running while it is attached."""
        device = attachment.device
        if path_of(self.system, device) != "physical":
            self.spaces.hold(device)
            return
        buf: VcmBuffer = dmabuf.priv
        chunks = buf.physmem.chunk_ranges
        expected, covered = chunks[0].start, 0
        for chunk in chunks:
            if covered >= dmabuf.size:
                break
            if chunk.start != expected:
                raise InvalidArgumentError(
                    f"attach {device.name} to {dmabuf.name}: a physically addressed device "
                    f"needs contiguous memory, and {buf.physmem.name} jumps from "
                    f"{expected:#x} to {chunk.start:#x}; allocate it contiguous"
                )
            expected, covered = chunk.end, covered + chunk.size
        for pa in (chunks[0].start, chunks[0].start + dmabuf.size - 1):
            try:
                device.phys_to_bus(pa)
            except VcmmError as exc:
                raise InvalidArgumentError(
                    f"attach {device.name} to {dmabuf.name}: the device cannot reach it: {exc}"
                ) from None

    def detach(self, dmabuf: DmaBuf, attachment: Attachment) -> None:
        self.spaces.unhold(attachment.device)

    def map_attachment(
        self, dmabuf: DmaBuf, attachment: Attachment, direction: DmaDirection
    ) -> ScatterList:
        buf: VcmBuffer = dmabuf.priv
        write = direction is not DmaDirection.TO_DEVICE
        mapping = self.spaces.map_device(
            attachment.device, buf.physmem, dmabuf.size, buf.attr(write), direction
        )
        attachment.priv = mapping
        return ScatterList(attachment.device.name, direction, mapping.entries)

    def unmap_attachment(self, dmabuf: DmaBuf, attachment: Attachment, sg: ScatterList) -> None:
        mapping: DeviceMapping = attachment.priv
        self.spaces.unmap_device(mapping)
        attachment.priv = None

    def needs_sync(self, dmabuf: DmaBuf) -> bool:
        buf: VcmBuffer = dmabuf.priv
        if not buf.cached:
            return False
        return any(not getattr(a.device, "coherent", False) for a in dmabuf.attachments)

    def begin_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """Drop cache lines of the range: a device may have written memory under them
        (and a partly written line must not be merged with stale neighbours)."""
        if not self.needs_sync(dmabuf):
            return
        buf: VcmBuffer = dmabuf.priv
        for phys, _ in buf.pieces(offset, length):
            self.system.cpu.cache.invalidate(phys.start, phys.size)

    def end_cpu_access(
        self, dmabuf: DmaBuf, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """Write the CPU's dirty lines of the range back so devices see them."""
        if not write or not self.needs_sync(dmabuf):
            return
        buf: VcmBuffer = dmabuf.priv
        for phys, _ in buf.pieces(offset, length):
            self.system.cpu.cache.clean(phys.start, phys.size)

    def mmap(self, dmabuf: DmaBuf, vma: Vma, ops: Any) -> None:
        buf: VcmBuffer = dmabuf.priv
        pieces = [UserPiece(p, c) for p, c in buf.pieces(vma.pgoff * SZ_4K, vma.length)]
        vma.remap(pieces, buf.memtype, ops)

    def vmap(self, dmabuf: DmaBuf) -> int:
        buf: VcmBuffer = dmabuf.priv
        res = self.spaces.map_kernel(buf.physmem, dmabuf.size, buf.attr(dmabuf.writable))
        assert res.addr is not None
        buf.vmaps[res.addr] = res
        return res.addr

    def vunmap(self, dmabuf: DmaBuf, va: int) -> None:
        buf: VcmBuffer = dmabuf.priv
        res = buf.vmaps.pop(va, None)
        if res is None:
            raise StateError(f"vunmap of {dmabuf.name}: nothing is mapped at {va:#x}")
        self.spaces.unmap_kernel(res)

    def release(self, dmabuf: DmaBuf) -> None:
        buf: VcmBuffer = dmabuf.priv
        self._exported.pop(buf.physmem.id, None)
        if buf.owned:
            self.system.vcm_phys_free(buf.physmem)
        if buf.on_release is not None:
            buf.on_release()
