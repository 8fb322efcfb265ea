"""Every kind of misuse raises a VcmmError naming the values and the rule, and leaves the
whole system (memory bytes, page tables and table memory, TLBs, caches, allocators,
the mapping graph) exactly as it was: ``System.snapshot()`` is equal before and after.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import vcmm
from vcmm import SZ_1K, SZ_1M, SZ_4K, SZ_16M, SZ_64K
from vcmm.core import AssocAttr, Attr, PhysAttr, VcmKind
from vcmm.errors import (
    AlignmentError,
    AttributeConflictError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
    VcmmError,
)


@dataclass
class World:
    """A system with one of everything, in every state a misuse needs."""

    system: vcmm.System
    iommu: Any  # VCM, associated with vcodec_a_mm1 and active
    avcm: Any  # that association
    idle: Any  # an inactive association (mdp)
    vmm: Any
    one: Any  # a one-to-one VCM over the first 4 MiB of "contig"
    full: Any  # a small IOMMU VCM with no free space left
    backed: Any  # reservation backed by `physmem`
    unbacked: Any  # reservation with nothing behind it
    physmem: Any  # 1 MiB from blocks, backing `backed`
    spare: Any  # 1 MiB from blocks, backing nothing
    small: Any  # 4 KiB from blocks
    scattered: Any  # 64K + 4K from blocks: two chunks, not contiguous
    dead_vcm: Any
    dead_res: Any
    dead_physmem: Any
    dead_avcm: Any


def _world() -> World:
    s = vcmm.System.default()
    iommu = s.vcm_create(SZ_16M, 64 * SZ_1M)
    avcm = s.vcm_assoc(iommu, "vcodec_a_mm1", 0)
    s.vcm_activate(avcm)
    idle = s.vcm_assoc(iommu, "mdp", 0)
    vmm = s.vcm_create_from_prebuilt(0)
    s.vcm_activate(s.vcm_assoc(vmm, "cpu", 0))
    one = s.vcm_create(0xA800_0000, 4 * SZ_1M)
    s.vcm_assoc(one, "dsp", 0)
    full = s.vcm_create(0x4000_0000, SZ_64K)
    s.vcm_reserve(full, SZ_64K, Attr.RW)
    physmem = s.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    backed = s.vcm_reserve(iommu, SZ_1M, Attr.RW)
    s.vcm_back(backed, physmem)
    unbacked = s.vcm_reserve(iommu, SZ_1M, Attr.RW)
    spare = s.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    small = s.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE)
    scattered = s.vcm_phys_alloc("blocks", SZ_64K + SZ_4K, PhysAttr.NONE)
    dead_vcm = s.vcm_create(SZ_16M, SZ_16M)
    s.vcm_free(dead_vcm)
    dead_res = s.vcm_reserve(iommu, SZ_4K, Attr.RW)
    s.vcm_unreserve(dead_res)
    dead_physmem = s.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE)
    s.vcm_phys_free(dead_physmem)
    dead_avcm = s.vcm_assoc(full, "vcodec_b_mm2", 0)
    s.vcm_deassoc(dead_avcm)
    # Dirty some cache lines and TLB entries so their snapshots are not trivial.
    s.device("vcodec_a_mm1").write(backed.dev_addr, b"live data")
    s.cpu.read(s.cpu.phys_to_virt(0x8000_0000), 256)
    return World(
        s, iommu, avcm, idle, vmm, one, full, backed, unbacked, physmem, spare, small,
        scattered, dead_vcm, dead_res, dead_physmem, dead_avcm,
    )  # fmt: skip


Misuse = Callable[[World], object]

CASES: list[tuple[str, Misuse, type[VcmmError], str]] = [
    # -- VCMs
    (
        "create misaligned",
        lambda w: w.system.vcm_create(SZ_1K, SZ_16M),
        AlignmentError,
        "multiples of 4 KiB",
    ),
    (
        "create empty",
        lambda w: w.system.vcm_create(SZ_16M, 0),
        InvalidArgumentError,
        "len 0 must be >= 1",
    ),
    (
        "create beyond 32 bits",
        lambda w: w.system.vcm_create(0xFFF0_0000, SZ_16M),
        InvalidArgumentError,
        "32-bit input",
    ),
    (
        "create one-to-one outside memory",
        lambda w: w.system.vcm_create(SZ_16M, SZ_16M, kind=VcmKind.ONE_TO_ONE),
        InvalidArgumentError,
        "not entirely physical memory",
    ),
    (
        "create with a string kind",
        lambda w: w.system.vcm_create(SZ_16M, SZ_16M, kind="iommu"),
        InvalidArgumentError,
        "kind 'iommu'",
    ),
    (
        "create with a bad allocator",
        lambda w: w.system.vcm_create(SZ_16M, SZ_16M, allocator=object()),
        InvalidArgumentError,
        "lacks one of the methods",
    ),
    (
        "unknown prebuilt id",
        lambda w: w.system.vcm_create_from_prebuilt(3),
        NotFoundError,
        "ext_vcm_id 3",
    ),
    ("free VCM with reservations", lambda w: w.system.vcm_free(w.iommu), BusyError, "res"),
    ("free VCM with associations only", lambda w: w.system.vcm_free(w.one), BusyError, "avcm"),
    ("free a freed VCM", lambda w: w.system.vcm_free(w.dead_vcm), StateError, "already freed"),
    (
        "free a reservation as a VCM",
        lambda w: w.system.vcm_free(w.backed),
        InvalidArgumentError,
        "is a Reservation, not a Vcm",
    ),
    # -- reservations
    (
        "reserve more than the VCM",
        lambda w: w.system.vcm_reserve(w.iommu, 128 * SZ_1M, Attr.RW),
        InvalidArgumentError,
        "larger than",
    ),
    (
        "reserve a misaligned length",
        lambda w: w.system.vcm_reserve(w.iommu, SZ_4K + 1, Attr.RW),
        AlignmentError,
        "not a multiple of 4 KiB",
    ),
    (
        "reserve from a full VCM",
        lambda w: w.system.vcm_reserve(w.full, SZ_4K, Attr.RW),
        OutOfAddressSpaceError,
        "no free 4K range",
    ),
    (
        "reserve past the free space",
        lambda w: w.system.vcm_reserve(w.iommu, 63 * SZ_1M, Attr.RW),
        OutOfAddressSpaceError,
        "no free 63M range",
    ),
    (
        "reserve with two cache policies",
        lambda w: w.system.vcm_reserve(w.iommu, SZ_4K, Attr.WT | Attr.NONCACHED),
        InvalidArgumentError,
        "2 cache policies",
    ),
    (
        "reserve write-only",
        lambda w: w.system.vcm_reserve(w.iommu, SZ_4K, Attr.WRITE),
        InvalidArgumentError,
        "write-only",
    ),
    (
        "reserve with unknown attr bits",
        lambda w: w.system.vcm_reserve(w.iommu, SZ_4K, 1 << 20),
        InvalidArgumentError,
        "not Attr flags",
    ),
    (
        "reserve with a bad alignment",
        lambda w: w.system.vcm_reserve(w.iommu, SZ_4K, Attr.RW, align=3 * SZ_4K),
        AlignmentError,
        "not a power of two",
    ),
    (
        "reserve USER kernel memory",
        lambda w: w.system.vcm_reserve(w.vmm, SZ_4K, Attr.RW | Attr.USER),
        InvalidArgumentError,
        "kernel-only",
    ),
    (
        "reserve from a physmem",
        lambda w: w.system.vcm_reserve(w.physmem, SZ_4K, Attr.RW),
        InvalidArgumentError,
        "is a PhysMem, not a Vcm",
    ),
    (
        "reserve from a freed VCM",
        lambda w: w.system.vcm_reserve(w.dead_vcm, SZ_4K, Attr.RW),
        StateError,
        "already freed",
    ),
    (
        "unreserve a backed reservation",
        lambda w: w.system.vcm_unreserve(w.backed),
        BusyError,
        "vcm_unback it first",
    ),
    ("unreserve twice", lambda w: w.system.vcm_unreserve(w.dead_res), StateError, "already freed"),
    # -- associations
    (
        "associate an unknown device",
        lambda w: w.system.vcm_assoc(w.iommu, "gpu", 0),
        NotFoundError,
        "no device named 'gpu'",
    ),
    (
        "associate a non-device",
        lambda w: w.system.vcm_assoc(w.iommu, 42, 0),
        InvalidArgumentError,
        "not a device of this system",
    ),
    (
        "associate twice",
        lambda w: w.system.vcm_assoc(w.iommu, "vcodec_a_mm1", 0),
        StateError,
        "already associated",
    ),
    (
        "associate the VMM VCM with a device",
        lambda w: w.system.vcm_assoc(w.vmm, "mdp", 0),
        InvalidArgumentError,
        "needs a cpu one",
    ),
    (
        "split a one-to-one VCM",
        lambda w: w.system.vcm_assoc(w.one, "camera", AssocAttr.SPLIT | AssocAttr.USE_LOW),
        InvalidArgumentError,
        "split tables only exist on IOMMU",
    ),
    (
        "associate a device that cannot reach",
        lambda w: w.system.vcm_assoc(w.system.vcm_create(0x2000_0000, SZ_64K), "dsp", 0),
        InvalidArgumentError,
        "cannot reach",
    ),
    (
        "deassociate an active association",
        lambda w: w.system.vcm_deassoc(w.avcm),
        BusyError,
        "vcm_deactivate it first",
    ),
    ("activate twice", lambda w: w.system.vcm_activate(w.avcm), StateError, "already active"),
    (
        "activate on a busy context",
        lambda w: w.system.vcm_activate(w.system.vcm_assoc(w.full, "vcodec_a_mm1", 0)),
        BusyError,
        "already runs",
    ),
    (
        "deactivate an inactive association",
        lambda w: w.system.vcm_deactivate(w.idle),
        StateError,
        "is not active",
    ),
    (
        "activate a dead association",
        lambda w: w.system.vcm_activate(w.dead_avcm),
        StateError,
        "already freed",
    ),
    # -- physical memory
    (
        "allocate from an unknown target",
        lambda w: w.system.vcm_phys_alloc("dram", SZ_4K, 0),
        NotFoundError,
        "no memory target named 'dram'",
    ),
    (
        "allocate more than exists",
        lambda w: w.system.vcm_phys_alloc("blocks", 256 * SZ_1M, 0),
        OutOfMemoryError,
        "blocks",
    ),
    (
        "allocate more than any target has",
        lambda w: w.system.vcm_phys_alloc(None, 512 * SZ_1M, 0),
        OutOfMemoryError,
        "ebi",
    ),
    (
        "allocate contiguous beyond a block",
        lambda w: w.system.vcm_phys_alloc("blocks", 32 * SZ_1M, PhysAttr.CONTIGUOUS),
        OutOfMemoryError,
        "single block",
    ),
    (
        "allocate a block size the buddy lacks",
        lambda w: w.system.vcm_phys_alloc("ebi", SZ_16M, PhysAttr.blocks(SZ_16M)),
        UnsupportedSizeError,
        "16M",
    ),
    (
        "allocate with an int attr",
        lambda w: w.system.vcm_phys_alloc("blocks", SZ_4K, 3),
        InvalidArgumentError,
        "not a PhysAttr",
    ),
    (
        "allocate with a bad memtype",
        lambda w: w.system.vcm_phys_alloc(7, SZ_4K, 0),
        InvalidArgumentError,
        "memtype 7",
    ),
    (
        "allocate listing a target twice",
        lambda w: w.system.vcm_phys_alloc(["ebi", "ebi"], SZ_4K, 0),
        InvalidArgumentError,
        "more than once",
    ),
    ("free backing memory", lambda w: w.system.vcm_phys_free(w.physmem), BusyError, "still backs"),
    (
        "free memory twice",
        lambda w: w.system.vcm_phys_free(w.dead_physmem),
        StateError,
        "already freed",
    ),
    # -- backing
    ("back twice", lambda w: w.system.vcm_back(w.backed, w.spare), StateError, "already backed"),
    (
        "back with too little memory",
        lambda w: w.system.vcm_back(w.unbacked, w.small),
        InvalidArgumentError,
        "less than",
    ),
    (
        "back with arguments swapped",
        lambda w: w.system.vcm_back(w.spare, w.unbacked),
        InvalidArgumentError,
        "is a PhysMem, not a Reservation",
    ),
    (
        "back with freed memory",
        lambda w: w.system.vcm_back(w.unbacked, w.dead_physmem),
        StateError,
        "already freed",
    ),
    (
        "back a freed reservation",
        lambda w: w.system.vcm_back(w.dead_res, w.spare),
        StateError,
        "already freed",
    ),
    (
        "unback an unbacked reservation",
        lambda w: w.system.vcm_unback(w.unbacked),
        StateError,
        "not backed",
    ),
    (
        "back one-to-one outside the region",
        lambda w: w.system.vcm_back(w.system.vcm_reserve(w.one, SZ_4K, Attr.RW), w.small),
        InvalidArgumentError,
        "outside one-to-one",
    ),
    (
        "back one-to-one discontiguously",
        lambda w: w.system.vcm_back(
            w.system.vcm_reserve(w.one, SZ_64K + SZ_4K, Attr.RW), w.scattered
        ),
        InvalidArgumentError,
        "physically contiguous",
    ),
    (
        "back uncached over kernel RAM",
        lambda w: w.system.vcm_back(
            w.system.vcm_reserve(w.vmm, SZ_4K, Attr.RW | Attr.NONCACHED),
            w.system.vcm_phys_alloc("ebi", SZ_4K, 0),
        ),
        AttributeConflictError,
        "linear map",
    ),
]


@pytest.mark.parametrize(
    ("misuse", "error", "rule"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_misuse_is_refused_and_changes_nothing(misuse: Misuse, error: type, rule: str) -> None:
    world = _world()
    # Some misuses create their argument first (a fresh reservation or allocation);
    # the snapshot is taken after that, just before the failing call, by wrapping it.
    calls: list[tuple[object, object]] = []
    system = world.system
    for name in (
        "vcm_create", "vcm_create_from_prebuilt", "vcm_free", "vcm_reserve", "vcm_unreserve",
        "vcm_assoc", "vcm_deassoc", "vcm_activate", "vcm_deactivate", "vcm_phys_alloc",
        "vcm_phys_free", "vcm_back", "vcm_unback",
    ):  # fmt: skip
        real = getattr(system, name)

        def spy(*args: object, _real: Any = real, **kwargs: object) -> object:
            before = system.snapshot()
            try:
                return _real(*args, **kwargs)
            except VcmmError as exc:
                calls.append((before, exc))
                raise

        setattr(system, name, spy)
    with pytest.raises(error, match=rule):
        misuse(world)
    before, exc = calls[-1]
    assert isinstance(exc, error)
    assert system.snapshot() == before


def test_one_to_one_overlap_is_refused(system) -> None:
    physmem = system.vcm_phys_alloc("contig", SZ_1M, PhysAttr.CONTIGUOUS)
    ((pa, _),) = physmem.chunks
    one = system.vcm_create(pa, SZ_1M)
    first = system.vcm_reserve(one, SZ_1M, Attr.RW)
    second = system.vcm_reserve(one, SZ_4K, Attr.RW)
    system.vcm_back(first, physmem)
    before = system.snapshot()
    with pytest.raises(StateError, match=f"already taken by {first.name}"):
        system.vcm_back(second, physmem)
    assert system.snapshot() == before


def _exhaust_table_memory(system: vcmm.System) -> None:
    tm = system.table_memory
    for size in (4096, 1024, 256, 64):
        while True:
            try:
                tm.alloc(size)
            except OutOfMemoryError:
                break


def test_table_memory_running_out_mid_backing_is_rolled_back(system) -> None:
    """1M + 4K: the section needs no new table, the small page needs a second-level
    table that cannot be allocated.  The section already written is taken back."""
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    dev = system.device("vcodec_a_mm1")
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    low = system.vcm_assoc(vcm, "vcodec_b_mm2", AssocAttr.SPLIT | AssocAttr.USE_LOW)
    system.vcm_activate(low)
    res = system.vcm_reserve(vcm, SZ_1M + SZ_4K, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M + SZ_4K, PhysAttr.NONE)
    _exhaust_table_memory(system)
    before = system.snapshot()
    with pytest.raises(OutOfMemoryError, match="table memory"):
        system.vcm_back(res, physmem)
    assert system.snapshot() == before
    assert vcm.table.walk(res.dev_addr).pa is None
    assert not dev.ctx.in_update  # the update bracket was closed


def test_messages_name_the_values(system) -> None:
    vcm = system.vcm_create(SZ_16M, SZ_16M)
    with pytest.raises(InvalidArgumentError) as err:
        system.vcm_reserve(vcm, 32 * SZ_1M, Attr.RW)
    assert "32M" in str(err.value) and vcm.name in str(err.value) and "16M" in str(err.value)
    with pytest.raises(AlignmentError) as err2:
        system.vcm_create(SZ_1K, SZ_16M)
    assert "0x400" in str(err2.value)
