"""The CPU MMU's walker for one address space, able to walk a whole access ahead.

A CPU access splits by the top bits of the address, as the MMU does: kernel
addresses (VA[63:48] all ones) walk the kernel's TTBR1 table with VA[47:0], user
addresses (VA[63:48] all zeros) the address space's TTBR0 table, anything else has
no table and faults.  :class:`MmuWalker` walks one address with the CPU's own walk
(the reference) and many at once, without side effects, with the vectorised walker
(:func:`vcmm.hw.pgtable.walkmany.walk_into`), so that the compiled engine can run a
CPU access's pages as it runs an SMMU transaction's (:mod:`vcmm.hw.stream`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from vcmm.attrs import PageAttrs
from vcmm.hw.pgtable import PageTable
from vcmm.hw.pgtable.walkmany import walk_into
from vcmm.hw.stream import BatchWalker
from vcmm.hw.walk import Walk, WalkArrays

U64 = npt.NDArray[np.uint64]

#: Width of a CPU virtual address; the 16 bits above choose the table.
VA_BITS = 48
_VA_MASK = np.uint64((1 << VA_BITS) - 1)
_TOP = np.uint64(VA_BITS)


class MmuWalker(BatchWalker):
    """Walks of one address space: ``walk(va)`` is the CPU's one-address walk,
    ``kernel`` its TTBR1 table and ``user()`` the address space's TTBR0 table now
    (None once it is gone: its addresses then fault)."""

    def __init__(
        self,
        walk: Callable[[int], Walk],
        kernel: PageTable,
        user: Callable[[], PageTable | None],
    ) -> None:
        self._walk = walk
        self._kernel = kernel
        self._user = user
        self.granule = kernel.fmt.min_page
        self.sizes = kernel.sizes

    def __call__(self, va: int) -> Walk:
        return self._walk(va)

    def walk_many(self, vas: U64) -> WalkArrays:
        out = WalkArrays.empty(int(vas.shape[0]))
        attrs: list[PageAttrs] = []
        top = vas >> _TOP
        kernel_rows = np.flatnonzero(top == np.uint64(0xFFFF))
        if kernel_rows.size:
            table = self._kernel
            masked = vas[kernel_rows] & _VA_MASK
            walk_into(
                table.fmt, table.memory, table.root, masked, out, kernel_rows, attrs, table.va_bits
            )
            # the table saw VA[47:0]; the leaves are of the addresses asked for
            out.base[kernel_rows] |= vas[kernel_rows] & ~_VA_MASK
        user = self._user()
        user_rows = np.flatnonzero(top == np.uint64(0))
        if user is not None and user_rows.size:
            walk_into(
                user.fmt,
                user.memory,
                user.root,
                vas[user_rows],
                out,
                user_rows,
                attrs,
                user.va_bits,
            )
        return out.with_attrs(attrs)

    def charge(self, reads: int) -> None:
        self._kernel.memory.count_reads(reads * self._kernel.fmt.entry_bytes)
