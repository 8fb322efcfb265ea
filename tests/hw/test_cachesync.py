"""Cache maintenance by DMA direction (vcmm.hw.cachesync.dma_sync).

The expected maintenance is the table of Linux's arch_sync_dma_for_device/for_cpu
(Russell King's, which ARMv7's __dma_page_cpu_to_dev/dev_to_cpu follow):
for the device, TO_DEVICE and BIDIRECTIONAL clean, FROM_DEVICE invalidates; for the
CPU, TO_DEVICE needs nothing, the others invalidate.  A partly covered edge line is
cleaned and invalidated (arm64 dcache_inval_poc), never invalidated alone.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.attrs import DmaDirection, MemType
from vcmm.errors import BusError, InvalidArgumentError
from vcmm.hw.cache import CacheConfig, DataCache
from vcmm.hw.cachesync import dma_sync, invalidate_exact, invalidates
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.ranges import AddressRange

WB = MemType.NORMAL_WB_WA
LINE = 64
BASE = 0x1000
TO, FROM, BIDI = DmaDirection.TO_DEVICE, DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL


def make() -> tuple[PhysicalMemory, DataCache]:
    memory = PhysicalMemory([MemoryRegion("ram", AddressRange(0, 0x4000))])
    memory.write(0, bytes(0x4000))
    return memory, DataCache(memory, CacheConfig(size=4096, ways=4, line=LINE))


#: (for_cpu, direction) -> "clean", "invalidate" or None: what happens to a dirty line
#: wholly inside the buffer.
TABLE = {
    (False, TO): "clean",
    (False, FROM): "invalidate",
    (False, BIDI): "clean",
    (True, TO): None,
    (True, FROM): "invalidate",
    (True, BIDI): "invalidate",
}


@pytest.mark.parametrize(("for_cpu", "direction"), list(TABLE))
def test_each_direction_does_what_the_table_says(for_cpu: bool, direction: DmaDirection) -> None:
    memory, cache = make()
    cache.write(BASE, b"\xaa" * LINE, WB)  # a dirty line inside the buffer
    ran = dma_sync(cache, [AddressRange(BASE, LINE)], direction, for_cpu=for_cpu)
    want = TABLE[(for_cpu, direction)]
    assert ran == (want is not None)
    in_memory = memory.read(BASE, LINE) == b"\xaa" * LINE
    assert in_memory == (want == "clean")  # only a clean writes the CPU's bytes back
    assert cache.contains(BASE) == (want != "invalidate")
    assert not cache.is_dirty(BASE) or want is None


@pytest.mark.parametrize("for_cpu", [False, True])
def test_partly_covered_lines_keep_the_neighbours_dirty_bytes(for_cpu: bool) -> None:
    """A FROM_DEVICE buffer [BASE+16, BASE+3*LINE-16) shares its first and last lines
    with data the CPU just wrote.  Those bytes must reach memory; the whole line in
    the middle is the device's and is dropped unwritten."""
    memory, cache = make()
    cache.write(BASE, b"\x11" * 16, WB)  # the neighbour before the buffer
    cache.write(BASE + 16, b"\x22" * (3 * LINE - 32), WB)  # stale CPU data in the buffer
    cache.write(BASE + 3 * LINE - 16, b"\x33" * 16, WB)  # the neighbour after it
    buffer = AddressRange(BASE + 16, 3 * LINE - 32)
    assert dma_sync(cache, [buffer], FROM, for_cpu=for_cpu)
    assert memory.read(BASE, 16) == b"\x11" * 16
    assert memory.read(BASE + 3 * LINE - 16, 16) == b"\x33" * 16
    assert memory.read(BASE + LINE, LINE) == bytes(LINE)  # the middle line: not written back
    assert not any(cache.contains(BASE + k * LINE) for k in range(3))


def test_plain_invalidation_of_a_partly_covered_line_loses_the_neighbour() -> None:
    """The rule the VCMM core used before (``cache.invalidate`` over the buffer) on the
    same buffer: the neighbour's newer bytes are gone, which is why it now calls
    dma_sync.  (Through the VCMM the bug could not show, as reservations cover whole
    pages; a cache line never exceeds a page.)"""
    memory, cache = make()
    cache.write(BASE, b"\x11" * 16, WB)
    cache.invalidate(BASE + 16, 3 * LINE - 32)
    assert memory.read(BASE, 16) == bytes(16)  # lost
    _, good = make()
    good.write(BASE, b"\x11" * 16, WB)
    dma_sync(good, [AddressRange(BASE + 16, 3 * LINE - 32)], FROM, for_cpu=True)
    assert good.memory.read(BASE, 16) == b"\x11" * 16  # kept


def test_a_buffer_inside_one_line_cleans_and_invalidates_it() -> None:
    memory, cache = make()
    cache.write(BASE, b"\x44" * LINE, WB)
    dma_sync(cache, [AddressRange(BASE + 8, 8)], BIDI, for_cpu=True)
    assert memory.read(BASE, LINE) == b"\x44" * LINE and not cache.contains(BASE)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: dma_sync(c, [AddressRange(BASE, LINE)], DmaDirection.NONE, for_cpu=False),
        lambda c: dma_sync(c, [AddressRange(BASE, LINE)], "to_device", for_cpu=False),
        lambda c: dma_sync(c, [AddressRange(BASE, LINE)], TO, for_cpu=1),
        lambda c: dma_sync(c, [(BASE, LINE)], TO, for_cpu=False),
        lambda c: dma_sync(object(), [AddressRange(BASE, LINE)], TO, for_cpu=False),
        # the first range is fine, the second is not memory: nothing may change
        lambda c: dma_sync(
            c, [AddressRange(BASE, LINE), AddressRange(0x8000, LINE)], TO, for_cpu=False
        ),
    ],
)
def test_misuse_is_refused_before_any_line_changes(call: object) -> None:
    memory, cache = make()
    cache.write(BASE, b"\x55" * LINE, WB)
    before = (cache.snapshot(), memory.digest())
    with pytest.raises((InvalidArgumentError, BusError)):
        call(cache)  # type: ignore[operator]
    assert (cache.snapshot(), memory.digest()) == before


# -- skipping ranges the cache holds nothing of ------------------------------------------------


def _reference_sync(
    cache: DataCache, spans: list[AddressRange], direction: DmaDirection, for_cpu: bool
) -> None:
    """The rule applied range by range with no skipping: what dma_sync must equal."""
    if for_cpu and direction is TO:
        return
    for r in spans:
        if invalidates(direction, for_cpu):
            invalidate_exact(cache, r.start, r.size)
        else:
            cache.clean(r.start, r.size)


def _held_reference(cache: DataCache, pa: int, length: int) -> int:
    lines = {line for line, _ in cache.lines()}
    return sum(1 for n in range(pa // LINE, (pa + length - 1) // LINE + 1) if n * LINE in lines)


_span = st.tuples(st.integers(0, 0x3FFF), st.integers(1, 0x600)).filter(
    lambda s: s[0] + s[1] <= 0x4000
)


@settings(max_examples=150, deadline=None)
@given(
    writes=st.lists(_span, max_size=12),
    spans=st.lists(_span, min_size=1, max_size=8),
    direction=st.sampled_from([TO, FROM, BIDI]),
    for_cpu=st.booleans(),
)
def test_skipping_empty_ranges_changes_nothing(
    writes: list[tuple[int, int]],
    spans: list[tuple[int, int]],
    direction: DmaDirection,
    for_cpu: bool,
) -> None:
    """dma_sync skips the ranges the cache holds no line of (held_lines); with dirty
    lines anywhere, ranges overlapping each other and sharing edge lines, the cache
    and memory end exactly as with the rule applied to every range in order."""
    pair = [make(), make()]
    for _memory, cache in pair:
        for k, (pa, length) in enumerate(writes):
            cache.write(pa, bytes([k + 1]) * length, WB)
    ranges = [AddressRange(pa, length) for pa, length in spans]
    (mem_a, cache_a), (mem_b, cache_b) = pair
    held = cache_a.held_lines(ranges).tolist()
    assert held == [_held_reference(cache_a, pa, length) for pa, length in spans]
    dma_sync(cache_a, ranges, direction, for_cpu=for_cpu)
    _reference_sync(cache_b, ranges, direction, for_cpu)
    assert cache_a.snapshot() == cache_b.snapshot()
    assert mem_a.read(0, 0x4000) == mem_b.read(0, 0x4000)


def _ranges(*spans: tuple[int, int]) -> list[AddressRange]:
    return [AddressRange(pa, length) for pa, length in spans]


def test_held_lines_of_an_empty_cache_and_of_empty_ranges() -> None:
    _, cache = make()
    assert cache.held_lines(_ranges((BASE, LINE), (0, 0x4000))).tolist() == [0, 0]
    cache.write(BASE, b"\x01", WB)
    spans = ((BASE, 0), (BASE, 1), (BASE - 1, 2), (BASE + LINE, 1), (1 << 64, 1 << 64))
    assert cache.held_lines(_ranges(*spans)).tolist() == [0, 1, 1, 0, 0]
    assert cache.held_lines([]).tolist() == []


#: Each query with arguments that are not ranges: held_lines takes a list of them,
#: holds_any one.
_NOT_RANGES = [
    ("held_lines", [(BASE, LINE)]),
    ("held_lines", [AddressRange(BASE, LINE), None]),
    ("holds_any", (BASE, LINE)),
    ("holds_any", None),
    ("holds_any", BASE),
]


@pytest.mark.parametrize(("query", "bad"), _NOT_RANGES)
def test_the_held_queries_refuse_what_is_not_an_address_range(query: str, bad: object) -> None:
    _, cache = make()
    cache.write(BASE, b"\x01", WB)
    before = cache.snapshot()
    with pytest.raises(InvalidArgumentError, match="is not an AddressRange"):
        getattr(cache, query)(bad)
    assert cache.snapshot() == before


@settings(max_examples=150, deadline=None)
@given(
    writes=st.lists(_span, max_size=12),
    dropped=st.lists(_span, max_size=3),
    span=st.one_of(_span, st.tuples(st.integers(0, 1 << 64), st.integers(0, 1 << 64))),
)
def test_holds_any_is_held_lines_of_one_range(
    writes: list[tuple[int, int]], dropped: list[tuple[int, int]], span: tuple[int, int]
) -> None:
    """The one-range question looks only at the sets the range maps to (wrapping past
    the last set, the tag one higher there): it must answer what the whole-cache
    search answers, with lines written, invalidated, and ranges longer than the
    cache's sets or beyond 63 bits."""
    _, cache = make()
    for k, (pa, length) in enumerate(writes):
        cache.write(pa, bytes([k + 1]) * length, WB)
    for pa, length in dropped:
        cache.invalidate(pa, length)
    r = AddressRange(*span)
    assert cache.holds_any(r) == (cache.held_lines([r]).tolist()[0] > 0)


def test_holds_any_sees_a_line_past_the_wrap_of_the_sets() -> None:
    _, cache = make()  # 16 sets of 64-byte lines; BASE is in set 0
    top = BASE + 15 * LINE  # the last set; the line after it is set 0 with the next tag
    cache.write(BASE, b"\x01", WB)  # set 0 with top's own tag: not in the range
    assert not cache.holds_any(AddressRange(top, 2 * LINE))
    cache.write(top + LINE, b"\x01", WB)  # set 0, the next tag: the range's second line
    assert cache.holds_any(AddressRange(top, 2 * LINE))
    assert not cache.holds_any(AddressRange(top, LINE))
    assert not cache.holds_any(AddressRange(top + LINE, 0))
