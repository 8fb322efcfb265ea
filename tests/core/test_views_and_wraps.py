"""Views and wraps: backing reservations with parts of allocations and with pages the
VCMM did not hand out, and the mapping graph finding every alias whatever chunk
boundaries were used.

The shareable-bit checks compare each alias's descriptor, decoded from table memory
(ARMv7 S bit, see conftest), with a per-page count of the address spaces mapping the
page, computed here from what each test mapped."""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K, AddressRange, MemType
from vcmm.core import Attr, PhysAttr
from vcmm.errors import (
    AlignmentError,
    AttributeConflictError,
    BusyError,
    InvalidArgumentError,
    OutOfMemoryError,
    StateError,
)


def _iommu(system: vcmm.System, device: str, start: int = SZ_16M) -> vcmm.Vcm:
    vcm = system.vcm_create(start, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, device, 0))
    return vcm


def _two_chunks(system: vcmm.System) -> vcmm.PhysMem:
    """1M + 64K from the block pools: two chunks from different pools."""
    physmem = system.vcm_phys_alloc("blocks", SZ_1M + SZ_64K, PhysAttr.NONE)
    assert [c.size for c in physmem.chunk_ranges] == [SZ_1M, SZ_64K]
    return physmem


def test_a_view_across_two_chunks_is_an_alias_of_both(system, armv7) -> None:
    physmem = _two_chunks(system)
    big, small = physmem.chunk_ranges
    a = _iommu(system, "vcodec_a_mm1")
    b = _iommu(system, "vcodec_b_mm2", 128 * SZ_1M)
    whole = system.vcm_reserve(a, SZ_1M + SZ_64K, Attr.RW)
    system.vcm_back(whole, physmem)
    # The last page of the 1M chunk and the first page of the 64K chunk.
    view = system.vcm_phys_view(physmem, SZ_1M - SZ_4K, 2 * SZ_4K)
    assert view.kind == "view" and view.parent is physmem
    assert view.chunk_ranges == (
        AddressRange(big.end - SZ_4K, SZ_4K),
        AddressRange(small.start, SZ_4K),
    )
    part = system.vcm_reserve(b, 2 * SZ_4K, Attr.RW)
    system.vcm_back(part, view)
    # Both chunks know the view's mapping, and the device reads the right bytes.
    for chunk in (big, small):
        assert {m.space for m in system.graph.of_chunk(chunk)} == {a.space, b.space}
    system.memory.write(big.end - 4, b"endsmall")
    system.memory.write(small.start, b"start")
    dev = system.device("vcodec_b_mm2")
    assert dev.read(part.dev_addr + SZ_4K - 4, 4) == b"ends"
    assert dev.read(part.dev_addr + SZ_4K, 5) == b"start"
    # Per page: exactly the two shared pages are shareable, on both aliases.
    shared = {big.end - SZ_4K, small.start}
    for offset in range(0, SZ_1M + SZ_64K, SZ_4K):
        pa = big.start + offset if offset < SZ_1M else small.start + offset - SZ_1M
        leaf = armv7.leaf(a.table.root, whole.dev_addr + offset)
        assert leaf.pa == pa and leaf.shareable == (pa in shared), hex(offset)
    for offset in (0, SZ_4K):
        assert armv7.leaf(b.table.root, part.dev_addr + offset).shareable
    # The 1M chunk was a section; the page that became shared split it.
    assert armv7.leaf(a.table.root, whole.dev_addr).kind != "section"
    # When the view's mapping goes, the bits go with it.
    system.vcm_unback(part)
    for offset in range(0, SZ_1M + SZ_64K, SZ_4K):
        assert not armv7.leaf(a.table.root, whole.dev_addr + offset).shareable
    assert all(not m.attrs.shareable for m in system.graph.of_reservation(whole.id))


def test_a_view_pins_its_allocation(system) -> None:
    physmem = system.vcm_phys_alloc("contig", 4 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(physmem, SZ_4K, 2 * SZ_4K)
    before = system.snapshot()
    with pytest.raises(BusyError, match=view.name):
        system.vcm_phys_free(physmem)
    assert system.snapshot() == before and not physmem.freed
    # A view of a view is a view of the allocation (views never chain).
    inner = system.vcm_phys_view(view, SZ_4K, SZ_4K)
    assert inner.parent is physmem and inner.offset == 2 * SZ_4K
    assert inner.chunk_ranges == (AddressRange(physmem.chunk_ranges[0].start + 2 * SZ_4K, SZ_4K),)
    free_before = system.target("contig").free_bytes
    system.vcm_phys_free(view)  # forgetting a view gives nothing back to the target
    assert system.target("contig").free_bytes == free_before
    with pytest.raises(BusyError):
        system.vcm_phys_free(physmem)
    system.vcm_phys_free(inner)
    system.vcm_phys_free(physmem)
    assert system.target("contig").free_bytes == free_before + 4 * SZ_4K
    assert system.phys_views == [] and physmem not in system.physmems


def test_a_view_backing_a_reservation_cannot_be_freed(system) -> None:
    physmem = system.vcm_phys_alloc("ebi", 2 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(physmem, 0, SZ_4K)
    vmm = system.vcm_create_from_prebuilt(0)
    res = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    system.vcm_back(res, view)
    before = system.snapshot()
    with pytest.raises(BusyError, match=res.name):
        system.vcm_phys_free(view)
    assert system.snapshot() == before


def test_view_misuse_changes_nothing(system) -> None:
    physmem = system.vcm_phys_alloc("contig", 4 * SZ_4K, PhysAttr.CONTIGUOUS)
    gone = system.vcm_phys_alloc("contig", SZ_4K, PhysAttr.CONTIGUOUS)
    system.vcm_phys_free(gone)
    before = system.snapshot()
    for call, error in (
        (lambda: system.vcm_phys_view(physmem, 3 * SZ_4K, 2 * SZ_4K), InvalidArgumentError),
        (lambda: system.vcm_phys_view(physmem, 100, SZ_4K), AlignmentError),
        (lambda: system.vcm_phys_view(physmem, 0, 0), InvalidArgumentError),
        (lambda: system.vcm_phys_view(physmem, -SZ_4K, SZ_4K), InvalidArgumentError),
        (lambda: system.vcm_phys_view(physmem, 0), InvalidArgumentError),
        (lambda: system.vcm_phys_view(physmem, windows=[]), InvalidArgumentError),
        (
            lambda: system.vcm_phys_view(physmem, 0, SZ_4K, windows=[(0, SZ_4K)]),
            InvalidArgumentError,
        ),
        (lambda: system.vcm_phys_view(gone, 0, SZ_4K), StateError),
        (lambda: system.vcm_phys_view("physmem", 0, SZ_4K), InvalidArgumentError),
    ):
        with pytest.raises(error):
            call()
    assert system.snapshot() == before


def test_windows_are_laid_end_to_end(system) -> None:
    physmem = system.vcm_phys_alloc("contig", 8 * SZ_4K, PhysAttr.CONTIGUOUS)
    start = physmem.chunk_ranges[0].start
    view = system.vcm_phys_view(physmem, windows=[(6 * SZ_4K, SZ_4K), (SZ_4K, 2 * SZ_4K)])
    assert view.size == 3 * SZ_4K
    assert view.chunk_ranges == (
        AddressRange(start + 6 * SZ_4K, SZ_4K),
        AddressRange(start + SZ_4K, 2 * SZ_4K),
    )
    vmm = system.vcm_create_from_prebuilt(0)
    res = system.vcm_reserve(vmm, 3 * SZ_4K, Attr.RW | Attr.NONCACHED)
    system.vcm_back(res, view)
    for i, pa in enumerate((start + 6 * SZ_4K, start + SZ_4K, start + 2 * SZ_4K)):
        system.memory.write(pa, bytes([0x60 + i]) * 8)
        assert system.cpu.read(res.dev_addr + i * SZ_4K, 8) == bytes([0x60 + i]) * 8


def test_a_wrap_describes_pages_of_an_allocation_its_owner_names(system, armv7) -> None:
    """Kernel pages from the linear map, as a driver hands them to dma_map_page; the
    driver names the allocation they lie in (``of=``)."""
    kernel = system.vcm_phys_alloc("ebi", 4 * SZ_4K, PhysAttr.CONTIGUOUS)
    pa = kernel.chunk_ranges[0].start
    free_before = system.target("ebi").free_bytes
    wrap = system.vcm_phys_wrap(
        [AddressRange(pa + SZ_4K, SZ_4K), AddressRange(pa + SZ_4K, SZ_4K)],
        owner="driver x",
        of=kernel,
    )
    assert wrap.kind == "wrap" and wrap.owner == "driver x" and wrap.size == 2 * SZ_4K
    vcm = _iommu(system, "vcodec_a_mm1")
    res = system.vcm_reserve(vcm, 2 * SZ_4K, Attr.RW)
    system.vcm_back(res, wrap)  # the same page twice: both slots reach it
    system.memory.write(pa + SZ_4K, b"twice")
    dev = system.device("vcodec_a_mm1")
    assert dev.read(res.dev_addr, 5) == dev.read(res.dev_addr + SZ_4K, 5) == b"twice"
    # Kernel RAM: the linear map is an alias, so the mapping is write-back and shareable.
    for m in system.graph.of_reservation(res.id):
        assert m.attrs.memtype is MemType.NORMAL_WB_WA and m.attrs.shareable
    assert armv7.leaf(vcm.table.root, res.dev_addr).shareable
    # The allocation finds the wrap's mapping as an alias of its chunk.
    assert {m.res_id for m in system.graph.of_chunk(kernel.chunk_ranges[0])} == {res.id}
    system.vcm_unback(res)
    system.vcm_phys_free(wrap)
    assert system.target("ebi").free_bytes == free_before  # nothing went to the target
    assert not kernel.freed


def test_wrap_misuse_changes_nothing(system) -> None:
    ram = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS).chunk_ranges[0]
    hole = AddressRange(0x7000_0000, SZ_4K)  # between the SMI and kernel RAM
    assert not system.memory.is_backed(hole.start, hole.size)
    before = system.snapshot()
    for call, error in (
        (lambda: system.vcm_phys_wrap([], owner="x"), InvalidArgumentError),
        (lambda: system.vcm_phys_wrap([ram], owner=""), InvalidArgumentError),
        (
            lambda: system.vcm_phys_wrap([AddressRange(ram.start + 8, SZ_4K)], owner="x"),
            AlignmentError,
        ),
        (lambda: system.vcm_phys_wrap([AddressRange(ram.start, 100)], owner="x"), AlignmentError),
        (lambda: system.vcm_phys_wrap([hole], owner="x"), InvalidArgumentError),
        (lambda: system.vcm_phys_wrap([(ram.start, SZ_4K)], owner="x"), InvalidArgumentError),
    ):
        with pytest.raises(error):
            call()  # type: ignore[no-untyped-call]
    assert system.snapshot() == before


def test_a_sub_chunk_alias_with_another_memory_type_is_refused(system) -> None:
    """The graph finds the chunk's mapping from a page strictly inside it."""
    physmem = system.vcm_phys_alloc("contig", SZ_64K, PhysAttr.CONTIGUOUS)
    vcm = _iommu(system, "vcodec_a_mm1")
    cached = system.vcm_reserve(vcm, SZ_64K, Attr.RW)
    system.vcm_back(cached, physmem)
    view = system.vcm_phys_view(physmem, 5 * SZ_4K, SZ_4K)
    wrap = system.vcm_phys_wrap(list(view.chunk_ranges), owner="someone", of=view)
    vmm = system.vcm_create_from_prebuilt(0)
    res = system.vcm_reserve(vmm, SZ_4K, Attr.RW | Attr.NONCACHED)
    before = system.snapshot()
    for backing in (view, wrap):
        with pytest.raises(AttributeConflictError, match="normal-nc"):
            system.vcm_back(res, backing)
        assert system.snapshot() == before


def test_table_memory_running_out_while_splitting_a_block_is_rolled_back(system, armv7) -> None:
    """Sharing one page of a section needs a second-level table; with none left the
    backing fails and the section, its bits and the graph are as they were."""
    physmem = system.vcm_phys_alloc("contig", SZ_1M, PhysAttr.CONTIGUOUS)
    a = _iommu(system, "vcodec_a_mm1")
    whole = system.vcm_reserve(a, SZ_1M, Attr.RW)
    system.vcm_back(whole, physmem)
    assert armv7.leaf(a.table.root, whole.dev_addr).kind == "section"
    # A kernel mapping next to the one about to be made keeps the kernel's tables for
    # that range alive, so the only table the backing needs is the IOMMU's.
    vmm = system.vcm_create_from_prebuilt(0)
    keep = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    res = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    assert keep.dev_addr >> 21 == res.dev_addr >> 21
    system.vcm_back(keep, system.vcm_phys_alloc("contig", SZ_4K, PhysAttr.CONTIGUOUS))
    view = system.vcm_phys_view(physmem, 3 * SZ_4K, SZ_4K)
    tm = system.table_memory
    for size in (4096, 1024, 256, 64):
        while True:
            try:
                tm.alloc(size)
            except OutOfMemoryError:
                break
    before = system.snapshot()
    with pytest.raises(OutOfMemoryError, match="undone"):
        system.vcm_back(res, view)
    assert system.snapshot() == before
    leaf = armv7.leaf(a.table.root, whole.dev_addr + 3 * SZ_4K)
    assert leaf.kind == "section" and not leaf.shareable
    assert system.cpu.kernel_table.walk(res.dev_addr & ((1 << 48) - 1)).pa is None
