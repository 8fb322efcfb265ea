"""The SMMU's register window: where it sits on the bus and what each address reads.

SMMUv2 (IHI 0062, chapter 8) lays its registers out in pages of PAGESIZE (4 KiB or 64
KiB): the global address space (NUMPAGE pages: GR0, GR1, ...) at the base, then the
translation context bank space (NUMPAGE more), bank ``n`` at ``base + (NUMPAGE + n) *
PAGESIZE``.  The whole window is ``2 * NUMPAGE * PAGESIZE`` bytes and the base is
aligned to that.  NUMPAGE is a power of two from 2 to 256 (``SMMU_IDR1.NUMPAGENDXB``
encodes it as ``2 ** (NUMPAGENDXB + 1)``) and at least the number of banks; pages of
banks that are not implemented read as zero and ignore writes.

What is modelled: in GR0, ``SMMU_IDR1`` (offset 0x24: PAGESIZE bit 31, NUMPAGENDXB
[30:28], NUMCB [7:0]), from which a driver finds the layout; in each bank page SCTLR,
TTBR0, TTBR1, TCR (as activation programmed them: read-only here), and the fault
registers FSR (write 1 to clear), FAR and FSYNR0 (:mod:`.registers`).  A 64-bit
register reads whole at its offset and its upper word alone at offset + 4, as a
32-bit CPU reads it.  Any other offset is refused, naming the modelled ones.
"""

from __future__ import annotations

from dataclasses import replace

from vcmm.checks import check_int, show
from vcmm.errors import InvalidArgumentError
from vcmm.hw.smmu.bank import Bank
from vcmm.hw.smmu.registers import (
    CB_FAR,
    CB_FSR,
    CB_FSYNR0,
    CB_SCTLR,
    CB_TCR,
    CB_TTBR0,
    CB_TTBR1,
    FSYNR0_DEFINED,
    SCTLR_CFCFG,
    SCTLR_CFIE,
    SCTLR_CFRE,
    SCTLR_M,
    write_fsr,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, SZ_64K

#: Register base of an SMMU built without one: below the RAM of every vcmm platform and
#: aligned for any legal window (256 pages of 64 KiB, twice).  A platform names its own.
DEFAULT_REGISTER_BASE = 0x0400_0000

#: Offset of SMMU_IDR1 in GR0.
GR0_IDR1 = 0x024
IDR1_PAGESIZE = 1 << 31
IDR1_NUMPAGENDXB_SHIFT = 28

#: Bank-page registers: offset -> (name, width in bits, whether software may write).
BANK_REGISTERS: dict[int, tuple[str, int, bool]] = {
    CB_SCTLR: ("SCTLR", 32, False),
    CB_TTBR0: ("TTBR0", 64, False),
    CB_TTBR1: ("TTBR1", 64, False),
    CB_TCR: ("TCR", 32, False),
    CB_FSR: ("FSR", 32, True),
    CB_FAR: ("FAR", 64, True),
    CB_FSYNR0: ("FSYNR0", 32, True),
}


def _modelled() -> str:
    return ", ".join(f"{name} {off:#x}" for off, (name, _, _) in BANK_REGISTERS.items())


def default_numpage(banks: int) -> int:
    """The smallest legal NUMPAGE that holds ``banks`` bank pages."""
    n = 2
    while n < banks:
        n *= 2
    return n


class RegisterWindow:
    """The layout of one SMMU's register window (base, page size, NUMPAGE)."""

    def __init__(
        self, smmu_name: str, banks: int, base: object, page_size: object, numpage: object
    ) -> None:
        who = f"SMMU {smmu_name!r}"
        if (
            isinstance(page_size, bool)
            or not isinstance(page_size, int)
            or page_size
            not in (
                SZ_4K,
                SZ_64K,
            )
        ):
            raise InvalidArgumentError(
                f"{who}: register page size {page_size!r} must be 4 KiB or 64 KiB (IDR1.PAGESIZE)"
            )
        pages = default_numpage(banks) if numpage is None else numpage
        pages = check_int(who, "NUMPAGE", pages, minimum=2)
        if pages > 256 or pages & (pages - 1):
            raise InvalidArgumentError(
                f"{who}: NUMPAGE {pages} must be a power of two from 2 to 256 (IDR1.NUMPAGENDXB)"
            )
        if pages < banks:
            raise InvalidArgumentError(
                f"{who}: NUMPAGE {pages} leaves no page for some of its {banks} context banks"
            )
        start = check_int(who, "register base", base)
        size = 2 * pages * page_size
        if start % size:
            raise InvalidArgumentError(
                f"{who}: register base {start:#x} must be aligned to the window size {size:#x} "
                "(2 * NUMPAGE * PAGESIZE)"
            )
        if start + size > 1 << 48:
            raise InvalidArgumentError(
                f"{who}: register window at {start:#x} (+{size:#x}) ends above 2**48"
            )
        self._who = who
        self.banks = banks
        self.page_size = page_size
        self.numpage = pages
        self.range = AddressRange(start, size)

    @property
    def base(self) -> int:
        return self.range.start

    def bank_base(self, index: int) -> int:
        """Address of bank ``index``'s page (SMMU_CBn_BASE)."""
        return self.base + (self.numpage + index) * self.page_size

    def idr1(self) -> int:
        ndxb = self.numpage.bit_length() - 2
        pagesize = IDR1_PAGESIZE if self.page_size == SZ_64K else 0
        return pagesize | ndxb << IDR1_NUMPAGENDXB_SHIFT | self.banks

    def locate(self, addr: object) -> tuple[int | None, int]:
        """``(bank, offset)`` of a register address; bank None for the global space."""
        a = check_int(f"{self._who} register access", "address", addr)
        if a not in self.range:
            raise InvalidArgumentError(
                f"{self._who}: address {a:#x} is outside its register window "
                f"[{self.range.start:#x}, {self.range.end:#x})"
            )
        if a % 4:
            raise InvalidArgumentError(
                f"{self._who}: register address {a:#x} is not 4-byte aligned"
            )
        page, offset = divmod(a - self.base, self.page_size)
        if page < self.numpage:
            if page != 0 or offset != GR0_IDR1:
                raise InvalidArgumentError(
                    f"{self._who}: global register page {page} offset {offset:#x} is not "
                    f"modelled (GR0 IDR1 at {GR0_IDR1:#x} is)"
                )
            return None, offset
        return page - self.numpage, offset


def _sctlr(bank: Bank) -> int:
    """SCTLR as activation programs it: MMU on, faults stall (the handler's retry or
    terminate is the resume), raise the interrupt, report an abort when terminated."""
    return SCTLR_M | SCTLR_CFRE | SCTLR_CFIE | SCTLR_CFCFG if bank.regs.enabled else 0


def _value(bank: Bank, base: int) -> int:
    regs, faults = bank.regs, bank.faults
    values = {
        CB_SCTLR: _sctlr(bank),
        CB_TTBR0: regs.ttbr0,
        CB_TTBR1: regs.ttbr1,
        CB_TCR: regs.ttbcr,
        CB_FSR: faults.fsr,
        CB_FAR: faults.far,
        CB_FSYNR0: faults.fsynr0,
    }
    return values[base]


def _register_at(who: str, offset: int) -> tuple[int, bool]:
    """``(register offset, upper word?)`` of a bank-page offset, refusing the rest."""
    if offset in BANK_REGISTERS:
        return offset, False
    base = offset - 4
    if base in BANK_REGISTERS and BANK_REGISTERS[base][1] == 64:
        return base, True
    raise InvalidArgumentError(
        f"{who}: bank register offset {offset:#x} is not modelled (modelled: {_modelled()})"
    )


def read_bank(who: str, bank: Bank, offset: int) -> int:
    """The value a read of ``offset`` in ``bank``'s page returns."""
    base, upper = _register_at(who, offset)
    value = _value(bank, base)
    return value >> 32 if upper else value


def write_bank(who: str, bank: Bank, offset: int, value: object) -> None:
    """A write of ``value`` to ``offset`` in ``bank``'s page (FSR, FAR, FSYNR0 only)."""
    base, upper = _register_at(who, offset)
    name, width, writable = BANK_REGISTERS[base]
    if not writable:
        raise InvalidArgumentError(
            f"{who}: {name} is programmed by activate() and set_tables(); writes to "
            f"offset {offset:#x} are not modelled"
        )
    bits = 32 if upper else width
    v = check_int(f"{who} {name} write", "value", value)
    if v >= 1 << bits:
        raise InvalidArgumentError(f"{who}: {name} value {show(v)} does not fit {bits} bits")
    faults = bank.faults
    if base == CB_FSR:
        bank.faults = write_fsr(faults, v)
    elif base == CB_FSYNR0:
        bank.faults = replace(faults, fsynr0=v & FSYNR0_DEFINED)
    elif upper:
        bank.faults = replace(faults, far=(faults.far & 0xFFFF_FFFF) | v << 32)
    else:
        bank.faults = replace(faults, far=v)
