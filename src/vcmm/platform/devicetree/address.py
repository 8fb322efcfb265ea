"""Addresses through buses: ``ranges`` for the CPU's view, ``dma-ranges`` for DMA.

Linux translates a node's ``reg`` to a CPU physical address through the ``ranges``
of every bus above it (of_translate_address; a bus without ``ranges`` cannot be
translated through), and works out what a device's bus addresses reach through
``dma-ranges`` (of_dma_get_range: the nearest non-empty ``dma-ranges`` at or above
the device, each entry's parent side translated up through the ``dma-ranges`` of the
buses above, where a missing or empty property means one to one).  The device's name
uses the first, its bus offsets and DMA limit the second.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.platform.devicetree.tree import DtNode, DtTree

#: A PCI address is 3 cells, the first holding flags (phys.hi): the address is the
#: low 64 bits.
_PCI_ADDRESS_CELLS = 3
_ADDRESS_MASK = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class BusWindow:
    """Bus addresses ``[bus, bus+size)`` reach CPU physical ``[cpu, cpu+size)``."""

    bus: int
    cpu: int
    size: int


def _bus_address(value: int, cells: int) -> int:
    return value & _ADDRESS_MASK if cells >= _PCI_ADDRESS_CELLS else value


def _translate(tree: DtTree, bus: DtNode | None, addr: int, prop: str) -> int | None:
    """``addr`` on ``bus``'s side translated up to the root through each bus's ``prop``;
    ``None`` when a bus cannot translate it.  A missing ``ranges`` stops translation,
    a missing ``dma-ranges`` is one to one, an empty property is one to one."""
    while bus is not None and bus.parent is not None:
        raw = bus.props.get(prop)
        if raw is None:
            if prop == "ranges":
                return None
        elif raw:
            child_cells = tree.address_cells(bus)
            widths = (child_cells, tree.address_cells(bus.parent), tree.size_cells(bus))
            for child, parent, size in tree.tuples(bus, prop, widths):
                child = _bus_address(child, child_cells)
                if child <= addr < child + size:
                    addr = _bus_address(parent, widths[1]) + addr - child
                    break
            else:
                return None
        bus = bus.parent
    return addr


def cpu_ranges(tree: DtTree, node: DtNode) -> list[tuple[int, int] | None]:
    """Each ``reg`` entry of ``node`` as a CPU physical (start, size), or ``None`` for
    an entry a bus above cannot translate (Linux's OF_BAD_ADDR)."""
    cells = tree.address_cells(node.parent)
    regs = tree.reg(node)
    if tree.size_cells(node.parent) == 0:  # a bus of IDs (I2C, a firmware's contexts)
        return [None] * len(regs)
    out: list[tuple[int, int] | None] = []
    for addr, size in regs:
        start = _translate(tree, node.parent, _bus_address(addr, cells), "ranges")
        out.append(None if start is None else (start, size))
    return out


def cpu_address(tree: DtTree, node: DtNode) -> int | None:
    """The CPU physical address of ``node``'s first ``reg`` entry, or ``None`` when it
    has none or a bus above cannot translate it."""
    ranges = cpu_ranges(tree, node) if node.has("reg") else []
    return ranges[0][0] if ranges and ranges[0] is not None else None


def dma_windows(tree: DtTree, node: DtNode) -> list[BusWindow] | None:
    """What ``node``'s bus addresses reach: the windows of the nearest non-empty
    ``dma-ranges`` at or above it, translated to CPU addresses; ``None`` when no bus
    says (Linux then gives the device no range map: bus address = physical)."""
    holder: DtNode | None = node
    seen = False
    while holder is not None:
        raw = holder.props.get("dma-ranges")
        if raw:
            break
        if seen and raw is None:
            return None
        seen = True
        holder = holder.parent
    if holder is None or holder.parent is None:
        return None
    child_cells = tree.address_cells(holder)
    widths = (child_cells, tree.address_cells(holder.parent), tree.size_cells(holder))
    windows = []
    for child, parent, size in tree.tuples(holder, "dma-ranges", widths):
        cpu = _translate(tree, holder.parent, _bus_address(parent, widths[1]), "dma-ranges")
        if cpu is None:
            raise tree.error(
                holder,
                "dma-ranges",
                f"parent address {parent:#x} is not reachable through the dma-ranges of "
                f"{holder.parent.path}",
            )
        windows.append(BusWindow(_bus_address(child, child_cells), cpu, size))
    return windows


def dma_coherent(node: DtNode) -> bool:
    """Linux's of_dma_is_coherent: ``dma-coherent`` on the node or a bus above it
    (``dma-noncoherent`` nearer stops the search); arm64 defaults to non-coherent."""
    current: DtNode | None = node
    while current is not None:
        if current.has("dma-coherent"):
            return True
        if current.has("dma-noncoherent"):
            return False
        current = current.parent
    return False
