"""One security state per page (issue 10 item 6).

The kernel is Non-secure world software: its linear map and every VCM and user
mapping of the same page carry NS=1, read here straight from the table bytes (ARM ARM
VMSAv8-64 D8.3: NS is bit 5 of a block or page descriptor; ARMv7 B3.5.1: NS is bit 19
of a section and bit 3 of the first-level descriptor of a second-level table, whose
pages inherit it).  ``Attr.SECURE`` maps NS=0, which names the Secure physical
address space: a page is one or the other, so a secure alias of anything a
non-secure mapping reaches is refused, and the other way round.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M
from vcmm.core import Attr, PhysAttr
from vcmm.errors import AttributeConflictError
from vcmm.proc import MAP_SHARED, PROT_READ, ProcessTable

_VA_MASK = (1 << 48) - 1
NS_V8 = 1 << 5  # block/page descriptor
NS_V7_SECTION = 1 << 19
NS_V7_TABLE = 1 << 3  # first-level page-table descriptor
# Lower attributes [11:2] (AttrIndx, NS, AP, SH, AF, nG) and upper ones (PXN, UXN).
V8_ATTRS = (0x3FF << 2) | (0b11 << 53)


class _Buffer(vcmm.proc.File):
    def __init__(self, physmem: object) -> None:
        super().__init__("buffer")
        self.physmem = physmem

    def mmap(self, vma: object) -> None:
        vma.remap(self.physmem)  # type: ignore[attr-defined]


def test_the_linear_map_and_every_alias_of_a_kernel_page_are_non_secure(
    system, armv7, armv8
) -> None:
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    pa = physmem.chunk_ranges[0].start
    linear = armv8.leaf(system.cpu.kernel_table.root, system.cpu.phys_to_virt(pa) & _VA_MASK)
    assert linear is not None and linear.pa == pa and linear.desc & NS_V8
    # A kernel (VMM) alias of the page: the same attribute bits, NS included.
    vmm = system.vcm_create_from_prebuilt(0)
    kres = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    system.vcm_back(kres, physmem)
    kleaf = armv8.leaf(system.cpu.kernel_table.root, kres.dev_addr & _VA_MASK)
    assert kleaf is not None and kleaf.pa == pa
    assert kleaf.desc & V8_ATTRS == linear.desc & V8_ATTRS
    # A device's alias (ARMv7 small page: NS from its first-level descriptor).
    iommu = system.vcm_create(SZ_16M, SZ_16M)
    dres = system.vcm_reserve(iommu, SZ_4K, Attr.RW)
    system.vcm_back(dres, physmem)
    assert armv7.leaf(iommu.table.root, dres.dev_addr).pa == pa
    assert armv7.l1(iommu.table.root, dres.dev_addr) & NS_V7_TABLE
    # A process's alias.
    proc = ProcessTable(system).spawn("reader")
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, proc.open(_Buffer(physmem)))
    uleaf = armv8.leaf(system.cpu.address_space(proc.asid).root, va)
    assert uleaf is not None and uleaf.pa == pa and uleaf.desc & NS_V8


def test_a_secure_buffer_maps_ns0_and_agrees_with_its_secure_aliases(system, armv7) -> None:
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    roots = []
    for start in (SZ_16M, 2 * SZ_16M):
        vcm = system.vcm_create(start, SZ_16M)
        res = system.vcm_reserve(vcm, SZ_1M, Attr.RW | Attr.SECURE)
        system.vcm_back(res, physmem)
        roots.append((vcm.table.root, res.dev_addr))
    for root, va in roots:
        leaf = armv7.leaf(root, va)
        assert leaf.kind == "section" and leaf.pa == physmem.chunk_ranges[0].start
        assert not leaf.desc & NS_V7_SECTION
        assert leaf.shareable  # two spaces map it: the sharing rule still applies


@pytest.mark.parametrize("secure_first", [True, False])
def test_secure_and_non_secure_aliases_of_a_page_are_refused(system, secure_first) -> None:
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.blocks(SZ_1M))
    first, second = Attr.RW | Attr.SECURE, Attr.RW
    if not secure_first:
        first, second = second, first
    a = system.vcm_create(SZ_16M, SZ_16M)
    system.vcm_back(system.vcm_reserve(a, SZ_1M, first), physmem)
    b = system.vcm_create(2 * SZ_16M, SZ_16M)
    res = system.vcm_reserve(b, SZ_4K, second)
    view = system.vcm_phys_view(physmem, SZ_4K, SZ_4K)  # one page inside the section
    before = system.snapshot()
    with pytest.raises(AttributeConflictError, match="mismatched security state") as err:
        system.vcm_back(res, view)
    message = str(err.value)
    assert res.name in message and ("secure (NS=0)" if not secure_first else "NS=1") in message
    assert system.snapshot() == before


def test_a_secure_mapping_of_kernel_ram_is_refused_naming_the_linear_map(system) -> None:
    physmem = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE)
    vcm = system.vcm_create(SZ_16M, SZ_16M)
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW | Attr.SECURE)
    before = system.snapshot()
    with pytest.raises(AttributeConflictError, match=r"the kernel linear map maps .* non-secure"):
        system.vcm_back(res, physmem)
    assert system.snapshot() == before
