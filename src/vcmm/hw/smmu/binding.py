"""The driver lifecycle of a context: bind to a bank, activate (program it), deactivate.

A virtual context holds at most one hardware bank of its SMMU at a time, and may lose
it while idle (bound, not active) to a context that needs one (:mod:`.banktable`);
activating a context without a bank binds one first.  Activation writes the bank's
registers from the context's tables (a context switch) and drops the bank's TLB
entries, which another address space may have left, unless the context comes back to
the bank it kept with the very registers it left it with and no table switch since:
then nobody else used the bank, every table change meanwhile was flushed from it (its
TLB maintenance targets the bound bank, active or not), and its entries stay warm.
Deactivation disables the bank and, if the context translated anything meanwhile,
stamps the bank as just used (the LRU order).  The fault registers are left alone:
software clears them (write 1s).
While bound, the binding is also the flush target of the context's TLB maintenance
(:class:`~vcmm.hw.tlbgather.TlbGather`): the bank number is the tag of its entries in
the SMMU's shared TLB.
"""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from vcmm.errors import BusyError, InvalidArgumentError, StateError
from vcmm.hw.smmu.bank import Bank, BankRegisters
from vcmm.hw.tlb import TLBStats
from vcmm.hw.translate import Translator

if TYPE_CHECKING:
    from vcmm.hw.smmu.context import SmmuContext
    from vcmm.hw.smmu.instance import Smmu
    from vcmm.hw.smmu.tables import ContextTables


def _tlb_delta(now: TLBStats, base: TLBStats) -> TLBStats:
    return TLBStats(*(getattr(now, f.name) - getattr(base, f.name) for f in fields(TLBStats)))


def _tlb_sum(a: TLBStats, b: TLBStats) -> TLBStats:
    return TLBStats(*(getattr(a, f.name) + getattr(b, f.name) for f in fields(TLBStats)))


class ContextBinding:
    """A context's hold on a hardware bank, and whether the bank runs it."""

    def __init__(self, smmu: Smmu, context: SmmuContext) -> None:
        self._smmu = smmu
        self._name = context.name
        #: The context this binding belongs to (what :meth:`Smmu.bound_context` names).
        self.context = context
        self.bank: Bank | None = None
        self.active = False
        #: Times the context lost its idle bank to another context.
        self.evictions = 0
        #: TLB counters of the bank's tag over past activations, and the tag's counters
        #: when the current activation began.
        self._tlb_acc = TLBStats()
        self._tlb_base: TLBStats | None = None
        #: The registers the bank ran this context with when it was last deactivated,
        #: kept while nothing can have made the bank's TLB entries stale (the bank not
        #: taken, the tables not switched); None: the next activation invalidates.
        self._kept: BankRegisters | None = None

    def __repr__(self) -> str:
        return f"<binding of {self._name!r} to {self.bank!r}>"

    @property
    def name(self) -> str:
        return self._name

    @property
    def bank_index(self) -> int | None:
        return self.bank.index if self.bank is not None else None

    def bind(self, smmu: object, bank: int | None) -> int:
        """Bind to a bank of ``smmu``: ``bank``, or a free one, or the least recently
        used idle one (its context evicted) if ``bank`` is None."""
        if smmu is not self._smmu:
            other = smmu.name if isinstance(smmu, type(self._smmu)) else smmu
            raise InvalidArgumentError(
                f"context {self._name!r} belongs to SMMU {self._smmu.name!r}, not {other!r}"
            )
        if self.bank is not None:
            raise StateError(
                f"context {self._name!r} is already bound to bank {self.bank.index}; unbind first"
            )
        self.bank = self._smmu.claim_bank(self, bank)
        return self.bank.index

    def evicted(self) -> None:
        """The SMMU gave this idle context's bank to another context."""
        assert self.bank is not None and not self.active
        self.bank = None
        self._kept = None
        self.evictions += 1

    def tables_changed(self) -> None:
        """The idle context was pointed at other tables: its bank's entries are stale."""
        self._kept = None

    def unbind(self) -> None:
        """Release the bank (the context must be deactivated first)."""
        if self.bank is None:
            raise StateError(f"context {self._name!r} is not bound")
        if self.active:
            raise BusyError(
                f"context {self._name!r} is active on bank {self.bank.index}; "
                "deactivate it before unbinding"
            )
        self._smmu.release_bank(self.bank)
        self.bank = None
        self._kept = None

    def activate(self, tables: ContextTables) -> None:
        """Program the bank with ``tables`` (binding one first if the context has none)
        and start counting this activation."""
        if self.active:
            assert self.bank is not None
            raise StateError(f"context {self._name!r} is already active on bank {self.bank.index}")
        if self.bank is None:
            self.bank = self._smmu.claim_bank(self, None)
        regs = self._registers(tables)
        if self._kept is not None and self._kept == regs:
            # The same registers on a bank nobody else used, with every table change
            # since flushed from it: its TLB entries are this context's and current.
            self.bank.regs = regs
        else:
            self.program(tables)
        self._kept = None
        self.active = True
        self._tlb_base = self._smmu.tlb.stats_for(self.bank.index).copy()

    def deactivate(self) -> None:
        """Disable the bank; its device's transactions then stop.  An activation that
        translated something counts as a use of the bank (LRU); one that did not
        (say, one an upper layer undid) leaves the order as it was."""
        if not self.active or self.bank is None:
            raise StateError(f"context {self._name!r} is not active")
        used = self._collect_tlb_stats()
        self._kept = self.bank.regs
        self.bank.regs = BankRegisters()
        self.active = False
        if used.lookups:
            self._smmu.touch_bank(self.bank)

    def program(self, tables: ContextTables) -> None:
        """Write TTBR0/TTBR1/TTBCR/enable from ``tables`` and invalidate the bank's tag
        (the SMMU does that on every register write, which a context switch needs)."""
        assert self.bank is not None
        self.bank.regs = self._registers(tables)
        self._smmu.tlb.invalidate_tag(self.bank.index)

    def _registers(self, tables: ContextTables) -> BankRegisters:
        """What activation writes to the bank for ``tables``."""
        low, high = tables.low, tables.high
        return BankRegisters(
            ttbr0=low.root if low is not None else 0,
            ttbr1=high.root if high is not None else 0,
            ttbcr_n=1 if tables.split else 0,
            pd0=low is None,
            pd1=tables.split and high is None,
            enabled=True,
            eae=self._smmu.fmt.ttbcr_eae,
        )

    def translator(self, op: str) -> Translator:
        """The bank's translator, for a transaction (call ``op``) of an active context."""
        if not self.active or self.bank is None:
            raise StateError(f"{self._name}.{op}: context {self._name!r} is not active")
        return self.bank.translator

    # -- counters -----------------------------------------------------------------------

    def _collect_tlb_stats(self) -> TLBStats:
        """Add the current activation's counters to the total; returns them."""
        delta = TLBStats()
        if self._tlb_base is not None and self.bank is not None:
            now = self._smmu.tlb.stats_for(self.bank.index)
            delta = _tlb_delta(now, self._tlb_base)
            self._tlb_acc = _tlb_sum(self._tlb_acc, delta)
            self._tlb_base = now.copy()
        return delta

    def tlb_stats(self) -> TLBStats:
        """The bank tag's counters accumulated over this context's activations."""
        tlb = self._tlb_acc
        if self.active and self.bank is not None and self._tlb_base is not None:
            now = self._smmu.tlb.stats_for(self.bank.index)
            tlb = _tlb_sum(tlb, _tlb_delta(now, self._tlb_base))
        return tlb.copy()

    # -- the flush target of the context's TLB maintenance -----------------------------------

    def flush_range(self, va: int, size: int) -> int:
        """Invalidate the bank's entries overlapping ``[va, va+size)`` (unbound: none)."""
        if self.bank is None:
            return 0
        return self._smmu.tlb.invalidate_range(va, size, self.bank.index)

    def flush_all(self) -> int:
        """Invalidate every entry of the bank's tag (unbound: none)."""
        if self.bank is None:
            return 0
        return self._smmu.tlb.invalidate_tag(self.bank.index)
