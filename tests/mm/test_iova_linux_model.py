"""The ``"linux"`` IOVA policy against a model of mainline's iova.c (tests/mm/conftest.py).

Random map/unmap/flush sequences run on both, and every returned address, every
failure and the whole allocator state (tree nodes, cached nodes, ``max32_alloc_size``,
every magazine and depot) must agree after each step, and so must the counters: the
test counts, on the model, the successful allocations, the frees, which successful
allocations of a cached size the model's ``iova_rcache_get`` served (hits) or not
(misses), and every flush that ran.  Small magazines (2-5 entries)
reach the previous-magazine swap and the depot within a short sequence; one long run
keeps the kernel's 127.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vcmm.errors import OutOfAddressSpaceError
from vcmm.mm.iova import IovaCounters
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_rcache import RCACHE_ORDERS
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4G, SZ_4K

G = SZ_4K

# Two shapes of domain.  "small": 64 frames, all below 4 GiB, so exhaustion, the
# flush and max32_alloc_size happen often.  "straddle": 64 free frames each side of
# 4 GiB (the space below is reserved at set-up, as dma-iommu reserves windows), so
# both cached nodes and both sides of the hint are exercised.
SMALL = {
    "aperture": AddressRange(0, 64 * G),
    "reserve": None,
    "limits": [64 * G - 1, 40 * G - 1, 40 * G + 0x800, 17 * G - 1, 0x1FFF, 6 * G + 0x123],
}
STRADDLE = {
    "aperture": AddressRange(0, SZ_4G + 64 * G),
    "reserve": AddressRange(G, SZ_4G - 65 * G),
    "limits": [
        SZ_4G - 1,
        SZ_4G + 64 * G - 1,
        SZ_4G - 1 - 0x800,
        SZ_4G + 20 * G - 1,
        SZ_4G - 20 * G + 0x123,
        (1 << 64) - 1,
    ],
}


class Pair:
    """The implementation and the model, driven together and compared."""

    def __init__(self, kernel_iova: Any, shape: dict[str, Any], mag: int, rcache: bool = True):
        aperture: AddressRange = shape["aperture"]
        self.impl = LinuxIovaDomain(G, aperture, rcache=rcache, magazine_size=mag)
        self.model = kernel_iova(G, aperture.start, aperture.last, mag, rcache)
        self.anchor = (aperture.end >> 12) - 1 + 1
        self.rcache = rcache
        if shape["reserve"] is not None:
            first, last = shape["reserve"].start >> 12, shape["reserve"].last >> 12
            self.impl.reserve(shape["reserve"])
            self.model.reserve_iova(first, last)
        self.live: list[tuple[int, int]] = []
        self.counts = {"allocs": 0, "frees": 0, "hits": 0, "misses": 0, "flushes": 0}
        self._count_model_calls()

    def _count_model_calls(self) -> None:
        """Wrap the model's cache look-up and CPU flush to count what vcmm counts."""
        model, get, flush = self.model, self.model.iova_rcache_get, self.model.free_cpu_cached_iovas
        self.got: int | None = None  # the last look-up's answer (None: not a cached size)

        def counted_get(size: int, limit_pfn: int) -> int:
            pfn: int = get(size, limit_pfn)
            cacheable = model.rcache and size <= 1 << (RCACHE_ORDERS - 1)
            self.got = pfn if cacheable else None
            return pfn

        def counted_flush() -> None:
            if model.rcache:  # vcmm without a cache has nothing to flush
                self.counts["flushes"] += 1
            flush()

        model.iova_rcache_get = counted_get
        model.free_cpu_cached_iovas = counted_flush

    def map(self, npages: int, limit: int) -> None:
        self.got = None
        want = self.model.iommu_dma_alloc_iova(npages * G, limit)
        if want:  # vcmm counts successful allocations only
            self.counts["allocs"] += 1
            if self.got is not None:
                self.counts["hits" if self.got else "misses"] += 1
        try:
            got = self.impl.alloc(npages * G, limit)
        except OutOfAddressSpaceError:
            assert want == 0, f"impl failed, kernel gave {want:#x}"
            return
        assert got == want, f"{npages} pages below {limit:#x}: impl {got:#x}, kernel {want:#x}"
        self.live.append((got, npages))

    def unmap(self, index: int) -> None:
        if not self.live:
            return
        addr, npages = self.live.pop(index % len(self.live))
        self.model.iommu_dma_free_iova(addr, npages * G)
        self.counts["frees"] += 1
        assert self.impl.free(addr) == AddressRange(addr, npages * G)

    def check(self) -> None:
        snap, m = self.impl.snapshot(), self.model
        reserved = {lo for lo, _ in snap.reserved}
        assert snap.nodes == m.nodes()
        assert snap.cached32_node == m.cached_pfn(m.cached32_node, self.anchor)
        assert snap.cached_node == m.cached_pfn(m.cached_node, self.anchor)
        assert snap.max32_alloc_size == m.max32_alloc_size
        if self.rcache:
            got = tuple((b.loaded, b.prev, b.depot) for b in snap.rcache)
            assert got == m.magazines()
        live_nodes = (
            {lo for lo, _ in snap.nodes}
            - reserved
            - set().union(
                *(
                    set(b.loaded) | set(b.prev) | {p for mag in b.depot for p in mag}
                    for b in snap.rcache
                )
            )
        )
        assert live_nodes == {addr >> 12 for addr, _ in self.live}
        c = self.counts
        assert self.impl.counters == IovaCounters(
            c["allocs"], c["frees"], c["hits"], c["misses"], 0, c["flushes"]
        )

    def run(self, kind: str, a: int, b: int, limits: list[int]) -> None:
        if kind == "map":
            self.map(a, limits[b % len(limits)])
        elif kind == "unmap":
            self.unmap(a)
        elif kind == "flush" and self.rcache:
            self.impl.flush_rcache()
            self.model.free_cpu_cached_iovas()
            self.model.free_global_cached_iovas()
        elif kind == "trim" and self.rcache:
            self.impl.trim_depots()
            self.model.depot_work_until_idle()
        elif kind == "burst":
            self.burst(a, limits[b % len(limits)])
        elif kind == "undo":
            self.map_and_undo(a, limits[b % len(limits)])
        self.check()

    def burst(self, count: int, limit: int) -> None:
        """A queue filling and draining: ``count`` maps of 1-2 granules, then their
        unmaps newest first, which fills magazines and the depot in a few steps."""
        before = len(self.live)
        for i in range(count):
            self.map(1 + i % 2, limit)
        while len(self.live) > before:
            self.unmap(len(self.live) - 1)

    def map_and_undo(self, npages: int, limit: int) -> None:
        """An allocation taken back at once leaves the domain exactly as it was."""
        before = self.impl.snapshot()
        try:
            addr = self.impl.alloc(npages * G, limit)
        except OutOfAddressSpaceError:
            # A failure changes what the kernel changes; replay it on the model.
            assert self.model.iommu_dma_alloc_iova(npages * G, limit) == 0
            return
        self.impl.undo_alloc(addr)
        assert self.impl.snapshot() == before


sizes = st.one_of(st.integers(1, 9), st.sampled_from([16, 17, 31, 32, 33, 40]))
ops = st.lists(
    st.one_of(
        st.tuples(st.just("map"), sizes, st.integers(0, 5)),
        st.tuples(st.just("map"), sizes, st.integers(0, 5)),
        st.tuples(st.just("unmap"), st.integers(0, 63), st.just(0)),
        st.tuples(st.just("unmap"), st.integers(0, 63), st.just(0)),
        st.tuples(st.sampled_from(["flush", "trim"]), st.just(0), st.just(0)),
        st.tuples(st.just("undo"), sizes, st.integers(0, 5)),
        st.tuples(st.just("burst"), st.integers(4, 40), st.integers(0, 5)),
    ),
    max_size=60,
)


@settings(max_examples=120, deadline=None)
@given(ops, st.sampled_from(["small", "straddle"]), st.integers(2, 5), st.booleans())
def test_random_sequences_match_the_kernel_model(
    kernel_iova: Any, sequence: list[tuple[str, int, int]], shape: str, mag: int, rcache: bool
) -> None:
    config = SMALL if shape == "small" else STRADDLE
    pair = Pair(kernel_iova, config, mag, rcache)
    for kind, a, b in sequence:
        pair.run(kind, a, b, config["limits"])


def test_a_long_run_with_the_kernels_127_entry_magazines(kernel_iova: Any) -> None:
    """Bursts of maps then unmaps (a queue filling and draining) push more than two
    magazines' worth of one order, so the depot fills and feeds allocations again."""
    limits = [2048 * G - 1, 1500 * G - 1, 900 * G + 0x800]
    pair = Pair(kernel_iova, {"aperture": AddressRange(0, 2048 * G), "reserve": None}, 127)
    rng = np.random.default_rng(2024)
    for burst in range(3):
        for _ in range(560):
            npages = int(rng.choice([1] * 10 + [2, 3, 17, 33]))
            pair.map(npages, limits[int(rng.integers(3))])
        if burst == 0:
            pair.check()
        while pair.live:
            pair.unmap(int(rng.integers(len(pair.live))))
        pair.check()
        assert len(pair.impl.rcache_state()[0].depot) >= 1, "order 0 never reached the depot"
    pair.impl.trim_depots()
    pair.model.depot_work_until_idle()
    pair.check()
