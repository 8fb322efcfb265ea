"""A hardware context bank: its registers, and the walker that follows only them.

What a device behind the bank sees is decided by the registers alone (TTBR0, TTBR1,
TTBCR, the enable bit): the bank's walker reads descriptors from memory starting at the
programmed roots through :func:`~vcmm.hw.pgtable.walk_tables`, never through a Python
table object, so a memory dump plus the registers gives the same translation.  The
bank's fault registers (FSR, FAR, FSYNR0: :mod:`.registers`) record what went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vcmm.attrs import FaultKind
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.pgtable import PageTableFormat, walk_tables
from vcmm.hw.pgtable.walkmany import walk_into
from vcmm.hw.smmu.registers import FaultStatus, idle_status
from vcmm.hw.stream import BatchWalker
from vcmm.hw.tlb import TLB
from vcmm.hw.translate import Translator
from vcmm.hw.walk import Walk, WalkArrays

if TYPE_CHECKING:
    from vcmm.hw.smmu.binding import ContextBinding

#: TTBCR.N=1 splits the 32-bit input space on this bit (ARMv7 short-descriptor).
SPLIT_BIT = 31
#: Input-address width of the reduced TTBR0 table in split mode.
SPLIT_LOW_VA_BITS = 31


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


class Bank:
    """One hardware context bank: registers, the context bound to it, its translator.

    The translator's tag in the SMMU's shared TLB is the bank number.
    """

    def __init__(
        self, index: int, tlb: TLB, fmt: PageTableFormat, memory: PhysicalMemory, limit: int
    ) -> None:
        self.index = index
        self.regs = BankRegisters()
        #: FSR, FAR and FSYNR0 (Format reads the bank's translation scheme).
        self.faults: FaultStatus = idle_status(fmt)
        #: The binding of the virtual context that holds the bank (None: free).
        self.holder: ContextBinding | None = None
        #: Logical time the bank's context last stopped after translating (LRU order).
        self.last_used = 0
        self._fmt = fmt
        self._memory = memory
        self._limit = limit
        self.translator = Translator(tlb, index, BankWalker(self), privileged=True)

    def __repr__(self) -> str:
        who = self.holder.name if self.holder is not None else "free"
        return f"<bank {self.index}: {who}>"

    @property
    def active(self) -> bool:
        """Whether the bank runs its context now (an idle bank is bound, not active)."""
        return self.holder is not None and self.holder.active

    @property
    def fmt(self) -> PageTableFormat:
        return self._fmt

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def limit(self) -> int:
        """Input addresses at or above this take a translation fault."""
        return self._limit

    def walk(self, va: int) -> Walk:
        """The bank's hardware walker: it follows the programmed registers only."""
        regs = self.regs
        if va >= self._limit:
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
        return walk_tables(self._fmt, self._memory, root, va, va_bits=va_bits)


class BankWalker(BatchWalker):
    """A bank's walker for its translator: one address, or many ahead of a stream
    (split by the registers exactly as :meth:`Bank.walk` splits one)."""

    def __init__(self, bank: Bank) -> None:
        self._bank = bank
        self.granule = bank.fmt.min_page
        self.sizes = bank.fmt.sizes

    def __call__(self, va: int) -> Walk:
        return self._bank.walk(va)

    def walk_many(self, vas: npt.NDArray[np.uint64]) -> WalkArrays:
        bank = self._bank
        regs = bank.regs
        out = WalkArrays.empty(int(vas.shape[0]))
        attrs: list = []
        inside = vas < np.uint64(bank.limit) if bank.limit < 1 << 64 else np.ones(vas.shape, bool)
        if regs.ttbcr_n:
            high = ((vas >> np.uint64(SPLIT_BIT)) & np.uint64(1)).astype(np.bool_)
            groups = [
                (inside & high, regs.ttbr1, regs.pd1, None),
                (inside & ~high, regs.ttbr0, regs.pd0, SPLIT_LOW_VA_BITS),
            ]
        else:
            groups = [(inside, regs.ttbr0, regs.pd0, None)]
        for chosen, root, disabled, va_bits in groups:
            rows = np.flatnonzero(chosen)
            if rows.size and not disabled:
                walk_into(bank.fmt, bank.memory, root, vas[rows], out, rows, attrs, va_bits)
        return out.with_attrs(attrs)

    def charge(self, reads: int) -> None:
        self._bank.memory.count_reads(reads * self._bank.fmt.entry_bytes)
