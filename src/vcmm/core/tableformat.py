"""Which table format an IOMMU VCM's table has when the SMMUs of one system differ.

A real SoC may mix SMMUs (an MMU-500 walking VMSAv8-64 tables next to MMU-401s
walking LPAE ones, or an ARMv7 short-descriptor M4U), so one table format for every
IOMMU VCM would leave some devices unable to walk their VCM's table.  Linux settles
an IOMMU domain's page-table format when the domain is first attached to a device
(arm-smmu's ``arm_smmu_init_domain_context`` allocates the io-pgtable in the format
of that device's SMMU) and refuses to attach it later to an SMMU that cannot walk it.
vcmm follows the same rule, with the seed's order of calls:

- ``vcm_create`` builds the table at once (a VCM can be reserved and backed before
  any association) in the format asked for (``fmt=``), else the system's default (the
  first SMMU's format), else the first format of the system's SMMUs whose input
  range covers the window.  The window must fit the chosen format's input range:
  32 bits for ARMv7 short-descriptor and LPAE, 48 bits for VMSAv8-64.
- The first IOMMU association settles the format.  When the device's SMMU walks
  another format and the table still maps nothing (no reservation backed) and the
  format was not given explicitly, the empty table is rebuilt in the SMMU's format.
  Otherwise a device whose SMMU walks another format than the table's is refused,
  naming both formats (Linux's attach fails the same way).

On a system whose SMMUs agree nothing is ever rebuilt: every table starts in the one
format there is.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from vcmm.errors import InvalidArgumentError
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.pgtable import ARMV7S, PageTableFormat
from vcmm.ranges import AddressRange

if TYPE_CHECKING:
    from vcmm.core.objects import Vcm


def system_formats(devices: Iterable[object]) -> tuple[PageTableFormat, ...]:
    """The table formats the SMMUs of ``devices`` walk, each once, in device order."""
    seen: dict[str, PageTableFormat] = {}
    for device in devices:
        if isinstance(device, SmmuDevice):
            seen.setdefault(device.ctx.smmu.fmt.name, device.ctx.smmu.fmt)
    return tuple(seen.values())


def input_limit(fmt: PageTableFormat) -> int:
    """One past the highest input address a full table of ``fmt`` translates."""
    return fmt.geometry(None).va_limit


def creation_format(
    call: str,
    window: AddressRange,
    fmt: object,
    default: PageTableFormat,
    formats: tuple[PageTableFormat, ...],
) -> PageTableFormat:
    """The format an IOMMU VCM's table is built in (see the module docstring)."""
    known = formats or (default,)
    if fmt is not None:
        if not isinstance(fmt, PageTableFormat) or all(fmt is not f for f in known):
            names = ", ".join(f.name for f in known)
            raise InvalidArgumentError(
                f"{call}: fmt {fmt!r} is not a table format an SMMU of this system walks ({names})"
            )
        chosen: PageTableFormat = fmt
    else:
        candidates = (default, *[f for f in known if f is not default])
        widest = max(candidates, key=input_limit)
        chosen = next((f for f in candidates if window.end <= input_limit(f)), widest)
    if window.end > input_limit(chosen):
        raise InvalidArgumentError(
            f"{call}: IOMMU VCM {window} goes beyond the {input_limit(chosen).bit_length() - 1}"
            f"-bit input space of {chosen.name} tables"
        )
    return chosen


def assoc_format(call: str, vcm: Vcm, device: SmmuDevice, settled: bool) -> PageTableFormat | None:
    """``None`` when ``device``'s SMMU walks ``vcm``'s table as it is; the format to
    rebuild the (empty, unsettled) table in; or a refusal naming both formats."""
    smmu = device.ctx.smmu
    if vcm.table is None:  # not an IOMMU VCM: the caller refused it already
        raise InvalidArgumentError(f"{call}: {vcm.name} has no device page table")
    table_fmt = vcm.table.fmt
    if smmu.fmt is table_fmt:
        return None
    why = ""
    if settled:
        why = "its format was settled when it was created or first associated"
    elif any(r.backed for r in vcm.reservations):
        why = "it already maps memory"
    elif vcm.range.end > input_limit(smmu.fmt):
        why = f"its window {vcm.range} is wider than {smmu.fmt.name} input addresses"
    if why:
        raise InvalidArgumentError(
            f"{call}: {device.name}'s SMMU {smmu.name} walks {smmu.fmt.name} tables, "
            f"{vcm.name}'s table is {table_fmt.name} and cannot change ({why}); "
            f"use a VCM of {smmu.fmt.name} for it"
        )
    return smmu.fmt


def default_format(formats: tuple[PageTableFormat, ...]) -> PageTableFormat:
    """The format of VCMs created without one: the first SMMU's (ARMv7 short
    descriptors on a system without SMMUs, as the seed's MSM)."""
    return formats[0] if formats else ARMV7S
