"""Memory targets (seed 000 L247-292, L1413, L4040-4089) and the priority list."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vcmm.errors import (
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
    VcmmError,
)
from vcmm.mm.chunk import Chunk, coalesce, describe, find_overlap, total_size
from vcmm.mm.pools import (
    BlockPool,
    ContiguousPool,
    MemoryTarget,
    OnChipPool,
    SystemRamTarget,
    TargetSet,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_4M, SZ_16M, SZ_64K

POOL_BASE = 0x9000_0000


def make_blocks(n1m: int = 16, n64k: int = 16, n4k: int = 64) -> BlockPool:
    return BlockPool.carve("blocks", POOL_BASE, {SZ_1M: n1m, SZ_64K: n64k, SZ_4K: n4k})


def make_contig() -> ContiguousPool:
    return ContiguousPool("contig", AddressRange(0xA000_0000, SZ_16M))


def make_onchip() -> OnChipPool:
    return OnChipPool("onchip", AddressRange(0x0002_0000, 256 * 1024))


def make_system() -> SystemRamTarget:
    return SystemRamTarget.from_range(AddressRange(0x8000_0000, SZ_16M), max_order=10)


# -- chunks ---------------------------------------------------------------------------


def test_chunk_helpers() -> None:
    chunks = [Chunk(0x1000, SZ_4K), Chunk(0x2000, SZ_4K), Chunk(0x10000, SZ_64K)]
    assert total_size(chunks) == 2 * SZ_4K + SZ_64K
    assert coalesce(chunks) == [Chunk(0x1000, 2 * SZ_4K), Chunk(0x10000, SZ_64K)]
    assert describe(chunks) == "64K+2x4K"
    assert find_overlap(chunks) is None
    assert find_overlap([Chunk(0, SZ_64K), Chunk(0x8000, SZ_4K)]) == (
        Chunk(0, SZ_64K),
        Chunk(0x8000, SZ_4K),
    )
    assert Chunk(0x10000, SZ_64K).range == AddressRange(0x10000, SZ_64K)
    for bad in ((-1, SZ_4K), (0, 0), (0, True), (0.0, SZ_4K)):
        with pytest.raises(InvalidArgumentError):
            Chunk(*bad)  # type: ignore[arg-type]


# -- block pools ----------------------------------------------------------------------


def test_carve_lays_out_one_region_per_size_aligned_to_it() -> None:
    pool = BlockPool.carve("blocks", POOL_BASE + SZ_4K, {SZ_4K: 4, SZ_1M: 2, SZ_64K: 3})
    assert pool.regions == (
        AddressRange(POOL_BASE + SZ_1M, 2 * SZ_1M),  # aligned up from base + 4K
        AddressRange(POOL_BASE + 3 * SZ_1M, 3 * SZ_64K),
        AddressRange(POOL_BASE + 3 * SZ_1M + 3 * SZ_64K, 4 * SZ_4K),
    )
    assert pool.block_sizes == (SZ_1M, SZ_64K, SZ_4K)
    assert pool.total_bytes == pool.free_bytes == 2 * SZ_1M + 3 * SZ_64K + 4 * SZ_4K


def test_twelve_megabytes_is_twelve_one_megabyte_blocks() -> None:
    # "our 12 1 MB chunks that we'll need" (seed 000, L4040)
    pool = make_blocks()
    chunks = pool.allocate(12 * SZ_1M, block_sizes=(SZ_1M,))
    assert [c.size for c in chunks] == [SZ_1M] * 12
    assert all(c.pa % SZ_1M == 0 and c.range in pool.regions[0] for c in chunks)
    assert find_overlap(chunks) is None
    assert pool.free_blocks(SZ_1M) == 4


def test_largest_block_first_one_of_each() -> None:
    # "use 1 MB contiguous physical memory, then 64 KB, then 4 KB" (seed 000, L1413)
    pool = make_blocks()
    chunks = pool.allocate(SZ_1M + SZ_64K + SZ_4K)
    assert [c.size for c in chunks] == [SZ_1M, SZ_64K, SZ_4K]
    assert [c.pa for c in chunks] == [r.start for r in pool.regions]


def test_falls_back_to_smaller_blocks_when_a_pool_runs_dry() -> None:
    pool = make_blocks(n1m=2)
    chunks = pool.allocate(3 * SZ_1M)
    assert describe(chunks) == "2x1M+16x64K"
    assert pool.free_blocks(SZ_64K) == 0


def test_length_rounds_up_to_the_smallest_allowed_block() -> None:
    pool = make_blocks()
    assert [c.size for c in pool.allocate(5 * 1024)] == [SZ_4K, SZ_4K]
    assert [c.size for c in pool.allocate(5 * 1024, block_sizes=(SZ_64K,))] == [SZ_64K]


def test_contiguous_request_takes_one_block_big_enough() -> None:
    pool = make_blocks()
    (chunk,) = pool.allocate(100 * 1024, contiguous=True)
    assert chunk.size == SZ_1M  # the smallest block >= 100K; blocks are never split
    (small,) = pool.allocate(SZ_64K, contiguous=True)
    assert small.size == SZ_64K
    before = pool.snapshot()
    with pytest.raises(OutOfMemoryError, match="single block"):
        pool.allocate(SZ_2M, contiguous=True)
    assert pool.snapshot() == before


def test_alignment_above_the_block_size_picks_aligned_blocks() -> None:
    pool = make_blocks()
    chunks = pool.allocate(3 * SZ_64K, block_sizes=(SZ_64K,), alignment=4 * SZ_64K)
    assert [c.pa % (4 * SZ_64K) for c in chunks] == [0, 0, 0]
    assert len({c.pa for c in chunks}) == 3


def test_failure_leaves_the_pool_unchanged_and_says_what_is_missing() -> None:
    pool = make_blocks(n1m=2, n64k=1, n4k=2)
    pool.allocate(SZ_4K)
    before = pool.snapshot()
    with pytest.raises(OutOfMemoryError) as info:
        pool.allocate(3 * SZ_1M)
    message = str(info.value)
    assert "'blocks'" in message and "3M" in message
    assert "956K missing after 2x1M+64K+4K" in message
    assert pool.snapshot() == before
    assert pool.free_blocks(SZ_1M) == 2


# -- contiguous and on-chip pools -----------------------------------------------------


def test_contiguous_pool_serves_2m_plus_4k_as_one_chunk() -> None:
    # The seed's triple-mapping walk-through allocates SZ_2M + SZ_4K contiguous (L389).
    pool = make_contig()
    (chunk,) = pool.allocate(SZ_2M + SZ_4K, contiguous=True)
    assert chunk == Chunk(0xA000_0000, SZ_2M + SZ_4K)
    assert pool.free_bytes == SZ_16M - SZ_2M - SZ_4K


def test_contiguous_pool_is_first_fit_and_honours_alignment() -> None:
    pool = make_contig()
    first = pool.allocate(SZ_4K)[0]
    aligned = pool.allocate(SZ_4K, alignment=SZ_1M)[0]
    assert (first.pa, aligned.pa) == (0xA000_0000, 0xA010_0000)
    assert pool.allocate(SZ_64K)[0].pa == 0xA000_1000  # the hole left by the alignment


def test_contiguous_pool_prefers_the_largest_block_boundary_when_a_hole_allows() -> None:
    pool = make_contig()
    pool.allocate(SZ_4K)
    chunk = pool.allocate(SZ_2M + SZ_4K, block_sizes=(SZ_1M, SZ_64K, SZ_4K))[0]
    assert chunk.pa % SZ_1M == 0  # mappable with 1M sections
    tight = ContiguousPool("tight", AddressRange(0xB000_1000, SZ_1M + SZ_4K))
    (placed,) = tight.allocate(SZ_1M, block_sizes=(SZ_1M, SZ_4K))
    assert placed.pa == 0xB000_1000  # no 1M-aligned hole: falls back to the granule


def test_on_chip_pool_is_special_and_small() -> None:
    onchip = make_onchip()
    assert onchip.special and not onchip.linear_mapped
    assert onchip.allocate(SZ_64K) == [Chunk(0x0002_0000, SZ_64K)]
    before = onchip.snapshot()
    with pytest.raises(OutOfMemoryError, match="'onchip'"):
        onchip.allocate(SZ_1M)
    assert onchip.snapshot() == before


# -- system RAM -----------------------------------------------------------------------


def test_system_ram_is_in_the_linear_map_and_carve_outs_are_not() -> None:
    assert make_system().linear_mapped
    assert not make_blocks().linear_mapped
    assert not make_contig().linear_mapped
    for target in (make_blocks(), make_contig(), make_onchip(), make_system()):
        assert isinstance(target, MemoryTarget)


def test_system_ram_allocates_largest_order_first() -> None:
    system = make_system()
    chunks = system.allocate(SZ_1M + SZ_64K + SZ_4K)
    assert [c.size for c in chunks] == [SZ_1M, SZ_64K, SZ_4K]
    seed_sizes = system.allocate(SZ_2M + SZ_64K, block_sizes=(SZ_1M, SZ_64K, SZ_4K))
    assert [c.size for c in seed_sizes] == [SZ_1M, SZ_1M, SZ_64K]


def test_system_ram_contiguous_is_exact() -> None:
    system = make_system()
    (chunk,) = system.allocate(SZ_2M + SZ_4K, contiguous=True)
    assert chunk.size == SZ_2M + SZ_4K
    assert system.free_bytes == SZ_16M - SZ_2M - SZ_4K


def test_system_ram_alignment_raises_the_smallest_order() -> None:
    system = make_system()
    system.buddy.alloc_pages(0)  # make 4K-aligned blocks the cheapest
    chunks = system.allocate(SZ_64K + SZ_4K, alignment=SZ_64K)
    assert all(c.pa % SZ_64K == 0 for c in chunks)
    assert total_size(chunks) == 2 * SZ_64K  # rounded to the 64K unit


def test_system_ram_can_satisfy_changes_nothing() -> None:
    system = make_system()
    system.buddy.fragment("alternate")
    before = system.snapshot()
    assert system.can_satisfy(SZ_64K)
    assert not system.can_satisfy(SZ_64K, contiguous=True)
    assert not system.can_satisfy(SZ_16M)
    assert system.snapshot() == before


def test_can_satisfy_agrees_with_allocate_for_pools() -> None:
    pool = make_blocks(n1m=1, n64k=1, n4k=1)
    contig = make_contig()
    for target in (pool, contig):
        before = target.snapshot()
        for length, contiguous in ((SZ_4K, False), (SZ_1M + SZ_64K, False), (SZ_4M, True)):
            expected = target.can_satisfy(length, contiguous=contiguous)
            assert target.snapshot() == before
            try:
                target.free(target.allocate(length, contiguous=contiguous))
                worked = True
            except OutOfMemoryError:
                worked = False
            assert worked == expected
            assert target.snapshot() == before


# -- misuse, for every target ---------------------------------------------------------

TARGETS: list[Callable[[], MemoryTarget]] = [make_blocks, make_contig, make_onchip, make_system]


@pytest.mark.parametrize("factory", TARGETS)
@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"length": 0}, InvalidArgumentError),
        ({"length": -SZ_4K}, InvalidArgumentError),
        ({"length": 4096.0}, InvalidArgumentError),
        ({"length": SZ_4K, "alignment": 3 * SZ_4K}, InvalidArgumentError),
        ({"length": SZ_4K, "alignment": 0}, InvalidArgumentError),
        ({"length": SZ_4K, "block_sizes": (3000,)}, UnsupportedSizeError),
        ({"length": SZ_4K, "block_sizes": (1024,)}, UnsupportedSizeError),
        ({"length": SZ_4K, "block_sizes": ()}, InvalidArgumentError),
        ({"length": SZ_4K, "contiguous": "yes"}, InvalidArgumentError),
    ],
)
def test_allocate_misuse_raises_and_changes_nothing(
    factory: Callable[[], MemoryTarget], kwargs: dict, error: type[VcmmError]
) -> None:
    target = factory()
    target.allocate(SZ_4K)
    before = target.snapshot()
    options = dict(kwargs)
    length = options.pop("length")
    with pytest.raises(error):
        target.allocate(length, **options)
    assert target.snapshot() == before


def test_unknown_block_size_for_a_block_pool() -> None:
    pool = make_blocks()
    before = pool.snapshot()
    with pytest.raises(UnsupportedSizeError, match="16M"):
        pool.allocate(SZ_16M, block_sizes=(SZ_16M,))
    assert pool.snapshot() == before
    assert not pool.can_satisfy(SZ_16M, block_sizes=(SZ_16M,))


@pytest.mark.parametrize("factory", TARGETS)
def test_free_misuse_raises_and_changes_nothing(factory: Callable[[], MemoryTarget]) -> None:
    target = factory()
    chunks = target.allocate(SZ_64K + SZ_4K)
    other = target.allocate(SZ_4K)
    before = target.snapshot()
    foreign = Chunk(max(r.end for r in target.regions) + SZ_1M, SZ_4K)
    wrong_size = Chunk(chunks[0].pa, chunks[0].size + SZ_4K)
    for bad in ([foreign], [*other, foreign], [wrong_size], [other[0], other[0]], chunks[0]):
        with pytest.raises((StateError, InvalidArgumentError)):
            target.free(bad)  # type: ignore[arg-type]
        assert target.snapshot() == before
    target.free(other)
    after_free = target.snapshot()
    with pytest.raises(StateError):
        target.free(other)  # double free
    assert target.snapshot() == after_free
    target.free(chunks)
    assert target.free_bytes == target.total_bytes


# -- priority list --------------------------------------------------------------------


def make_set() -> TargetSet:
    return TargetSet([make_onchip(), make_blocks(n1m=2), make_contig(), make_system()])


def test_priority_order_uses_the_first_target_that_fits() -> None:
    targets = make_set()
    name, chunks = targets.allocate_from(["onchip", "blocks"], SZ_64K)
    assert name == "onchip" and chunks == [Chunk(0x0002_0000, SZ_64K)]
    name, chunks = targets.allocate_from(["onchip", "blocks"], SZ_1M)
    assert name == "blocks" and [c.size for c in chunks] == [SZ_1M]


def test_priority_falls_back_when_the_first_target_is_exhausted() -> None:
    targets = make_set()
    targets.allocate_from(["blocks"], 2 * SZ_1M, block_sizes=(SZ_1M,))
    name, chunks = targets.allocate_from(["blocks", "system"], SZ_1M, block_sizes=(SZ_1M,))
    assert name == "system" and [c.size for c in chunks] == [SZ_1M]


def test_priority_skips_targets_without_the_block_sizes() -> None:
    targets = make_set()
    name, _ = targets.allocate_from(["blocks", "system"], SZ_4M, block_sizes=(SZ_4M,))
    assert name == "system"


def test_priority_failure_lists_every_target_and_changes_nothing() -> None:
    targets = make_set()
    before = targets.snapshot()
    with pytest.raises(OutOfMemoryError) as info:
        targets.allocate_from(["onchip", "contig"], SZ_16M + SZ_4K)
    assert "onchip:" in str(info.value) and "contig:" in str(info.value)
    assert targets.snapshot() == before


def test_target_set_misuse() -> None:
    targets = make_set()
    before = targets.snapshot()
    with pytest.raises(NotFoundError, match="nowhere"):
        targets.allocate_from(["onchip", "nowhere"], SZ_4K)
    with pytest.raises(InvalidArgumentError):
        targets.allocate_from([], SZ_4K)
    with pytest.raises(InvalidArgumentError):
        targets.allocate_from("onchip", SZ_4K)
    with pytest.raises(InvalidArgumentError):
        targets.allocate_from(["onchip", "onchip"], SZ_4K)
    with pytest.raises(InvalidArgumentError):
        targets.allocate_from(["onchip"], 0)
    assert targets.snapshot() == before
    with pytest.raises(InvalidArgumentError, match="already exists"):
        targets.add(make_onchip())
    with pytest.raises(InvalidArgumentError, match="overlaps"):
        targets.add(ContiguousPool("clash", AddressRange(0xA000_0000 + SZ_1M, SZ_1M)))
    assert targets.names == ("onchip", "blocks", "contig", "system")
    assert targets.owner_of(0xA000_0000 + SZ_1M).name == "contig"  # type: ignore[union-attr]
    assert targets.owner_of(0x10) is None
