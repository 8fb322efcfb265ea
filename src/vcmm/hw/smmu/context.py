"""The virtual SMMU context (the seed's ``smmu_dev``): one object, three jobs kept apart.

:class:`SmmuContext` is what drivers and the VCMM hold.  Its calls are the seed's, each
checked here (machine lock, context alive) and carried out by the part with that job:

- driver lifecycle, :class:`~vcmm.hw.smmu.binding.ContextBinding`: ``bind``,
  ``unbind``, ``activate``, ``deactivate`` (with the tables of
  :class:`~vcmm.hw.smmu.tables.ContextTables`: own or external, whole or split);
- the map API, :class:`~vcmm.hw.smmu.updates.ContextUpdates`: ``update_start``,
  ``map``, ``map_range``, ``unmap``, ``update_done``, reporting changes to the
  context's :class:`~vcmm.hw.tlbgather.TlbGather` (``tlb_gather``);
- translation with faults, :class:`~vcmm.hw.smmu.faults.ContextFaults`:
  ``translate_access``, ``translate_batch``, ``hook_interrupt``.

Locking: table changes, binding and translations of a context run under the SMMU's
machine lock (:mod:`vcmm.hw.lock`; the system's, else a private one), so a device job
on another thread never sees a table half edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, PageAttrs
from vcmm.checks import check_int
from vcmm.errors import BusyError, InvalidArgumentError, StateError
from vcmm.hw.lock import MachineLock, machine_locked
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu.binding import ContextBinding
from vcmm.hw.smmu.faults import ContextFaults, FaultHandler
from vcmm.hw.smmu.registers import FaultStatus
from vcmm.hw.smmu.tables import ContextTables
from vcmm.hw.smmu.updates import ContextUpdates
from vcmm.hw.tlb import TLBStats
from vcmm.hw.tlbgather import TlbGather
from vcmm.hw.translate import SpanResult, Translation

if TYPE_CHECKING:
    from vcmm.hw.smmu.instance import Smmu


@dataclass(frozen=True, slots=True)
class ContextStats:
    """Counters of one virtual context, over all its activations."""

    tlb: TLBStats
    #: Fault events (every time a translation faulted, retried or not).
    faults: int
    #: Replays the fault handler asked for.
    retries: int
    #: Transactions terminated by a fault.
    terminated: int
    bytes_read: int
    bytes_written: int
    #: Times the context lost its idle bank to another context (a bank switch).
    evictions: int = 0


class SmmuContext:
    """A virtual SMMU context: tables, a fault hook, and a binding to a hardware bank.

    Create with :meth:`Smmu.context_init`.
    """

    def __init__(self, smmu: Smmu, name: str, *, split: bool = False) -> None:
        self.smmu = smmu
        self.name = name
        self._alive = True
        self._tables = ContextTables(smmu, name, split)
        self._binding = ContextBinding(smmu, self)
        #: The TLB maintenance of the context's table changes (flushes its bank).
        self.tlb_gather = TlbGather(self._binding)
        self._updates = ContextUpdates(smmu, name, self._tables, self.tlb_gather)
        self._faults = ContextFaults(smmu.name, name, self._binding, smmu.tlb)
        self.bytes_read = 0
        self.bytes_written = 0

    @property
    def lock(self) -> MachineLock:
        """The machine lock of the SMMU that made this context."""
        return self.smmu.lock

    def __repr__(self) -> str:
        where = f"bank {self.bank}" if self.is_bound else "unbound"
        state = "active" if self.is_active else "inactive"
        return f"SmmuContext({self.name!r} on {self.smmu.name!r}, {where}, {state})"

    def _check_alive(self) -> None:
        if not self._alive:
            raise StateError(f"context {self.name!r} was deinitialised")

    # -- state ----------------------------------------------------------------------------

    @property
    def bank(self) -> int | None:
        """Number of the hardware bank this context is bound to."""
        return self._binding.bank_index

    @property
    def is_bound(self) -> bool:
        return self._binding.bank is not None

    @property
    def is_active(self) -> bool:
        """Whether the bank is programmed with this context (the seed's smmu_is_active)."""
        return self._binding.active

    @property
    def split(self) -> bool:
        return self._tables.split

    @property
    def low_table(self) -> PageTable | None:
        """The TTBR0 table (the whole space unless split)."""
        return self._tables.low

    @property
    def high_table(self) -> PageTable | None:
        """The TTBR1 table (VA[31]=1) in split mode."""
        return self._tables.high

    @property
    def ttbr0(self) -> int | None:
        low = self._tables.low
        return low.root if low is not None else None

    @property
    def ttbr1(self) -> int | None:
        high = self._tables.high
        return high.root if high is not None else None

    @property
    def in_update(self) -> bool:
        return self._updates.updating

    # -- driver lifecycle -----------------------------------------------------------------

    @machine_locked
    def bind(self, smmu: Smmu, bank: int | None = None) -> int:
        """Bind to a hardware bank of ``smmu`` (the seed's ``smmu_ctx_bind``).

        ``bank`` names one; None takes a free bank, else the least recently used idle
        one (bound to a context that is not active).  An idle context that held the
        bank loses it (a bank switch: its TLB entries are invalidated and counted in
        :meth:`Smmu.bank_stats`) and binds again at its next activation.  Returns the
        bank number.  Refuses a bank that runs an active context (with None: when every
        bank does), a context of another SMMU and a context that is already bound.
        """
        self._check_alive()
        return self._binding.bind(smmu, bank)

    @machine_locked
    def unbind(self) -> None:
        """Release the hardware bank (the context must be deactivated first)."""
        self._check_alive()
        self._binding.unbind()

    @machine_locked
    def activate(self) -> None:
        """Program the bank with this context's tables: a context switch.

        A context without a bank binds one first as :meth:`bind` with None does (a free
        bank, else the least recently used idle one); when every bank runs an active
        context this raises :class:`BusyError` naming them.  The bank's TLB entries
        (left by whichever context used the bank before) are invalidated, so nothing
        of another address space leaks through, unless this context returns to the
        bank it kept with the same registers and no table switch since (its own
        entries, kept current by its TLB maintenance, stay: a warm return).
        """
        self._check_alive()
        self._binding.activate(self._tables)

    @machine_locked
    def deactivate(self) -> None:
        """Disable the bank; its device's transactions then stop (see SmmuDevice)."""
        self._check_alive()
        self._binding.deactivate()

    @machine_locked
    def deinit(self) -> None:
        """Destroy the context (the seed's ``smmu_ctx_deinit``); it must be unbound."""
        self._check_alive()
        if self.is_bound:
            raise BusyError(f"context {self.name!r} is bound to bank {self.bank}; unbind first")
        self._tables.release()
        self.smmu.remove_context(self)
        self._alive = False

    def _reprogram(self, changed: bool = True) -> None:
        """After a table change: reprogram an active bank; an idle one's TLB entries
        no longer match what its next activation will program (when ``changed``)."""
        if self._binding.active:
            self._binding.program(self._tables)
        elif changed:
            self._binding.tables_changed()

    def _table_state(self) -> tuple[PageTable | None, PageTable | None, bool]:
        return self._tables.low, self._tables.high, self._tables.split

    @machine_locked
    def set_split(self, split: bool) -> None:
        """Reshape the context's own tables for split (TTBCR.N=1) or whole-space use.

        Only while its own tables hold no mapping; contexts pointed at external tables
        change shape through :meth:`set_tables`.
        """
        self._check_alive()
        if self._tables.set_split(split, updating=self._updates.updating):
            self._reprogram()

    @machine_locked
    def set_tables(
        self,
        low: PageTable | None,
        high: PageTable | None = None,
        *,
        split: bool | None = None,
    ) -> None:
        """Point the context at tables the upper layer owns (one per VCM).

        ``split`` defaults to ``high is not None``.  In split mode ``low`` may be a
        reduced (``va_bits=31``) or a full table and ``high`` must be a full one (see
        :mod:`vcmm.hw.smmu.tables`); either may be None, which disables walks of that
        half (TTBCR.PD0/PD1).  If the context is active the bank is reprogrammed at
        once (with its TLB tag invalidated).
        """
        self._check_alive()
        before = self._table_state()
        self._tables.set_tables(low, high, split, updating=self._updates.updating)
        after = self._table_state()
        self._reprogram(any(x is not y for x, y in zip(before, after, strict=True)))

    @machine_locked
    def use_own_tables(self, *, split: bool = False) -> None:
        """Drop external tables and return to fresh tables of the context's own."""
        self._check_alive()
        if self._tables.use_own(split, updating=self._updates.updating):
            self._reprogram()

    # -- the map API ------------------------------------------------------------------------

    @machine_locked
    def update_start(self) -> None:
        """Open a batch of table changes (the seed's ``smmu_update_start``)."""
        self._check_alive()
        self._updates.start()

    @machine_locked
    def update_done(self) -> int:
        """Close the batch and make the changes visible: invalidate the TLB.

        Every range reported to :attr:`tlb_gather` since the last sync (by the calls
        below, or by an upper layer editing an external table) is invalidated in the
        bound bank (the whole bank past
        :data:`~vcmm.hw.tlbgather.PRECISE_INVALIDATION_LIMIT` ranges).  Returns the
        number of TLB entries removed.
        """
        self._check_alive()
        return self._updates.done()

    @machine_locked
    def map(self, pa: int, va: int, length: int, attrs: PageAttrs) -> None:
        """Map one page or block (the seed's ``smmu_map``).

        ``length`` must be exactly one of the format's sizes (4K, 64K, 1M, 16M for ARMv7
        short descriptors) and ``va`` and ``pa`` aligned to it.
        """
        self._check_alive()
        self._updates.map(pa, va, length, attrs)

    @machine_locked
    def map_range(
        self, va: int, pa: int, length: int, attrs: PageAttrs, *, page_size: int | None = None
    ) -> None:
        """Map an arbitrary 4K-aligned range with the largest page sizes that fit.

        ``page_size`` forces one size for every page (va, pa and length aligned to it),
        for studies of how the page size changes TLB behaviour.
        """
        self._check_alive()
        self._updates.map_range(va, pa, length, attrs, page_size)

    @machine_locked
    def unmap(self, va: int, length: int) -> None:
        """Remove the mappings covering ``[va, va+length)`` (the seed's ``smmu_unmap``).

        The whole range must be mapped.  A block cut by the range is split first (the
        table's ``split_blk_unmap`` behaviour); the TLB still holds the old block until
        ``update_done`` invalidates it.
        """
        self._check_alive()
        self._updates.unmap(va, length)

    @machine_locked
    def invalidate_tlb(self, va: int | None = None, size: int | None = None) -> int:
        """Invalidate this bank's TLB entries now (all, or those overlapping a range).

        Unbound: nothing to do.  Changes made inside the update bracket are better
        reported to :attr:`tlb_gather`, which picks how to invalidate.
        """
        self._check_alive()
        if (va is None) != (size is None):
            raise InvalidArgumentError("invalidate_tlb takes both va and size, or neither")
        if va is None:
            return self._binding.flush_all()
        v = check_int("invalidate_tlb", "va", va)
        n = check_int("invalidate_tlb", "size", size)
        if n == 0:
            raise InvalidArgumentError("invalidate_tlb: size must be > 0")
        return self._binding.flush_range(v, n)

    # -- registers --------------------------------------------------------------------------

    @property
    def fault_status(self) -> FaultStatus | None:
        """FSR, FAR and FSYNR0 of the bound bank (None while unbound)."""
        bank = self._binding.bank
        return bank.faults if bank is not None else None

    def _register_address(self, call: str, offset: object) -> int:
        """Address of ``offset`` in the bound bank's page, refusing what is not there."""
        self._check_alive()
        bank = self._binding.bank_index
        if bank is None:
            raise StateError(f"{self.name}.{call}: context {self.name!r} is not bound to a bank")
        off = check_int(f"{self.name}.{call}", "offset", offset)
        if off >= self.smmu.register_page_size:
            raise InvalidArgumentError(
                f"{self.name}.{call}: offset {off:#x} is beyond the "
                f"{self.smmu.register_page_size:#x}-byte bank page"
            )
        return self.smmu.bank_base(bank) + off

    @machine_locked
    def read_register(self, offset: int) -> int:
        """Read the register at ``offset`` in the bound bank's page (CB_FSR is 0x58)."""
        return self.smmu.read_register(self._register_address("read_register", offset))

    @machine_locked
    def write_register(self, offset: int, value: int) -> None:
        """Write the register at ``offset`` in the bound bank's page; writing the FSR
        value back clears the fault it records (write 1 to clear)."""
        self.smmu.write_register(self._register_address("write_register", offset), value)

    # -- translation ------------------------------------------------------------------------

    @machine_locked
    def translate(self, va: int) -> int:
        """Software VA -> PA query through the tables (the seed's ``smmu_translate``).

        Uses neither the TLB nor the bank, so it works on inactive contexts too.
        """
        self._check_alive()
        return self._tables.translate(va)

    def translate_access(
        self, va: int, access: Access, *, device: str | None = None
    ) -> Translation:
        """The transaction path: TLB, walk, permission check, then the fault hook.

        Raises :class:`DeviceFaultError` if the transaction is terminated.
        """
        with self.smmu.lock:
            return self.translate_access_held(va, access, device=device)

    def translate_access_held(
        self, va: int, access: Access, *, device: str | None = None
    ) -> Translation:
        """:meth:`translate_access` for a caller that already holds the SMMU's lock (a
        bus master in the middle of a transaction): this runs once per page of every
        device access, so it skips the re-entrant acquire."""
        if not self._alive:
            self._check_alive()
        return self._faults.translate(va, access, device)

    def translate_span_held(
        self, va: int, length: int, access: Access, *, device: str | None = None
    ) -> SpanResult:
        """A whole transaction's pages at once, for a bus master holding the lock: the
        steps :meth:`translate_access_held` would take page by page (faults through
        the hook the same way), as arrays of (address, output, length)."""
        if not self._alive:
            self._check_alive()
        return self._faults.translate_span(va, length, access, device)

    @machine_locked
    def translate_batch(
        self, vas: npt.NDArray[np.integer], access: Access, *, device: str | None = None
    ) -> npt.NDArray[np.uint64]:
        """Translate an access stream with counters identical to per-access calls.

        Faults go through the hook exactly as :meth:`translate_access` would handle
        them; returns the output address of every input address.  A terminated
        transaction raises :class:`DeviceFaultError` whose ``completed`` says how many
        addresses before it were translated.
        """
        self._check_alive()
        return self._faults.translate_batch(vas, access, device)

    # -- faults and counters --------------------------------------------------------------

    @machine_locked
    def hook_interrupt(self, handler: FaultHandler | None, data: Any = None) -> None:
        """Register ``handler(fault, data)`` for this context's faults (None removes it)."""
        self._check_alive()
        self._faults.hook(handler, data)

    def account(self, access: Access, nbytes: int) -> None:
        """Record bytes a device moved through this context (called by bus masters)."""
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        n = check_int(f"{self.name}.account", "nbytes", nbytes)
        if access is Access.WRITE:
            self.bytes_written += n
        else:
            self.bytes_read += n

    def stats(self) -> ContextStats:
        """This context's counters; TLB counters cover its activations only.

        They are the bank tag's counters accumulated between activate and deactivate,
        so resetting the TLB's counters while the context is active skews them.
        """
        faults = self._faults
        return ContextStats(
            tlb=self._binding.tlb_stats(),
            faults=faults.faults,
            retries=faults.retries,
            terminated=faults.terminated,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
            evictions=self._binding.evictions,
        )
