"""The attribute rule is per physical page, whatever path named the page.

ARM forbids mismatched memory attributes for one physical location (King, seed 000
L2075-2094: "multiple V:P mappings for the same physical page with different
attributes"); two *different* pages of one allocation chunk may have different memory
types, because nothing maps one page through the other's entry.  These tests pin both
halves down with views (windows of an allocation), the way the stateful test reached
them, and read the memory type back from the table bytes with the conftest decoder
(ARM ARM table B3-10, TEX remap off: write-through is TEX=000 C=1 B=0, write-back
write-allocate TEX=001 C=1 B=1, non-cacheable TEX=001 C=0 B=0).

The first test is the sequence hypothesis found with
``--hypothesis-seed=285429604015725151422177390595048865967``, written out by hand.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M
from vcmm.core import Attr, PhysAttr
from vcmm.errors import AttributeConflictError

WT = (0b000, 1, 0)
WB_WA = (0b001, 1, 1)
NONCACHED = (0b001, 0, 0)


def _iommu(system: vcmm.System, device: str, start: int) -> vcmm.Vcm:
    vcm = system.vcm_create(start, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, device, 0))
    return vcm


def _type(armv7, res) -> tuple[int, int, int]:
    leaf = armv7.leaf(res.vcm.table.root, res.dev_addr)
    return (leaf.tex, leaf.c, leaf.b)


@pytest.fixture
def two_vcms(system: vcmm.System) -> tuple[vcmm.Vcm, vcmm.Vcm]:
    return _iommu(system, "vcodec_a_mm1", SZ_16M), _iommu(system, "vcodec_b_mm2", 256 * SZ_1M)


@pytest.fixture
def carve_out(system: vcmm.System) -> vcmm.PhysMem:
    """2 MiB of the contiguous carve-out: one chunk, outside the kernel's linear map."""
    physmem = system.vcm_phys_alloc("contig", 2 * SZ_1M, PhysAttr.NONE)
    assert len(physmem.chunk_ranges) == 1
    assert system.graph.linear_alias(physmem.chunk_ranges[0]) is None
    return physmem


def test_two_pages_of_one_chunk_may_have_two_memory_types(
    system, armv7, two_vcms, carve_out
) -> None:
    """Seed 285429604015725151422177390595048865967: a 4 KiB reservation backed with
    the 2 MiB allocation maps its page 0 write-back; a view of page 1 backs a
    write-through reservation.  Different pages: both are legal."""
    a, b = two_vcms
    cached = system.vcm_reserve(a, SZ_4K, Attr.RW)
    system.vcm_back(cached, carve_out)
    page1 = system.vcm_phys_view(carve_out, SZ_4K, SZ_4K)
    wt = system.vcm_reserve(b, SZ_4K, Attr.RW | Attr.WT)
    system.vcm_back(wt, page1)
    base = carve_out.chunk_ranges[0].start
    assert armv7.leaf(a.table.root, cached.dev_addr).pa == base
    assert armv7.leaf(b.table.root, wt.dev_addr).pa == base + SZ_4K
    assert _type(armv7, cached) == WB_WA and _type(armv7, wt) == WT
    # Neither page has a second address space: both stay non-shareable.
    assert not armv7.leaf(a.table.root, cached.dev_addr).shareable
    assert not armv7.leaf(b.table.root, wt.dev_addr).shareable


@pytest.mark.parametrize(
    ("offset", "pages"),
    [(0, 1), (0, 2)],
    ids=["the-same-page", "a-window-straddling-it"],
)
def test_a_view_reaching_a_page_mapped_with_another_type_is_refused(
    system, armv7, two_vcms, carve_out, offset: int, pages: int
) -> None:
    a, b = two_vcms
    cached = system.vcm_reserve(a, SZ_4K, Attr.RW)
    system.vcm_back(cached, carve_out)  # page 0, write-back
    view = system.vcm_phys_view(carve_out, offset, pages * SZ_4K)
    wt = system.vcm_reserve(b, pages * SZ_4K, Attr.RW | Attr.WT)
    before = system.snapshot()
    with pytest.raises(AttributeConflictError) as err:
        system.vcm_back(wt, view)
    message = str(err.value)
    assert wt.name in message and cached.name in message
    assert "normal-wt" in message and "normal-wb-wa" in message
    assert "every alias of a physical page must agree" in message
    assert system.snapshot() == before
    assert not wt.backed and view.backing == []
    assert armv7.leaf(b.table.root, wt.dev_addr).kind == "fault"


def test_the_rule_holds_the_other_way_round(system, armv7, two_vcms, carve_out) -> None:
    """An uncached view mapped first: backing a cached reservation with the whole
    allocation, which covers that page, is refused; one that stops short is not."""
    a, b = two_vcms
    view = system.vcm_phys_view(carve_out, 3 * SZ_4K, SZ_4K)
    uncached = system.vcm_reserve(a, SZ_4K, Attr.RW | Attr.NONCACHED)
    system.vcm_back(uncached, view)
    assert _type(armv7, uncached) == NONCACHED
    reaching = system.vcm_reserve(b, 4 * SZ_4K, Attr.RW)
    before = system.snapshot()
    with pytest.raises(AttributeConflictError, match=rf"{reaching.name}.*{uncached.name}"):
        system.vcm_back(reaching, carve_out)
    assert system.snapshot() == before
    short = system.vcm_reserve(b, 3 * SZ_4K, Attr.RW)
    system.vcm_back(short, carve_out)  # pages 0-2: no alias of page 3
    assert _type(armv7, short) == WB_WA


def test_a_page_inside_a_section_conflicts_with_the_section(
    system, armv7, two_vcms, carve_out
) -> None:
    """A 1 MiB reservation maps the first megabyte with one section entry: every page
    in it is an alias, so a write-through view of a page in the middle is refused."""
    a, b = two_vcms
    whole = system.vcm_reserve(a, SZ_1M, Attr.RW)
    system.vcm_back(whole, carve_out)
    assert armv7.leaf(a.table.root, whole.dev_addr).kind == "section"
    middle = system.vcm_phys_view(carve_out, 100 * SZ_4K, SZ_4K)
    wt = system.vcm_reserve(b, SZ_4K, Attr.RW | Attr.WT)
    before = system.snapshot()
    with pytest.raises(AttributeConflictError):
        system.vcm_back(wt, middle)
    assert system.snapshot() == before
    # The page just past the section is no alias of it.
    past = system.vcm_phys_view(carve_out, SZ_1M, SZ_4K)
    system.vcm_back(wt, past)
    assert _type(armv7, wt) == WT


def test_unbacking_the_alias_frees_the_page_for_another_type(
    system, armv7, two_vcms, carve_out
) -> None:
    a, b = two_vcms
    cached = system.vcm_reserve(a, SZ_4K, Attr.RW)
    system.vcm_back(cached, carve_out)
    view = system.vcm_phys_view(carve_out, 0, SZ_4K)
    wt = system.vcm_reserve(b, SZ_4K, Attr.RW | Attr.WT)
    with pytest.raises(AttributeConflictError):
        system.vcm_back(wt, view)
    system.vcm_unback(cached)
    system.vcm_back(wt, view)
    assert _type(armv7, wt) == WT
    # Now the write-back mapping is the one refused.
    with pytest.raises(AttributeConflictError, match=rf"{cached.name}.*{wt.name}"):
        system.vcm_back(cached, carve_out)


def test_a_split_reservation_keeps_its_pages_types(system, armv7, two_vcms, carve_out) -> None:
    """vcm_split cuts a reservation without touching its entries: the right half's
    pages stay write-back aliases and still refuse another memory type."""
    a, b = two_vcms
    cached = system.vcm_reserve(a, 4 * SZ_4K, Attr.RW)
    system.vcm_back(cached, carve_out)
    rest = system.vcm_phys_view(carve_out, 2 * SZ_4K, 2 * SZ_4K)
    right = system.vcm_split(cached, 2 * SZ_4K, rest)
    third = system.vcm_phys_view(carve_out, 3 * SZ_4K, SZ_4K)
    wt = system.vcm_reserve(b, SZ_4K, Attr.RW | Attr.WT)
    before = system.snapshot()
    with pytest.raises(AttributeConflictError, match=right.name):
        system.vcm_back(wt, third)
    assert system.snapshot() == before
