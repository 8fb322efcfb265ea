"""How a process's mappings are made: reservations in its VCM, backed through the core.

A process address space is a VCM of the core (``vcm_create_from_prebuilt(asid)``, a
:attr:`~vcmm.core.objects.VcmKind.USER` VCM whose mapper writes the CPU's TTBR0 table
of the process's ASID).  So a user mapping is an ordinary reservation edge of the
mapping graph: its memory type is checked against every alias of the same bytes, and
its shareable bit is the graph's business, rewritten by the core like any other
alias's when a device, the kernel or another process starts or stops mapping the same
pages.  No layer refuses a mapping because another layer's edge "cannot be rewritten".

- ``mmap`` = ``vcm_reserve`` (at the chosen address, or where the VCM's allocator
  places it) + ``vcm_back`` with a *view* of the memory (``vcm_phys_view``);
- ``munmap`` = ``vcm_unback`` + ``vcm_unreserve``; a partial one first cuts the
  reservation with ``vcm_split`` (the page-table entries of what stays are not
  touched) and unbacks only the part that goes.

The memory behind a mapping is a :class:`Source`: a physical allocation (anonymous
memory, a file's pages) or a ``vcm_phys_wrap`` of the pages a driver's ``mmap`` hook
named.  Every VMA, including the pieces a partial ``munmap`` leaves, backs its
reservation with its own view of the source, so each piece can go on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.attrs import MemType
from vcmm.core.flags import Attr
from vcmm.core.interfaces import VcmmApi
from vcmm.core.objects import PhysMem
from vcmm.errors import InvalidArgumentError
from vcmm.proc.flags import Prot
from vcmm.ranges import AddressRange


@dataclass(frozen=True, slots=True)
class UserPiece:
    """A physical range to map and the allocation chunk containing it.

    The chunk is informational (the mapping graph finds aliases by physical range, so
    any piece of any chunk is found); it must contain the range.
    """

    phys: AddressRange
    chunk: AddressRange

    @staticmethod
    def of(phys: AddressRange, chunk: AddressRange | None = None) -> UserPiece:
        return UserPiece(phys, phys if chunk is None else chunk)


_CACHE = {
    MemType.NORMAL_WB_WA: Attr.WB_WA,
    MemType.NORMAL_WB_NWA: Attr.WB_NWA,
    MemType.NORMAL_WT: Attr.WT,
    MemType.NORMAL_NC: Attr.NONCACHED,
}


def user_attr(call: str, prot: Prot, memtype: MemType) -> Attr:
    """The reservation attribute of a user mapping with ``prot`` and ``memtype``.

    ARM cannot encode write-only or execute-only pages, so write and execute imply
    read.  Device memory is not something a process maps through this model.
    """
    cache = _CACHE.get(memtype)
    if cache is None:
        raise InvalidArgumentError(
            f"{call}: memtype {memtype.value} cannot be mapped into a process (only Normal "
            "memory types: write-back, write-through, non-cacheable)"
        )
    attr = Attr.USER | cache | Attr.READ
    if prot & Prot.WRITE:
        attr |= Attr.WRITE
    if prot & Prot.EXEC:
        attr |= Attr.EXEC
    return attr


class Source:
    """The memory behind a mapping and the pieces a partial ``munmap`` leaves of it.

    ``physmem`` is what the VMAs take views of; ``owned`` says the process model made it
    (a wrap of a driver's pages) and forgets it when the last VMA using it goes.
    """

    def __init__(self, system: VcmmApi, physmem: PhysMem, *, owned: bool) -> None:
        self.system = system
        self.physmem = physmem
        self.owned = owned
        self.users = 0

    def get(self) -> None:
        self.users += 1

    def put(self) -> None:
        self.users -= 1
        if self.users == 0 and self.owned:
            self.system.vcm_phys_free(self.physmem)
