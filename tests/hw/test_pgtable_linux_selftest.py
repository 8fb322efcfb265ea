"""Linux's io-pgtable self-tests replayed on vcmm's tables, with the kernel's expectations.

``arm_lpae_run_tests`` (drivers/iommu/io-pgtable-arm.c: ARM_32_LPAE_S1 with a 32-bit
IAS, ARM_64_LPAE_S1, bitmap 4K|2M|1G) and ``arm_v7s_do_selftests``
(io-pgtable-arm-v7s.c, bitmap 4K|64K|1M|16M) run one sequence: empty tables translate
nothing; one mapping of each size at a fixed stride (1 GiB for LPAE, 16 MiB for v7s),
each refusing an overlapping second map; the smallest page unmapped out of the larger
blocks (which splits them) and remapped elsewhere; every block unmapped whole and
mapped again.  ``iova_to_phys`` returning 0 is the kernel's "no translation".

The sequence is the one of the kernels whose io-pgtable still split blocks on a partial
unmap, as vcmm's tables do.  Protections map onto PageAttrs as io-pgtable's stage-1
code does (IOMMU_CACHE: write-back, otherwise non-cacheable; IOMMU_NOEXEC: not
executable; IOMMU_WRITE alone gets read-write, since neither format encodes write-only).
"""

from __future__ import annotations

import pytest

from vcmm.attrs import MemType, PageAttrs
from vcmm.errors import AlreadyMappedError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1G, SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16M, SZ_64K, SZ_256M

RAM = 0x8000_0000
SZ_2G = 2 * SZ_1G

READ_WRITE_NOEXEC_CACHE = PageAttrs()
READ_NOEXEC = PageAttrs(write=False, memtype=MemType.NORMAL_NC)
READ = PageAttrs(write=False, exec=True, memtype=MemType.NORMAL_NC)
WRITE = PageAttrs(exec=True, memtype=MemType.NORMAL_NC)

# format, pgsize_bitmap, stride between the per-size mappings, which of those mappings
# get a page unmapped out of them (LPAE: the one at 1 GiB; v7s: all but the first)
CONFIGS: dict[str, tuple[PageTableFormat, tuple[int, ...], int, tuple[int, ...]]] = {
    "lpae-s1-ias32": (ARMV7_LPAE, (SZ_4K, SZ_2M, SZ_1G), SZ_1G, (1,)),
    "lpae64-s1": (VMSAV8_4K, (SZ_4K, SZ_2M, SZ_1G), SZ_1G, (1,)),
    "v7s": (ARMV7S, (SZ_4K, SZ_64K, SZ_1M, SZ_16M), SZ_16M, (1, 2, 3)),
}


def iova_to_phys(pt: PageTable, iova: int) -> int:
    w = pt.walk(iova)
    return 0 if w.pa is None else w.pa


@pytest.mark.parametrize("config", list(CONFIGS))
def test_io_pgtable_selftest_sequence(config: str) -> None:
    fmt, bitmap, stride, partial = CONFIGS[config]
    assert fmt.sizes == tuple(sorted(bitmap, reverse=True))
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    pt = PageTable(fmt, mem, TableMemory(mem, AddressRange(RAM, SZ_4M)))

    # Initial sanity checks: empty tables provide no translation.
    for iova in (42, SZ_1G + 42, SZ_2G + 42):
        assert iova_to_phys(pt, iova) == 0

    # Distinct mappings of different granule sizes.
    for i, size in enumerate(bitmap):
        iova = i * stride
        pt.map(iova, iova, size, READ_WRITE_NOEXEC_CACHE, page_size=size)
        with pytest.raises(AlreadyMappedError):  # overlapping mappings
            pt.map(iova, iova + size, size, READ_NOEXEC, page_size=size)
        assert iova_to_phys(pt, iova + 42) == iova + 42

    # Partial unmap of the smallest page out of each larger block, then remap it.
    size = min(bitmap)
    for i in partial:
        start = i * stride
        assert sum(e.size for e in pt.unmap(start + size, size)) == size
        pt.map(start + size, size, size, READ, page_size=size)
        assert iova_to_phys(pt, start + size + 42) == size + 42

    # Full unmap, then remap of each full block.
    for i, size in enumerate(bitmap):
        iova = i * stride
        assert sum(e.size for e in pt.unmap(iova, size)) == size
        assert iova_to_phys(pt, iova + 42) == 0
        pt.map(iova, iova, size, WRITE, page_size=size)
        assert iova_to_phys(pt, iova + 42) == iova + 42

    # Beyond the kernel's checks: what is left is exactly one block of each size.
    assert [(e.va, e.pa, e.size) for e in pt.mappings()] == [
        (i * stride, i * stride, size) for i, size in enumerate(bitmap)
    ]
