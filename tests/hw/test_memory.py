"""Physical memory: sparse banks of real bytes, holes that raise bus errors."""

from __future__ import annotations

import resource
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import BusError, InvalidArgumentError, NotFoundError
from vcmm.hw.memory import CHUNK_SIZE, MemoryRegion, PhysicalMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4G, SZ_4K

RAM = MemoryRegion("ram", AddressRange(0x8000_0000, SZ_4G))
SZ_1T = 1 << 40
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


def test_copy_crosses_chunks_and_copies_untouched_memory_as_zeros(
    memory: PhysicalMemory,
) -> None:
    src = 0x8000_0000 + CHUNK_SIZE - 5000  # straddles the first chunk boundary
    dst = 0x8000_0000 + 5 * CHUNK_SIZE - 3000  # and the destination another one
    memory.write(src, bytes(range(256)) * 40)
    memory.write(dst + 9000, b"stale")  # inside the copy, beyond the written source
    memory.copy(dst, src, 10240 + 100)
    assert memory.read(dst, 10240) == bytes(range(256)) * 40
    assert memory.read(dst + 10240, 100) == bytes(100)  # untouched source reads as zeros
    # Source pages 3 (two chunks), destination pages 4 (three pages either side of 5 * 2M).
    assert memory.resident_bytes() == (3 + 4) * SZ_4K
    before = memory.digest()
    with pytest.raises(BusError):
        memory.copy(0x2000_0000 + SZ_1M - 4, 0x8000_0000, 8)  # destination runs into a hole
    assert memory.digest() == before
    assert memory.resident_bytes() == 7 * SZ_4K


def test_reads_of_untouched_memory_create_nothing(memory: PhysicalMemory) -> None:
    assert memory.read(0x8000_0000 + SZ_4G - CHUNK_SIZE - 8, CHUNK_SIZE + 8) == bytes(
        CHUNK_SIZE + 8
    )
    assert memory.read_u64(0x8000_0000 + 123 * CHUNK_SIZE) == 0
    assert memory.store_bytes() == 0
    memory.fill(0x8000_0000, SZ_4K, 0)  # zeros where there were zeros: accounted, stored
    assert (memory.resident_bytes(), memory.store_bytes()) == (SZ_4K, CHUNK_SIZE)


def test_a_1tib_bank_costs_only_the_chunks_written() -> None:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    top = 0x80_0000_0000 + SZ_1T
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0x80_0000_0000, SZ_1T))])
    memory.write(top - 6, b"top!!!")
    memory.write_u32(0x80_0000_0000, 0xCAFE_F00D)
    assert memory.read(top - 6, 6) == b"top!!!"
    assert memory.read_u32(0x80_0000_0000) == 0xCAFE_F00D
    assert memory.read(top - SZ_1M, 16) == bytes(16)
    assert memory.resident_bytes() == 2 * SZ_4K
    assert memory.store_bytes() == 2 * CHUNK_SIZE
    with pytest.raises(BusError, match=hex(top)):
        memory.write(top - 2, b"abcd")
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 64 * 1024


_RANGE = 3 * CHUNK_SIZE  # a region over three chunks, starting mid-chunk
_BASE = 0x4000_0000 + CHUNK_SIZE // 2
_near_boundary = st.sampled_from([0, CHUNK_SIZE // 2, CHUNK_SIZE, 2 * CHUNK_SIZE]).flatmap(
    lambda b: st.integers(max(0, b - 3 * SZ_4K), min(_RANGE - 1, b + 3 * SZ_4K))
)
_ops = st.one_of(
    st.tuples(st.just("write"), _near_boundary, st.binary(min_size=1, max_size=9000)),
    st.tuples(st.just("fill"), _near_boundary, st.integers(1, 9000), st.integers(0, 255)),
    st.tuples(st.just("copy"), _near_boundary, _near_boundary, st.integers(1, 9000)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(_ops, min_size=1, max_size=8))
def test_chunked_store_matches_a_bytearray_reference(ops: list[tuple[Any, ...]]) -> None:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(_BASE, _RANGE))])
    reference = bytearray(_RANGE)
    touched: set[int] = set()

    def touch(off: int, n: int) -> None:
        touched.update(range((_BASE + off) // SZ_4K, (_BASE + off + n - 1) // SZ_4K + 1))

    for op in ops:
        if op[0] == "write":
            off, data = int(op[1]), bytes(op[2])
            data = data[: _RANGE - off]
            memory.write(_BASE + off, data)
            reference[off : off + len(data)] = data
            touch(off, len(data))
        elif op[0] == "fill":
            off, n, value = (int(v) for v in op[1:])
            n = min(n, _RANGE - off)
            memory.fill(_BASE + off, n, value)
            reference[off : off + n] = bytes([value]) * n
            touch(off, n)
        else:
            dst, src, n = (int(v) for v in op[1:])
            n = min(n, _RANGE - dst, _RANGE - src)
            memory.copy(_BASE + dst, _BASE + src, n)
            reference[dst : dst + n] = reference[src : src + n]  # memmove semantics
            touch(dst, n)
    assert memory.read(_BASE, _RANGE) == bytes(reference)
    assert memory.resident_bytes() == len(touched) * SZ_4K


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


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.sampled_from([4, 8]),
    st.lists(st.integers(-64, 3 * CHUNK_SIZE // 4), min_size=1, max_size=60),
    st.sampled_from([0x8000_0000, 0x8000_0000 + CHUNK_SIZE - 16, 0x2000_0000 + SZ_1M - 64]),
)
def test_peek_words_reads_what_word_reads_read(width: int, slots: list[int], base: int) -> None:
    """The gathered read of many words (one chunk, several chunks, untouched chunks, and
    holes: an address below or past a region) against one word read at a time."""
    memory = PhysicalMemory([RAM, SRAM])
    rng = np.random.default_rng(len(slots))
    memory.write(0x8000_0000, rng.integers(0, 256, CHUNK_SIZE + 4096, dtype=np.uint8))
    memory.write(0x2000_0000 + SZ_1M - 4096, rng.integers(0, 256, 4096, dtype=np.uint8))
    addrs = np.array([base + s * width for s in slots], dtype=np.uint64)
    before = memory.bytes_read
    words, backed = memory.peek_words(addrs, width)
    assert memory.bytes_read == before  # a gather ahead of time counts nothing
    read = memory.read_u32 if width == 4 else memory.read_u64
    for pa, word, ok in zip(addrs.tolist(), words.tolist(), backed.tolist(), strict=True):
        assert ok == memory.is_backed(pa, width)
        assert word == (read(pa) if ok else 0)
    with pytest.raises(InvalidArgumentError, match="aligned"):
        memory.peek_words(addrs + np.uint64(2), width)


# -- word stores (the table writer's fast path) against byte writes ---------------------------

_WORD_RAM = AddressRange(0x10_0000, 2 * CHUNK_SIZE)


def _word_memory() -> PhysicalMemory:
    return PhysicalMemory([MemoryRegion("ram", _WORD_RAM)])


@settings(max_examples=200, deadline=None)
@given(
    stores=st.lists(
        st.tuples(
            st.sampled_from([4, 8]),
            # near the chunk boundary, near a 4 KiB boundary, anywhere
            st.one_of(
                st.integers(_WORD_RAM.start + CHUNK_SIZE - 12, _WORD_RAM.start + CHUNK_SIZE + 4),
                st.integers(_WORD_RAM.start + SZ_4K - 8, _WORD_RAM.start + SZ_4K + 2),
                st.integers(_WORD_RAM.start, _WORD_RAM.end - 8),
            ),
            st.integers(0, 2**64 - 1),
        ),
        max_size=20,
    )
)
def test_word_stores_equal_byte_writes(stores: list[tuple[int, int, int]]) -> None:
    """write_u32/write_u64 leave the bytes, the touched pages and the byte counter a
    write() of the little-endian bytes leaves, straddling a page or a chunk or not."""
    words, plain = _word_memory(), _word_memory()
    for width, pa, value in stores:
        value &= (1 << 8 * width) - 1
        (words.write_u32 if width == 4 else words.write_u64)(pa, value)
        plain.write(pa, value.to_bytes(width, "little"))
        assert (words.read_u32 if width == 4 else words.read_u64)(pa) == value
    assert words.read(_WORD_RAM.start, _WORD_RAM.size) == plain.read(
        _WORD_RAM.start, _WORD_RAM.size
    )
    assert words.resident_bytes() == plain.resident_bytes()
    assert words.bytes_written == plain.bytes_written


@pytest.mark.parametrize(
    ("pa", "value", "error"),
    [
        (_WORD_RAM.start, -1, InvalidArgumentError),
        (_WORD_RAM.start, 1 << 32, InvalidArgumentError),
        (_WORD_RAM.start, 1.0, InvalidArgumentError),
        (_WORD_RAM.start - 4, 1, BusError),
        (_WORD_RAM.end - 2, 1, BusError),
        ("0x1000", 1, InvalidArgumentError),
    ],
)
def test_a_bad_word_store_is_refused_and_writes_nothing(pa: Any, value: Any, error: type) -> None:
    memory = _word_memory()
    with pytest.raises(error):
        memory.write_u32(pa, value)
    assert memory.resident_bytes() == 0 and memory.bytes_written == 0
