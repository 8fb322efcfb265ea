"""The scalar paths of one descriptor agree with the vectorised paths they shortcut.

A single page or block (a 4 KiB ``map_page``, a 1 MiB section) is where numpy's
fixed cost dominates, so the table writes one leaf's descriptor, checks one block
slot's subtree and counts one descriptor's valid bit in plain Python.  These tests
hold each shortcut to the general path: same descriptor words, same tables released,
same bytes, counts and table memory.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import MemType, PageAttrs
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.pgtable import ARMV7_LPAE, ARMV7S, VMSAV8_4K, PageTable, PageTableFormat
from vcmm.hw.pgtable.mapmany import leaf_descriptors
from vcmm.hw.tablemem import TableMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000
FORMATS = [ARMV7S, ARMV7_LPAE, VMSAV8_4K]
A = PageAttrs()


def make(fmt: PageTableFormat) -> tuple[PhysicalMemory, TableMemory, PageTable]:
    mem = PhysicalMemory([MemoryRegion("ram", AddressRange(RAM, SZ_256M))])
    tm = TableMemory(mem, AddressRange(RAM, SZ_4M))
    return mem, tm, PageTable(fmt, mem, tm)


attrs_strategy = st.builds(
    PageAttrs,
    read=st.just(True),
    write=st.booleans(),
    exec=st.booleans(),
    user=st.booleans(),
    memtype=st.sampled_from(list(MemType)),
    shareable=st.booleans(),
    global_=st.booleans(),
    ns=st.booleans(),
)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@settings(max_examples=60, deadline=None)
@given(attrs=attrs_strategy, frame=st.integers(min_value=0, max_value=(1 << 20) - 2))
def test_one_leaf_is_encoded_as_the_first_of_two(
    fmt: PageTableFormat, attrs: PageAttrs, frame: int
) -> None:
    """``leaf_descriptors`` of one leaf equals the first leaf of the vectorised run of
    two, for every leaf kind of the format (copies repeated as the hardware reads them)."""
    _mem, _tm, pt = make(fmt)
    values = fmt.attr_values(attrs)
    for level in pt.geometry.levels:
        for kind in level.leaf_kinds:
            pa = (frame * kind.size) % (kind.oa_limit - 2 * kind.size)
            pa -= pa % kind.size
            one = leaf_descriptors(kind, pa, 1, values)
            two = leaf_descriptors(kind, pa, 2, values)
            assert one.dtype == np.uint64 and one.shape == (kind.copies,)
            assert one.tolist() == two[: kind.copies].tolist()
            assert all(kind.output_address(int(d)) == pa for d in one)


def _kept_tables_then_blocks(fmt: PageTableFormat, block: int, together: bool) -> object:
    """Two empty kept tables under two block slots, then blocks over both: in one call
    (the vectorised slot check) or one block per call (the scalar one)."""
    mem, tm, pt = make(fmt)
    base = 4 * block
    for k in range(2):
        pt.map(base + k * block + SZ_4K, RAM, SZ_4K, A)
        pt.unmap(base + k * block + SZ_4K, SZ_4K)
    kept = len(pt.table_pages())
    if together:
        pt.map(base, RAM + block, 2 * block, A, page_size=block)
    else:
        for k in range(2):
            pt.map(base + k * block, RAM + (k + 1) * block, block, A, page_size=block)
    assert len(pt.table_pages()) == kept - 2  # both kept tables went back
    assert pt.walk(base + block + SZ_4K).pa == RAM + 2 * block + SZ_4K
    return pt.snapshot(), tm.snapshot(), mem.digest(), mem.bytes_written


@pytest.mark.parametrize(
    ("fmt", "block"), [(ARMV7S, SZ_1M), (ARMV7_LPAE, SZ_2M), (VMSAV8_4K, SZ_2M)]
)
def test_one_block_slot_releases_a_kept_table_as_two_slots_do(
    fmt: PageTableFormat, block: int
) -> None:
    assert _kept_tables_then_blocks(fmt, block, together=True) == _kept_tables_then_blocks(
        fmt, block, together=False
    )


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_valid_counts_match_the_descriptors_in_memory(fmt: PageTableFormat) -> None:
    """After single-descriptor writes (maps, unmaps, a block split by a partial
    unmap), each table's count of valid entries is what its bytes hold."""
    _mem, _tm, pt = make(fmt)
    block = SZ_1M if fmt is ARMV7S else SZ_2M
    pt.map(block, RAM + block, block, A)
    pt.unmap(block + SZ_4K, SZ_4K)  # splits the block
    for k in range(5):
        pt.map(8 * block + k * SZ_4K, RAM + k * SZ_4K, SZ_4K, A)
    pt.unmap(8 * block + 2 * SZ_4K, SZ_4K)
    eb = pt.geometry.levels[0].entry_bytes
    for _pa, _size, count, raw in pt.snapshot().tables:
        words = np.frombuffer(raw, dtype="<u4" if eb == 4 else "<u8").astype(np.uint64)
        assert count == int(np.count_nonzero(words & np.uint64(fmt.valid_mask)))
