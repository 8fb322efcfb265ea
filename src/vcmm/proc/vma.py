"""A virtual memory area: one ``mmap`` of a process, and the driver's way to fill it.

A file's :meth:`~vcmm.proc.file.File.mmap` hook receives the new :class:`Vma` and
calls :meth:`Vma.remap` once with the physical pages for the whole area (what
``remap_pfn_range``/``vm_map_pages`` do), the memory type they need (a non-coherent
DMA buffer is mapped non-cacheable, like its kernel alias) and optional
:class:`~vcmm.proc.file.VmaOps` so the exporter can count user mappings.  The
process then owns the mapping: protections, splitting on a partial ``munmap``, and
tearing it down.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from vcmm.attrs import MemType
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.proc.flags import MapFlags, Prot
from vcmm.proc.usermap import UserPiece
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size

if TYPE_CHECKING:
    from vcmm.proc.file import OpenFile, VmaOps
    from vcmm.proc.process import Process


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
        self.key: int | None = None
        self.populated = False

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

    def remap(
        self,
        pieces: Sequence[UserPiece | AddressRange | tuple[AddressRange, AddressRange]],
        memtype: MemType = MemType.NORMAL_WB_WA,
        ops: VmaOps | None = None,
    ) -> None:
        """Back the whole area with ``pieces`` (laid end to end) of ``memtype``.

        A piece is a physical range, or ``(physical range, allocation chunk)`` when it
        is part of a bigger allocation (the mapping graph keys aliases by chunk).

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
        mapper = self.process.mapper
        owner = f"{self.process.name}[{self.process.pid}] {call}"
        if self.prot & (Prot.READ | Prot.WRITE | Prot.EXEC):
            plan = mapper.plan(call, self.start, norm, memtype, self.prot, owner)
            self.key = mapper.install(plan)
        self.pieces = norm
        self.memtype = memtype
        self.ops = ops
        self.populated = True
        if ops is not None:
            ops.open(self)

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
