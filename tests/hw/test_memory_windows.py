"""The table writer's word windows of ``PhysicalMemory`` against word reads and writes.

``peek_window`` (a read-only view of a table page's words, counted by the caller) and
``exchange_words`` (a table's stores in one call, returning the words overwritten)
must read, write and count exactly what one ``read_u32``/``read_u64`` (and
``write_u32``/``write_u64``) per word does, in one chunk, across chunks and regions,
on untouched memory, with a word stored twice; and refuse what those refuse without
changing anything.  ``is_backed``'s fast path must answer as the checked path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import BusError, InvalidArgumentError
from vcmm.hw.memory import CHUNK_SIZE, MemoryRegion, PhysicalMemory
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K

LOW = AddressRange(0x40_0000, 2 * CHUNK_SIZE)  # two chunks
HIGH = AddressRange(LOW.end + SZ_4K, CHUNK_SIZE - SZ_4K)  # after a one-page hole
#: The chunk nobody writes (its window is a snapshot of zeros).
UNTOUCHED = (LOW.start + CHUNK_SIZE) // CHUNK_SIZE
#: Window bases: a chunk's start, just below a chunk boundary, just below the hole,
#: in the untouched chunk, unaligned.
BASES = [
    LOW.start,
    LOW.start + CHUNK_SIZE - 64,
    LOW.end - 64,
    LOW.start + CHUNK_SIZE + SZ_4K,
    HIGH.start,
    LOW.start + 2,
]


def _memory() -> PhysicalMemory:
    memory = PhysicalMemory([MemoryRegion("low", LOW), MemoryRegion("high", HIGH)])
    rng = np.random.default_rng(7)
    memory.write(LOW.start, rng.integers(0, 256, SZ_4K, dtype=np.uint8))
    memory.write(LOW.start + CHUNK_SIZE - SZ_4K, rng.integers(0, 256, SZ_4K, dtype=np.uint8))
    memory.write(HIGH.start, rng.integers(0, 256, 64, dtype=np.uint8))
    return memory  # the first 4 KiB of the second chunk stay untouched


def _everything(memory: PhysicalMemory) -> tuple[object, ...]:
    """Counters, touched pages and the bytes (their digest: a read would count)."""
    return (memory.bytes_read, memory.bytes_written, memory.resident_bytes(), memory.digest())


def _word_calls(memory: PhysicalMemory, width: int) -> tuple[Any, Any]:
    if width == 4:
        return memory.read_u32, memory.write_u32
    return memory.read_u64, memory.write_u64


@settings(max_examples=150, deadline=None)
@given(
    width=st.sampled_from([4, 8]),
    base=st.sampled_from(BASES),
    stores=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 2**64 - 1)), max_size=30),
)
def test_exchange_words_does_what_a_read_and_a_write_per_word_do(
    width: int, base: int, stores: list[tuple[int, int]]
) -> None:
    """Same words returned, same bytes, touched pages and counters as a read then a
    write per word, one after the other (a word stored twice returns the first
    store's value the second time); a word in a hole refuses the whole call with
    BusError and changes nothing."""
    indexes = [i for i, _ in stores]
    values = [v & ((1 << 8 * width) - 1) for _, v in stores]
    fast, plain = _memory(), _memory()
    read, write = _word_calls(plain, width)
    if all(plain.is_backed(base + i * width, width) for i in indexes):
        old = []
        for i, value in zip(indexes, values, strict=True):
            old.append(read(base + i * width))
            write(base + i * width, value)
        assert fast.exchange_words(base, width, indexes, values) == old
    else:
        with pytest.raises(BusError):
            fast.exchange_words(base, width, indexes, values)
    assert _everything(fast) == _everything(plain)


@pytest.mark.parametrize(
    ("pa", "width", "indexes", "values"),
    [
        (LOW.start, 4, [0], [1 << 32]),
        (LOW.start, 8, [0], [-1]),
        (LOW.start, 4, [0, 1], [1, 2.0]),
        (LOW.start, 4, [-1], [1]),
        (LOW.start, 4, [0, 1], [1]),
        (LOW.start, 2, [0], [1]),
        ("0x400000", 4, [0], [1]),
        (-4, 4, [1], [1]),
        (LOW.start, 4.0, [0], [1]),
        (LOW.start, 4, None, [1]),
        (LOW.start, 4, [0], "1"),
    ],
)
def test_exchange_words_refuses_bad_arguments_and_changes_nothing(
    pa: Any, width: Any, indexes: Any, values: Any
) -> None:
    memory = _memory()
    before = _everything(memory)
    with pytest.raises(InvalidArgumentError, match="exchange_words"):
        memory.exchange_words(pa, width, indexes, values)
    assert _everything(memory) == before


@settings(max_examples=100, deadline=None)
@given(
    width=st.sampled_from([4, 8]),
    base=st.sampled_from(BASES),
    count=st.integers(0, 24),
)
def test_peek_window_reads_what_word_reads_read(width: int, base: int, count: int) -> None:
    """A window is offered exactly for aligned words in one region and one chunk; it
    reads what word reads read, counts nothing and creates no chunk; it is live."""
    memory = _memory()
    read, write = _word_calls(memory, width)
    end = base + count * width
    chunks = memory.store_bytes()
    window = memory.peek_window(base, count, width)
    simple = (
        base % width == 0
        and memory.is_backed(base, max(count * width, 1))
        and (count == 0 or base // CHUNK_SIZE == (end - 1) // CHUNK_SIZE)
    )
    assert (window is not None) == simple
    assert memory.store_bytes() == chunks and memory.bytes_read == 0
    if window is None:
        return
    assert len(window) == count
    assert list(window) == [read(base + k * width) for k in range(count)]
    if count and base // CHUNK_SIZE != UNTOUCHED:  # a chunk written: the view is live
        write(base, window[0] ^ 0x5A)
        assert window[0] == read(base)


def test_peek_window_is_read_only_and_refuses_bad_arguments() -> None:
    memory = _memory()
    window = memory.peek_window(LOW.start, 4, 4)
    assert window is not None
    with pytest.raises(TypeError):
        window[0] = 1  # type: ignore[index]
    for pa, count, width in [(LOW.start, 4, 2), ("1", 4, 4), (LOW.start, -1, 4), (0, 1, 4.0)]:
        with pytest.raises(InvalidArgumentError, match="peek_window"):
            memory.peek_window(pa, count, width)  # type: ignore[arg-type]


def _checked_is_backed(memory: PhysicalMemory, pa: Any, length: Any) -> bool:
    """The previous ``is_backed``: the full check, a hole caught."""
    try:
        memory._check(pa, length)
    except BusError:
        return False
    return True


@settings(max_examples=200, deadline=None)
@given(
    pa=st.one_of(
        st.integers(-8, 8),
        st.integers(LOW.start - 8, LOW.start + 8),
        st.integers(LOW.end - 8, HIGH.start + 8),
        st.integers(HIGH.end - 8, HIGH.end + 8),
        st.integers(0, 2**70),
    ),
    length=st.integers(-1, 3 * SZ_4K),
)
def test_is_backed_answers_as_the_full_check(pa: int, length: int) -> None:
    memory = _memory()
    try:
        expected: object = _checked_is_backed(memory, pa, length)
    except InvalidArgumentError:
        expected = InvalidArgumentError
    if expected is InvalidArgumentError:
        with pytest.raises(InvalidArgumentError):
            memory.is_backed(pa, length)
    else:
        assert memory.is_backed(pa, length) is expected
