"""Physical memory: sparse banks of real bytes, holes that raise bus errors."""

from __future__ import annotations

import resource

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import BusError, InvalidArgumentError, NotFoundError
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4G, SZ_4K

RAM = MemoryRegion("ram", AddressRange(0x8000_0000, SZ_4G))
SRAM = MemoryRegion("sram", AddressRange(0x2000_0000, SZ_1M), "sram")


@pytest.fixture
def memory() -> PhysicalMemory:
    return PhysicalMemory([RAM, SRAM])


def test_untouched_memory_reads_as_zero(memory: PhysicalMemory) -> None:
    assert memory.read(0x8000_0000 + 12345, 64) == bytes(64)
    assert memory.read(0x2000_0000, 16) == bytes(16)


def test_a_4gib_bank_costs_only_the_pages_touched(memory: PhysicalMemory) -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    memory.write(0x8000_0000 + 3 * SZ_4K - 2, b"abcd")  # straddles two pages
    memory.write(0x8000_0000 + SZ_4G - 8, b"end")
    assert memory.resident_bytes() == 3 * SZ_4K
    # The OS backs only touched pages too: far less than the bank's 4 GiB.
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 64 * 1024


def test_round_trip_across_regions_and_words(memory: PhysicalMemory) -> None:
    memory.write(0x8000_0FFE, b"\x01\x02\x03\x04")
    assert memory.read_u32(0x8000_0FFE) == 0x04030201
    memory.write_u64(0x2000_0008, 0x1122_3344_5566_7788)
    assert memory.read(0x2000_0008, 8) == bytes.fromhex("8877665544332211")
    assert memory.read_u64(0x2000_0008) == 0x1122_3344_5566_7788
    words = memory.read_words(0x2000_0008, 2, 4)
    assert list(words) == [0x5566_7788, 0x1122_3344]


def test_hole_raises_bus_error_naming_the_address_and_writes_nothing(
    memory: PhysicalMemory,
) -> None:
    before = memory.digest()
    end_of_sram = 0x2000_0000 + SZ_1M
    with pytest.raises(BusError, match=hex(end_of_sram)) as info:
        memory.write(end_of_sram - 2, b"xxxx")  # two bytes in SRAM, two in the hole
    assert info.value.address == end_of_sram
    assert memory.digest() == before
    with pytest.raises(BusError, match="0x10000000"):
        memory.read(0x1000_0000, 4)
    with pytest.raises(BusError):
        memory.read_u32(0x7FFF_FFFE)  # straddles the start of RAM from a hole


def test_bad_arguments(memory: PhysicalMemory) -> None:
    with pytest.raises(InvalidArgumentError):
        memory.read(-1, 4)
    with pytest.raises(InvalidArgumentError):
        memory.fill(0x8000_0000, 4, 256)
    with pytest.raises(NotFoundError, match="nosuch"):
        memory.region("nosuch")
    with pytest.raises(InvalidArgumentError, match="overlaps"):
        PhysicalMemory([RAM, MemoryRegion("dup", AddressRange(0x8000_1000, SZ_4K))])
    with pytest.raises(InvalidArgumentError, match="aligned"):
        PhysicalMemory([MemoryRegion("odd", AddressRange(0x1000_0100, SZ_4K))])


def test_view_is_zero_copy_and_accounted(memory: PhysicalMemory) -> None:
    view = memory.view(0x8000_0000, 16)
    view[:] = 7
    memory.mark_written(0x8000_0000, 16)
    assert memory.read(0x8000_0000, 16) == b"\x07" * 16
    assert memory.resident_bytes() == SZ_4K
    with pytest.raises(BusError):
        memory.view(0x2000_0000 + SZ_1M - 4, 8)  # runs off the end of SRAM into a hole


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3 * SZ_4K), st.binary(min_size=1, max_size=300)),
        min_size=1,
        max_size=12,
    )
)
def test_matches_a_bytearray_reference(writes: list[tuple[int, bytes]]) -> None:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0x4000_0000, 4 * SZ_4K))])
    reference = bytearray(4 * SZ_4K)
    for offset, data in writes:
        memory.write(0x4000_0000 + offset, data)
        reference[offset : offset + len(data)] = data
    assert memory.read(0x4000_0000, 4 * SZ_4K) == bytes(reference)
    touched = {(o + i) // SZ_4K for o, d in writes for i in range(len(d))}
    assert memory.resident_bytes() == len(touched) * SZ_4K
    assert np.array_equal(
        memory.read_array(0x4000_0000, 16), np.frombuffer(reference[:16], np.uint8)
    )
