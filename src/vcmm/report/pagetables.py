"""Page-table dumps: what a device's translation tables map, as readable ranges.

The tables are decoded from simulated physical memory (``PageTable.mappings()``), so
the dump shows exactly what the hardware walker would find.  A 3 MiB buffer mapped
with 4 KiB pages is 760 leaf entries; consecutive entries of the same page size and
attributes that continue each other both virtually and physically are merged into one
line (``760 x 4K``), which keeps the dump short without hiding a single discontinuity.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vcmm.errors import InvalidArgumentError
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.pgtable import MapEntry
from vcmm.hw.smmu import CB_FAR, CB_FSR, CB_FSYNR0, FaultStatus
from vcmm.sizes import format_size
from vcmm.system import System

_KERNEL_TOP = 0xFFFF << 48


@dataclass(frozen=True, slots=True)
class PtRange:
    """``count`` consecutive leaf entries of ``page_size``: VA ``va``.. maps PA ``pa``.."""

    va: int
    pa: int
    page_size: int
    count: int
    attrs: str

    @property
    def size(self) -> int:
        return self.page_size * self.count

    def describe(self) -> str:
        return (
            f"{self.va:#x}-{self.va + self.size - 1:#x} -> {self.pa:#x}-{self.pa + self.size - 1:#x}"
            f"  {self.count} x {format_size(self.page_size)}  {self.attrs}"
        )


def merge_entries(entries: Iterable[MapEntry], *, va_offset: int = 0) -> list[PtRange]:
    """Merge leaf entries (objects with ``va``, ``pa``, ``size``, ``attrs``) into ranges.

    Two entries merge when the second starts where the first ends in both address
    spaces and has the same page size and attributes.  ``va_offset`` is ORed into every
    VA (the CPU's table decodes VA[47:0] of sign-extended kernel addresses).
    """
    out: list[PtRange] = []
    for e in sorted(entries, key=lambda e: e.va):
        va = e.va | va_offset
        attrs = e.attrs.short()
        if out:
            last = out[-1]
            if (
                last.page_size == e.size
                and last.attrs == attrs
                and last.va + last.size == va
                and last.pa + last.size == e.pa
            ):
                out[-1] = PtRange(last.va, last.pa, last.page_size, last.count + 1, attrs)
                continue
        out.append(PtRange(va, e.pa, e.size, 1, attrs))
    return out


@dataclass
class TableDump:
    """One table tree of a device: which register points at it, its pages, its ranges."""

    label: str
    root: int
    table_pages: list[tuple[int, int]]
    ranges: list[PtRange]

    @property
    def table_bytes(self) -> int:
        return sum(size for _, size in self.table_pages)


def device_tables(system: System, device: str) -> list[TableDump]:
    """The tables ``device`` translates through, decoded.

    SMMU devices: their context's TTBR0 table (and TTBR1 in split mode); the CPU: the
    kernel's TTBR1 table.  Physically addressed devices have none, which is an error
    worth telling the user about rather than an empty dump.
    """
    if not isinstance(system, System):
        raise InvalidArgumentError(f"device_tables needs a System, got {type(system).__name__}")
    dev = system.device(device)
    if dev is system.cpu:
        kernel = system.cpu.kernel_table
        return [
            TableDump(
                "cpu kernel table (TTBR1, VMSAv8-64 4K granule)",
                kernel.root,
                kernel.table_pages(),
                merge_entries(kernel.mappings(), va_offset=_KERNEL_TOP),
            )
        ]
    if not isinstance(dev, SmmuDevice):
        raise InvalidArgumentError(
            f"device {device!r} addresses memory physically (no SMMU), so it has no page "
            "tables to dump; pick a device behind an SMMU or 'cpu'"
        )
    ctx = dev.ctx
    out = []
    where = f"{ctx.smmu.name}/{ctx.name}"
    state = f"bank {ctx.bank}, active" if ctx.is_active else "inactive"
    for reg, table in (("TTBR0", ctx.low_table), ("TTBR1", ctx.high_table)):
        if table is None:
            continue
        out.append(
            TableDump(
                f"{where} {reg} ({ctx.smmu.fmt.name}, {state})",
                table.root,
                table.table_pages(),
                merge_entries(table.mappings()),
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class BankView:
    """Where a device's context sits in its SMMU's register window, and its bank's fault
    registers as a driver reads them (by address: FSR at SMMU_CBn_BASE + 0x58)."""

    smmu: str
    register_base: int
    bank: int | None
    bank_base: int | None
    faults: FaultStatus | None

    def describe(self) -> str:
        head = f"registers: {self.smmu} at {self.register_base:#x}"
        if self.bank is None or self.bank_base is None or self.faults is None:
            return f"{head}, context not bound to a bank"
        return f"{head}, bank {self.bank} page {self.bank_base:#x}: {self.faults.describe()}"

    def to_dict(self) -> dict[str, object]:
        faults = self.faults
        return {
            "smmu": self.smmu,
            "register_base": self.register_base,
            "bank": self.bank,
            "bank_base": self.bank_base,
            "fsr": faults.fsr if faults is not None else None,
            "far": faults.far if faults is not None else None,
            "fsynr0": faults.fsynr0 if faults is not None else None,
            "decoded": faults.describe() if faults is not None else None,
        }


def bank_view(system: System, device: str) -> BankView | None:
    """The register view of ``device``'s context (None for a device without one)."""
    dev = system.device(device)
    if not isinstance(dev, SmmuDevice):
        return None
    ctx, smmu = dev.ctx, dev.ctx.smmu
    if ctx.bank is None:
        return BankView(smmu.name, smmu.register_base, None, None, None)
    base = smmu.bank_base(ctx.bank)
    status = FaultStatus(
        fsr=smmu.read_register(base + CB_FSR),
        far=smmu.read_register(base + CB_FAR),
        fsynr0=smmu.read_register(base + CB_FSYNR0),
    )
    return BankView(smmu.name, smmu.register_base, ctx.bank, base, status)


def render_dump(device: str, dumps: list[TableDump]) -> str:
    """Text dump of :func:`device_tables`: one header per table, one line per range."""
    if not dumps:
        return f"{device}: its context has no page tables (it was never activated)"
    lines = []
    for d in dumps:
        mapped = sum(r.size for r in d.ranges)
        lines.append(
            f"{device}: {d.label}, root {d.root:#x}, {len(d.table_pages)} table page(s) "
            f"= {format_size(d.table_bytes)}, {format_size(mapped)} mapped in {len(d.ranges)} range(s)"
        )
        if not d.ranges:
            lines.append("  (nothing mapped)")
        width = max((len(f"{r.va + r.size - 1:#x}") for r in d.ranges), default=10)
        for r in d.ranges:
            va = f"{r.va:#0{width}x}-{r.va + r.size - 1:#0{width}x}"
            pa = f"{r.pa:#x}-{r.pa + r.size - 1:#x}"
            count = f"{r.count} x {format_size(r.page_size)}"
            lines.append(f"  {va}  ->  {pa}  {count:>11}  {r.attrs}")
    return "\n".join(lines)
