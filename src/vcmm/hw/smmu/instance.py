"""One SMMU instance: its context banks, its one shared TLB, its virtual contexts.

Entries of the global TLB are tagged with the bank number, so contexts of one SMMU
compete for its entries while contexts of different SMMUs never meet.  The contexts
reach the banks through :meth:`Smmu.claim_bank` / :meth:`Smmu.release_bank`, so the
bookkeeping of which context holds which bank lives here (and in :mod:`.banktable`,
which lets more contexts than banks take turns) only.  The SMMU's registers sit at
:attr:`Smmu.register_base` (the seed's ``smmu_get_base_addr``), laid out as
:mod:`.mmio` describes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vcmm.checks import is_int
from vcmm.errors import BusyError, InvalidArgumentError, NotFoundError
from vcmm.hw.lock import MachineLock, check_lock, machine_locked
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import ARMV7S, PageTableFormat
from vcmm.hw.smmu.bank import Bank, BankRegisters
from vcmm.hw.smmu.banktable import BankStats, BankTable
from vcmm.hw.smmu.binding import ContextBinding
from vcmm.hw.smmu.context import SmmuContext
from vcmm.hw.smmu.mmio import DEFAULT_REGISTER_BASE, RegisterWindow, read_bank, write_bank
from vcmm.hw.smmu.registers import FaultStatus
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLB, TLBConfig, TLBSnapshot, TLBStats
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K


@dataclass(frozen=True)
class SmmuSnapshot:
    """The SMMU's observable state (TLB, bank registers, fault registers and bindings,
    the LRU clock and bank counters, contexts)."""

    tlb: TLBSnapshot
    registers: tuple[BankRegisters, ...]
    bindings: tuple[str | None, ...]
    contexts: tuple[tuple[str, int | None, bool, bool, int | None, int | None], ...]
    faults: tuple[FaultStatus, ...]
    last_used: tuple[int, ...]
    bank_stats: BankStats


class Smmu:
    """One SMMU instance: ``context_banks`` banks translating through one shared TLB."""

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
        register_base: int = DEFAULT_REGISTER_BASE,
        register_page_size: int = SZ_4K,
        numpage: int | None = None,
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
        if not is_int(context_banks):
            raise InvalidArgumentError(
                f"SMMU {name!r}: context_banks {context_banks!r} is not an integer"
            )
        if not 1 <= context_banks <= 128:
            raise InvalidArgumentError(
                f"SMMU {name!r}: context_banks {context_banks} must be between 1 and 128"
            )
        if not isinstance(tlb, TLBConfig):
            raise InvalidArgumentError(f"SMMU {name!r}: tlb {tlb!r} is not a TLBConfig")
        self._window = RegisterWindow(
            name, context_banks, register_base, register_page_size, numpage
        )
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
        self._banks = BankTable(
            name,
            [Bank(i, self.tlb, fmt, memory, self.input_limit) for i in range(context_banks)],
            self.tlb,
        )
        self._contexts: dict[str, SmmuContext] = {}

    def __repr__(self) -> str:
        return (
            f"Smmu({self.name!r}, {self.fmt.name}, banks={len(self._banks)}, "
            f"registers at {self.register_base:#x}, contexts={list(self._contexts)})"
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
            self.check_split(name)
        ctx = SmmuContext(self, name, split=split)
        self._contexts[name] = ctx
        return ctx

    def check_split(self, who: str) -> None:
        """Refuse split TTBR0/TTBR1 mode (``who`` names the context) unless this SMMU
        walks ARMv7 short descriptors, the format with TTBCR.N."""
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

    def remove_context(self, ctx: SmmuContext) -> None:
        """Forget a deinitialised context (:meth:`SmmuContext.deinit` calls this)."""
        if not isinstance(ctx, SmmuContext) or self._contexts.get(ctx.name) is not ctx:
            raise NotFoundError(f"SMMU {self.name!r} has no context {ctx!r}")
        if ctx.is_bound:
            raise BusyError(f"context {ctx.name!r} is bound to bank {ctx.bank}; unbind first")
        del self._contexts[ctx.name]

    # -- banks ------------------------------------------------------------------------------

    def claim_bank(self, binding: ContextBinding, bank: int | None) -> Bank:
        """Give ``binding``'s context bank ``bank``, or (None) a free one, else the least
        recently used idle one; what :meth:`SmmuContext.bind` and an activation without
        a bank do.  Refuses a bank that runs an active context, or when all do."""
        return self._banks.claim(binding, bank)

    def release_bank(self, bank: Bank) -> None:
        """Free ``bank`` (:meth:`SmmuContext.unbind`); its registers are left as they are."""
        self._banks.release(bank)

    def touch_bank(self, bank: Bank) -> None:
        """Stamp ``bank`` as just used (activation, deactivation): the LRU order."""
        self._banks.touch(bank)

    def bank_registers(self, bank: int) -> BankRegisters:
        """What bank ``bank``'s registers hold now."""
        return self._banks.at(bank, f"SMMU {self.name!r}").regs

    def bound_context(self, bank: int) -> SmmuContext | None:
        """The context bound to ``bank``, if any."""
        holder = self._banks.at(bank, f"SMMU {self.name!r}").holder
        return holder.context if holder is not None else None

    def free_banks(self) -> list[int]:
        return self._banks.free()

    def bank_stats(self) -> BankStats:
        """Bank switches (binds that evicted an idle context) and the TLB entries those
        switches invalidated."""
        return self._banks.stats

    # -- registers ------------------------------------------------------------------------

    @property
    def register_base(self) -> int:
        """Physical address of the register window (the seed's ``smmu_get_base_addr``)."""
        return self._window.base

    @property
    def register_window(self) -> AddressRange:
        """The whole register window: ``2 * numpage * register_page_size`` bytes."""
        return self._window.range

    @property
    def register_page_size(self) -> int:
        return self._window.page_size

    @property
    def numpage(self) -> int:
        """NUMPAGE: pages in the global space, and in the context bank space."""
        return self._window.numpage

    def bank_base(self, bank: int) -> int:
        """Address of bank ``bank``'s register page (SMMU_CBn_BASE)."""
        return self._window.bank_base(self._banks.at(bank, f"SMMU {self.name!r}").index)

    def fault_status(self, bank: int) -> FaultStatus:
        """Bank ``bank``'s FSR, FAR and FSYNR0."""
        return self._banks.at(bank, f"SMMU {self.name!r}").faults

    @machine_locked
    def read_register(self, addr: int) -> int:
        """Read the register at physical address ``addr`` (see :mod:`.mmio`)."""
        bank, offset = self._window.locate(addr)
        if bank is None:
            return self._window.idr1()
        if bank >= len(self._banks):
            return 0  # an unimplemented bank's page: RAZ/WI
        return read_bank(self._who(bank), self._banks.banks[bank], offset)

    @machine_locked
    def write_register(self, addr: int, value: int) -> None:
        """Write ``value`` to the register at ``addr`` (FSR: 1s clear bits)."""
        bank, offset = self._window.locate(addr)
        if bank is None:
            raise InvalidArgumentError(f"SMMU {self.name!r}: SMMU_IDR1 at {addr:#x} is read-only")
        if bank < len(self._banks):
            write_bank(self._who(bank), self._banks.banks[bank], offset, value)

    def _who(self, bank: int) -> str:
        return f"SMMU {self.name!r} bank {bank}"

    # -- counters and snapshots -----------------------------------------------------------

    def stats(self) -> TLBStats:
        """A copy of the global TLB counters (every bank together)."""
        return self.tlb.stats.copy()

    def snapshot(self) -> SmmuSnapshot:
        """Everything observable about the SMMU and its contexts, comparable with ``==``."""
        banks = self._banks.banks
        return SmmuSnapshot(
            tlb=self.tlb.snapshot(),
            registers=tuple(b.regs for b in banks),
            bindings=tuple(b.holder.name if b.holder else None for b in banks),
            contexts=tuple(
                (c.name, c.bank, c.is_active, c.split, c.ttbr0, c.ttbr1)
                for c in self._contexts.values()
            ),
            faults=tuple(b.faults for b in banks),
            last_used=tuple(b.last_used for b in banks),
            bank_stats=self._banks.stats,
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
