"""A context bank's fault registers, bit for bit as ARM SMMUv2 lays them out.

The ARM System MMU architecture (SMMUv2, IHI 0062, section 16.5) records a context
fault in three registers of the bank's page:

- ``SMMU_CBn_FSR`` (offset 0x58, 32 bits): what went wrong.  TF bit 1 (translation),
  AFF bit 2 (access flag), PF bit 3 (permission), EF bit 4 (external), TLBMCF bit 5,
  TLBLKF bit 6, ASF bit 7 (address size), UUT bit 8, Format bits [10:9] (the translation
  scheme: 0b00 AArch32 short-descriptor, 0b01 AArch32 long-descriptor, 0b10 AArch64),
  SS bit 30 (a transaction is stalled) and MULTI bit 31 (a fault arrived while the FSR
  still held one).  Writing 1 to a bit clears it, 0 leaves it; SS and Format are
  read-only (only a resume clears SS).
- ``SMMU_CBn_FAR`` (0x60, 64 bits): the input address of the faulting access.
- ``SMMU_CBn_FSYNR0`` (0x68, 32 bits): the syndrome.  PLVL [1:0] (table level), WNR bit
  4 (write), PNU bit 5 (privileged), IND bit 6 (instruction fetch), NSATTR bit 8
  (reserved in a Non-secure bank), PTWF bit 10 (external fault on a table walk), AFR
  bit 11 (recorded asynchronously), S1CBNDX [23:16] (stage 2 banks only).

Only the first fault is recorded in full: one that arrives while any FSR bit but
Format is set only sets MULTI (section 3.7.2, "Multiple faults"), so the driver
clears the FSR (write the value read back) before the next fault can be seen.

:class:`FaultStatus` is the value of the three registers, with named properties;
:func:`record_fault` and :func:`write_fsr` are the hardware's two state changes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from vcmm.attrs import Access, FaultKind
from vcmm.hw.pgtable import PageTableFormat

# -- register offsets in a stage 1 context bank page (SMMUv2 table 16-1) ----------------

CB_SCTLR = 0x000
CB_TTBR0 = 0x020
CB_TTBR1 = 0x028
CB_TCR = 0x030
CB_FSR = 0x058
CB_FAR = 0x060
CB_FSYNR0 = 0x068

# -- SMMU_CBn_SCTLR -------------------------------------------------------------------------

SCTLR_M = 1 << 0
SCTLR_CFRE = 1 << 5
SCTLR_CFIE = 1 << 6
SCTLR_CFCFG = 1 << 7

# -- SMMU_CBn_FSR ---------------------------------------------------------------------------

FSR_TF = 1 << 1
FSR_AFF = 1 << 2
FSR_PF = 1 << 3
FSR_EF = 1 << 4
FSR_TLBMCF = 1 << 5
FSR_TLBLKF = 1 << 6
FSR_ASF = 1 << 7
FSR_UUT = 1 << 8
FSR_FORMAT_SHIFT = 9
FSR_FORMAT = 0b11 << FSR_FORMAT_SHIFT
FSR_SS = 1 << 30
FSR_MULTI = 1 << 31
#: Bits a write of 1 clears (every defined bit but SS and Format).
FSR_W1C = (
    FSR_MULTI | FSR_UUT | FSR_ASF | FSR_TLBLKF | FSR_TLBMCF | FSR_EF | FSR_PF | FSR_AFF | FSR_TF
)
#: Bits that mean "a fault is recorded" (every defined bit but Format).
FSR_FAULT = FSR_W1C | FSR_SS

#: FSR.Format values (the translation scheme of the bank).
FORMAT_AARCH32_SHORT = 0b00
FORMAT_AARCH32_LONG = 0b01
FORMAT_AARCH64 = 0b10

# -- SMMU_CBn_FSYNR0 ------------------------------------------------------------------------

FSYNR0_PLVL = 0b11
FSYNR0_WNR = 1 << 4
FSYNR0_PNU = 1 << 5
FSYNR0_IND = 1 << 6
FSYNR0_NSATTR = 1 << 8
FSYNR0_PTWF = 1 << 10
FSYNR0_AFR = 1 << 11
FSYNR0_S1CBNDX_SHIFT = 16
FSYNR0_S1CBNDX = 0xFF << FSYNR0_S1CBNDX_SHIFT
#: Bits of FSYNR0 the architecture defines (the rest are reserved).
FSYNR0_DEFINED = (
    FSYNR0_PLVL
    | FSYNR0_WNR
    | FSYNR0_PNU
    | FSYNR0_IND
    | FSYNR0_NSATTR
    | FSYNR0_PTWF
    | FSYNR0_AFR
    | FSYNR0_S1CBNDX
)

#: FSR bit each fault kind sets.  A bus error on a table walk is an external fault.
FAULT_BITS = {
    FaultKind.TRANSLATION: FSR_TF,
    FaultKind.ACCESS_FLAG: FSR_AFF,
    FaultKind.PERMISSION: FSR_PF,
    FaultKind.BUS: FSR_EF,
    FaultKind.ADDRESS_SIZE: FSR_ASF,
}

_FSR_NAMES = (
    (FSR_MULTI, "MULTI"),
    (FSR_SS, "SS"),
    (FSR_UUT, "UUT"),
    (FSR_ASF, "ASF"),
    (FSR_TLBLKF, "TLBLKF"),
    (FSR_TLBMCF, "TLBMCF"),
    (FSR_EF, "EF"),
    (FSR_PF, "PF"),
    (FSR_AFF, "AFF"),
    (FSR_TF, "TF"),
)
_FSYNR0_NAMES = (
    (FSYNR0_WNR, "WNR"),
    (FSYNR0_PNU, "PNU"),
    (FSYNR0_IND, "IND"),
    (FSYNR0_NSATTR, "NSATTR"),
    (FSYNR0_PTWF, "PTWF"),
    (FSYNR0_AFR, "AFR"),
)


def format_field(fmt: PageTableFormat) -> int:
    """FSR.Format for a bank walking ``fmt``: AArch64 for 64-bit input formats, else
    AArch32 long-descriptor when TTBCR.EAE selects it, else short-descriptor."""
    if fmt.max_va_bits > 32:
        return FORMAT_AARCH64
    return FORMAT_AARCH32_LONG if fmt.ttbcr_eae else FORMAT_AARCH32_SHORT


@dataclass(frozen=True, slots=True)
class FaultStatus:
    """The fault registers of one context bank: FSR, FAR and FSYNR0 as raw values."""

    fsr: int = 0
    far: int = 0
    fsynr0: int = 0

    # -- FSR ----------------------------------------------------------------------------

    @property
    def faulted(self) -> bool:
        """Whether the FSR records a fault (any bit but Format set)."""
        return bool(self.fsr & FSR_FAULT)

    @property
    def multi(self) -> bool:
        return bool(self.fsr & FSR_MULTI)

    @property
    def stalled(self) -> bool:
        """FSR.SS: a faulting transaction waits for the handler's retry or terminate."""
        return bool(self.fsr & FSR_SS)

    @property
    def format(self) -> int:
        return (self.fsr & FSR_FORMAT) >> FSR_FORMAT_SHIFT

    @property
    def kind(self) -> FaultKind | None:
        """The fault kind the FSR records (None when clear)."""
        for kind, bit in FAULT_BITS.items():
            if self.fsr & bit:
                return kind
        return None

    # -- FSYNR0 -------------------------------------------------------------------------

    @property
    def level(self) -> int:
        """FSYNR0.PLVL: the table level the fault is associated with."""
        return self.fsynr0 & FSYNR0_PLVL

    @property
    def write(self) -> bool:
        """FSYNR0.WNR: the access was a write."""
        return bool(self.fsynr0 & FSYNR0_WNR)

    @property
    def privileged(self) -> bool:
        return bool(self.fsynr0 & FSYNR0_PNU)

    @property
    def instruction(self) -> bool:
        return bool(self.fsynr0 & FSYNR0_IND)

    @property
    def walk_fault(self) -> bool:
        """FSYNR0.PTWF: an external fault hit a translation table read."""
        return bool(self.fsynr0 & FSYNR0_PTWF)

    def describe(self) -> str:
        """``FSR=0x00000008 [PF] FAR=0x... FSYNR0=0x00000031 [WNR PNU PLVL=1]``."""
        fsr_bits = [name for bit, name in _FSR_NAMES if self.fsr & bit]
        fsr_bits.append(f"Format={self.format}")
        syn_bits = [name for bit, name in _FSYNR0_NAMES if self.fsynr0 & bit]
        syn_bits.append(f"PLVL={self.level}")
        return (
            f"FSR={self.fsr:#010x} [{' '.join(fsr_bits)}] FAR={self.far:#x} "
            f"FSYNR0={self.fsynr0:#010x} [{' '.join(syn_bits)}]"
        )


def idle_status(fmt: PageTableFormat) -> FaultStatus:
    """A bank's fault registers with nothing recorded (Format still reads the scheme)."""
    return FaultStatus(fsr=format_field(fmt) << FSR_FORMAT_SHIFT)


def record_fault(
    status: FaultStatus, kind: FaultKind, va: int, access: Access, level: int, *, privileged: bool
) -> FaultStatus:
    """The registers after a context fault: recorded in full if the FSR held none, else
    only MULTI set (the first fault's details stay)."""
    if status.faulted:
        return replace(status, fsr=status.fsr | FSR_MULTI)
    syndrome = level & FSYNR0_PLVL
    if access is Access.WRITE:
        syndrome |= FSYNR0_WNR
    if access is Access.EXEC:
        syndrome |= FSYNR0_IND
    if privileged:
        syndrome |= FSYNR0_PNU
    if kind is FaultKind.BUS:
        syndrome |= FSYNR0_PTWF
    return FaultStatus(fsr=status.fsr | FAULT_BITS[kind], far=va, fsynr0=syndrome)


def set_stalled(status: FaultStatus, stalled: bool) -> FaultStatus:
    """FSR.SS set while the handler decides, cleared by the resume (its answer)."""
    fsr = status.fsr | FSR_SS if stalled else status.fsr & ~FSR_SS
    return replace(status, fsr=fsr)


def write_fsr(status: FaultStatus, value: int) -> FaultStatus:
    """A write of ``value`` to the FSR: each 1 clears its bit, SS and Format stay."""
    return replace(status, fsr=status.fsr & ~(value & FSR_W1C))
