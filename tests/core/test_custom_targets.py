"""Memory targets registered at run time (seed 000 L247-253, L4053): a caller's own
placement policy, with the ownership and rollback guarantees of the built-in targets.

The default platform's RAM is 0x80000000-0xC0000000; 0xB0000000 upward belongs to no
target, the table window or the linear map, so the tests carve their targets there.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_4K, SZ_64K, Attr, PhysAttr
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    OwnershipError,
    TargetPolicyError,
)
from vcmm.inject import fail_nth
from vcmm.mm.chunk import Chunk
from vcmm.ranges import AddressRange

from .policies import BottomUpCarveout, LyingPolicy

FREE_RAM = AddressRange(0xB000_0000, 0x100_0000)  # 16 MiB nobody owns


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


def test_allocations_follow_the_policy_and_go_back_to_it(system: vcmm.System) -> None:
    policy = BottomUpCarveout("carve", FREE_RAM)
    system.vcm_register_target(policy)
    a = system.vcm_phys_alloc("carve", 3 * SZ_4K, PhysAttr.NONE)
    b = system.vcm_phys_alloc("carve", SZ_64K, PhysAttr.align(SZ_64K))
    # bottom-up first fit: a at the base, b on the next 64K boundary
    assert a.chunk_ranges == (AddressRange(FREE_RAM.start, 3 * SZ_4K),)
    assert b.chunk_ranges == (AddressRange(FREE_RAM.start + SZ_64K, SZ_64K),)
    assert a.target == "carve" and policy.calls == 2
    # the owner map knows them: the free pages between are the target's, not nobody's
    assert system.vcm_phys_owners([AddressRange(FREE_RAM.start, SZ_4K)]) == (a,)
    with pytest.raises(OwnershipError, match="free memory of target 'carve'"):
        system.vcm_phys_wrap([AddressRange(FREE_RAM.start + 4 * SZ_4K, SZ_4K)], owner="x")
    system.vcm_phys_free(a)
    assert policy.taken == [(FREE_RAM.start + SZ_64K, SZ_64K)]
    c = system.vcm_phys_alloc("carve", SZ_4K, PhysAttr.NONE)
    assert c.chunk_ranges[0].start == FREE_RAM.start  # the hole a left is reused


def test_a_registered_target_backs_mappings_and_is_pinned_when_exported(
    system: vcmm.System,
) -> None:
    from vcmm.share import VcmExporter

    system.vcm_register_target(BottomUpCarveout("carve", FREE_RAM))
    buf = VcmExporter(system).allocate(SZ_64K, target="carve")
    physmem = buf.priv.physmem
    assert physmem.target == "carve"
    with pytest.raises(BusyError, match="pinned by dma-buf"):
        system.vcm_phys_free(physmem)
    att = buf.attach("vcodec_b_mm2")
    sg = att.map(vcmm.DmaDirection.BIDIRECTIONAL)
    system.device("vcodec_b_mm2").write(sg.dma_address, b"carved")
    assert system.memory.read(FREE_RAM.start, 6) == b"carved"
    att.unmap(sg)
    att.detach()
    buf.put()
    assert system.vcm_unregister_target("carve").free_bytes == FREE_RAM.size


def test_priority_places_it_in_the_default_order(system: vcmm.System) -> None:
    before = system.target_priority
    system.vcm_register_target(BottomUpCarveout("first", FREE_RAM), priority=0)
    assert system.target_priority == ("first", *before)
    assert system.vcm_phys_alloc(None, SZ_4K, PhysAttr.NONE).target == "first"
    second = BottomUpCarveout("none", AddressRange(0xB100_0000, SZ_64K))
    system.vcm_register_target(second)  # priority None: only by name
    assert "none" not in system.target_priority


def test_a_secure_target_is_mapped_only_secure(system: vcmm.System) -> None:
    system.vcm_register_target(BottomUpCarveout("secure", FREE_RAM), secure=True)
    mem = system.vcm_phys_alloc("secure", SZ_64K, PhysAttr.NONE)
    vcm = system.vcm_create(0x1000_0000, 0x100_0000)
    plain = system.vcm_reserve(vcm, SZ_64K, Attr.RW)
    snap = system.snapshot()
    with pytest.raises(OwnershipError, match=r"secure target 'secure'.*non-secure"):
        system.vcm_back(plain, mem)
    assert system.snapshot() == snap
    view = system.vcm_phys_view(mem, SZ_4K, SZ_4K)  # a view of it is refused the same way
    small = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    with pytest.raises(OwnershipError, match="secure target"):
        system.vcm_back(small, view)
    secure = system.vcm_reserve(vcm, SZ_64K, Attr.RW | Attr.SECURE)
    system.vcm_back(secure, mem)
    assert not system.graph.of_reservation(secure.id)[0].attrs.ns  # NS=0


@pytest.mark.parametrize(
    ("region", "error", "rule"),
    [
        (AddressRange(0xA000_0000, SZ_64K), OwnershipError, "overlaps target 'blocks'"),
        (AddressRange(0x9000_0000, SZ_64K), OwnershipError, "page-table window"),
        (AddressRange(0x8000_0000, SZ_64K), OwnershipError, "overlaps target 'ebi'"),
        (AddressRange(0xC000_0000, SZ_64K), InvalidArgumentError, "not inside one memory"),
        (AddressRange(0xBFFF_F000, 2 * SZ_4K), InvalidArgumentError, "not inside one memory"),
        (AddressRange(0xB000_0800, SZ_4K), AlignmentError, "4K page boundary"),
    ],
)
def test_regions_must_be_ram_nobody_owns(
    system: vcmm.System, region: AddressRange, error: type[Exception], rule: str
) -> None:
    snap, order = system.snapshot(), system.target_priority
    with pytest.raises(error, match=rule):
        system.vcm_register_target(BottomUpCarveout("bad", region), priority=0)
    assert system.snapshot() == snap and system.target_priority == order
    assert "bad" not in system.targets


def test_memory_already_mapped_or_wrapped_cannot_become_a_target(system: vcmm.System) -> None:
    page = AddressRange(FREE_RAM.start + SZ_64K, SZ_4K)
    wrap = system.vcm_phys_wrap([page], owner="a driver's carve-out")
    with pytest.raises(OwnershipError, match="holds pages of"):
        system.vcm_register_target(BottomUpCarveout("over", FREE_RAM))
    vcm = system.vcm_create(0x1000_0000, 0x100_0000)
    res = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    system.vcm_back(res, wrap)
    with pytest.raises(OwnershipError, match="is mapped already"):
        system.vcm_register_target(BottomUpCarveout("over", FREE_RAM))
    assert "over" not in system.targets


def test_reserved_regions_are_refused() -> None:
    from dataclasses import replace

    from vcmm.platform import load_default
    from vcmm.platform.reserved import ReservedSpec

    spec = load_default()
    fw = ReservedSpec(name="firmware", range=AddressRange(0xB000_0000, SZ_64K), no_map=True)
    system = vcmm.System(replace(spec, reserved=(fw,)))
    with pytest.raises(OwnershipError, match="reserved-memory region 'firmware'"):
        system.vcm_register_target(BottomUpCarveout("fw", FREE_RAM))


def test_misuse_of_register_and_unregister(system: vcmm.System) -> None:
    snap = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="does not implement MemoryTarget"):
        system.vcm_register_target(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="already exists"):
        system.vcm_register_target(BottomUpCarveout("ebi", FREE_RAM))
    with pytest.raises(InvalidArgumentError, match="without '/'"):
        system.vcm_register_target(BottomUpCarveout("a/b", FREE_RAM))
    with pytest.raises(InvalidArgumentError, match="priority 9"):
        system.vcm_register_target(BottomUpCarveout("p", FREE_RAM), priority=9)
    with pytest.raises(InvalidArgumentError, match="secure="):
        system.vcm_register_target(BottomUpCarveout("p", FREE_RAM), secure=1)  # type: ignore[arg-type]
    used = BottomUpCarveout("used", FREE_RAM)
    used.allocate(SZ_4K)
    with pytest.raises(InvalidArgumentError, match="registered empty"):
        system.vcm_register_target(used)
    linear = BottomUpCarveout("lin", FREE_RAM)
    linear.linear_mapped = True  # type: ignore[misc]
    with pytest.raises(OwnershipError, match="linear_mapped"):
        system.vcm_register_target(linear)
    with pytest.raises(InvalidArgumentError, match="platform's targets"):
        system.vcm_unregister_target("ebi")
    with pytest.raises(NotFoundError, match="no memory target named 'nope'"):
        system.vcm_unregister_target("nope")
    assert system.snapshot() == snap


def test_unregister_refuses_while_allocations_live(system: vcmm.System) -> None:
    policy = BottomUpCarveout("carve", FREE_RAM)
    system.vcm_register_target(policy, priority=1)
    mem = system.vcm_phys_alloc("carve", SZ_4K, PhysAttr.NONE)
    with pytest.raises(BusyError, match=f"live allocations {mem.name}"):
        system.vcm_unregister_target("carve")
    assert "carve" in system.targets
    system.vcm_phys_free(mem)
    assert system.vcm_unregister_target("carve") is policy
    assert "carve" not in system.targets and "carve" not in system.target_priority
    # its RAM is nobody's again: a driver may wrap it, and it can be registered again
    system.vcm_phys_free(system.vcm_phys_wrap([FREE_RAM], owner="driver"))
    system.vcm_register_target(BottomUpCarveout("carve", FREE_RAM))


@pytest.mark.parametrize(
    ("answer", "rule"),
    [
        ([Chunk(0xA000_0000, SZ_4K)], "not inside one of its regions"),
        ([Chunk(0xB000_0000, 0x800)], "not a multiple of 4K"),
        ([Chunk(0xB000_1000, SZ_4K)], "aligned to 64K"),
        ([Chunk(0xB000_0000, SZ_4K)], "4K for a request of 64K"),
        (
            [Chunk(0xB000_0000, SZ_64K), Chunk(0xB001_0000, SZ_4K)],
            "2 chunks for a contiguous request",
        ),
        ([Chunk(0xB000_0000, 2 * SZ_64K)], None),  # wastes nothing a chunk could: allowed
        ([Chunk(0xB000_0000, SZ_64K), Chunk(0xB002_0000, SZ_64K)], "a chunk the 64K do not need"),
        ("nonsense", "not a non-empty list of Chunk"),
    ],
)
def test_a_policy_that_breaks_the_contract_is_refused(
    system: vcmm.System, answer: object, rule: str | None
) -> None:
    policy = LyingPolicy("liar", FREE_RAM)
    system.vcm_register_target(policy)
    policy.answer = answer  # type: ignore[assignment]
    snap = system.snapshot()
    contiguous = isinstance(answer, list) and len(answer) == 2 and "contiguous" in (rule or "")
    attr = PhysAttr.align(SZ_64K) | (PhysAttr.CONTIGUOUS if contiguous else PhysAttr.NONE)
    if rule is None:
        assert system.vcm_phys_alloc("liar", SZ_64K, attr).size == 2 * SZ_64K
        return
    with pytest.raises(TargetPolicyError, match=rule) as err:
        system.vcm_phys_alloc("liar", SZ_64K, attr)
    if isinstance(answer, list):
        assert "the chunks went back to the policy" in str(err.value)
    assert system.snapshot() == snap and policy.taken == []


def test_a_policy_may_not_hand_out_memory_twice(system: vcmm.System) -> None:
    policy = LyingPolicy("liar", FREE_RAM)
    system.vcm_register_target(policy)
    first = system.vcm_phys_alloc("liar", SZ_4K, PhysAttr.NONE)
    policy.answer = [Chunk(FREE_RAM.start, SZ_4K)]  # the same page again
    snap = system.snapshot()
    with pytest.raises(TargetPolicyError, match="overlaps memory a live allocation holds"):
        system.vcm_phys_alloc("liar", SZ_4K, PhysAttr.NONE)
    assert system.snapshot() == snap and first.target == "liar"
    policy.answer = [Chunk(0xB001_0000, SZ_4K), Chunk(0xB001_0000, SZ_4K)]
    with pytest.raises(TargetPolicyError, match="overlap"):
        system.vcm_phys_alloc("liar", 2 * SZ_4K, PhysAttr.NONE)


def test_a_crashing_policy_is_refused_and_out_of_memory_falls_through(
    system: vcmm.System,
) -> None:
    policy = LyingPolicy("liar", FREE_RAM)
    system.vcm_register_target(policy)
    policy.crash = KeyError("bug")
    snap = system.snapshot()
    with pytest.raises(TargetPolicyError, match="allocate raised KeyError"):
        system.vcm_phys_alloc("liar", SZ_4K, PhysAttr.NONE)
    assert system.snapshot() == snap
    policy.crash = OutOfMemoryError("liar is full")
    got = system.vcm_phys_alloc(["liar", "contig"], SZ_4K, PhysAttr.NONE)
    assert got.target == "contig"  # the next target in the caller's order served it


def test_fault_injection_covers_a_registered_target(system: vcmm.System) -> None:
    policy = BottomUpCarveout("carve", FREE_RAM)
    system.vcm_register_target(policy)
    snap = system.snapshot()
    with fail_nth(1) as injector, pytest.raises(OutOfMemoryError):
        system.vcm_phys_alloc("carve", SZ_4K, PhysAttr.NONE)
    assert injector.fired and policy.calls == 0
    assert system.snapshot() == snap


def test_a_collection_does_not_place_plain_buffers_in_a_secure_target(
    system: vcmm.System,
) -> None:
    from vcmm.share.collection import BufferCollection
    from vcmm.share.constraints import Constraints

    # first in the priority order and big enough: chosen, were it not secure
    system.vcm_register_target(BottomUpCarveout("secret", FREE_RAM), priority=0, secure=True)
    frames = BufferCollection(system, "frames", ["vcodec_b_mm2", "mdp"])
    frames.join("vcodec_b_mm2", Constraints(camping=1, min_size=SZ_64K))
    frames.join("mdp", Constraints(camping=1))
    assert frames.placement.target != "secret"
    assert any("secret: a secure target" in r for r in frames.placement.reasons)
    frames.close()
