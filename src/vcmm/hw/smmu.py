"""A Qualcomm-style System MMU: context banks sharing one global TLB.

The seed (000 L442-531) describes the hardware: an SMMU holds several *context banks*
that translate in parallel and share one global TLB whose entries are tagged by bank.
Software works with *virtual contexts* (the seed's ``smmu_dev``): a context is created
by name, bound to a free hardware bank at run time, then activated, which programs the
bank's registers (TTBR0, TTBR1, TTBCR.N, enable) from the context: a context switch.

Seed call                          here
---------------------------------  ---------------------------------------------------
``smmu_drvdata_init``              ``Smmu(name, memory, table_memory, ...)``
``smmu_ctx_init`` / ``_deinit``    ``smmu.context_init(name)`` / ``ctx.deinit()``
``smmu_ctx_bind``                  ``ctx.bind(smmu, bank=None)`` / ``ctx.unbind()``
``smmu_activate`` / ``deactivate`` ``ctx.activate()`` / ``ctx.deactivate()``
``smmu_is_active``                 ``ctx.is_active``
``smmu_map`` / ``smmu_unmap``      ``ctx.map(pa, va, len, attrs)`` / ``ctx.unmap(va, len)``
``smmu_update_start`` / ``_done``  ``ctx.update_start()`` / ``ctx.update_done()``
``smmu_translate``                 ``ctx.translate(va)``
``smmu_hook_interrupt``            ``ctx.hook_interrupt(handler, data)``
``smmu_get_ctx_instance``          ``smmu.context(name)``, ``find_context(smmus, name)``

Decisions:

- **Each SMMU has its own table format**, given to its constructor (``fmt``:
  ARMv7 short-descriptor by default, ARMv7 LPAE long-descriptor as SMMUv1 MMU-400/401
  walks, VMSAv8-64 4K), so one SoC may mix them.  Activation programs TTBCR as that
  format's ARMv7 register reads (EAE=1 for LPAE); the walker follows it.
- **Tables belong to the context** (allocated with it, so a later call never fails
  half way for want of table memory) until the upper layer points it at its own
  (:meth:`SmmuContext.set_tables`): the VCMM keeps one table per VCM and may point
  several contexts at it.  The hardware walker reads the *registers* of the bank, never
  a Python table object, so a context that is not active cannot be walked through.
- **Split mode** is ARMv7 TTBCR.N=1: VA[31]=1 walks the TTBR1 table, the rest the TTBR0
  table, walked with the reduced 8 KiB first level (``va_bits=31``, VA[30:20] indexed).
  A full-size table is accepted there too: for VA < 2 GiB its first 2048 entries are
  indexed exactly as the reduced table's would be, and the entries above are never
  read, just as on hardware (the TTBR0 base only has to be 8 KiB aligned).  So one
  table can serve as the low half of one context and the whole space of another.
  A missing half is programmed with TTBCR.PD0/PD1, so accesses there take translation
  faults.
- **Invalidation is precise**: ``update_done`` invalidates the TLB entries of this
  bank overlapping each range changed since ``update_start`` (adjacent ranges merged);
  past :data:`PRECISE_INVALIDATION_LIMIT` ranges it invalidates the bank's whole tag,
  which costs refills but never correctness.  Until then a device keeps using what it
  has cached, exactly as the seed's bracket implies.
- **Faults**: the handler is called as ``handler(fault, data)`` and returns 1 (retry:
  the TLB entry for the address is invalidated and the translation replayed) or 0
  (terminate).  Without a handler a warning is logged and the transaction terminates.
  Terminated transactions raise :class:`DeviceFaultError`.  At most
  :data:`MAX_FAULT_RETRIES` retries per access.
- **Locking**: table changes, binding and translations of a context run under the
  SMMU's machine lock (:mod:`vcmm.hw.lock`; the system's, else a private one), so a
  device job on another thread never sees a table half edited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, FaultKind, PageAttrs
from vcmm.checks import check_int
from vcmm.errors import (
    AlignmentError,
    BusyError,
    DeviceFaultError,
    InvalidArgumentError,
    NotFoundError,
    NotMappedError,
    StateError,
    UnsupportedSizeError,
)
from vcmm.hw.lock import MachineLock, check_lock, machine_locked
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, PageTable, PageTableFormat, walk_tables
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLB, TLBConfig, TLBStats, check_address
from vcmm.hw.translate import Translation, TranslationFault, Translator
from vcmm.hw.walk import Walk
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

log = logging.getLogger(__name__)

#: Retries one access may take before the SMMU gives up on a handler that keeps asking.
MAX_FAULT_RETRIES = 8
#: Above this many changed ranges, ``update_done`` invalidates the whole bank tag.
PRECISE_INVALIDATION_LIMIT = 64
#: TTBCR.N=1 splits the 32-bit input space on this bit (ARMv7 short-descriptor).
SPLIT_BIT = 31
#: Input-address width of the reduced TTBR0 table in split mode.
SPLIT_LOW_VA_BITS = 31

#: The fault handler protocol: ``handler(fault, data) -> 1 (retry) or 0 (terminate)``.
FaultHandler = Callable[["SmmuFault", Any], int]


@dataclass(frozen=True, slots=True)
class SmmuFault:
    """What a fault handler receives: where, who, and why a transaction faulted."""

    smmu: str
    context: str
    bank: int
    va: int
    access: Access
    kind: FaultKind
    #: Table level of the faulting descriptor (the leaf for permission faults).
    level: int
    #: Name of the bus master whose transaction faulted, if known.
    device: str | None = None

    def describe(self) -> str:
        who = f"device {self.device!r}" if self.device else "a transaction"
        return (
            f"{who}: {self.access.value} at {self.va:#x} through SMMU {self.smmu!r} "
            f"context {self.context!r} (bank {self.bank}) took a {self.kind.value} fault "
            f"at level {self.level}"
        )


@dataclass(frozen=True, slots=True)
class BankRegisters:
    """The programmable state of one context bank (ARMv7 naming).

    ``ttbcr`` is the ARMv7 TTBCR.  Short-descriptor banks (``eae`` False): N in bits
    [2:0], PD0/PD1 in bits 4 and 5.  Long-descriptor (LPAE) banks: EAE bit 31, T0SZ
    [2:0] and T1SZ [18:16] both 0 (TTBR0 translates the whole 32-bit space), EPD0 bit
    7 and EPD1 bit 23 standing for PD0/PD1.
    """

    ttbr0: int = 0
    ttbr1: int = 0
    ttbcr_n: int = 0
    pd0: bool = False
    pd1: bool = False
    enabled: bool = False
    #: TTBCR.EAE: the bank walks long-descriptor (ARMv7 LPAE) tables.
    eae: bool = False

    @property
    def ttbcr(self) -> int:
        if self.eae:
            return (1 << 31) | (int(self.pd0) << 7) | (int(self.pd1) << 23)
        return self.ttbcr_n | (int(self.pd0) << 4) | (int(self.pd1) << 5)


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


@dataclass(frozen=True)
class SmmuSnapshot:
    """The SMMU's observable state (TLB, bank registers and bindings, contexts)."""

    tlb: Any
    registers: tuple[BankRegisters, ...]
    bindings: tuple[str | None, ...]
    contexts: tuple[tuple[str, int | None, bool, bool, int | None, int | None], ...]


def _tlb_delta(now: TLBStats, base: TLBStats) -> TLBStats:
    return TLBStats(*(getattr(now, f.name) - getattr(base, f.name) for f in fields(TLBStats)))


def _tlb_sum(a: TLBStats, b: TLBStats) -> TLBStats:
    return TLBStats(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(TLBStats)))


class _Bank:
    """One hardware context bank: registers, the bound context, its translator."""

    def __init__(self, smmu: Smmu, index: int) -> None:
        self.index = index
        self.regs = BankRegisters()
        self.context: SmmuContext | None = None
        self.translator = Translator(smmu.tlb, index, self._walk, privileged=True)
        self._smmu = smmu

    def _walk(self, va: int) -> Walk:
        """The bank's hardware walker: it follows the programmed registers only."""
        regs = self.regs
        smmu = self._smmu
        if va >= smmu.input_limit:
            return Walk(va=va, reads=0, level=1, fault=FaultKind.TRANSLATION)
        if regs.ttbcr_n:
            if va >> SPLIT_BIT & 1:
                root, disabled, va_bits = regs.ttbr1, regs.pd1, None
            else:
                root, disabled, va_bits = regs.ttbr0, regs.pd0, SPLIT_LOW_VA_BITS
        else:
            root, disabled, va_bits = regs.ttbr0, regs.pd0, None
        if disabled:
            return Walk(va=va, reads=0, level=1, fault=FaultKind.TRANSLATION)
        return walk_tables(smmu.fmt, smmu.memory, root, va, va_bits=va_bits)


class Smmu:
    """One SMMU instance: ``context_banks`` banks translating through one shared TLB.

    Entries of the global TLB are tagged with the bank number, so contexts of one SMMU
    compete for its entries while contexts of different SMMUs never meet.
    """

    def __init__(
        self,
        name: str,
        memory: PhysicalMemory,
        table_memory: TableMemory,
        *,
        fmt: PageTableFormat = ARMV7S,
        context_banks: int,
        tlb: TLBConfig,
        lock: MachineLock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"SMMU name {name!r} must be a non-empty string")
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(f"SMMU {name!r} needs a PhysicalMemory, got {memory!r}")
        if not isinstance(table_memory, TableMemory):
            raise InvalidArgumentError(
                f"SMMU {name!r} needs a TableMemory for its tables, got {table_memory!r}"
            )
        if table_memory.memory is not memory:
            raise InvalidArgumentError(
                f"SMMU {name!r}: the table memory window lives in another PhysicalMemory"
            )
        if not isinstance(fmt, PageTableFormat):
            raise InvalidArgumentError(f"SMMU {name!r}: fmt {fmt!r} is not a PageTableFormat")
        if isinstance(context_banks, bool) or not isinstance(context_banks, int):
            raise InvalidArgumentError(
                f"SMMU {name!r}: context_banks {context_banks!r} is not an integer"
            )
        if not 1 <= context_banks <= 128:
            raise InvalidArgumentError(
                f"SMMU {name!r}: context_banks {context_banks} must be between 1 and 128"
            )
        if not isinstance(tlb, TLBConfig):
            raise InvalidArgumentError(f"SMMU {name!r}: tlb {tlb!r} is not a TLBConfig")
        #: The machine lock (:mod:`vcmm.hw.lock`) its contexts' table changes and
        #: translations hold: the system's, or a private one.
        self.lock = check_lock(f"SMMU {name!r}", lock)
        self.name = name
        self.memory = memory
        self.table_memory = table_memory
        self.fmt = fmt
        #: The one global TLB every bank shares (entries tagged by bank number).
        self.tlb = TLB(tlb)
        #: First input address the SMMU cannot translate (2**32 for ARMv7 short tables).
        self.input_limit = fmt.geometry().va_limit
        self._banks = [_Bank(self, i) for i in range(context_banks)]
        self._contexts: dict[str, SmmuContext] = {}

    def __repr__(self) -> str:
        return (
            f"Smmu({self.name!r}, {self.fmt.name}, banks={len(self._banks)}, "
            f"contexts={list(self._contexts)})"
        )

    # -- contexts -----------------------------------------------------------------------

    @property
    def context_banks(self) -> int:
        return len(self._banks)

    @machine_locked
    def context_init(self, name: str, *, split: bool = False) -> SmmuContext:
        """Create the virtual context ``name`` (the seed's ``smmu_ctx_init``)."""
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"context name {name!r} must be a non-empty string")
        if name in self._contexts:
            raise InvalidArgumentError(f"SMMU {self.name!r} already has a context named {name!r}")
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {name!r}: split={split!r} is not a bool")
        if split:
            self._check_split_format(name)
        ctx = SmmuContext(self, name, split=split)
        self._contexts[name] = ctx
        return ctx

    def _check_split_format(self, who: str) -> None:
        if self.fmt is not ARMV7S:
            raise InvalidArgumentError(
                f"context {who!r}: split TTBR0/TTBR1 on VA[31] is ARMv7 TTBCR.N=1; the "
                f"{self.fmt.name} SMMU {self.name!r} has no such split"
            )

    def context(self, name: str) -> SmmuContext:
        """The context named ``name`` (the seed's ``smmu_get_ctx_instance``)."""
        ctx = self._contexts.get(name)
        if ctx is None:
            known = ", ".join(self._contexts) or "none"
            raise NotFoundError(f"SMMU {self.name!r} has no context {name!r} (known: {known})")
        return ctx

    @property
    def contexts(self) -> tuple[SmmuContext, ...]:
        return tuple(self._contexts.values())

    def _forget(self, ctx: SmmuContext) -> None:
        del self._contexts[ctx.name]

    # -- banks --------------------------------------------------------------------------

    def _bank(self, index: object, who: str) -> _Bank:
        if isinstance(index, bool) or not isinstance(index, int):
            raise InvalidArgumentError(f"{who}: bank {index!r} is not an integer")
        if not 0 <= index < len(self._banks):
            raise InvalidArgumentError(
                f"{who}: bank {index} does not exist; SMMU {self.name!r} has banks "
                f"0..{len(self._banks) - 1}"
            )
        return self._banks[index]

    def bank_registers(self, bank: int) -> BankRegisters:
        """What bank ``bank``'s registers hold now."""
        return self._bank(bank, f"SMMU {self.name!r}").regs

    def bound_context(self, bank: int) -> SmmuContext | None:
        """The context bound to ``bank``, if any."""
        return self._bank(bank, f"SMMU {self.name!r}").context

    def free_banks(self) -> list[int]:
        return [b.index for b in self._banks if b.context is None]

    # -- counters and snapshots -----------------------------------------------------------

    def stats(self) -> TLBStats:
        """A copy of the global TLB counters (every bank together)."""
        return self.tlb.stats.copy()

    def snapshot(self) -> SmmuSnapshot:
        """Everything observable about the SMMU and its contexts, comparable with ``==``."""
        return SmmuSnapshot(
            tlb=self.tlb.snapshot(),
            registers=tuple(b.regs for b in self._banks),
            bindings=tuple(b.context.name if b.context else None for b in self._banks),
            contexts=tuple(
                (
                    c.name,
                    c.bank,
                    c.is_active,
                    c.split,
                    c.ttbr0,
                    c.ttbr1,
                )
                for c in self._contexts.values()
            ),
        )


def find_context(smmus: Iterable[Smmu], name: str) -> SmmuContext:
    """Find context ``name`` across SMMUs (the seed's lookup through smmu0/, smmu1/...)."""
    found = [s.context(name) for s in smmus if name in {c.name for c in s.contexts}]
    if not found:
        raise NotFoundError(f"no SMMU has a context named {name!r}")
    if len(found) > 1:
        owners = ", ".join(c.smmu.name for c in found)
        raise InvalidArgumentError(f"context name {name!r} is ambiguous: SMMUs {owners}")
    return found[0]


class SmmuContext:
    """A virtual SMMU context: tables, a fault hook, and a binding to a hardware bank.

    Create with :meth:`Smmu.context_init`.
    """

    def __init__(self, smmu: Smmu, name: str, *, split: bool = False) -> None:
        self.smmu = smmu
        self.name = name
        self._split = split
        self._low: PageTable | None = None
        self._high: PageTable | None = None
        #: Whether the context manages its tables (False once pointed at external ones).
        self._own_tables = True
        #: Tables this context allocated and must free; may outlive own mode when the
        #: upper layer passes one of them back to :meth:`set_tables`.
        self._owned: list[PageTable] = []
        self._bank: _Bank | None = None
        self._active = False
        self._alive = True
        self._updating = False
        self._changed: list[tuple[int, int]] = []
        self._handler: FaultHandler | None = None
        self._handler_data: Any = None
        self._faults = 0
        self._retries = 0
        self._terminated = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self._tlb_acc = TLBStats()
        self._tlb_base: TLBStats | None = None
        self._low, self._high = self._new_own_tables(split)
        self._owned = [t for t in (self._low, self._high) if t is not None]

    @property
    def lock(self) -> MachineLock:
        """The machine lock of the SMMU that made this context."""
        return self.smmu.lock

    def __repr__(self) -> str:
        where = f"bank {self.bank}" if self._bank else "unbound"
        state = "active" if self._active else "inactive"
        return f"SmmuContext({self.name!r} on {self.smmu.name!r}, {where}, {state})"

    # -- state --------------------------------------------------------------------------

    def _check_alive(self) -> None:
        if not self._alive:
            raise StateError(f"context {self.name!r} was deinitialised")

    @property
    def bank(self) -> int | None:
        """Number of the hardware bank this context is bound to."""
        return self._bank.index if self._bank is not None else None

    @property
    def is_bound(self) -> bool:
        return self._bank is not None

    @property
    def is_active(self) -> bool:
        """Whether the bank is programmed with this context (the seed's smmu_is_active)."""
        return self._active

    @property
    def split(self) -> bool:
        return self._split

    @property
    def low_table(self) -> PageTable | None:
        """The TTBR0 table (the whole space unless split)."""
        return self._low

    @property
    def high_table(self) -> PageTable | None:
        """The TTBR1 table (VA[31]=1) in split mode."""
        return self._high

    @property
    def ttbr0(self) -> int | None:
        return self._low.root if self._low is not None else None

    @property
    def ttbr1(self) -> int | None:
        return self._high.root if self._high is not None else None

    @property
    def in_update(self) -> bool:
        return self._updating

    # -- binding and activation -----------------------------------------------------------

    @machine_locked
    def bind(self, smmu: Smmu, bank: int | None = None) -> int:
        """Bind to a hardware bank of ``smmu`` (a free one if ``bank`` is None).

        Returns the bank number.  Refuses a bank that is busy, a context of another
        SMMU and a context that is already bound.
        """
        self._check_alive()
        if smmu is not self.smmu:
            other = getattr(smmu, "name", smmu)
            raise InvalidArgumentError(
                f"context {self.name!r} belongs to SMMU {self.smmu.name!r}, not {other!r}"
            )
        if self._bank is not None:
            raise StateError(
                f"context {self.name!r} is already bound to bank {self._bank.index}; unbind first"
            )
        if bank is None:
            free = smmu.free_banks()
            if not free:
                raise BusyError(
                    f"SMMU {smmu.name!r}: all {smmu.context_banks} context banks are bound; "
                    f"cannot bind {self.name!r}"
                )
            target = smmu._bank(free[0], f"bind {self.name!r}")
        else:
            target = smmu._bank(bank, f"bind {self.name!r}")
            if target.context is not None:
                raise BusyError(
                    f"SMMU {smmu.name!r} bank {bank} is bound to context "
                    f"{target.context.name!r}; cannot bind {self.name!r}"
                )
        target.context = self
        self._bank = target
        return target.index

    @machine_locked
    def unbind(self) -> None:
        """Release the hardware bank (the context must be deactivated first)."""
        self._check_alive()
        if self._bank is None:
            raise StateError(f"context {self.name!r} is not bound")
        if self._active:
            raise BusyError(
                f"context {self.name!r} is active on bank {self._bank.index}; "
                "deactivate it before unbinding"
            )
        self._bank.context = None
        self._bank = None

    @machine_locked
    def activate(self) -> None:
        """Program the bank with this context's tables: a context switch.

        The bank's TLB entries (left by whichever context used the bank before) are
        invalidated, so nothing of another address space leaks through.
        """
        self._check_alive()
        if self._bank is None:
            raise StateError(f"context {self.name!r} is not bound to a bank; bind it first")
        if self._active:
            raise StateError(f"context {self.name!r} is already active on bank {self.bank}")
        self._program()
        self._active = True
        self._tlb_base = self.smmu.tlb.stats_for(self._bank.index).copy()

    @machine_locked
    def deactivate(self) -> None:
        """Disable the bank; its device's transactions then stop (see SmmuDevice)."""
        self._check_alive()
        if not self._active or self._bank is None:
            raise StateError(f"context {self.name!r} is not active")
        self._collect_tlb_stats()
        self._bank.regs = BankRegisters()
        self._active = False

    def _collect_tlb_stats(self) -> None:
        if self._tlb_base is not None and self._bank is not None:
            now = self.smmu.tlb.stats_for(self._bank.index)
            self._tlb_acc = _tlb_sum(self._tlb_acc, _tlb_delta(now, self._tlb_base))
            self._tlb_base = now.copy()

    def _program(self) -> None:
        """Write TTBR0/TTBR1/TTBCR/enable and invalidate the bank's TLB tag."""
        assert self._bank is not None
        low, high = self._low, self._high
        self._bank.regs = BankRegisters(
            ttbr0=low.root if low is not None else 0,
            ttbr1=high.root if high is not None else 0,
            ttbcr_n=1 if self._split else 0,
            pd0=low is None,
            pd1=self._split and high is None,
            enabled=True,
            eae=self.smmu.fmt.ttbcr_eae,
        )
        self.smmu.tlb.invalidate_tag(self._bank.index)

    @machine_locked
    def deinit(self) -> None:
        """Destroy the context (the seed's ``smmu_ctx_deinit``); it must be unbound."""
        self._check_alive()
        if self._bank is not None:
            raise BusyError(f"context {self.name!r} is bound to bank {self.bank}; unbind first")
        self._release_owned(())
        self._low = self._high = None
        self.smmu._forget(self)
        self._alive = False

    # -- tables ---------------------------------------------------------------------------

    def _new_table(self, va_bits: int | None) -> PageTable:
        s = self.smmu
        return PageTable(s.fmt, s.memory, s.table_memory, va_bits=va_bits)

    def _new_own_tables(self, split: bool) -> tuple[PageTable, PageTable | None]:
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
            if table not in keep and next(table.mappings(), None) is not None:
                raise BusyError(
                    f"context {self.name!r}: its own table at {table.root:#x} still holds "
                    f"mappings; unmap them before {why}"
                )

    def _release_owned(self, keep: tuple[PageTable | None, ...]) -> None:
        """Free the owned tables not in ``keep`` (commit step)."""
        for table in self._owned:
            if table not in keep:
                table.destroy()
        self._owned = [t for t in self._owned if t in keep]

    @machine_locked
    def set_split(self, split: bool) -> None:
        """Reshape the context's own tables for split (TTBCR.N=1) or whole-space use.

        Only while its own tables hold no mapping; contexts pointed at external tables
        change shape through :meth:`set_tables`.
        """
        self._check_alive()
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self.name!r}: split={split!r} is not a bool")
        if not self._own_tables:
            raise StateError(
                f"context {self.name!r} uses external tables; call set_tables() to change them"
            )
        if split:
            self.smmu._check_split_format(self.name)
        if split == self._split:
            return
        self._check_releasable((), "changing the split")
        if self._updating:
            raise StateError(
                f"context {self.name!r}: cannot reshape tables inside update_start/update_done"
            )
        low, high = self._new_own_tables(split)
        self._release_owned(())
        self._owned = [t for t in (low, high) if t is not None]
        self._low, self._high, self._split = low, high, split
        if self._active:
            self._program()

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
        the module notes on split mode); either may be None, which
        disables walks of that half (TTBCR.PD0/PD1).  If the context is active the bank
        is reprogrammed at once (with its TLB tag invalidated).
        """
        self._check_alive()
        if split is None:
            split = high is not None
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self.name!r}: split={split!r} is not a bool")
        if low is None and high is None:
            raise InvalidArgumentError(
                f"context {self.name!r}: set_tables needs at least one table; "
                "use_own_tables() returns to the context's own"
            )
        if split:
            self.smmu._check_split_format(self.name)
        elif high is not None:
            raise InvalidArgumentError(
                f"context {self.name!r}: a TTBR1 table needs split mode (TTBCR.N=1)"
            )
        full_bits = self.smmu.fmt.geometry().va_bits
        want_low = (SPLIT_LOW_VA_BITS, full_bits) if split else (full_bits,)
        for label, table, bits in (("low", low, want_low), ("high", high, (full_bits,))):
            if table is None:
                continue
            if not isinstance(table, PageTable):
                raise InvalidArgumentError(
                    f"context {self.name!r}: {label} table {table!r} is not a PageTable"
                )
            if table.fmt is not self.smmu.fmt or table.memory is not self.smmu.memory:
                raise InvalidArgumentError(
                    f"context {self.name!r}: {label} table is {table.fmt.name} in another "
                    f"memory or format; SMMU {self.smmu.name!r} walks {self.smmu.fmt.name}"
                )
            if table.va_bits not in bits:
                needs = " or ".join(str(b) for b in bits)
                raise InvalidArgumentError(
                    f"context {self.name!r}: {label} table covers {table.va_bits} VA bits; "
                    f"{'split' if split else 'whole-space'} mode needs {needs}"
                )
        if self._updating:
            raise StateError(
                f"context {self.name!r}: cannot switch tables inside update_start/update_done"
            )
        self._check_releasable((low, high), "pointing the context at other tables")
        self._release_owned((low, high))
        self._low, self._high = low, high
        self._split = split
        self._own_tables = False
        if self._active:
            self._program()

    @machine_locked
    def use_own_tables(self, *, split: bool = False) -> None:
        """Drop external tables and return to fresh tables of the context's own."""
        self._check_alive()
        if not isinstance(split, bool):
            raise InvalidArgumentError(f"context {self.name!r}: split={split!r} is not a bool")
        if split:
            self.smmu._check_split_format(self.name)
        if self._own_tables:
            self.set_split(split)
            return
        if self._updating:
            raise StateError(
                f"context {self.name!r}: cannot switch tables inside update_start/update_done"
            )
        self._check_releasable((), "returning to fresh tables of its own")
        low, high = self._new_own_tables(split)
        self._release_owned(())
        self._owned = [t for t in (low, high) if t is not None]
        self._low, self._high = low, high
        self._own_tables = True
        self._split = split
        if self._active:
            self._program()

    def _table_for(self, va: int, who: str) -> PageTable:
        """The table holding ``va``: TTBR1's for VA[31]=1 in split mode, else TTBR0's."""
        high = self._split and (va >> SPLIT_BIT) & 1
        table = self._high if high else self._low
        if table is None:
            raise StateError(
                f"{who}: context {self.name!r} has no {'TTBR1' if high else 'TTBR0'} table "
                f"for {va:#x} (walks there are disabled)"
            )
        return table

    def _pieces(self, va: int, length: int) -> list[tuple[int, int]]:
        """Split ``[va, va+length)`` at the TTBR0/TTBR1 boundary when split."""
        boundary = 1 << SPLIT_BIT
        if self._split and va < boundary < va + length:
            return [(va, boundary - va), (boundary, va + length - boundary)]
        return [(va, length)]

    # -- the update bracket -----------------------------------------------------------------

    @machine_locked
    def update_start(self) -> None:
        """Open a batch of table changes (the seed's ``smmu_update_start``)."""
        self._check_alive()
        if self._updating:
            raise StateError(f"context {self.name!r}: update_start called twice")
        self._updating = True
        self._changed = []

    @machine_locked
    def update_done(self) -> int:
        """Close the batch and make the changes visible: invalidate the TLB.

        Returns the number of TLB entries removed.
        """
        self._check_alive()
        if not self._updating:
            raise StateError(f"context {self.name!r}: update_done without update_start")
        removed = 0
        if self._bank is not None and self._changed:
            tag = self._bank.index
            merged = _merge_ranges(self._changed)
            if len(merged) > PRECISE_INVALIDATION_LIMIT:
                removed = self.smmu.tlb.invalidate_tag(tag)
            else:
                for va, size in merged:
                    removed += self.smmu.tlb.invalidate_range(va, size, tag)
        self._updating = False
        self._changed = []
        return removed

    def _require_update(self, op: str) -> None:
        if not self._updating:
            raise StateError(
                f"context {self.name!r}: {op} outside update_start()/update_done(); the seed "
                "requires the bracket around every table change"
            )

    @machine_locked
    def invalidate_tlb(self, va: int | None = None, size: int | None = None) -> int:
        """Invalidate this bank's TLB entries (all, or those overlapping a range).

        For upper layers that edit an external table directly.  Unbound: nothing to do.
        """
        self._check_alive()
        if (va is None) != (size is None):
            raise InvalidArgumentError("invalidate_tlb takes both va and size, or neither")
        if va is not None:
            va = check_int("invalidate_tlb", "va", va)
            size = check_int("invalidate_tlb", "size", size)
            if size == 0:
                raise InvalidArgumentError("invalidate_tlb: size must be > 0")
        if self._bank is None:
            return 0
        if va is None:
            return self.smmu.tlb.invalidate_tag(self._bank.index)
        assert size is not None
        return self.smmu.tlb.invalidate_range(va, size, self._bank.index)

    # -- mapping ----------------------------------------------------------------------------

    def _check_range(self, op: str, va: object, pa: object, length: object) -> tuple[int, int, int]:
        who = f"{self.name}.{op}"
        v = check_int(who, "va", va)
        p = check_int(who, "pa", pa)
        n = check_int(who, "length", length)
        if n == 0:
            raise InvalidArgumentError(f"{who}: length must be > 0")
        if v + n > self.smmu.input_limit:
            raise InvalidArgumentError(
                f"{who}: VA range {AddressRange(v, n)} runs past the SMMU's input space "
                f"({self.smmu.input_limit:#x})"
            )
        return v, p, n

    @machine_locked
    def map(self, pa: int, va: int, length: int, attrs: PageAttrs) -> None:
        """Map one page or block (the seed's ``smmu_map``).

        ``length`` must be exactly one of the format's sizes (4K, 64K, 1M, 16M for ARMv7
        short descriptors) and ``va`` and ``pa`` aligned to it.
        """
        self._check_alive()
        who = f"{self.name}.map"
        v, p, n = self._check_range("map", va, pa, length)
        sizes = self.smmu.fmt.sizes
        if n not in sizes:
            allowed = ", ".join(format_size(s) for s in sorted(sizes))
            raise UnsupportedSizeError(
                f"{who}: length {format_size(n)} ({n:#x}) is not one of the page sizes {allowed}"
            )
        if v % n or p % n:
            raise AlignmentError(
                f"{who}: va {v:#x} and pa {p:#x} must both be aligned to the "
                f"{format_size(n)} page size"
            )
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"{who}: attrs {attrs!r} is not a PageAttrs")
        self._require_update("map")
        self._table_for(v, who).map(v, p, n, attrs, page_size=n)
        self._changed.append((v, n))

    @machine_locked
    def map_range(
        self, va: int, pa: int, length: int, attrs: PageAttrs, *, page_size: int | None = None
    ) -> None:
        """Map an arbitrary 4K-aligned range with the largest page sizes that fit.

        ``page_size`` forces one size for every page (va, pa and length aligned to it),
        for studies of how the page size changes TLB behaviour.
        """
        self._check_alive()
        who = f"{self.name}.map_range"
        v, p, n = self._check_range("map_range", va, pa, length)
        granule = self.smmu.fmt.min_page
        if v % granule or p % granule or n % granule:
            raise AlignmentError(
                f"{who}: va {v:#x}, pa {p:#x} and length {n:#x} must be multiples of "
                f"{format_size(granule)}"
            )
        if not isinstance(attrs, PageAttrs):
            raise InvalidArgumentError(f"{who}: attrs {attrs!r} is not a PageAttrs")
        if page_size is not None:
            sizes = self.smmu.fmt.sizes
            if page_size not in sizes:
                allowed = ", ".join(format_size(s) for s in sorted(sizes))
                raise UnsupportedSizeError(
                    f"{who}: page_size {page_size!r} is not one of the page sizes {allowed}"
                )
            if v % page_size or p % page_size or n % page_size:
                raise AlignmentError(
                    f"{who}: va {v:#x}, pa {p:#x} and length {n:#x} must be aligned to the "
                    f"forced {format_size(page_size)} page size"
                )
        self._require_update("map_range")
        pieces = self._pieces(v, n)
        tables = [self._table_for(pv, who) for pv, _ in pieces]
        done: list[tuple[PageTable, int, int]] = []
        try:
            for (pv, pn), table in zip(pieces, tables, strict=True):
                table.map(pv, p + (pv - v), pn, attrs, page_size=page_size)
                done.append((table, pv, pn))
        except BaseException:
            for table, pv, pn in reversed(done):
                table.unmap(pv, pn)
            raise
        self._changed.append((v, n))

    @machine_locked
    def unmap(self, va: int, length: int) -> None:
        """Remove the mappings covering ``[va, va+length)`` (the seed's ``smmu_unmap``).

        The whole range must be mapped.  A block cut by the range is split first (the
        table's ``split_blk_unmap`` behaviour); the TLB still holds the old block until
        ``update_done`` invalidates it.
        """
        self._check_alive()
        who = f"{self.name}.unmap"
        v, _, n = self._check_range("unmap", va, 0, length)
        granule = self.smmu.fmt.min_page
        if v % granule or n % granule:
            raise AlignmentError(
                f"{who}: va {v:#x} and length {n:#x} must be multiples of {format_size(granule)}"
            )
        self._require_update("unmap")
        pieces = self._pieces(v, n)
        tables = [self._table_for(pv, who) for pv, _ in pieces]
        if len(pieces) > 1:  # both halves must be unmappable before either changes
            for (pv, pn), table in zip(pieces, tables, strict=True):
                _check_no_hole(who, table, pv, pn)
        for (pv, pn), table in zip(pieces, tables, strict=True):
            table.unmap(pv, pn)
        self._changed.append((v, n))

    # -- translation ----------------------------------------------------------------------

    @machine_locked
    def translate(self, va: int) -> int:
        """Software VA -> PA query through the tables (the seed's ``smmu_translate``).

        Uses neither the TLB nor the bank, so it works on inactive contexts too.
        """
        self._check_alive()
        v = check_int(f"{self.name}.translate", "va", va)
        if v >= self.smmu.input_limit:
            raise NotMappedError(
                f"context {self.name!r}: {v:#x} is beyond the {self.smmu.input_limit:#x} "
                "input space"
            )
        high = self._split and (v >> SPLIT_BIT) & 1
        table = self._high if high else self._low
        if table is None:
            raise NotMappedError(
                f"context {self.name!r}: {v:#x} falls in a half with no table "
                f"({'TTBR1' if high else 'TTBR0'} walks disabled)"
            )
        walk = table.walk(v)
        if walk.pa is None:
            kind = walk.fault.value if walk.fault else "translation"
            raise NotMappedError(f"context {self.name!r}: {v:#x} is not mapped ({kind} fault)")
        return walk.pa

    def _translator(self, who: str) -> Translator:
        if not self._active or self._bank is None:
            raise StateError(f"{who}: context {self.name!r} is not active")
        return self._bank.translator

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
        self._check_alive()
        translator = self._translator(f"{self.name}.translate_access")
        v = check_address(va)
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        result = translator.translate(v, access)
        if isinstance(result, TranslationFault):
            return self._handle_fault(translator, result, device)
        return result

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
        translator = self._translator(f"{self.name}.translate_batch")
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        if not isinstance(vas, np.ndarray):
            raise InvalidArgumentError(
                f"{self.name}.translate_batch: vas must be a numpy array, got {type(vas).__name__}"
            )
        arr = np.ascontiguousarray(vas)
        out = np.empty(len(arr), dtype=np.uint64)
        i, n = 0, len(arr)
        while i < n:
            res = translator.translate_batch(arr[i:], access)
            out[i : i + res.done] = res.pas
            i += res.done
            if res.fault is None:
                break
            try:
                out[i] = self._handle_fault(translator, res.fault, device).pa
            except DeviceFaultError as exc:
                exc.completed = i  # type: ignore[attr-defined]
                exc.details["completed"] = i
                raise
            i += 1
        return out

    def _handle_fault(
        self, translator: Translator, fault: TranslationFault, device: str | None
    ) -> Translation:
        """Report ``fault`` to the hook; replay while it asks, else terminate."""
        assert self._bank is not None
        retries = 0
        while True:
            self._faults += 1
            event = SmmuFault(
                smmu=self.smmu.name,
                context=self.name,
                bank=self._bank.index,
                va=fault.va,
                access=fault.access,
                kind=fault.kind,
                level=fault.level,
                device=device,
            )
            if self._handler is None:
                log.warning("%s; no fault handler hooked: transaction terminated", event.describe())
                raise self._terminate(event, "no fault handler is hooked")
            decision = self._handler(event, self._handler_data)
            if isinstance(decision, bool):
                decision = int(decision)
            if decision not in (0, 1):
                raise self._terminate(
                    event, f"the fault handler returned {decision!r}, not 1 (retry) or 0"
                )
            if decision == 0:
                raise self._terminate(event, "the fault handler asked to terminate")
            if retries >= MAX_FAULT_RETRIES:
                raise self._terminate(
                    event,
                    f"the fault handler kept asking for retries ({MAX_FAULT_RETRIES} replays "
                    "all faulted)",
                )
            if not self._active:
                raise self._terminate(event, "the fault handler deactivated the context")
            retries += 1
            self._retries += 1
            self.smmu.tlb.invalidate_va(translator.tag, fault.va)
            result = translator.translate(fault.va, fault.access)
            if isinstance(result, Translation):
                return result
            fault = result

    def _terminate(self, event: SmmuFault, why: str) -> DeviceFaultError:
        self._terminated += 1
        return DeviceFaultError(
            f"{event.describe()}; transaction terminated: {why}",
            device=event.device,
            address=event.va,
            va=event.va,
            access=event.access,
            kind=event.kind,
            context=event.context,
            smmu=event.smmu,
            bank=event.bank,
            fault=event,
        )

    # -- faults and counters --------------------------------------------------------------

    @machine_locked
    def hook_interrupt(self, handler: FaultHandler | None, data: Any = None) -> None:
        """Register ``handler(fault, data)`` for this context's faults (None removes it)."""
        self._check_alive()
        if handler is not None and not callable(handler):
            raise InvalidArgumentError(
                f"context {self.name!r}: fault handler {handler!r} is not callable"
            )
        self._handler = handler
        self._handler_data = data

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
        tlb = self._tlb_acc
        if self._active and self._bank is not None and self._tlb_base is not None:
            now = self.smmu.tlb.stats_for(self._bank.index)
            tlb = _tlb_sum(tlb, _tlb_delta(now, self._tlb_base))
        return ContextStats(
            tlb=tlb.copy(),
            faults=self._faults,
            retries=self._retries,
            terminated=self._terminated,
            bytes_read=self.bytes_read,
            bytes_written=self.bytes_written,
        )


def _merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort and coalesce overlapping or touching ``(start, size)`` ranges."""
    merged: list[tuple[int, int]] = []
    for start, size in sorted(ranges):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_size = merged[-1]
            merged[-1] = (last_start, max(last_start + last_size, start + size) - last_start)
        else:
            merged.append((start, size))
    return merged


def _check_no_hole(who: str, table: PageTable, va: int, length: int) -> None:
    """Refuse (before any change) an unmap whose range is not entirely mapped."""
    pos, end = va, va + length
    while pos < end:
        walk = table.walk(pos)
        if walk.pa is None:
            raise NotMappedError(
                f"{who}: {pos:#x} inside {AddressRange(va, length)} is not mapped; "
                "nothing was unmapped"
            )
        pos = walk.va_base + walk.page_size
