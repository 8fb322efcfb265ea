"""The physical map of an imported board: targets, linear map, page tables, DMA roles.

From the RAM banks and the placed reserved regions:

- each ``shared-dma-pool`` region becomes a target (``contiguous``, or ``cma`` when
  ``reusable``) under the region's own name;
- without a ``linux,cma-default`` region, Linux makes its default CMA area of
  ``CONFIG_CMA_SIZE_MBYTES`` (32 MiB in arm64's defconfig) top-down below 4 GiB
  (dma_contiguous_reserve): vcmm does the same, as target ``linux,cma``;
- vcmm takes a window for page-table pages (16 MiB, top-down below 4 GiB so that
  ARMv7 short-descriptor walkers reach it); Linux takes them from the page allocator;
- the linear map is the RAM left outside no-map regions and those carve-outs, and the
  ``system`` targets (``system@<base>``) are the linear map less the reserved regions
  that stay mapped (the kernel's page allocator never hands those out).

The kernel's RAM and the dma-buf heap are the largest system target below 4 GiB
(the largest of all when there is none there); the DMA API's
coherent pool sits in the default CMA area, where Linux's dma_alloc_coherent takes a
non-coherent device's buffers from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vcmm.hw.memory import MemoryRegion
from vcmm.platform.devicetree.memory import Region, memblock_alloc
from vcmm.platform.devicetree.tree import DtTree
from vcmm.platform.dmamem import DmaMemorySpec, PoolSpec
from vcmm.platform.reserved import ReservedSpec
from vcmm.platform.targets import TargetSpec
from vcmm.ranges import AddressRange, subtract, union
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4G, SZ_16M, SZ_32M, format_size

#: arm64 defconfig's CONFIG_CMA_SIZE_MBYTES.
DEFAULT_CMA_SIZE: Final = SZ_32M
#: The window vcmm keeps for page-table pages.
PAGE_TABLE_WINDOW: Final = SZ_16M
#: Name of the default CMA area vcmm makes when the devicetree has none.
DEFAULT_CMA_NAME: Final = "linux,cma"


@dataclass
class PhysicalMap:
    targets: tuple[TargetSpec, ...]
    reserved: tuple[ReservedSpec, ...]
    linear_map: tuple[AddressRange, ...]
    page_tables: AddressRange
    priority: tuple[str, ...]
    dma: DmaMemorySpec


def lay_out(
    tree: DtTree,
    banks: list[MemoryRegion],
    regions: list[Region],
    *,
    cma_size: int,
    notes: list[str],
) -> PhysicalMap:
    """Split the banks among targets, reserved regions, page tables and the linear map."""
    regions = _inside_ram(banks, regions, notes)
    taken = [r.range for r in regions]
    pools = [_pool_target(r) for r in regions if r.is_pool]
    default_cma = next((r.name for r in regions if r.cma_default and r.is_pool), None)
    low = _low_limit(banks)
    if default_cma is None and cma_size:
        start = memblock_alloc(banks, taken, cma_size, SZ_2M, 0, low, top_down=True)
        if start is None:
            notes.append(f"no room for a default CMA area of {format_size(cma_size)}")
        else:
            default_cma = DEFAULT_CMA_NAME
            pools.append(TargetSpec(name=DEFAULT_CMA_NAME, kind="cma", base=start, size=cma_size))
            taken.append(AddressRange(start, cma_size))
    page_tables = _page_table_window(tree, banks, taken, low)
    carved = [r.range for r in regions if r.no_map] + [t.range for t in pools] + [page_tables]
    linear = tuple(union(subtract(union([b.range for b in banks]), carved)))
    mapped_reserved = [r.range for r in regions if not r.no_map and not r.is_pool]
    system = [
        TargetSpec(name=f"system@{w.start:x}", kind="system", base=w.start, size=w.size)
        for w in subtract(list(linear), mapped_reserved)
    ]
    if not system:
        raise tree.error(tree.root, "memory", "no RAM is left for the kernel after reservations")
    # Kernel RAM below 4 GiB first: a 32-bit DMA mask reaches it, and so does every
    # table format's output range; then the rest, largest first.
    by_size = sorted(system, key=lambda t: (t.range.end > SZ_4G, -t.size, t.base))
    priority = tuple(t.name for t in by_size) + ((default_cma,) if default_cma else ())
    kernel = by_size[0].name
    pool = PoolSpec(target=default_cma) if default_cma else PoolSpec(size=0)
    return PhysicalMap(
        targets=tuple(sorted([*system, *pools], key=lambda t: t.base)),
        reserved=tuple(_reserved_spec(r) for r in regions),
        linear_map=linear,
        page_tables=page_tables,
        priority=priority,
        dma=DmaMemorySpec(kernel_target=kernel, exporter_target=kernel, coherent_pool=pool),
    )


def _inside_ram(banks: list[MemoryRegion], regions: list[Region], notes: list[str]) -> list[Region]:
    kept = []
    for region in regions:
        if any(region.range in bank.range for bank in banks):
            kept.append(region)
        else:
            notes.append(
                f"{region.node.path}: reserved {region.range} is not inside one RAM bank; "
                "it reserves nothing vcmm simulates"
            )
    return kept


def _low_limit(banks: list[MemoryRegion]) -> int:
    """4 GiB when RAM starts below it (arm64's DMA32 limit), else the end of RAM."""
    if any(b.range.start < SZ_4G for b in banks):
        return SZ_4G
    return max(b.range.end for b in banks)


def _page_table_window(
    tree: DtTree, banks: list[MemoryRegion], taken: list[AddressRange], low: int
) -> AddressRange:
    size = PAGE_TABLE_WINDOW
    while size >= SZ_1M:
        for limit in (low, 1 << 64):
            start = memblock_alloc(banks, taken, size, SZ_1M, 0, limit, top_down=True)
            if start is not None:
                return AddressRange(start, size)
        size //= 2
    raise tree.error(tree.root, "memory", "no free 1 MiB of RAM is left for page tables")


def _pool_target(region: Region) -> TargetSpec:
    kind = "cma" if region.reusable else "contiguous"
    return TargetSpec(name=region.name, kind=kind, base=region.range.start, size=region.size)


def _reserved_spec(region: Region) -> ReservedSpec:
    return ReservedSpec(
        name=region.name,
        range=region.range,
        node=region.node.path,
        no_map=region.no_map,
        reusable=region.reusable,
        dynamic=region.dynamic,
        compatible=region.compatible,
        target=region.name if region.is_pool else None,
    )
