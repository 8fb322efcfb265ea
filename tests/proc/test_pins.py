"""A user mapping a driver made of pages pins the allocation they lie in (issue 10
item 3): the driver cannot free the memory while a process still maps it."""

from __future__ import annotations

from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K, AddressRange
from vcmm.errors import BusyError, OwnershipError
from vcmm.proc import MAP_SHARED, PROT_READ, PROT_WRITE, File, ProcessTable


class PageNode(File):
    """A driver whose mmap hook maps the pages it was given (``remap_pfn_range``)."""

    def __init__(self, pages: list[AddressRange]) -> None:
        super().__init__("pages")
        self.pages = pages

    def mmap(self, vma: Any) -> None:
        vma.remap(self.pages)


def test_freeing_a_buffer_a_process_maps_is_refused_naming_the_mapping(
    system: vcmm.System, table: ProcessTable
) -> None:
    buf = system.vcm_phys_alloc("ebi", SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    proc = table.spawn("viewer")
    fd = proc.open(PageNode(list(buf.chunk_ranges)))
    va = proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    before = system.snapshot()
    with pytest.raises(BusyError, match=rf"{buf.name} is pinned by wrap\d+ \(viewer\["):
        system.vcm_phys_free(buf)
    assert system.snapshot() == before
    # Without the pin the next allocation would get this page under the mapping.
    proc.write(va, b"mine")
    proc.munmap(va, SZ_4K)
    system.vcm_phys_free(buf)


def test_a_driver_cannot_map_free_or_page_table_pages_into_a_process(
    system: vcmm.System, table: ProcessTable, state: Any
) -> None:
    buf = system.vcm_phys_alloc("ebi", SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    free = AddressRange(buf.chunk_ranges[0].end, SZ_4K)
    tables = AddressRange(system.spec.page_tables.start, SZ_4K)
    proc = table.spawn("p")
    for pages, match in (([free], "free memory of target 'ebi'"), ([tables], "page-table")):
        fd = proc.open(PageNode(pages))
        before = state()
        with pytest.raises(OwnershipError, match=match):
            proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
        assert state() == before
        proc.close(fd)
