"""RAM and reserved memory from a devicetree, placed as Linux places it at boot.

``memory`` nodes give the banks (a bank of size 0 is one the bootloader fills in:
the caller must say how much RAM there is).  ``/reserved-memory`` children with a
``reg`` are reserved where they say; those with a ``size`` (and optionally
``alignment`` and ``alloc-ranges``) are placed afterwards, in devicetree order, the
way Linux's of_reserved_mem does it through memblock: top-down in the highest free
RAM of each allowed range, bottom-up instead when the range starts next to an
earlier reservation and does not end next to one.  A ``reusable`` pool is aligned
to at least 2 MiB (CMA's pageblock).  vcmm works in 4 KiB pages, so windows are
rounded out to 4 KiB, and every rounding is reported.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Final

from vcmm.hw.memory import MemoryRegion
from vcmm.platform.devicetree.tree import DtNode, DtTree
from vcmm.platform.reserved import SHARED_DMA_POOL
from vcmm.ranges import AddressRange, subtract, union
from vcmm.sizes import SZ_2M, SZ_4K, align_down, align_up, format_size

#: CMA areas start on a pageblock (order 9 of 4 KiB pages): CMA_MIN_ALIGNMENT_BYTES.
CMA_ALIGNMENT: Final = SZ_2M
#: memblock's default alignment (SMP_CACHE_BYTES on arm64).
MEMBLOCK_ALIGNMENT: Final = 64


@dataclass
class Region:
    """A reserved region as read and placed (``start`` is ``None`` until placed)."""

    name: str
    node: DtNode
    start: int | None
    size: int
    no_map: bool
    reusable: bool
    compatible: tuple[str, ...]
    dynamic: bool = False
    cma_default: bool = False

    @property
    def range(self) -> AddressRange:
        assert self.start is not None
        return AddressRange(self.start, self.size)

    @property
    def is_pool(self) -> bool:
        return SHARED_DMA_POOL in self.compatible


def memory_banks(tree: DtTree, ram: int | None, notes: list[str]) -> list[MemoryRegion]:
    """Every RAM bank of the ``memory`` nodes; size-0 banks take ``ram`` bytes."""
    banks: list[MemoryRegion] = []
    zero_sized = 0
    cells = (tree.address_cells(tree.root), tree.size_cells(tree.root))
    for node in tree.root.children:
        if tree.string(node, "device_type") != "memory":
            continue
        if not tree.available(node):
            notes.append(f"{node.path}: memory node is disabled; its RAM is not imported")
            continue
        if not node.has("reg"):
            raise tree.error(node, "reg", "a memory node needs a reg")
        for start, size in tree.tuples(node, "reg", cells):
            if size == 0:
                zero_sized += 1
                if ram is None:
                    raise tree.error(
                        node,
                        "reg",
                        f"bank at {start:#x} has size 0 (the bootloader fills it in): give "
                        "the RAM size with ram= (--ram on the command line)",
                    )
                size = ram
            base, end = align_up(start, SZ_4K), align_down(start + size, SZ_4K)
            if (base, end) != (start, start + size):
                notes.append(f"{node.path}: bank {start:#x}+{size:#x} rounded in to 4 KiB pages")
            banks.append(MemoryRegion(f"memory@{base:x}", AddressRange(base, end - base)))
    if not banks:
        raise tree.error(tree.root, "memory", "the devicetree has no memory node")
    if ram is not None and not zero_sized:
        raise tree.error(
            tree.root,
            "memory",
            f"ram={format_size(ram)} given, but every memory bank has a size; ram= is only "
            "for a bank of size 0 that the bootloader fills in",
        )
    return banks


def reserved_regions(tree: DtTree, notes: list[str]) -> list[Region]:
    """The ``/reserved-memory`` children, static ones placed, dynamic ones not yet."""
    parent = tree.find("/reserved-memory")
    if parent is None:
        return []
    regions: list[Region] = []
    for node in parent.children:
        if not tree.available(node):
            notes.append(f"{node.path}: reserved region is disabled; Linux ignores it")
            continue
        if node.has("reg"):
            for index, (start, size) in enumerate(tree.reg(node)):
                name = node.name if index == 0 else f"{node.name}.{index}"
                base, end = align_down(start, SZ_4K), align_up(start + size, SZ_4K)
                if (base, end) != (start, start + size):
                    notes.append(f"{node.path}: {start:#x}+{size:#x} rounded out to 4 KiB pages")
                regions.append(_region(tree, node, name, base, end - base))
        elif node.has("size"):
            size = _root_number(tree, node, "size", size=True)
            regions.append(_region(tree, node, node.name, None, size))
        else:
            raise tree.error(node, "reg", "a reserved region needs a reg or a size")
    _check_disjoint(tree, [r for r in regions if r.start is not None])
    return regions


def _region(tree: DtTree, node: DtNode, name: str, start: int | None, size: int) -> Region:
    return Region(
        name,
        node,
        start,
        size,
        no_map=node.has("no-map"),
        reusable=node.has("reusable"),
        compatible=tuple(tree.strings(node, "compatible")),
        dynamic=start is None,
        cma_default=node.has("linux,cma-default"),
    )


def _root_number(tree: DtTree, node: DtNode, prop: str, *, size: bool) -> int:
    """A ``size``/``alignment`` number, which Linux reads in the root's cell widths."""
    cells = tree.size_cells(tree.root) if size else tree.address_cells(tree.root)
    values = tree.cells(node, prop)
    if len(values) != cells:
        raise tree.error(node, prop, f"has {len(values)} cells; the root's widths say {cells}")
    number = 0
    for value in values:
        number = number << 32 | value
    return number


def _check_disjoint(tree: DtTree, regions: list[Region]) -> None:
    ordered = sorted(regions, key=lambda r: r.range.start)
    for before, after in itertools.pairwise(ordered):
        if before.range.overlaps(after.range):
            raise tree.error(
                after.node,
                "reg",
                f"{after.range} overlaps reserved region {before.node.path} {before.range}",
            )


def place_dynamic(
    tree: DtTree, banks: list[MemoryRegion], regions: list[Region], notes: list[str]
) -> list[Region]:
    """Place every dynamic region in order; regions that find no room are dropped
    (Linux logs that and goes on) with a note.  Returns the regions that stand."""
    placed = [r for r in regions if r.start is not None]
    kept: list[Region] = []
    for region in regions:
        if region.start is None:
            start = _place(tree, banks, placed, region)
            if start is None:
                notes.append(
                    f"{region.node.path}: no free {format_size(region.size)} in its "
                    "alloc-ranges; not reserved (as Linux, which logs it)"
                )
                continue
            region.start = start
            placed.append(region)
        kept.append(region)
    return kept


def _place(
    tree: DtTree, banks: list[MemoryRegion], placed: list[Region], region: Region
) -> int | None:
    node = region.node
    align = _root_number(tree, node, "alignment", size=False) if node.has("alignment") else 0
    align = align or MEMBLOCK_ALIGNMENT
    if region.reusable and region.is_pool and not region.no_map:
        align = max(align, CMA_ALIGNMENT)
    align = max(align, SZ_4K)
    region.size = align_up(region.size, SZ_4K)
    taken = [r.range for r in placed]
    if not node.has("alloc-ranges"):
        return memblock_alloc(banks, taken, region.size, align, 0, 1 << 64, top_down=True)
    cells = (tree.address_cells(tree.root), tree.size_cells(tree.root))
    for start, length in tree.tuples(node, "alloc-ranges", cells):
        end = start + length
        bottom_up = any(r.range.start <= start <= r.range.end for r in placed)
        top_down = any(r.range.start <= end <= r.range.end for r in placed)
        down = top_down or not bottom_up
        found = memblock_alloc(banks, taken, region.size, align, start, end, top_down=down)
        if found is not None:
            return found
    return None


def free_ranges(banks: list[MemoryRegion], taken: list[AddressRange]) -> list[AddressRange]:
    """The RAM of ``banks`` outside every ``taken`` window, in address order."""
    return subtract(union([b.range for b in banks]), taken)


def memblock_alloc(
    banks: list[MemoryRegion],
    taken: list[AddressRange],
    size: int,
    align: int,
    start: int,
    end: int,
    *,
    top_down: bool,
) -> int | None:
    """memblock_phys_alloc_range: the highest (or lowest) ``align``-ed start of ``size``
    free bytes inside ``[start, end)``, or ``None``."""
    free = free_ranges(banks, taken)
    clipped = [
        (max(w.start, start), min(w.end, end)) for w in free if w.end > start and w.start < end
    ]
    for low, high in reversed(clipped) if top_down else clipped:
        if high - low < size:
            continue
        candidate = align_down(high - size, align) if top_down else align_up(low, align)
        if low <= candidate and candidate + size <= high:
            return candidate
    return None
