"""A virtual memory area: one ``mmap`` of a process, and the driver's way to fill it.

A file's :meth:`~vcmm.proc.file.File.mmap` hook receives the new :class:`Vma` and
calls :meth:`Vma.remap` once with the memory for the whole area: physical pages (what
``remap_pfn_range``/``vm_map_pages`` do) or a VCMM physical allocation and an offset
into it, the memory type they need (a non-coherent DMA buffer is mapped
non-cacheable, like its kernel alias) and optional :class:`~vcmm.proc.file.VmaOps` so
the exporter can count user mappings.  The process then owns the mapping:
protections, splitting on a partial ``munmap``, and tearing it down.

Behind every VMA is a reservation of the process's VCM (``res``), backed by a view
(``view``) of the memory (``source``): see :mod:`vcmm.proc.usermap`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vcmm.attrs import MemType
from vcmm.checks import is_int
from vcmm.core.objects import PhysMem
from vcmm.core.physical import window
from vcmm.errors import AlignmentError, InvalidArgumentError, StateError
from vcmm.proc.flags import MapFlags, Prot
from vcmm.proc.usermap import Source, UserPiece, user_attr
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size

if TYPE_CHECKING:
    from vcmm.core.objects import Reservation
    from vcmm.proc.file import OpenFile, VmaOps
    from vcmm.proc.process import Process

#: What :meth:`Vma.remap` takes: pages (optionally with their chunks) or an allocation.
Pieces = Sequence[UserPiece | AddressRange | tuple[AddressRange, AddressRange]] | PhysMem


class Vma:
    """``[start, start+length)`` of one process, mapping ``pgoff`` pages into a file."""

    def __init__(
        self,
        process: Process,
        start: int,
        length: int,
        prot: Prot,
        flags: MapFlags,
        pgoff: int,
        file: OpenFile | None,
    ) -> None:
        self.process = process
        self.start = start
        self.length = length
        self.prot = prot
        self.flags = flags
        self.pgoff = pgoff
        self.file = file
        self.memtype: MemType | None = None
        self.ops: VmaOps | None = None
        self.pieces: list[UserPiece] = []
        self.populated = False
        #: The reservation of the process's VCM this area is.
        self.res: Reservation | None = None
        #: The memory behind it, the view of it the reservation is backed with, and
        #: where the area's first byte is in the source.
        self.source: Source | None = None
        self.view: PhysMem | None = None
        self.source_offset = 0

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.start, self.length)

    @property
    def npages(self) -> int:
        return self.length // SZ_4K

    @property
    def readable(self) -> bool:
        return bool(self.prot & (Prot.READ | Prot.WRITE))

    @property
    def writable(self) -> bool:
        return bool(self.prot & Prot.WRITE)

    @property
    def accessible(self) -> bool:
        """Whether the area maps anything (``PROT_NONE`` writes no entry)."""
        return bool(self.prot & (Prot.READ | Prot.WRITE | Prot.EXEC))

    def remap(
        self,
        pieces: Pieces,
        memtype: MemType = MemType.NORMAL_WB_WA,
        ops: VmaOps | None = None,
        *,
        offset: int = 0,
    ) -> None:
        """Back the whole area with ``pieces`` (laid end to end) of ``memtype``.

        ``pieces`` is a list of physical ranges (each optionally ``(range, allocation
        chunk)``), or a VCMM :class:`~vcmm.core.objects.PhysMem` whose bytes from
        ``offset`` fill the area (the allocation then cannot be freed while mapped).

        Called once, from the file's ``mmap`` hook.  Refused, changing nothing, when
        the pieces do not add up to the area, are not whole pages, or when the memory
        type disagrees with another mapping of the same memory (the mapping graph's
        rule).  With ``PROT_NONE`` no page-table entry is written (every access
        faults) but the pieces are remembered.
        """
        call = f"mmap of {self.file.file.name if self.file else 'anonymous memory'}"
        if self.populated:
            raise StateError(f"{call}: the VMA at {self.start:#x} is already populated")
        if not isinstance(memtype, MemType):
            raise InvalidArgumentError(f"{call}: memtype {memtype!r} is not a MemType")
        attr = user_attr(call, self.prot, memtype)
        system = self.process.system
        if isinstance(pieces, PhysMem):
            norm = self._window_of(call, pieces, offset)
            source = Source(system, pieces, owned=False)
        else:
            if offset != 0:
                raise InvalidArgumentError(
                    f"{call}: offset {offset!r} only applies to a PhysMem; pieces are laid "
                    "from the area's first byte"
                )
            norm = self._normalise(call, pieces)
            owner = f"{self.process.name}[{self.process.pid}] {call}"
            pages = [p.phys for p in norm]
            # The driver named pages, as remap_pfn_range does: allocated memory (which
            # the wrap pins while mapped) or memory nobody owns, never free or table pages.
            held = system.vcm_phys_owners(pages)
            wrap = system.vcm_phys_wrap(pages, owner=owner, of=held)
            source = Source(system, wrap, owned=True)
        try:
            self.process._populate(self, source, offset, attr)
        except BaseException:
            if source.owned:
                system.vcm_phys_free(source.physmem)
            raise
        self.pieces = norm
        self.memtype = memtype
        self.ops = ops
        self.populated = True
        if ops is not None:
            ops.open(self)

    def _window_of(self, call: str, physmem: PhysMem, offset: object) -> list[UserPiece]:
        if not is_int(offset) or offset < 0:
            raise InvalidArgumentError(f"{call}: offset {offset!r} is not an integer >= 0")
        if offset % SZ_4K:
            raise AlignmentError(f"{call}: offset {offset:#x} is not a multiple of 4 KiB")
        if physmem.freed:
            raise StateError(f"{call}: {physmem.name} was already freed")
        if offset + self.length > physmem.size:
            raise InvalidArgumentError(
                f"{call}: {format_size(self.length)} from offset {offset:#x} does not fit "
                f"{physmem.name} ({format_size(physmem.size)})"
            )
        return [UserPiece(p, c) for p, c in window(physmem, offset, self.length)]

    def _normalise(self, call: str, pieces: Any) -> list[UserPiece]:
        norm: list[UserPiece] = []
        for p in pieces:
            if isinstance(p, AddressRange):
                norm.append(UserPiece.of(p))
            elif isinstance(p, UserPiece):
                norm.append(p)
            elif (
                isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, AddressRange) for x in p)
            ):
                norm.append(UserPiece(p[0], p[1]))
            else:
                raise InvalidArgumentError(f"{call}: piece {p!r} is not an AddressRange")
        total = sum(p.phys.size for p in norm)
        if total != self.length:
            raise InvalidArgumentError(
                f"{call}: the pieces cover {format_size(total)}, the VMA is "
                f"{format_size(self.length)}; remap must fill it exactly"
            )
        for p in norm:
            if p.phys not in p.chunk:
                raise InvalidArgumentError(
                    f"{call}: physical piece {p.phys} lies outside its chunk {p.chunk}"
                )
        return norm

    def pieces_in(self, part: AddressRange) -> list[UserPiece]:
        """The physical pieces behind ``part`` (a page-aligned sub-range of the VMA)."""
        out: list[UserPiece] = []
        pos = self.start
        for p in self.pieces:
            here = AddressRange(pos, p.phys.size)
            inside = here & part
            if inside is not None:
                phys = AddressRange(p.phys.start + inside.start - pos, inside.size)
                out.append(UserPiece(phys, p.chunk))
            pos += p.phys.size
        return out

    def __repr__(self) -> str:
        what = self.file.file.name if self.file else "anon"
        return (
            f"<Vma {self.range} {self.prot!r} {what} pgoff={self.pgoff} "
            f"{self.memtype.value if self.memtype else 'unpopulated'}>"
        )
