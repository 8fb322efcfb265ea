"""A shared-memory file (memfd/shmem): physical pages any process can map.

It is the simplest mappable :class:`~vcmm.proc.file.File`: its ``mmap`` hook maps the
requested window of its pages (``pgoff`` and length checked against its size, as a
driver must), so tests of protections, open modes, fd passing and sharing between
processes need no device.  The pages come from a memory target through the VCMM
(``vcm_phys_alloc``) and go back when the last description is released.
"""

from __future__ import annotations

from typing import Any

from vcmm.attrs import MemType
from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.proc.file import File, OpenFile
from vcmm.proc.usermap import UserPiece
from vcmm.proc.vma import Vma
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, align_up, format_size


class MemFile(File):
    """``size`` bytes (rounded up to pages) of zeroed memory from ``target`` (default:
    the platform's kernel RAM, ``system.memory_roles.kernel``).

    Kernel RAM is mapped write-back (as the linear map is); a carve-out outside the
    linear map is mapped ``memtype`` (write-back unless told otherwise).
    """

    def __init__(
        self,
        system: Any,
        size: int,
        *,
        name: str = "memfd",
        target: str | None = None,
        memtype: MemType = MemType.NORMAL_WB_WA,
        readonly: bool = False,
    ) -> None:
        super().__init__(name)
        if not is_int(size) or size <= 0:
            raise InvalidArgumentError(f"MemFile {name}: size {size!r} must be a positive int")
        if not isinstance(memtype, MemType):
            raise InvalidArgumentError(f"MemFile {name}: memtype {memtype!r} is not a MemType")
        self.system = system
        self.size = align_up(size, SZ_4K)
        if target is None:
            target = str(system.memory_roles.kernel)
        linear = system.target(target).linear_mapped
        self.memtype = MemType.NORMAL_WB_WA if linear else memtype
        self.writable = not readonly
        self.physmem = system.vcm_phys_alloc(target, self.size)
        for chunk in self.physmem.chunk_ranges:
            system.cpu.cache.invalidate(chunk.start, chunk.size)
            system.memory.fill(chunk.start, chunk.size, 0)
        self.freed = False
        self._vm_ops = _Mappings()

    @property
    def mappings(self) -> int:
        """Live user mappings of this file (VMAs)."""
        return self._vm_ops.count

    def pages(self, first: int, count: int) -> list[UserPiece]:
        """Pieces for pages ``[first, first+count)`` of the file, with their chunks."""
        want = AddressRange(first * SZ_4K, count * SZ_4K)
        out: list[UserPiece] = []
        pos = 0
        for chunk in self.physmem.chunk_ranges:
            here = AddressRange(pos, chunk.size)
            inside = here & want
            if inside is not None:
                phys = AddressRange(chunk.start + inside.start - pos, inside.size)
                out.append(UserPiece(phys, chunk))
            pos += chunk.size
        return out

    def mmap(self, vma: Vma) -> None:
        npages = self.size // SZ_4K
        if vma.pgoff >= npages or vma.npages > npages - vma.pgoff:
            raise InvalidArgumentError(
                f"mmap of {self.name}: pages {vma.pgoff}..{vma.pgoff + vma.npages - 1} do not "
                f"fit its {format_size(self.size)} ({npages} pages) (ENXIO)"
            )
        vma.remap(self.physmem, self.memtype, self._vm_ops, offset=vma.pgoff * SZ_4K)

    def open(self, description: OpenFile) -> None:
        if self.freed:
            raise InvalidArgumentError(f"open {self.name}: its memory was already released")
        super().open(description)

    def release(self, description: OpenFile) -> None:
        if self.open_count == 0 and not self.freed:
            self.system.vcm_phys_free(self.physmem)
            self.freed = True


class _Mappings:
    """VmaOps counting the VMAs that map a MemFile."""

    def __init__(self) -> None:
        self.count = 0

    def open(self, vma: Vma) -> None:
        self.count += 1

    def close(self, vma: Vma) -> None:
        self.count -= 1
