"""Which tables a context points at: its own, or the upper layer's, whole or split.

Tables belong to the context (allocated with it, so a later call never fails half way
for want of table memory) until the upper layer points it at its own
(:meth:`ContextTables.set_tables`): the VCMM keeps one table per VCM and may point
several contexts at it.

Split mode is ARMv7 TTBCR.N=1: VA[31]=1 walks the TTBR1 table, the rest the TTBR0
table, walked with the reduced 8 KiB first level (``va_bits=31``, VA[30:20] indexed).
A full-size table is accepted there too: for VA < 2 GiB its first 2048 entries are
indexed exactly as the reduced table's would be, and the entries above are never read,
just as on hardware (the TTBR0 base only has to be 8 KiB aligned).  So one table can
serve as the low half of one context and the whole space of another.  A missing half
is programmed with TTBCR.PD0/PD1, so accesses there take translation faults.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.checks import check_int
from vcmm.errors import BusyError, InvalidArgumentError, NotMappedError, StateError
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu.bank import SPLIT_BIT, SPLIT_LOW_VA_BITS

if TYPE_CHECKING:
    from vcmm.hw.smmu.instance import Smmu


class ContextTables:
    """The TTBR0 (and, split, TTBR1) tables of one context, and who owns them."""

    def __init__(self, smmu: Smmu, name: str, split: bool) -> None:
        self._smmu = smmu
        self._name = name
        self.split = split
        #: Whether the context manages its tables (False once pointed at external ones).
        self.own = True
        self.low: PageTable | None
        self.high: PageTable | None
        self.low, self.high = self._new_own(split)
        #: Tables this context allocated and must free; may outlive own mode when the
        #: upper layer passes one of them back to :meth:`set_tables`.
        self._owned = [t for t in (self.low, self.high) if t is not None]

    def _new_table(self, va_bits: int | None) -> PageTable:
        s = self._smmu
        return PageTable(s.fmt, s.memory, s.table_memory, va_bits=va_bits)

    def _new_own(self, split: bool) -> tuple[PageTable, PageTable | None]:
        """Fresh tables of the context's own: a reduced TTBR0 and a TTBR1 one if split.

        Either both are allocated or neither (the first is freed if the second fails).
        """
        low = self._new_table(SPLIT_LOW_VA_BITS if split else None)
        if not split:
            return low, None
        try:
            return low, self._new_table(None)
        except BaseException:
            low.destroy()
            raise

    def _check_releasable(self, keep: tuple[PageTable | None, ...], why: str) -> None:
        """Refuse to drop an owned table that still holds mappings (validation step)."""
        for table in self._owned:
            if table not in keep and table.find(0, 1 << table.va_bits, mapped=True) is not None:
                raise BusyError(
                    f"context {self._name!r}: its own table at {table.root:#x} still holds "
                    f"mappings; unmap them before {why}"
                )

    def _release_owned(self, keep: tuple[PageTable | None, ...]) -> None:
        """Free the owned tables not in ``keep`` (commit step)."""
        for table in self._owned:
            if table not in keep:
                table.destroy()
        self._owned = [t for t in self._owned if t in keep]

    def _switch_own(self, split: bool) -> None:
        low, high = self._new_own(split)
        self._release_owned(())
        self._owned = [t for t in (low, high) if t is not None]
        self.low, self.high, self.split, self.own = low, high, split, True

    # -- reshaping (the facade reprograms an active bank afterwards) ----------------------

    def set_split(self, split: object, *, updating: bool) -> bool:
        """Reshape the own tables for split or whole-space use; whether they changed."""
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self._name!r}: split={split!r} is not a bool")
        if not self.own:
            raise StateError(
                f"context {self._name!r} uses external tables; call set_tables() to change them"
            )
        if split:
            self._smmu.check_split(self._name)
        if split == self.split:
            return False
        self._check_releasable((), "changing the split")
        if updating:
            raise StateError(
                f"context {self._name!r}: cannot reshape tables inside update_start/update_done"
            )
        self._switch_own(split)
        return True

    def _check_external(
        self, label: str, table: object, bits: tuple[int, ...], split: bool
    ) -> None:
        if not isinstance(table, PageTable):
            raise InvalidArgumentError(
                f"context {self._name!r}: {label} table {table!r} is not a PageTable"
            )
        smmu = self._smmu
        if table.fmt is not smmu.fmt or table.memory is not smmu.memory:
            raise InvalidArgumentError(
                f"context {self._name!r}: {label} table is {table.fmt.name} in another "
                f"memory or format; SMMU {smmu.name!r} walks {smmu.fmt.name}"
            )
        if table.va_bits not in bits:
            needs = " or ".join(str(b) for b in bits)
            raise InvalidArgumentError(
                f"context {self._name!r}: {label} table covers {table.va_bits} VA bits; "
                f"{'split' if split else 'whole-space'} mode needs {needs}"
            )

    def set_tables(
        self, low: PageTable | None, high: PageTable | None, split: object, *, updating: bool
    ) -> None:
        """Point the context at tables the upper layer owns (see the facade)."""
        if split is None:
            split = high is not None
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self._name!r}: split={split!r} is not a bool")
        if low is None and high is None:
            raise InvalidArgumentError(
                f"context {self._name!r}: set_tables needs at least one table; "
                "use_own_tables() returns to the context's own"
            )
        if split:
            self._smmu.check_split(self._name)
        elif high is not None:
            raise InvalidArgumentError(
                f"context {self._name!r}: a TTBR1 table needs split mode (TTBCR.N=1)"
            )
        full_bits = self._smmu.fmt.geometry().va_bits
        want_low = (SPLIT_LOW_VA_BITS, full_bits) if split else (full_bits,)
        for label, table, bits in (("low", low, want_low), ("high", high, (full_bits,))):
            if table is not None:
                self._check_external(label, table, bits, split)
        if updating:
            raise StateError(
                f"context {self._name!r}: cannot switch tables inside update_start/update_done"
            )
        self._check_releasable((low, high), "pointing the context at other tables")
        self._release_owned((low, high))
        self.low, self.high, self.split, self.own = low, high, split, False

    def use_own(self, split: object, *, updating: bool) -> bool:
        """Return to fresh tables of the context's own; whether anything changed."""
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self._name!r}: split={split!r} is not a bool")
        if split:
            self._smmu.check_split(self._name)
        if self.own:
            return self.set_split(split, updating=updating)
        if updating:
            raise StateError(
                f"context {self._name!r}: cannot switch tables inside update_start/update_done"
            )
        self._check_releasable((), "returning to fresh tables of its own")
        self._switch_own(split)
        return True

    def release(self) -> None:
        """Free the own tables and point at none (the context is being destroyed)."""
        self._release_owned(())
        self.low = self.high = None

    # -- lookups --------------------------------------------------------------------------

    def _half(self, va: int) -> tuple[str, PageTable | None]:
        """Which register's table holds ``va`` (TTBR1 for VA[31]=1 in split mode), and
        that table (None: walks there are disabled)."""
        if self.split and (va >> SPLIT_BIT) & 1:
            return "TTBR1", self.high
        return "TTBR0", self.low

    def table_for(self, va: int, who: str) -> PageTable:
        """The table holding ``va``, for a change to it."""
        register, table = self._half(va)
        if table is None:
            raise StateError(
                f"{who}: context {self._name!r} has no {register} table for {va:#x} (walks "
                "there are disabled)"
            )
        return table

    def pieces(self, va: int, length: int) -> list[tuple[int, int]]:
        """Split ``[va, va+length)`` at the TTBR0/TTBR1 boundary when split."""
        boundary = 1 << SPLIT_BIT
        if self.split and va < boundary < va + length:
            return [(va, boundary - va), (boundary, va + length - boundary)]
        return [(va, length)]

    def translate(self, va: object) -> int:
        """Software VA -> PA query through the tables (the seed's ``smmu_translate``)."""
        v = check_int(f"{self._name}.translate", "va", va)
        limit = self._smmu.input_limit
        if v >= limit:
            raise NotMappedError(
                f"context {self._name!r}: {v:#x} is beyond the {limit:#x} input space"
            )
        register, table = self._half(v)
        if table is None:
            raise NotMappedError(
                f"context {self._name!r}: {v:#x} falls in a half with no table "
                f"({register} walks disabled)"
            )
        walk = table.walk(v)
        if walk.pa is None:
            kind = walk.fault.value if walk.fault else "translation"
            raise NotMappedError(f"context {self._name!r}: {v:#x} is not mapped ({kind} fault)")
        return walk.pa
