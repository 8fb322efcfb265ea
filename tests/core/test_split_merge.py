"""``vcm_split``/``vcm_merge``: cutting a reservation in two without touching a
page-table entry (what a partial munmap needs), and joining it back exactly."""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K
from vcmm.core import Attr, PhysAttr
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.mm.iova import IovaDomain


def _backed(system: vcmm.System) -> tuple[vcmm.Vcm, vcmm.Reservation, vcmm.PhysMem]:
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    physmem = system.vcm_phys_alloc("blocks", SZ_1M + SZ_64K, PhysAttr.NONE)
    res = system.vcm_reserve(vcm, SZ_1M + SZ_64K, Attr.RW)
    system.vcm_back(res, physmem)
    return vcm, res, physmem


def test_split_moves_mappings_not_entries_and_merge_undoes_it(system) -> None:
    vcm, res, physmem = _backed(system)
    base = res.dev_addr
    before = system.snapshot()
    tables = vcm.table.snapshot()
    at = SZ_1M - 2 * SZ_4K  # inside the 1M chunk's section
    rest = system.vcm_phys_view(physmem, at, res.len - at)
    right = system.vcm_split(res, at, rest)
    assert (res.len, right.addr, right.len) == (at, base + at, SZ_64K + 2 * SZ_4K)
    assert right.physmem is rest and res.physmem is physmem
    assert vcm.table.snapshot() == tables  # not one entry changed
    left_edges = system.graph.of_reservation(res.id)
    right_edges = system.graph.of_reservation(right.id)
    assert sum(m.phys.size for m in left_edges) == at
    assert sum(m.phys.size for m in right_edges) == right.len
    assert right_edges[0].va == base + at
    assert right_edges[0].phys.start == physmem.chunk_ranges[0].start + at
    # Joined again, the system is exactly as before the split.
    system.vcm_merge(res, right)
    assert right.freed and res.len == SZ_1M + SZ_64K and not rest.backing
    system.vcm_phys_free(rest)
    assert system.snapshot() == before


def test_unbacking_one_part_unmaps_exactly_it(system) -> None:
    vcm, res, physmem = _backed(system)
    dev = system.device("vcodec_a_mm1")
    base, start = res.dev_addr, physmem.chunk_ranges[0].start
    at = SZ_1M - 2 * SZ_4K  # inside the 1M chunk's section
    right = system.vcm_split(res, at, system.vcm_phys_view(physmem, at, res.len - at))
    system.memory.write(start, b"kept")
    system.vcm_unback(right)
    system.vcm_unreserve(right)
    assert dev.read(base, 4) == b"kept"
    assert vcm.table.walk(base + at).pa is None
    assert vcm.table.walk(base + at - SZ_4K).pa == start + at - SZ_4K
    assert vcm.allocator.allocated() == [vcmm.AddressRange(base, at)]
    assert sum(m.phys.size for m in system.graph.of_reservation(res.id)) == at


def test_split_and_merge_of_an_unbacked_reservation(system) -> None:
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    res = system.vcm_reserve(vcm, 4 * SZ_4K, Attr.RW)
    before = system.snapshot()
    right = system.vcm_split(res, SZ_4K)
    assert vcm.allocator.allocated() == [res.range, right.range]
    system.vcm_merge(res, right)
    assert system.snapshot() == before


def test_split_and_merge_misuse_changes_nothing(system) -> None:
    vcm, res, physmem = _backed(system)
    other = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    wrong = system.vcm_phys_view(other, 0, SZ_64K)
    right_mem = system.vcm_phys_view(physmem, SZ_1M, SZ_64K)
    iova_vcm = system.vcm_create(
        0x4000_0000, SZ_16M, allocator=_Iova(vcmm.AddressRange(0x4000_0000, SZ_16M))
    )
    iova_res = system.vcm_reserve(iova_vcm, 2 * SZ_4K, Attr.RW)
    unbacked = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    before = system.snapshot()
    for call, error in (
        (lambda: system.vcm_split(res, 0, right_mem), InvalidArgumentError),
        (lambda: system.vcm_split(res, res.len, right_mem), InvalidArgumentError),
        (lambda: system.vcm_split(res, 100, right_mem), InvalidArgumentError),
        (lambda: system.vcm_split(res, SZ_1M), InvalidArgumentError),  # needs the rest
        (lambda: system.vcm_split(res, SZ_1M, wrong), InvalidArgumentError),
        (lambda: system.vcm_split(res, SZ_1M - SZ_4K, right_mem), InvalidArgumentError),
        (lambda: system.vcm_split(unbacked, SZ_4K), InvalidArgumentError),
        (lambda: system.vcm_split(iova_res, SZ_4K), InvalidArgumentError),
        (lambda: system.vcm_merge(res, res), InvalidArgumentError),
        (lambda: system.vcm_merge(res, unbacked), StateError),
    ):
        with pytest.raises(error):
            call()
    assert system.snapshot() == before


def test_merge_refuses_what_does_not_continue(system) -> None:
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    a = system.vcm_reserve(vcm, SZ_4K, Attr.RW, addr=SZ_16M)
    b = system.vcm_reserve(vcm, SZ_4K, Attr.READ, addr=SZ_16M + SZ_4K)
    c = system.vcm_reserve(vcm, SZ_4K, Attr.RW, addr=SZ_16M + 3 * SZ_4K)
    d = system.vcm_reserve(vcm, SZ_4K, Attr.RW, addr=SZ_16M + 4 * SZ_4K)
    system.vcm_back(d, system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.NONE))
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="different attributes"):
        system.vcm_merge(a, b)
    with pytest.raises(InvalidArgumentError, match="does not start where"):
        system.vcm_merge(a, c)
    with pytest.raises(StateError, match="not both"):
        system.vcm_merge(c, d)
    assert system.snapshot() == before


class _Iova:
    """A custom allocator (the DMA API's kind): it places ranges itself."""

    def __init__(self, window: vcmm.AddressRange) -> None:
        self.iova = IovaDomain(SZ_4K, window)

    def alloc(self, size: int, align: int | None = None) -> int:
        return self.iova.alloc(size)

    def free(self, addr: int) -> vcmm.AddressRange:
        return self.iova.free(addr)

    def snapshot(self) -> object:
        return self.iova.snapshot()


def test_a_block_cut_between_two_reservations_can_still_be_split_for_sharing(system, armv7) -> None:
    """After a split, one section maps the end of one reservation and the start of the
    other; sharing a page of the second splits that section, the first's pages kept."""
    physmem = system.vcm_phys_alloc("contig", 2 * SZ_1M, PhysAttr.CONTIGUOUS)
    start = physmem.chunk_ranges[0].start
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    res = system.vcm_reserve(vcm, 2 * SZ_1M, Attr.RW)
    system.vcm_back(res, physmem)
    half = SZ_1M // 2
    right = system.vcm_split(res, half, system.vcm_phys_view(physmem, half, res.len - half))
    assert armv7.leaf(vcm.table.root, right.addr).kind == "section"  # shared by both
    vmm = system.vcm_create_from_prebuilt(0)
    kernel = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    system.vcm_back(kernel, system.vcm_phys_view(physmem, half + 5 * SZ_4K, SZ_4K))
    for page in range(256):
        leaf = armv7.leaf(vcm.table.root, res.addr + page * SZ_4K)
        assert leaf.pa == start + page * SZ_4K and leaf.shareable == (page == 128 + 5)
    system.vcm_unback(kernel)
    assert not armv7.leaf(vcm.table.root, right.addr + 5 * SZ_4K).shareable
