"""Which virtual context holds which hardware bank: more contexts than banks.

The seed's SMMU driver binds virtual contexts to hardware banks at run time (000
L442-531: "These context abstractions are bound to actual contexts at run-time");
real SMMUs have few banks (an MMU-401 has 8), so contexts take turns.  A context that
needs a bank gets a free one (the lowest numbered), else the bank of the least recently
used *idle* context (bound but not active), which loses it: that is a *bank switch*.
The stolen bank's TLB entries are invalidated (and counted: the cost of the switch)
and its registers are reprogrammed when the new context activates.  When every bank
runs an active context the request is refused, naming them.

Recency is a logical clock, so the choice is deterministic whatever the host does: a
bank is stamped when its context is deactivated after translating at least one
transaction (use means translation).  A bank bound but never run is the least
recently used.  Binding stamps nothing and counts nothing unless it evicts, and an
activation that translated nothing leaves the order alone, so a bind, activate,
deactivate, unbind that an upper layer undoes leaves the table as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcmm.checks import is_int
from vcmm.errors import BusyError, InvalidArgumentError
from vcmm.hw.smmu.bank import Bank
from vcmm.hw.tlb import TLB

if TYPE_CHECKING:
    from vcmm.hw.smmu.binding import ContextBinding


@dataclass(frozen=True, slots=True)
class BankStats:
    """Counters of one SMMU's bank binding."""

    #: Binds that evicted another (idle) context: bank switches.
    switches: int = 0
    #: TLB entries those switches invalidated.
    invalidated: int = 0


class BankTable:
    """The banks of one SMMU, who holds each, and the LRU clock that picks a victim."""

    def __init__(self, smmu_name: str, banks: Sequence[Bank], tlb: TLB) -> None:
        self._smmu_name = smmu_name
        self._banks = list(banks)
        self._tlb = tlb
        self._clock = 0
        self._stats = BankStats()

    def __len__(self) -> int:
        return len(self._banks)

    @property
    def banks(self) -> tuple[Bank, ...]:
        return tuple(self._banks)

    @property
    def clock(self) -> int:
        """The logical clock (one tick per deactivation of a context that translated)."""
        return self._clock

    @property
    def stats(self) -> BankStats:
        return self._stats

    def at(self, index: object, who: str) -> Bank:
        """Bank ``index``, refusing what is not a bank number (``who`` names the call)."""
        if not is_int(index):
            raise InvalidArgumentError(f"{who}: bank {index!r} is not an integer")
        if not 0 <= index < len(self._banks):
            raise InvalidArgumentError(
                f"{who}: bank {index} does not exist; SMMU {self._smmu_name!r} has banks "
                f"0..{len(self._banks) - 1}"
            )
        return self._banks[index]

    def free(self) -> list[int]:
        return [b.index for b in self._banks if b.holder is None]

    def choose(self, name: str, bank: int | None) -> Bank:
        """The bank context ``name`` would get (nothing changes): ``bank`` itself unless
        it runs an active context; with None a free bank, else the LRU idle one."""
        if bank is not None:
            target = self.at(bank, f"bind {name!r}")
            if target.active:
                assert target.holder is not None
                raise BusyError(
                    f"SMMU {self._smmu_name!r} bank {bank} is active for context "
                    f"{target.holder.name!r}; cannot bind {name!r} there until it is "
                    "deactivated"
                )
            return target
        free = [b for b in self._banks if b.holder is None]
        if free:
            return free[0]
        idle = [b for b in self._banks if not b.active]
        if not idle:
            running = ", ".join(
                f"bank {b.index}: {b.holder.name!r}" for b in self._banks if b.holder is not None
            )
            raise BusyError(
                f"SMMU {self._smmu_name!r}: all {len(self._banks)} context banks are active "
                f"({running}); cannot bind {name!r} until one of them is deactivated"
            )
        return min(idle, key=lambda b: b.last_used)

    def claim(self, binding: ContextBinding, bank: int | None) -> Bank:
        """Give ``binding`` a bank (see :meth:`choose`), evicting its idle holder."""
        target = self.choose(binding.name, bank)
        victim = target.holder
        invalidated = 0
        if victim is not None:
            invalidated = self._tlb.invalidate_tag(target.index)
            victim.evicted()
        target.holder = binding
        if victim is not None:
            self._stats = BankStats(
                switches=self._stats.switches + 1,
                invalidated=self._stats.invalidated + invalidated,
            )
        return target

    def release(self, bank: Bank) -> None:
        """Free ``bank`` (an unbind); its registers are left as they are."""
        if bank not in self._banks:
            raise InvalidArgumentError(f"SMMU {self._smmu_name!r} has no bank {bank!r}")
        bank.holder = None

    def touch(self, bank: Bank) -> None:
        """Stamp ``bank`` as used now (the LRU order)."""
        self._clock += 1
        bank.last_used = self._clock
