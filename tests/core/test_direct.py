"""``vcm_back_direct``/``vcm_unback_direct`` (one descriptor store per page) against
``vcm_back``/``vcm_unback`` (the general path, the oracle).

Two identical systems get the same random steps: backings of IOMMU reservations with
scattered pages, 64 KiB windows (large pages: the general path), kernel-RAM wraps,
an alias in a second VCM (shareable rewrites: the general path), device reads that
fill the IOTLB, unbackings, and misuse.  After every step the results, the errors
and ``System.snapshot()`` (every byte of memory, so every table byte; the TLBs and
their counters; the caches; the mapping graph; every allocator) must be equal.
"""

from __future__ import annotations

from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.core import Attr, PhysAttr
from vcmm.core.objects import PhysMem, Reservation
from vcmm.platform import load_platform

DEVICE = "vcodec_a_mm1"
OTHER = "vcodec_b_mm2"
CARVE = 4 * SZ_1M


class Side:
    """One system, backed the direct way or the general way."""

    def __init__(self, direct: bool) -> None:
        self.direct = direct
        self.system = system = vcmm.System.default()
        self.carve = system.vcm_phys_alloc("contig", CARVE, PhysAttr.CONTIGUOUS)
        self.ram = system.vcm_phys_alloc("ebi", 64 * SZ_4K)
        self.vcm = system.vcm_create(0x4000_0000, 64 * SZ_1M)
        system.vcm_activate(system.vcm_assoc(self.vcm, DEVICE, 0))
        self.other = system.vcm_create(0x4000_0000, 64 * SZ_1M)
        system.vcm_activate(system.vcm_assoc(self.other, OTHER, 0))
        self.live: list[tuple[Reservation, PhysMem]] = []

    def page(self, n: int) -> int:
        """The physical address of page ``n`` (modulo 64) of the kernel-RAM buffer."""
        pages = [c.start + k for c in self.ram.chunk_ranges for k in range(0, c.size, SZ_4K)]
        return pages[n % len(pages)]

    def back(self, res: Reservation, physmem: PhysMem) -> None:
        if self.direct:
            self.system.vcm_back_direct(res, physmem)
        else:
            self.system.vcm_back(res, physmem)

    def unback(self, res: Reservation) -> None:
        if not self.direct or self.system.vcm_unback_direct(res) is None:
            self.system.vcm_unback(res)


def _memory(side: Side, source: int, pages: list[int], wide: bool) -> PhysMem:
    system = side.system
    if source == 0:  # kernel RAM pages, wrapped as the DMA API wraps a driver's pages
        ranges = [vcmm.AddressRange(side.page(p), SZ_4K) for p in pages or [0]]
        return system.vcm_phys_wrap(ranges, owner="test", of=system.vcm_phys_owners(ranges))
    size = 16 * SZ_4K if wide else SZ_4K  # 64 KiB windows map as large pages
    windows = [((p * size) % CARVE, size) for p in dict.fromkeys(pages)] or [(0, size)]
    return system.vcm_phys_view(side.carve, windows=windows)


def _step(side: Side, op: tuple[str, int, list[int], bool]) -> object:
    kind, a, pages, flag = op
    system = side.system
    try:
        if kind == "back":
            physmem = _memory(side, a % 2, pages, flag)
            vcm = side.other if a % 5 == 4 else side.vcm
            attr = Attr.RW | (Attr.NONCACHED if a % 2 else 0)
            res = system.vcm_reserve(vcm, physmem.size, attr)
            try:
                side.back(res, physmem)
            except vcmm.VcmmError:
                system.vcm_unreserve(res)
                system.vcm_phys_free(physmem)
                raise
            side.live.append((res, physmem))
            return res.dev_addr
        if kind == "back_again" and side.live:  # misuse: already backed
            res, physmem = side.live[a % len(side.live)]
            side.back(res, physmem)
        if kind == "read" and side.live:
            res, _ = side.live[a % len(side.live)]
            device = DEVICE if res.vcm is side.vcm else OTHER
            return system.device(device).read(
                res.dev_addr + (pages[0] if pages else 0) % res.len, 8
            )
        if kind == "unback" and side.live:
            res, physmem = side.live.pop(a % len(side.live))
            side.unback(res)
            system.vcm_unreserve(res)
            system.vcm_phys_free(physmem)
    except vcmm.VcmmError as exc:
        return type(exc).__name__, str(exc)
    return None


OPS = st.lists(
    st.tuples(
        st.sampled_from(["back", "back", "read", "unback", "back_again"]),
        st.integers(0, 1 << 12),
        st.lists(st.integers(0, 255), max_size=6),
        st.booleans(),
    ),
    min_size=4,
    max_size=24,
)


@settings(max_examples=40, deadline=None)
@given(ops=OPS)
def test_direct_and_general_backing_agree(ops: list[tuple[str, int, list[int], bool]]) -> None:
    direct, general = Side(True), Side(False)
    assert direct.system.snapshot() == general.system.snapshot()
    for i, op in enumerate(ops):
        got, want = _step(direct, op), _step(general, op)
        assert got == want, f"step {i} {op}"
        assert direct.system.snapshot() == general.system.snapshot(), f"step {i} {op}"
    while direct.live:
        _step(direct, ("unback", 0, [], False))
        _step(general, ("unback", 0, [], False))
    assert direct.system.snapshot() == general.system.snapshot()


def test_the_common_case_stores_and_invalidates_only_what_the_iotlb_holds() -> None:
    """Scattered kernel-RAM pages into an existing table take the direct path both
    ways; an entry the device cached is invalidated at the unback (the device then
    reads the page mapped next at the same address), and none is when it holds none."""
    side = Side(True)
    system, counts = side.system, side.system.direct.counts
    first = _step(side, ("back", 0, [1, 3], False))  # the first backing makes the table
    assert counts == {"back": 0, "back_general": 1, "unback": 0}
    second = _step(side, ("back", 2, [5, 7, 9], False))
    assert isinstance(first, int) and isinstance(second, int)
    assert counts["back"] == 1
    res, _ = side.live[1]
    system.memory.write(side.page(5), b"old page")
    assert system.device(DEVICE).read(res.dev_addr, 8) == b"old page"  # now in the IOTLB
    tlb = system.device(DEVICE).ctx.smmu.tlb
    assert tlb.holds(None, res.dev_addr, SZ_4K)
    _step(side, ("unback", 1, [], False))
    assert counts["unback"] == 1
    assert not tlb.holds(None, res.dev_addr, 3 * SZ_4K)
    system.memory.write(side.page(11), b"new page")
    again = _step(side, ("back", 2, [11], False))
    assert again == res.dev_addr  # the same IOVA, a different page
    assert system.device(DEVICE).read(res.dev_addr, 8) == b"new page"
    assert counts["back"] == 2


def test_what_the_direct_path_declines_goes_the_general_way() -> None:
    """Large pages (64 KiB windows of a contiguous carve-out) and an alias that makes
    pages shareable are not one store per page: the general path does them."""
    side = Side(True)
    counts = side.system.direct.counts
    _step(side, ("back", 1, [1], True))  # 64 KiB: a large page
    _step(side, ("back", 1, [3], True))
    assert counts["back"] == 0
    _step(side, ("back", 1, [40], False))  # one 4 KiB page of the carve, table exists
    assert counts["back"] == 1
    _step(side, ("back", 9, [40], False))  # the same page in the other VCM: a rewrite
    assert counts["back"] == 1 and counts["back_general"] == 3


def _banked() -> vcmm.System:
    path = resources.files("vcmm").joinpath("platforms/banked.toml")
    with resources.as_file(path) as file:
        return vcmm.System(load_platform(file))


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "general"])
def test_a_parked_context_loses_its_entries_of_a_direct_unback(direct: bool) -> None:
    """A context deactivated onto its bank keeps its IOTLB entries for its return
    (banked platform: two banks, three contexts); an unback while it is parked must
    invalidate them there too, on both paths, so the device faults afterwards rather
    than read a page no longer mapped."""
    system = _banked()
    vcm = system.vcm_create(0x4000_0000, 64 * SZ_1M)
    assoc = system.vcm_assoc(vcm, DEVICE)
    system.vcm_activate(assoc)
    ram = system.vcm_phys_alloc("ebi", 4 * SZ_4K)
    pages = [
        vcmm.AddressRange(c.start + k, SZ_4K)
        for c in ram.chunk_ranges
        for k in range(0, c.size, SZ_4K)
    ]
    wraps, reservations = [], []
    for page in pages[:2]:  # the first makes the table, the second is a store
        wrap = system.vcm_phys_wrap([page], owner="test", of=system.vcm_phys_owners([page]))
        res = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
        (system.vcm_back_direct if direct else system.vcm_back)(res, wrap)
        wraps.append(wrap)
        reservations.append(res)
    assert system.direct.counts["back"] == (1 if direct else 0)
    res = reservations[1]
    system.memory.write(pages[1].start, b"mapped!!")
    device = system.device(DEVICE)
    assert device.read(res.dev_addr, 8) == b"mapped!!"
    tlb = device.ctx.smmu.tlb
    system.vcm_deactivate(assoc)  # parked: the bank keeps its entries
    assert tlb.holds(None, res.dev_addr, SZ_4K)
    if not direct or system.vcm_unback_direct(res) is None:
        system.vcm_unback(res)
    assert system.direct.counts["unback"] == (1 if direct else 0)
    assert not tlb.holds(None, res.dev_addr, SZ_4K)
    system.vcm_activate(assoc)
    with pytest.raises(vcmm.VcmmError):
        device.read(res.dev_addr, 8)
