"""``MappingGraph.memtypes_over`` (all of a scatterlist's pieces at once) against the
union of ``memtypes`` piece by piece, over memory mapped with several memory types
(the linear map's write-back kernel RAM, non-cacheable coherent buffers, unmapped
carve-out pages)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_4K, AddressRange
from vcmm.attrs import MemType
from vcmm.dma import DmaApi

_SYSTEM: list[tuple[vcmm.System, list[int]]] = []


def _world() -> tuple[vcmm.System, list[int]]:
    """One system (built once: the queries change nothing) with bases of memory of
    each kind."""
    if not _SYSTEM:
        system = vcmm.System.default()
        dma = DmaApi(system)
        buf = dma.alloc_coherent("vcodec_a_mm1", 4 * SZ_4K)  # non-cacheable pool pages
        ram = system.vcm_phys_alloc("ebi", 4 * SZ_4K).chunk_ranges[0].start
        nobody = system.spec.page_tables.end  # no mapping at all
        _SYSTEM.append((system, [buf.chunks[0].start, ram, nobody]))
    return _SYSTEM[0]


RANGES = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 6 * SZ_4K), st.integers(0, 3 * SZ_4K)),
    min_size=0,
    max_size=10,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=RANGES)
def test_memtypes_over_is_the_union_of_memtypes(picks: list[tuple[int, int, int]]) -> None:
    system, bases = _world()
    ranges = [AddressRange(bases[k] - SZ_4K + off, size) for k, off, size in picks]
    want: set[MemType] = set()
    for r in ranges:
        want |= system.graph.memtypes(r)
    assert system.graph.memtypes_over(ranges) == want


def test_memtypes_over_sees_each_kind() -> None:
    system, (pool, ram, nobody) = _world()
    graph = system.graph
    assert graph.memtypes_over([AddressRange(pool, SZ_4K)]) == {MemType.NORMAL_NC}
    assert graph.memtypes_over([AddressRange(ram, SZ_4K)]) == {MemType.NORMAL_WB_WA}
    assert graph.memtypes_over([AddressRange(nobody, SZ_4K)]) == set()
    both = [AddressRange(pool, SZ_4K), AddressRange(nobody, SZ_4K), AddressRange(ram, 1)]
    assert graph.memtypes_over(both) == {MemType.NORMAL_NC, MemType.NORMAL_WB_WA}
