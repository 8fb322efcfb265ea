"""Random sequences of the seed's API against independent checks of the whole system.

After every step the page tables (walked from memory), the mapping graph, the
allocators and the devices' view agree:

- every backed reservation translates, byte for byte, to its allocation's chunks laid
  end to end, in the VCM's table, in the CPU's kernel table;
  every unbacked one faults; tables hold no leaf that no reservation explains;
- every address-space allocator holds exactly the reservations placed in it and every
  memory target is short exactly the bytes of the live allocations;
- aliases of a chunk agree on memory type and, page by page, their shareable bit
  follows the rule;
- a device whose association is active reads and writes the right physical bytes
  (stale IOTLB entries would make it miss).

Every call that fails must leave ``System.snapshot()`` unchanged.  At the end the
machine tears everything down and nothing may leak: table memory back to its boot
usage, every target's free bytes back, the graph empty.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K, AddressRange
from vcmm.core import AssocAttr, Attr, PhysAttr, VcmKind
from vcmm.errors import DeviceFaultError, VcmmError

_VA_MASK = (1 << 48) - 1
IOMMU_DEVICES = ("vcodec_a_mm1", "vcodec_b_mm2", "mdp")
SIZES = (SZ_4K, 3 * SZ_4K, SZ_64K, SZ_64K + SZ_4K, SZ_1M, SZ_1M + SZ_64K, 2 * SZ_1M)
ATTRS = (Attr.RW, Attr.READ, Attr.RW | Attr.NONCACHED, Attr.RW | Attr.WT, Attr.RW | Attr.USER)
USER_ASIDS = (5, 6)
PHYS_ATTRS = (
    PhysAttr.NONE,
    PhysAttr.CONTIGUOUS,
    PhysAttr.blocks(SZ_4K),
    PhysAttr.align(SZ_1M),
    PhysAttr.blocks(SZ_64K, SZ_4K),
)
TARGETS: tuple[str | None, ...] = ("blocks", "contig", "ebi", "smi", None)
VCM_WINDOWS = (
    (SZ_16M, 64 * SZ_1M),  # low, usable as a split-low half
    (256 * SZ_1M, 16 * SZ_1M),
    (0xC000_0000, 64 * SZ_1M),  # high, usable as a split-high half
)


class VcmmMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = vcmm.System.default()
        self.boot_tables = self.s.table_memory.used_bytes
        self.boot_free = {n: t.free_bytes for n, t in self.s.targets.items()}
        self.failures = 0
        self.asids: set[int] = set()

    # -- helpers ------------------------------------------------------------------------

    def attempt(self, fn: Callable[[], object]) -> Any:
        """Run one API call; if it fails, nothing may have changed."""
        before = self.s.snapshot()
        try:
            return fn()
        except VcmmError:
            self.failures += 1
            assert self.s.snapshot() == before, "a failing call changed the system"
            return None

    @staticmethod
    def pick(seq: list[Any], i: int) -> Any:
        return seq[i % len(seq)]

    @staticmethod
    def choose(sensible: bool, good: list[Any], every: list[Any], i: int) -> Any:
        """A valid argument when asked (and one exists), else any: both paths matter."""
        seq = good if sensible and good else every
        return seq[i % len(seq)]

    # -- rules --------------------------------------------------------------------------

    @initialize()
    def a_world_to_start_from(self) -> None:
        """The walk-through's set-up (000 L321-427), so short runs still map things:
        an active IOMMU VCM, a split context, the VMM VCM on the CPU, a one-to-one VCM."""
        s = self.s
        vcm = s.vcm_create(*VCM_WINDOWS[0])
        s.vcm_activate(s.vcm_assoc(vcm, IOMMU_DEVICES[0], 0))
        # One context split between two VCMs (VA[31] selects).
        low, high = s.vcm_create(*VCM_WINDOWS[0]), s.vcm_create(*VCM_WINDOWS[2])
        s.vcm_activate(s.vcm_assoc(low, IOMMU_DEVICES[1], AssocAttr.SPLIT | AssocAttr.USE_LOW))
        s.vcm_activate(s.vcm_assoc(high, IOMMU_DEVICES[1], AssocAttr.SPLIT | AssocAttr.USE_HIGH))
        vmm = s.vcm_create_from_prebuilt(0)
        s.vcm_activate(s.vcm_assoc(vmm, s.cpu, 0))
        (region,) = s.target("contig").regions
        s.vcm_create(region.start, region.size)
        for name in IOMMU_DEVICES:  # terminate faults quietly (no warning per fault)
            s.vcm_hook(name, lambda fault, data: 0)

    @precondition(lambda self: len(self.s.vcms) < 8)
    @rule(window=st.sampled_from(VCM_WINDOWS))
    def create_iommu(self, window: tuple[int, int]) -> None:
        self.attempt(lambda: self.s.vcm_create(*window))

    @precondition(lambda self: sum(v.kind is VcmKind.VMM for v in self.s.vcms) < 2)
    @rule()
    def create_vmm(self) -> None:
        self.attempt(lambda: self.s.vcm_create_from_prebuilt(0))

    @precondition(lambda self: len(self.s.vcms) < 8)
    @rule(asid=st.sampled_from(USER_ASIDS))
    def create_user(self, asid: int) -> None:
        """A process address space as a VCM (the CPU's table is made once per ASID)."""
        if asid not in self.asids:
            self.s.cpu.create_address_space(asid)
            self.asids.add(asid)
        self.attempt(lambda: self.s.vcm_create_from_prebuilt(asid, label=f"proc{asid}"))

    @precondition(lambda self: self.s.physmems)
    @rule(
        i=st.integers(0, 99),
        first=st.integers(0, 600),
        pages=st.integers(1, 600),
        sensible=st.booleans(),
    )
    def view(self, i: int, first: int, pages: int, sensible: bool) -> None:
        """A window of an allocation (often strictly inside one of its chunks)."""
        pm = self.pick(self.s.physmems, i)
        if sensible:
            total = pm.size // SZ_4K
            first %= total
            pages = 1 + pages % (total - first)
        self.attempt(lambda: self.s.vcm_phys_view(pm, first * SZ_4K, pages * SZ_4K))

    @precondition(lambda self: self.s.physmems)
    @rule(
        i=st.integers(0, 99),
        picks=st.lists(st.integers(0, 600), min_size=1, max_size=4),
        sensible=st.booleans(),
    )
    def wrap(self, i: int, picks: list[int], sensible: bool) -> None:
        """Pages of an allocation, in any order and repeated, described as one piece
        (as a driver hands the VCMM its pages); without naming the allocation that
        owns them it is refused."""
        pm = self.pick(self.s.physmems, i)
        pages = [pa for c in pm.chunk_ranges for pa in range(c.start, c.end, SZ_4K)]
        ranges = [AddressRange(self.pick(pages, k), SZ_4K) for k in picks]
        of = pm if sensible else ()
        self.attempt(lambda: self.s.vcm_phys_wrap(ranges, owner="a driver", of=of))

    @precondition(lambda self: self.s.reservations)
    @rule(i=st.integers(0, 99), at=st.integers(1, 600))
    def split(self, i: int, at: int) -> None:
        res = self.pick(self.s.reservations, i)
        offset = at * SZ_4K
        rest = None
        if res.physmem is not None and offset < res.len:
            rest = self.attempt(lambda: self.s.vcm_phys_view(res.physmem, offset, res.len - offset))
        self.attempt(lambda: self.s.vcm_split(res, offset, rest))

    @precondition(lambda self: self.s.reservations)
    @rule(i=st.integers(0, 99), at=st.integers(1, 600))
    def split_and_merge_back(self, i: int, at: int) -> None:
        """Cutting a reservation and joining it again changes nothing at all."""
        res = self.pick(self.s.reservations, i)
        offset = (at * SZ_4K) % res.len
        if offset == 0 or (res.addr is None and res.vcm.kind is not VcmKind.ONE_TO_ONE):
            return
        before = self.s.snapshot()
        rest = None
        if res.physmem is not None:
            rest = self.s.vcm_phys_view(res.physmem, offset, res.len - offset)
        right = self.attempt(lambda: self.s.vcm_split(res, offset, rest))
        if right is not None:
            self.s.vcm_merge(res, right)
        if rest is not None:
            self.s.vcm_phys_free(rest)
        assert self.s.snapshot() == before

    @precondition(lambda self: len(self.s.reservations) > 1)
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def merge(self, i: int, sensible: bool) -> None:
        pairs = [
            (a, b)
            for v in self.s.vcms
            for a in v.reservations
            for b in v.reservations
            if a.addr is not None and b.addr is not None and a.addr + a.len == b.addr
        ]
        every = [(a, b) for a in self.s.reservations for b in self.s.reservations]
        a, b = self.choose(sensible, pairs, every, i)
        self.attempt(lambda: self.s.vcm_merge(a, b))

    @precondition(lambda self: len(self.s.vcms) < 8)
    @rule(pool=st.sampled_from(("contig", "smi")))
    def create_one_to_one(self, pool: str) -> None:
        (region,) = self.s.target(pool).regions
        self.attempt(lambda: self.s.vcm_create(region.start, region.size))

    @precondition(lambda self: self.s.vcms)
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def free_vcm(self, i: int, sensible: bool) -> None:
        idle = [v for v in self.s.vcms if not v.reservations and not v.associations]
        vcm = self.choose(sensible, idle, self.s.vcms, i)
        self.attempt(lambda: self.s.vcm_free(vcm))

    @precondition(lambda self: self.s.vcms)
    @rule(i=st.integers(0, 99), size=st.sampled_from(SIZES), attr=st.sampled_from(ATTRS))
    def reserve(self, i: int, size: int, attr: Attr) -> None:
        vcm = self.pick(self.s.vcms, i)
        self.attempt(lambda: self.s.vcm_reserve(vcm, size, attr))

    @precondition(lambda self: self.s.reservations)
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def unreserve(self, i: int, sensible: bool) -> None:
        free = [r for r in self.s.reservations if not r.backed]
        res = self.choose(sensible, free, self.s.reservations, i)
        self.attempt(lambda: self.s.vcm_unreserve(res))

    @rule(
        memtype=st.sampled_from(TARGETS),
        size=st.sampled_from(SIZES),
        attr=st.sampled_from(PHYS_ATTRS),
    )
    def phys_alloc(self, memtype: str | None, size: int, attr: PhysAttr) -> None:
        self.attempt(lambda: self.s.vcm_phys_alloc(memtype, size, attr))

    @precondition(lambda self: self.s.physmems)
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def phys_free(self, i: int, sensible: bool) -> None:
        every = self.s.phys_views + self.s.physmems
        unused = [p for p in every if not p.backing and not p.views]
        pm = self.choose(sensible, unused, every, i)
        self.attempt(lambda: self.s.vcm_phys_free(pm))

    @precondition(lambda self: self.s.reservations and self.s.physmems)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), sensible=st.booleans())
    def back(self, i: int, j: int, sensible: bool) -> None:
        res = self.choose(
            sensible, [r for r in self.s.reservations if not r.backed], self.s.reservations, i
        )
        every = self.s.phys_views + self.s.physmems
        big_enough = [p for p in every if p.size >= res.len]
        pm = self.choose(sensible, big_enough, every, j)
        self.attempt(lambda: self.s.vcm_back(res, pm))

    @precondition(lambda self: self.s.reservations and self.s.phys_views)
    @rule(i=st.integers(0, 99), j=st.integers(0, 99))
    def back_with_view_or_wrap(self, i: int, j: int) -> None:
        """Back an unbacked reservation with a view or a wrap that is big enough: the
        memory most likely to have aliases with other attributes already."""
        free = [r for r in self.s.reservations if not r.backed]
        if not free:
            return
        res = self.pick(free, i)
        fitting = [p for p in self.s.phys_views if p.size >= res.len]
        if fitting:
            pm = self.pick(fitting, j)
            self.attempt(lambda: self.s.vcm_back(res, pm))

    @precondition(lambda self: self.s.vcms)
    @rule(
        i=st.integers(0, 99),
        size=st.sampled_from(SIZES),
        attr=st.sampled_from(ATTRS),
        memtype=st.sampled_from(TARGETS),
        pattr=st.sampled_from(PHYS_ATTRS),
    )
    def reserve_alloc_back(
        self, i: int, size: int, attr: Attr, memtype: str | None, pattr: PhysAttr
    ) -> None:
        """The walk-through's stage 1 in one step: reserve, allocate, back."""
        vcm = self.pick(self.s.vcms, i)
        res = self.attempt(lambda: self.s.vcm_reserve(vcm, size, attr))
        pm = self.attempt(lambda: self.s.vcm_phys_alloc(memtype, size, pattr))
        if res is not None and pm is not None:
            self.attempt(lambda: self.s.vcm_back(res, pm))

    @precondition(lambda self: any(r.backed for r in self.s.reservations))
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def unback(self, i: int, sensible: bool) -> None:
        backed = [r for r in self.s.reservations if r.backed]
        res = self.choose(sensible, backed, self.s.reservations, i)
        self.attempt(lambda: self.s.vcm_unback(res))

    @precondition(lambda self: self.s.vcms)
    @rule(
        i=st.integers(0, 99),
        j=st.integers(0, 99),
        sensible=st.booleans(),
        attr=st.sampled_from(
            (
                AssocAttr.NONE,
                AssocAttr.SPLIT | AssocAttr.USE_LOW,
                AssocAttr.SPLIT | AssocAttr.USE_HIGH,
            )
        ),
    )
    def assoc(self, i: int, j: int, sensible: bool, attr: AssocAttr) -> None:
        vcm = self.pick(self.s.vcms, i)
        matching = {
            VcmKind.IOMMU: list(IOMMU_DEVICES),
            VcmKind.VMM: ["cpu"],
            VcmKind.USER: ["cpu"],
            VcmKind.ONE_TO_ONE: ["camera"],
        }[vcm.kind]
        dev = self.choose(sensible, matching, [*IOMMU_DEVICES, "cpu", "camera"], j)
        if sensible and vcm.kind is not VcmKind.IOMMU:
            attr = AssocAttr.NONE
        self.attempt(lambda: self.s.vcm_assoc(vcm, dev, attr))

    @precondition(lambda self: self.s.associations)
    @rule(i=st.integers(0, 99))
    def toggle_activation(self, i: int) -> None:
        a = self.pick(self.s.associations, i)
        call = self.s.vcm_deactivate if a.active else self.s.vcm_activate
        self.attempt(lambda: call(a))

    @precondition(lambda self: self.s.associations)
    @rule(i=st.integers(0, 99), sensible=st.booleans())
    def deassoc(self, i: int, sensible: bool) -> None:
        idle = [a for a in self.s.associations if not a.active]
        a = self.choose(sensible, idle, self.s.associations, i)
        self.attempt(lambda: self.s.vcm_deassoc(a))

    @precondition(lambda self: any(a.active and a.vcm.reservations for a in self.s.associations))
    @rule(i=st.integers(0, 99), j=st.integers(0, 99), data=st.binary(min_size=1, max_size=64))
    def device_access(self, i: int, j: int, data: bytes) -> None:
        active = [
            a
            for a in self.s.associations
            if a.active and a.vcm.kind is VcmKind.IOMMU and a.vcm.reservations
        ]
        if not active:
            return
        a = self.pick(active, i)
        res = self.pick(a.vcm.reservations, j)
        offset = (j * 4099) % (res.len - len(data) + 1)
        dev = a.device
        if res.physmem is None:
            try:
                dev.read(res.dev_addr + offset, len(data))
            except DeviceFaultError as exc:
                assert exc.address == res.dev_addr + offset
            else:
                raise AssertionError(f"{dev.name} read unbacked {res.name} without a fault")
            return
        if not res.attr & Attr.WRITE:
            return
        dev.write(res.dev_addr + offset, data)
        assert self.s.memory.read(_pa_of(res, offset), len(data)) == data
        assert dev.read(res.dev_addr + offset, len(data)) == data

    # -- invariants ---------------------------------------------------------------------

    @invariant()
    def tables_graph_and_allocators_agree(self) -> None:
        check_consistency(self.s)

    @invariant()
    def devices_see_the_right_bytes(self) -> None:
        """Every active device reads its reservations' first and last bytes from the
        right physical place, or faults where nothing backs them: a TLB entry left
        behind by a change would show here."""
        for a in self.s.associations:
            if not a.active or a.device is self.s.cpu:
                continue
            for res in a.vcm.reservations:
                if res.addr is None:
                    continue
                for offset in (0, res.len - 8):
                    va = res.dev_addr_for(a.device) + offset
                    if res.physmem is None:
                        try:
                            a.device.read(va, 8)
                        except DeviceFaultError as exc:
                            assert exc.address == va
                            continue
                        raise AssertionError(f"{a.device.name} read unbacked {res.name}")
                    got = a.device.read(va, 8)
                    assert got == self.s.memory.read(_pa_of(res, offset), 8), res.name

    def teardown(self) -> None:
        s = self.s
        for a in s.associations:
            if a.active:
                s.vcm_deactivate(a)
        for a in s.associations:
            s.vcm_deassoc(a)
        for res in s.reservations:
            if res.backed:
                s.vcm_unback(res)
            s.vcm_unreserve(res)
        for pm in s.phys_views + s.physmems:
            s.vcm_phys_free(pm)
        for vcm in list(s.vcms):
            s.vcm_free(vcm)
        for asid in self.asids:
            s.cpu.destroy_address_space(asid)
        assert s.graph.is_empty() and s.graph.chunks() == []
        assert s.table_memory.used_bytes == self.boot_tables
        assert {n: t.free_bytes for n, t in s.targets.items()} == self.boot_free
        assert s.kernel_areas.allocated_bytes == 0
        for smmu in s.smmus.values():
            assert all(not c.is_bound and not c.is_active for c in smmu.contexts)


def _pa_of(res: Any, offset: int) -> int:
    """Physical address of byte ``offset`` of ``res``: its allocation's chunks laid end
    to end (the reference model, independent of the graph)."""
    for chunk in res.physmem.chunk_ranges:
        if offset < chunk.size:
            return int(chunk.start + offset)
        offset -= chunk.size
    raise AssertionError("offset beyond the allocation")


def _pages_of(res: Any) -> list[int]:
    """Physical address of each page of ``res``, from its allocation's chunks."""
    out: list[int] = []
    left = res.len
    for chunk in res.physmem.chunk_ranges:
        n = min(chunk.size, left)
        out.extend(range(chunk.start, chunk.start + n, SZ_4K))
        left -= n
        if left <= 0:
            break
    return out


def check_consistency(s: vcmm.System) -> None:
    graph = s.graph
    leaves_expected: dict[int, int] = {}
    kernel_areas = 0
    for vcm in s.vcms:
        placed = 0
        for res in vcm.reservations:
            if res.addr is not None:
                placed += res.len
            maps = graph.of_reservation(res.id)
            if res.physmem is None:
                assert maps == []
                if vcm.kind is not VcmKind.ONE_TO_ONE:
                    for va in (res.addr, res.addr + res.len - SZ_4K):
                        for pa, _ in _tables_walk(s, res, va):
                            assert pa is None, f"unbacked {res.name} translates {va:#x}"
                continue
            assert res in res.physmem.backing
            assert sum(m.phys.size for m in maps) == res.len
            if vcm.kind is VcmKind.ONE_TO_ONE:
                assert res.addr == res.physmem.chunk_ranges[0].start
            for m in maps:
                offset = m.va - res.addr
                assert m.phys.start == _pa_of(res, offset)
                for probe in {0, m.phys.size - 1}:
                    for pa, attrs in _tables_walk(s, res, m.va + probe):
                        assert pa == m.phys.start + probe, f"{res.name} +{offset + probe:#x}"
                        assert attrs.memtype is m.attrs.memtype
                        assert attrs.shareable == m.attrs.shareable
            if vcm.kind is not VcmKind.ONE_TO_ONE:
                leaves_expected[vcm.id] = leaves_expected.get(vcm.id, 0) + res.len
        if vcm.kind is VcmKind.VMM:
            kernel_areas += placed
        else:
            assert vcm.allocator.allocated_bytes == placed
        if vcm.kind is VcmKind.IOMMU:
            mapped = sum(e.size for e in vcm.table.mappings())
            assert mapped == leaves_expected.get(vcm.id, 0), f"{vcm.name} stray leaves"
        assert vcm.activations == sum(a.active for a in vcm.associations)
    assert s.kernel_areas.allocated_bytes == kernel_areas
    # Memory targets are short exactly the live allocations.
    for name, target in s.targets.items():
        held = sum(pm.size for pm in s.physmems if pm.target == name)
        assert target.total_bytes - target.free_bytes == held, name
    # Aliases of a page agree on memory type and security state (the rule is per page,
    # as ARM's: two pages of one chunk may differ); every alias's shareable bit follows
    # the rule for each of its pages (the linear map, i.e. kernel RAM, or two or more
    # address spaces map the page).  The reference counts spaces per page from the
    # allocations' chunks laid end to end, not from the graph.
    # Edges lie in live memory: an allocation's chunk, or the pages a live wrap
    # describes (a wrap's edges name its own pages as their chunk).
    live = [c for pm in s.physmems + s.phys_views for c in pm.chunk_ranges]
    for chunk in graph.chunks():
        assert any(chunk.start >= c.start and chunk.end <= c.end for c in live), chunk
    check_page_types(s)
    spaces_of: dict[int, set[str]] = {}
    for res in s.reservations:
        if res.physmem is not None:
            for pa in _pages_of(res):
                spaces_of.setdefault(pa, set()).add(res.vcm.space)
    linear = [m.phys for m in graph.linear_map]
    for res in s.reservations:
        for m in graph.of_reservation(res.id):
            for pa in range(m.phys.start, m.phys.end, SZ_4K):
                want = any(pa in w for w in linear) or len(spaces_of[pa]) >= 2
                assert m.attrs.shareable == want, f"{m.describe()}: page {pa:#x}"
    # A context is live exactly when an association runs on it.
    for name in IOMMU_DEVICES:
        ctx = s.device(name).ctx
        running = [a for a in s.associations if a.active and getattr(a.device, "ctx", None) is ctx]
        assert ctx.is_active == bool(running)


def check_page_types(s: vcmm.System) -> None:
    """Every page that reservations map has one memory type and one security state
    across all its mappings, the kernel linear map included where it covers the page."""
    types: dict[int, set[tuple[object, bool]]] = {}
    for res in s.reservations:
        for m in s.graph.of_reservation(res.id):
            for pa in range(m.phys.start, m.phys.end, SZ_4K):
                types.setdefault(pa, set()).add((m.attrs.memtype, m.attrs.ns))
    for window in s.graph.linear_map:
        for pa, found in types.items():
            if pa in window.phys:
                found.add((window.attrs.memtype, window.attrs.ns))
    mixed = {f"{pa:#x}": found for pa, found in types.items() if len(found) > 1}
    assert not mixed, f"pages mapped with two memory types or security states: {mixed}"


def _tables_walk(s: vcmm.System, res: Any, va: int) -> list[tuple[int | None, Any]]:
    vcm = res.vcm
    if vcm.kind is VcmKind.IOMMU:
        w = vcm.table.walk(va)
        return [(w.pa, w.attrs)]
    if vcm.kind is VcmKind.VMM:
        w = s.cpu.kernel_table.walk(va & _VA_MASK)
        return [(w.pa, w.attrs)]
    if vcm.kind is VcmKind.USER:
        w = s.cpu.address_space(vcm.ext_id).walk(va)
        return [(w.pa, w.attrs)]
    return []


TestVcmmStateMachine = VcmmMachine.TestCase
# VCMM_STATEFUL_EXAMPLES raises the number of runs for a long hunt (default 25).
TestVcmmStateMachine.settings = settings(
    max_examples=int(os.environ.get("VCMM_STATEFUL_EXAMPLES", "25")),
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_seed_285429604015725151422177390595048865967_replayed() -> None:
    """The sequence that seed shrank to, replayed step by step with every invariant.

    A 4 KiB reservation backed with a 2 MiB allocation maps its page 0 write-back; a
    view of page 1 (made earlier) then backs a write-through reservation.  The pages
    differ, so the backing is legal (the rule is per page) and every check holds."""
    machine = VcmmMachine()
    none = PhysAttr.NONE
    steps: list[tuple[str, dict[str, Any]]] = [
        ("reserve_alloc_back", dict(i=43, size=2 * SZ_1M, attr=Attr.RW | Attr.NONCACHED,
                                    memtype="contig", pattr=none)),
        ("view", dict(i=0, first=1, pages=1, sensible=False)),
        ("unback", dict(i=0, sensible=False)),
        ("reserve_alloc_back", dict(i=34, size=SZ_4K, attr=Attr.RW, memtype="blocks",
                                    pattr=none)),
        ("reserve_alloc_back", dict(i=0, size=SZ_4K, attr=Attr.RW, memtype="blocks",
                                    pattr=none)),
        ("back", dict(i=20, j=1, sensible=False)),
        ("unback", dict(i=0, sensible=False)),
        ("reserve", dict(i=0, size=SZ_4K, attr=Attr.RW)),
        ("reserve_alloc_back", dict(i=71, size=SZ_4K, attr=Attr.RW | Attr.WT,
                                    memtype="blocks", pattr=none)),
        ("unback", dict(i=0, sensible=True)),
        ("back", dict(i=32, j=0, sensible=False)),
    ]  # fmt: skip
    machine.a_world_to_start_from()
    try:
        for name, args in steps:
            getattr(machine, name)(**args)
            machine.tables_graph_and_allocators_agree()
            machine.devices_see_the_right_bytes()
        # The last step made the two memory types on two pages of one chunk.
        wt = next(r for r in machine.s.reservations if r.attr & Attr.WT)
        assert wt.physmem is not None and wt.physmem.kind == "view"
        (page,) = wt.physmem.chunk_ranges
        parent = wt.physmem.parent
        assert parent is not None and page.start == parent.chunk_ranges[0].start + SZ_4K
        types = {m.attrs.memtype for m in machine.s.graph.of_chunk(parent.chunk_ranges[0])}
        assert len(types) == 2
    finally:
        machine.teardown()
