"""RangeAllocator: genalloc-style first fit, fixed placement, remembered sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import (
    InvalidArgumentError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
    VcmmError,
)
from vcmm.mm.genalloc import RangeAllocator
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K

BASE = 0x1000_0000


@pytest.fixture
def vcm() -> RangeAllocator:
    return RangeAllocator(AddressRange(BASE, SZ_16M), granule=SZ_4K)


def test_first_fit_hands_out_lowest_addresses_in_order(vcm: RangeAllocator) -> None:
    assert [vcm.alloc(SZ_4K) for _ in range(3)] == [BASE, BASE + SZ_4K, BASE + 2 * SZ_4K]
    assert vcm.free_bytes == SZ_16M - 3 * SZ_4K


def test_alignment_is_absolute_and_the_padding_hole_is_reused(vcm: RangeAllocator) -> None:
    vcm.alloc(SZ_4K)
    big = vcm.alloc(SZ_64K, SZ_64K)
    assert big == BASE + SZ_64K  # next 64K boundary, not BASE + 4K
    # First fit: the 60K hole left by the alignment is the lowest fit for a small request.
    assert vcm.alloc(8 * SZ_4K) == BASE + SZ_4K


def test_alignment_counts_from_address_zero_not_from_range_start() -> None:
    odd = RangeAllocator(AddressRange(BASE + SZ_4K, SZ_1M), granule=SZ_4K)
    assert odd.alloc(SZ_64K, SZ_64K) == BASE + SZ_64K


def test_free_merges_neighbours_back_into_one_extent(vcm: RangeAllocator) -> None:
    addrs = [vcm.alloc(SZ_64K) for _ in range(4)]
    for addr in (addrs[1], addrs[3], addrs[0], addrs[2]):
        vcm.free(addr)
    assert vcm.free_ranges() == [AddressRange(BASE, SZ_16M)]
    assert vcm.allocated() == []


def test_free_returns_the_remembered_size(vcm: RangeAllocator) -> None:
    addr = vcm.alloc(3 * SZ_4K)
    assert vcm.free(addr) == AddressRange(addr, 3 * SZ_4K)


def test_lookup_finds_the_allocation_from_any_address_inside(vcm: RangeAllocator) -> None:
    vcm.alloc(SZ_4K)
    addr = vcm.alloc(SZ_64K)
    assert vcm.lookup(addr + SZ_64K - 1) == AddressRange(addr, SZ_64K)
    assert vcm.lookup(addr + SZ_64K) is None
    assert vcm.lookup(BASE - 1) is None


def test_alloc_at_places_exactly_and_refuses_overlap(vcm: RangeAllocator) -> None:
    assert vcm.alloc_at(BASE + SZ_1M, SZ_64K) == BASE + SZ_1M
    assert vcm.lookup(BASE + SZ_1M + 5) == AddressRange(BASE + SZ_1M, SZ_64K)
    before = vcm.snapshot()
    with pytest.raises(StateError, match="overlaps"):
        vcm.alloc_at(BASE + SZ_1M - SZ_4K, 2 * SZ_4K)
    assert vcm.snapshot() == before
    # first fit skips over the fixed placement
    assert vcm.alloc(SZ_1M) == BASE
    assert vcm.alloc(SZ_4K) == BASE + SZ_1M + SZ_64K


def test_exhaustion_names_the_request_and_changes_nothing(vcm: RangeAllocator) -> None:
    vcm.alloc(SZ_16M - SZ_64K)
    before = vcm.snapshot()
    with pytest.raises(OutOfAddressSpaceError, match="128K") as info:
        vcm.alloc(2 * SZ_64K)
    assert isinstance(info.value, OutOfMemoryError)
    assert vcm.snapshot() == before
    # alignment can make an otherwise large enough hole unusable
    with pytest.raises(OutOfAddressSpaceError):
        vcm.alloc(SZ_4K, SZ_16M)
    assert vcm.snapshot() == before


def test_double_free_and_interior_free_raise_state_error(vcm: RangeAllocator) -> None:
    addr = vcm.alloc(SZ_64K)
    vcm.alloc(SZ_64K)
    with pytest.raises(StateError, match="inside the allocation"):
        vcm.free(addr + SZ_4K)
    vcm.free(addr)
    before = vcm.snapshot()
    with pytest.raises(StateError, match=hex(addr)):
        vcm.free(addr)
    assert vcm.snapshot() == before


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("alloc", (0,)),
        ("alloc", (-SZ_4K,)),
        ("alloc", (SZ_4K + 1,)),
        ("alloc", (True,)),
        ("alloc", ("4K",)),
        ("alloc", (SZ_4K, 3 * SZ_4K)),  # alignment not a power of two
        ("alloc", (SZ_4K, 1024)),  # alignment below the granule
        ("alloc_at", (BASE + 1, SZ_4K)),
        ("alloc_at", (BASE - SZ_4K, SZ_4K)),
        ("alloc_at", (BASE + SZ_16M - SZ_4K, 2 * SZ_4K)),
        ("alloc_at", (-SZ_4K, SZ_4K)),
        ("free", (1.5,)),
    ],
)
def test_misuse_raises_typed_errors_and_leaves_state(
    vcm: RangeAllocator, call: str, args: tuple[object, ...]
) -> None:
    vcm.alloc(SZ_64K)
    before = vcm.snapshot()
    with pytest.raises(InvalidArgumentError):
        getattr(vcm, call)(*args)
    assert vcm.snapshot() == before


@pytest.mark.parametrize(
    ("range_", "granule"),
    [
        (AddressRange(BASE, 0), SZ_4K),
        (AddressRange(BASE + 1, SZ_1M), SZ_4K),
        (AddressRange(BASE, SZ_1M + 1), SZ_4K),
        (AddressRange(BASE, SZ_1M), 3000),
    ],
)
def test_construction_is_validated(range_: AddressRange, granule: int) -> None:
    with pytest.raises(VcmmError):
        RangeAllocator(range_, granule=granule)


# -- reference model -------------------------------------------------------------------

GRANULES = 64
G = SZ_4K


def _reference_first_fit(used: np.ndarray, size: int, align: int) -> int | None:
    """Lowest aligned granule index with ``size`` free granules (a bitmap search)."""
    for start in range(0, GRANULES - size + 1, align):
        if not used[start : start + size].any():
            return start
    return None


ops = st.lists(
    st.one_of(
        st.tuples(st.just("alloc"), st.integers(1, 12), st.sampled_from([1, 2, 4, 8, 16])),
        st.tuples(st.just("free"), st.integers(0, 40), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(ops)
def test_matches_a_bitmap_first_fit_reference(sequence: list[tuple[str, int, int]]) -> None:
    alloc = RangeAllocator(AddressRange(0, GRANULES * G), granule=G)
    used = np.zeros(GRANULES, dtype=bool)
    live: dict[int, int] = {}
    for op, a, b in sequence:
        if op == "alloc":
            expected = _reference_first_fit(used, a, b)
            if expected is None:
                before = alloc.snapshot()
                with pytest.raises(OutOfAddressSpaceError):
                    alloc.alloc(a * G, b * G)
                assert alloc.snapshot() == before
                continue
            assert alloc.alloc(a * G, b * G) == expected * G
            used[expected : expected + a] = True
            live[expected] = a
        elif live:
            start = sorted(live)[a % len(live)]
            assert alloc.free(start * G) == AddressRange(start * G, live[start] * G)
            used[start : start + live.pop(start)] = False
        assert alloc.free_bytes == int((~used).sum()) * G
        assert alloc.allocated() == [AddressRange(s * G, n * G) for s, n in sorted(live.items())]


def test_split_and_join_cut_and_glue_live_ranges_in_place() -> None:
    a = RangeAllocator(AddressRange(0x1000_0000, 0x10_0000), granule=0x1000)
    addr = a.alloc(0x4000)
    free = a.free_ranges()
    a.split(addr, 0x1000)
    assert a.allocated() == [AddressRange(addr, 0x1000), AddressRange(addr + 0x1000, 0x3000)]
    assert a.free_ranges() == free and a.allocated_bytes == 0x4000
    a.free(addr + 0x1000)  # each part is an allocation of its own
    assert a.lookup(addr + 0x1000) is None and a.lookup(addr) == AddressRange(addr, 0x1000)
    a.alloc_at(addr + 0x1000, 0x3000)
    a.join(addr, addr + 0x1000)
    assert a.allocated() == [AddressRange(addr, 0x4000)]
    before = a.snapshot()
    for bad, error in (
        (lambda: a.split(addr, 0), InvalidArgumentError),
        (lambda: a.split(addr, 0x4000), InvalidArgumentError),  # not strictly inside
        (lambda: a.split(addr, 0x800), InvalidArgumentError),  # not a granule multiple
        (lambda: a.split(addr + 0x1000, 0x1000), StateError),  # no allocation starts there
        (lambda: a.join(addr, addr + 0x4000), StateError),  # nothing live there
    ):
        with pytest.raises(error):
            bad()
        assert a.snapshot() == before
    other = a.alloc(0x1000)
    assert other == addr + 0x4000
    a.free(other)
    b = a.alloc_at(addr + 0x8000, 0x1000)
    with pytest.raises(StateError, match="where the first ends"):
        a.join(addr, b)  # not neighbours
    assert a.allocated() == [AddressRange(addr, 0x4000), AddressRange(b, 0x1000)]
