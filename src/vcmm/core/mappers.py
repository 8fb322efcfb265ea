"""The library of buffer mappers (seed 000 L1667-1677): how a VCM reaches hardware.

The core never touches an SMMU or the CPU directly.  Each VCM kind has a mapper with
the same small interface; adding a new kind of bus master means adding a mapper, not
changing the manager.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from vcmm.attrs import PageAttrs
from vcmm.errors import StateError

if TYPE_CHECKING:
    from vcmm.hw.pgtable import PageTable

    from vcmm.core.objects import Association, Vcm


#: The kernel table is indexed by VA[47:0]; kernel VAs carry all-ones in VA[63:48].
_VA_MASK = (1 << 48) - 1


class Mapper(Protocol):
    """What the manager needs from the hardware below a VCM."""

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None: ...
    def unmap(self, va: int, size: int) -> None: ...
    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None: ...
    def translate(self, va: int) -> int: ...
    def activate(self, assoc: Association) -> None: ...
    def deactivate(self, assoc: Association) -> None: ...
    def update_start(self) -> None: ...
    def update_done(self) -> None: ...


class IommuMapper:
    """An IOMMU VCM owns one page table; every active context points at it.

    Table changes are bracketed by ``update_start``/``update_done`` on every active
    context, which is where the SMMU invalidates its shared TLB.
    """

    def __init__(self, vcm: Vcm, table: PageTable) -> None:
        self.vcm = vcm
        self.table = table
        self._dirty: list[tuple[int, int]] = []

    def _active_contexts(self) -> list[Any]:
        return [a.device.ctx for a in self.vcm.associations if a.active]

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        self.table.map(va, pa, size, attrs)
        self._dirty.append((va, size))

    def unmap(self, va: int, size: int) -> None:
        self.table.unmap(va, size)
        self._dirty.append((va, size))

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        self.table.set_attrs(va, size, attrs)
        self._dirty.append((va, size))

    def translate(self, va: int) -> int:
        walk = self.table.walk(va)
        if walk.pa is None:
            raise StateError(f"{self.vcm.name}: {va:#x} is not mapped ({walk.fault})")
        return walk.pa

    def update_start(self) -> None:
        self._dirty.clear()
        for ctx in self._active_contexts():
            ctx.update_start()

    def update_done(self) -> None:
        for ctx in self._active_contexts():
            for va, size in self._dirty:
                ctx.invalidate_tlb(va, size)
            ctx.update_done()
        self._dirty.clear()

    def activate(self, assoc: Association) -> None:
        ctx = assoc.device.ctx
        if not ctx.is_bound:
            ctx.bind(ctx.smmu, getattr(assoc.device, "bank", None))
        half = assoc.half
        if half is None:
            ctx.set_tables(self.table, None, split=False)
        elif half == "high":
            ctx.set_tables(ctx.low_table if ctx.split else None, self.table, split=True)
        else:
            ctx.set_tables(self.table, ctx.high_table if ctx.split else None, split=True)
        if not ctx.is_active:
            ctx.activate()

    def deactivate(self, assoc: Association) -> None:
        ctx = assoc.device.ctx
        half = assoc.half
        low = ctx.low_table if half == "high" else None
        high = ctx.high_table if half == "low" else None
        if low is None and high is None:
            ctx.deactivate()
            ctx.unbind()
            ctx.use_own_tables()
        else:
            ctx.set_tables(low, high, split=True)


class VmmMapper:
    """The kernel's address space: reservations are kernel virtual areas (alloc_vm_area)."""

    def __init__(self, cpu: Any) -> None:
        self.cpu = cpu

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        self.cpu.map_kernel(va, pa, size, attrs)

    def unmap(self, va: int, size: int) -> None:
        self.cpu.unmap_kernel(va, size)

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        self.cpu.kernel_table.set_attrs(va & _VA_MASK, size, attrs)
        self.cpu.flush_tlb_range(va, size)

    def translate(self, va: int) -> int:
        return int(self.cpu.virt_to_phys(va))

    def update_start(self) -> None:
        """The CPU's kernel-map helpers invalidate their own TLB entries."""

    def update_done(self) -> None:
        """See :meth:`update_start`."""

    def activate(self, assoc: Association) -> None:
        """VMM mappings are live at once; activation only counts (000 L244-246)."""

    def deactivate(self, assoc: Association) -> None:
        """See :meth:`activate`."""


class OneToOneMapper(VmmMapper):
    """Physically addressed devices: no tables, the address is the physical one."""

    def __init__(self) -> None:
        super().__init__(cpu=None)

    def map(self, va: int, pa: int, size: int, attrs: PageAttrs) -> None:
        """Nothing to program: the device already reaches every physical address."""

    def unmap(self, va: int, size: int) -> None:
        """See :meth:`map`."""

    def set_attrs(self, va: int, size: int, attrs: PageAttrs) -> None:
        """See :meth:`map`."""

    def translate(self, va: int) -> int:
        return va
