"""Where an imported SMMU's register window goes: at its node's ``reg``, if vcmm can.

vcmm's window is SMMUv2's (``2 * NUMPAGE`` pages of 4 KiB, aligned to its size, NUMPAGE
from the bank count: :attr:`SmmuSpec.register_window_size`), which need not be the
size or alignment the real IOMMU's ``reg`` has (a Rockchip IOMMU's registers are 0x100
bytes at an odd offset).  So each window is placed at the node's ``reg`` address
rounded down to the window's alignment, which keeps it in the SoC's MMIO space; when
that is impossible (no translatable ``reg``, an overlap with memory or with another
SMMU's window) it goes to the first free 1 MiB slot from ``DEFAULT_REGISTER_BASE`` up
that touches no memory and no other window, and a note says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vcmm.hw.memory import MemoryRegion
from vcmm.hw.smmu import DEFAULT_REGISTER_BASE
from vcmm.platform.devices import REGISTER_LIMIT, REGISTER_STRIDE, SmmuSpec
from vcmm.platform.devicetree.address import cpu_address
from vcmm.platform.devicetree.tree import DeviceTreeError, DtTree
from vcmm.ranges import AddressRange


def _free(window: AddressRange, taken: Sequence[AddressRange]) -> bool:
    return window.end <= REGISTER_LIMIT and not any(window.overlaps(t) for t in taken)


def place_registers(
    tree: DtTree, smmus: Sequence[SmmuSpec], memory: Sequence[MemoryRegion], notes: list[str]
) -> tuple[SmmuSpec, ...]:
    """``smmus`` with ``base`` set: their ``reg`` (aligned down) or a free slot."""
    taken = [region.range for region in memory]
    placed = []
    for smmu in smmus:
        size = smmu.register_window_size
        node = tree.find(smmu.node) if smmu.node is not None else None
        reg = cpu_address(tree, node) if node is not None else None
        window = AddressRange(reg - reg % size, size) if reg is not None else None
        if window is None or not _free(window, taken):
            slot = DEFAULT_REGISTER_BASE
            while not _free(AddressRange(slot, size), taken):
                slot += REGISTER_STRIDE
                if slot + size > REGISTER_LIMIT:
                    raise DeviceTreeError(
                        f"IOMMU {smmu.name}: no room below 2**48 for its register window",
                        source=tree.source,
                    )
            why = (
                f"its reg {reg:#x} overlaps memory or another IOMMU's window"
                if reg is not None
                else "it has no reg a CPU address translates to"
            )
            notes.append(f"IOMMU {smmu.name}: register window placed at {slot:#x} ({why})")
            window = AddressRange(slot, size)
        taken.append(window)
        placed.append(dataclasses.replace(smmu, base=window.start))
    return tuple(placed)
