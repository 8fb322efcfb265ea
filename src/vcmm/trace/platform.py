"""The SoC a trace is replayed on: a platform file, or one made up from the trace.

Without ``--platform`` the replay boots a generic platform with one IOMMU'd device per
device name in the trace, each behind a context of its own on one VMSAv8-64 SMMU
(48-bit IOVAs, 4 KiB granule: the format of the SMMUv2/v3 that carry Linux's
``iommu:*`` traces today), so different domains may reuse the same IOVAs as they do
in the kernel; devices the trace's ``add_device_to_group`` events put in one IOMMU
group share a context, as the kernel gives a group one domain.  Its DMA masks are
32-bit when every IOVA traced for the device is below 4 GiB, else 48-bit (they
matter to ``--reallocate``).
"""

from __future__ import annotations

import re
from typing import Final

from vcmm.platform import PlatformSpec, loads_platform

#: Linux device names the platform schema accepts (``0000:00:02.0``, ``ff8d0000.usb``).
_DEVICE_NAME: Final = re.compile(r"[A-Za-z0-9_.,+@:-]+")
_CONTEXT_BAD: Final = re.compile(r"[^A-Za-z0-9_.-]")

_HEAD: Final = """\
name = "trace-generic"
description = "Generic SoC for a trace replay: one IOMMU'd device per traced device."
target_priority = ["ebi"]

[[memory]]
name = "ram"
kind = "ram"
base = 0x8000_0000
size = "1G"

[cpu]
linear_map = [{ base = 0x8000_0000, size = "256M" }]
linear_map_va = "0xffff_0000_0000_0000"
vmalloc = { base = "0xffff_8000_0000_0000", size = "1G" }

[page_tables]
base = 0x9000_0000
size = "512M"

[[targets]]
name = "ebi"
kind = "system"
base = 0x8000_0000
size = "256M"
"""

#: Highest IOVA bits of the generic SMMU (VMSAv8-64, 4 levels of 4 KiB tables).
GENERIC_IOVA_BITS: Final = 48


def usable_device_name(name: str) -> bool:
    """Whether ``name`` can be a device of the generic platform."""
    return name != "cpu" and _DEVICE_NAME.fullmatch(name) is not None


def context_names(devices: list[str]) -> dict[str, str]:
    """A context name per device: the device name with what a context may not hold
    replaced by ``_``, numbered when two devices would clash."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for device in devices:
        base = _CONTEXT_BAD.sub("_", device)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        out[device] = name
    return out


def generic_platform(
    highest_iova: dict[str, int], groups: dict[str, int] | None = None
) -> PlatformSpec:
    """The generic platform for devices named by ``highest_iova`` (device -> the end
    of the highest IOVA range traced for it, 0 if none).  Devices that ``groups``
    (device -> IOMMU group ID, from ``add_device_to_group`` events) puts in one group
    share a context, as the kernel gives a group one domain."""
    devices = sorted(d for d in highest_iova if usable_device_name(d))
    groups = groups or {}
    leader: dict[str, str] = {}  # device -> the device whose context it uses
    first_of_group: dict[int, str] = {}
    for device in devices:
        group = groups.get(device)
        leader[device] = device if group is None else first_of_group.setdefault(group, device)
    owners = [d for d in devices if leader[d] == d]
    contexts = context_names(owners)
    parts = [_HEAD]
    if owners:
        ctx_lines = ",\n".join(
            f'    {{ name = "{contexts[d]}", bank = {i} }}' for i, d in enumerate(owners)
        )
        parts.append(
            '[[smmus]]\nname = "smmu0"\nformat = "vmsav8"\n'
            f"context_banks = {len(owners)}\ncontexts = [\n{ctx_lines},\n]\n"
        )
    for device in devices:
        bits = 32 if highest_iova[device] <= 1 << 32 else GENERIC_IOVA_BITS
        mask = (1 << bits) - 1
        parts.append(
            f'[[devices]]\nname = "{device}"\nkind = "smmu"\nsmmu = "smmu0"\n'
            f'context = "{contexts[leader[device]]}"\n'
            + (f'domain = "group{groups[device]}"\n' if device in groups else "")
            + f"dma = {{ mask = {mask:#x}, segment_boundary_mask = {mask:#x} }}\n"
        )
    return loads_platform("\n".join(parts), source="<trace-generic>")
