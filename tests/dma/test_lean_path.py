"""The lean streaming path (vcmm.dma.lean) against the reference (DmaApi(lean=False)).

Two identical systems get the same random operations, one through each path: maps
and unmaps of pages and scatterlists (right and wrong: wrong sizes, directions,
entry counts, double unmaps, another device's handle, direct devices, lists that
need padding, lists of scattered pieces with mixed offsets and lengths, some of them
memory the caller does not own, lists changed while mapped), CPU writes, device
reads and writes through the IOMMU, syncs.  After every operation the results, the
errors (type and message), the DMA-debug reports and the whole state must be equal:
``System.snapshot()`` holds every byte of memory (so every table byte and every byte
a device moved), the TLBs and their counters, the caches, the mapping graph and
every allocator; ``DmaApi.snapshot()`` the records.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi, ScatterList
from vcmm.errors import DmaApiError, InvalidArgumentError, OutOfAddressSpaceError

IOMMU = ("vcodec_a_mm1", "vcodec_b_mm2")
DIRECT = "dsp"
DIRECTIONS = (D.TO_DEVICE, D.FROM_DEVICE, D.BIDIRECTIONAL)
PAGES = 16


@dataclass
class Side:
    """One system, its DMA API and what the operations made on it."""

    system: vcmm.System
    dma: DmaApi
    base: int
    va: int
    pages: list[tuple[str, int, int, D]] = field(default_factory=list)
    lists: list[tuple[str, ScatterList, int, D]] = field(default_factory=list)

    @classmethod
    def boot(cls, lean: bool, lazy: bool) -> Side:
        system = vcmm.System.default()
        dma = DmaApi(system, lean=lean, debug="warn", invalidation="lazy" if lazy else None)
        physmem = system.vcm_phys_alloc("ebi", SZ_1M, vcmm.PhysAttr.CONTIGUOUS)
        base = physmem.chunk_ranges[0].start
        return cls(system, dma, base, system.cpu.phys_to_virt(base))

    def state(self) -> tuple[object, ...]:
        """Every byte, table, TLB entry and counter, the graph and its export (what
        ``vcmm graph`` draws), the DMA API's records and their invalidation counters."""
        return (self.system.snapshot(), self.system.graph_data(), self.dma.snapshot())


def _run(side: Side, op: tuple) -> object:
    """Apply ``op``; what it returned (handles, segments, bytes) or the error raised."""
    kind, a, b, c, d, e = op
    dma = side.dma
    try:
        if kind == "map_page":
            dev = (*IOMMU, DIRECT)[a % 3]
            page = side.base + (b % PAGES) * SZ_4K
            size = 1 + c % (3 * SZ_4K)
            handle = dma.map_page(dev, page, d % SZ_4K, size, DIRECTIONS[e % 3])
            if handle != DMA_MAPPING_ERROR:
                side.pages.append((dev, handle, size, DIRECTIONS[e % 3]))
            return handle
        if kind == "unmap_page" and side.pages:
            dev, handle, size, direction = side.pages[a % len(side.pages)]
            if b % 7 == 0:
                size += SZ_4K  # a wrong size (reported, still unmapped)
            if c % 7 == 0:
                direction = DIRECTIONS[(DIRECTIONS.index(direction) + 1) % 3]
            if d % 9 == 0:
                dev = IOMMU[(IOMMU.index(dev) + 1) % 2] if dev in IOMMU else dev
            dma.unmap_page(dev, handle, size, direction)
            if d % 4:  # otherwise keep it: a later unmap of it is a double unmap
                side.pages.remove(side.pages[a % len(side.pages)])
            return None
        if kind == "map_sg":
            dev = (*IOMMU, DIRECT)[a % 3]
            n = 1 + b % 6
            first = c % (PAGES - 6)
            offset = d % 3 * 512 if e % 2 else 0
            length = SZ_4K - offset if e % 3 else 2 * SZ_4K
            entries = [(side.base + (first + i) * SZ_4K + offset, length) for i in range(n)]
            sgl = ScatterList(entries)
            direction = DIRECTIONS[e % 3]
            if a // 3 % 4 == 1:  # a boundary every two pages: padded layouts
                dma.set_seg_boundary(dev, 2 * SZ_4K - 1) if dev in IOMMU else None
            count = dma.map_sg(dev, sgl, n, direction)
            if count:
                side.lists.append((dev, sgl, n, direction))
            return count, sgl.dma_segments()
        if kind == "map_sg_mixed":
            return _map_sg_mixed(side, a, b, c, d, e)
        if kind == "unmap_sg" and side.lists:
            dev, sgl, n, direction = side.lists[a % len(side.lists)]
            if b % 7 == 0:
                n = max(1, n - 1)
            if c % 7 == 0:
                direction = DIRECTIONS[(DIRECTIONS.index(direction) + 2) % 3]
            dma.unmap_sg(dev, sgl, n, direction)
            if d % 4:
                side.lists.remove(side.lists[a % len(side.lists)])
            return None
        if kind == "sg_mutate" and side.lists:
            # a driver changing a mapped list's CPU side (misuse the unmap then follows)
            _, sgl, _, _ = side.lists[a % len(side.lists)]
            entry = sgl[b % len(sgl)]
            entry.length = max(1, entry.length + c % 3 * 0x200 - 0x200)
            return None
        if kind == "cpu_write":
            page = a % PAGES  # often one a live mapping holds (PAGES is small)
            side.system.cpu.write(side.va + page * SZ_4K, bytes([1 + c % 255]) * SZ_4K)
            return None
        if kind == "device" and side.pages:
            dev, handle, size, _ = side.pages[a % len(side.pages)]
            device = side.system.device(dev)
            if b % 2:
                device.write(handle, bytes([c % 256]) * min(size, 32))
                return None
            return device.read(handle, min(size, 32))
        if kind == "sync" and side.pages:
            dev, handle, size, direction = side.pages[a % len(side.pages)]
            if b % 2:
                dma.sync_single_for_cpu(dev, handle, size, direction)
            else:
                dma.sync_single_for_device(dev, handle, size, direction)
            return None
        if kind == "advance":
            return dma.advance(1 + a % 20_000_000)
    except vcmm.VcmmError as exc:
        return (type(exc).__name__, str(exc))
    return None


def _map_sg_mixed(side: Side, a: int, b: int, c: int, d: int, e: int) -> object:
    """A list of scattered pieces: pages in any order (repeats allowed), each with its
    own offset and length (up to three pages), sometimes a piece of memory free in
    the target (refused as not the caller's) or past the end of RAM, sometimes mapped
    with fewer entries than the list holds."""
    dev = (*IOMMU, DIRECT)[a % 3]
    n = 1 + b % 9
    entries = []
    for i in range(n):
        salt = (c >> i) ^ (d * (i + 1)) ^ (e << (i % 5))
        page = side.base + salt % PAGES * SZ_4K
        if salt % 61 == 0:
            page = side.base + SZ_1M + salt % 4 * SZ_4K  # free in the target
        elif salt % 67 == 0:
            page = 0xFFFF_0000  # no RAM there
        offset = salt % 5 * 0x340 if salt % 3 else 0
        length = 1 + (salt * 0x9E37) % (3 * SZ_4K - offset)
        entries.append((page + offset, length))
    sgl = ScatterList(entries)
    nents = n if d % 5 else 1 + d % n
    direction = DIRECTIONS[(a + e) % 3]
    count = side.dma.map_sg(dev, sgl, nents, direction)
    if count:
        side.lists.append((dev, sgl, nents, direction))
    return count, sgl.dma_segments(), sgl.snapshot()


KINDS = (
    "map_page",
    "unmap_page",
    "map_sg",
    "map_sg_mixed",
    "unmap_sg",
    "sg_mutate",
    "cpu_write",
    "device",
    "sync",
    "advance",
)
_int = st.integers(min_value=0, max_value=1 << 16)
OPS = st.lists(
    st.tuples(st.sampled_from(KINDS), _int, _int, _int, _int, _int), min_size=8, max_size=40
)


def _reports(dma: DmaApi) -> list[tuple[str, str]]:
    assert dma.checker is not None
    return [(r.kind.name, r.message) for r in dma.checker.take()]


@pytest.mark.parametrize("lazy", [False, True], ids=["strict", "lazy"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_lean_and_reference_agree(lazy: bool, ops: list[tuple]) -> None:
    lean, ref = Side.boot(True, lazy), Side.boot(False, lazy)
    assert lean.state() == ref.state()
    for i, op in enumerate(ops):
        got, want = _run(lean, op), _run(ref, op)
        assert got == want, f"op {i} {op}"
        assert _reports(lean.dma) == _reports(ref.dma), f"op {i} {op}"
        assert lean.state() == ref.state(), f"op {i} {op}"
    # the reference never takes the store-per-page path; the lean path does, whenever
    # a mapping lands in an existing table (assert that the case was exercised only
    # where the ops made two IOMMU maps: the first one makes the table)
    assert ref.system.direct.counts == {"back": 0, "back_general": 0, "unback": 0}
    for side in (lean, ref):  # give back what is left (kept handles may be stale)
        for dev, handle, size, direction in side.pages:
            with contextlib.suppress(vcmm.VcmmError):
                side.dma.unmap_page(dev, handle, size, direction)
        for dev, sgl, n, direction in side.lists:
            with contextlib.suppress(vcmm.VcmmError):
                side.dma.unmap_sg(dev, sgl, n, direction)
        _reports(side.dma)
    assert lean.state() == ref.state()


def test_lean_path_is_the_default_and_lean_false_is_checked() -> None:
    system = vcmm.System.default()
    with pytest.raises(InvalidArgumentError, match="lean=1 is not a bool"):
        DmaApi(system, lean=1)  # type: ignore[arg-type]
    dma = DmaApi(system)
    page = system.vcm_phys_alloc("ebi", SZ_4K).chunk_ranges[0].start
    handle = dma.map_page("vcodec_a_mm1", page, 0x10, 0x100, D.TO_DEVICE)
    # the lean map is a real mapping: the device reads what the CPU wrote and cleaned
    assert system.device("vcodec_a_mm1").read(handle, 4) == system.memory.read(page + 0x10, 4)
    dma.unmap_page("vcodec_a_mm1", handle, 0x100, D.TO_DEVICE)
    with pytest.raises(DmaApiError, match="double unmap"):
        dma.unmap_page("vcodec_a_mm1", handle, 0x100, D.TO_DEVICE)


def test_a_failed_lean_map_changes_nothing() -> None:
    """An IOVA space too small for the map: MAPPING_ERROR, and every byte as before."""
    system = vcmm.System.default()
    dma = DmaApi(system)
    dma.set_mask("vcodec_a_mm1", 0x1FFF)  # one page of IOVA (the aperture starts at 4 KiB)
    page = system.vcm_phys_alloc("ebi", 4 * SZ_4K).chunk_ranges[0].start
    before = (system.snapshot(), dma.snapshot())
    assert dma.map_page("vcodec_a_mm1", page, 0, 2 * SZ_4K, D.TO_DEVICE) == DMA_MAPPING_ERROR
    assert isinstance(dma.last_error, OutOfAddressSpaceError)
    sgl = ScatterList([(page, SZ_4K), (page + 2 * SZ_4K, SZ_4K)])
    assert dma.map_sg("vcodec_a_mm1", sgl, 2, D.TO_DEVICE) == 0
    assert (system.snapshot(), dma.snapshot()) == before


def test_the_lean_path_stores_page_by_page_once_the_table_exists() -> None:
    """A map_page/unmap_page pair in a domain whose table exists is one descriptor
    store each way (no general vcm_back), and leaves what the reference leaves."""
    sides = [Side.boot(lean, lazy=False) for lean in (True, False)]
    for side in sides:
        dma = side.dma
        first = dma.map_page(IOMMU[0], side.base, 0, SZ_4K, D.TO_DEVICE)
        for k in range(1, 6):
            handle = dma.map_page(IOMMU[0], side.base + k * SZ_4K, 0x80, 0x100, D.FROM_DEVICE)
            side.system.device(IOMMU[0]).write(handle, b"dev" * k)  # fills the IOTLB
            dma.unmap_page(IOMMU[0], handle, 0x100, D.FROM_DEVICE)
        dma.unmap_page(IOMMU[0], first, SZ_4K, D.TO_DEVICE)
        _reports(dma)
    lean, ref = sides
    assert lean.system.direct.counts == {"back": 5, "back_general": 1, "unback": 6}
    assert lean.state() == ref.state()
    # the device's writes reached memory through the direct mappings
    assert lean.system.memory.read(lean.base + 5 * SZ_4K + 0x80, 15) == b"dev" * 5


def test_a_failed_lean_map_in_a_busy_domain_leaks_nothing() -> None:
    """A map_sg refused for want of IOVA space under the mask, in a domain with live
    direct mappings: no IOVA, table page, graph edge, wrap or record is left, on
    either path; the live mappings still unmap store by store."""
    sides = [Side.boot(lean, lazy=False) for lean in (True, False)]
    for side in sides:
        dma = side.dma
        live = [
            dma.map_page(IOMMU[0], side.base + k * SZ_4K, 0, SZ_4K, D.TO_DEVICE) for k in range(3)
        ]
        dma.set_mask(IOMMU[0], 0x3FFF)  # three pages of IOVA (the aperture starts at 4 KiB)
        for k in (4, 5):  # two of them taken
            live.append(dma.map_page(IOMMU[0], side.base + k * SZ_4K, 0, SZ_4K, D.TO_DEVICE))
        before = side.state()
        sgl = ScatterList([(side.base + 8 * SZ_4K, SZ_4K), (side.base + 10 * SZ_4K, SZ_4K)])
        assert dma.map_sg(IOMMU[0], sgl, 2, D.TO_DEVICE) == 0
        assert isinstance(dma.last_error, OutOfAddressSpaceError)
        assert side.state() == before
        for handle in live:
            dma.unmap_page(IOMMU[0], handle, SZ_4K, D.TO_DEVICE)
        _reports(dma)
    lean, ref = sides
    assert lean.state() == ref.state()
    assert lean.system.direct.counts["unback"] == 5


def test_a_scattered_list_of_mixed_pieces_maps_leanly_and_like_the_reference() -> None:
    """Pieces in any page order, with offsets, lengths over page ends and a page named
    twice: the lean path maps them itself (store by store into the existing table)
    and leaves the reference's segments, records and bytes."""
    entries = [(3, 0x340, 0x1000), (9, 0, 0x1000), (1, 0x80, 0x2100), (9, 0, 0x1000), (5, 0, 1)]
    sides = [Side.boot(lean, lazy=False) for lean in (True, False)]
    results = []
    for side in sides:
        dma = side.dma
        first = dma.map_page(IOMMU[0], side.base + 12 * SZ_4K, 0, SZ_4K, D.TO_DEVICE)
        sgl = ScatterList([(side.base + p * SZ_4K + off, n) for p, off, n in entries])
        count = dma.map_sg(IOMMU[0], sgl, len(entries), D.BIDIRECTIONAL)
        results.append((count, sgl.dma_segments(), sgl.snapshot()))
        device = side.system.device(IOMMU[0])
        device.write(sgl[0].dma_address, b"lean?")
        dma.unmap_sg(IOMMU[0], sgl, len(entries), D.BIDIRECTIONAL)
        dma.unmap_page(IOMMU[0], first, SZ_4K, D.TO_DEVICE)
        _reports(dma)
    lean, ref = sides
    assert results[0] == results[1]
    count, segments, _ = results[0]
    assert count == len(segments) >= 2  # the offset pieces start segments of their own
    assert lean.system.direct.counts == {"back": 1, "back_general": 1, "unback": 2}
    assert lean.state() == ref.state()
    assert lean.system.memory.read(lean.base + 3 * SZ_4K + 0x340, 5) == b"lean?"
