"""``vcm_phys_wrap_owned`` (issue 12: the lean DMA map's wrap in one core call) against
the two calls it stands for, ``vcm_phys_wrap(ranges, owner=..., of=vcm_phys_owners(
ranges))``; and the owner look-up's one-bisect case against the general walk.

Two identical systems get the same random ranges (pages of several allocations,
pages straddling two allocations, free pages of a target, page-table pages, memory
nobody owns, misaligned, empty and non-RAM ranges, repeats) and owners; the wrap,
its pins, the error (type and message) and every byte of state must agree.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_4K, SZ_64K, AddressRange, PhysAttr
from vcmm.core.objects import PhysMem
from vcmm.core.ownership import OwnerMap
from vcmm.core.physical import check_page_ranges

#: Where test ranges come from (a base below), the allocations most often.
KINDS = ("alloc_a",) * 4 + ("alloc_b",) * 3 + ("alloc_c",) * 3 + ("free", "tables", "nobody")
KINDS += ("nobody", "hole")


class World:
    """A system with three allocations (one of them in two pieces) and the bases the
    random ranges are drawn from."""

    def __init__(self) -> None:
        system = vcmm.System.default()
        self.system = system
        a = system.vcm_phys_alloc("ebi", 8 * SZ_4K, PhysAttr.CONTIGUOUS)
        b = system.vcm_phys_alloc("ebi", 8 * SZ_4K, PhysAttr.CONTIGUOUS)
        c = system.vcm_phys_alloc("blocks", SZ_64K, PhysAttr.blocks(SZ_64K))
        free = AddressRange(c.chunk_ranges[0].end, SZ_64K)  # the next block: free
        tables = system.spec.page_tables
        self.bases = {
            "alloc_a": a.chunk_ranges[0].start,
            "alloc_b": b.chunk_ranges[0].start,
            "alloc_c": c.chunk_ranges[0].start,
            "free": free.start,
            "tables": tables.end - 8 * SZ_4K,
            "nobody": tables.end,  # the first page after the window: nobody's
            "hole": 0xFFFF_0000,
        }

    def ranges(self, picks: list[tuple[str, int, int, int]]) -> list[object]:
        out: list[object] = []
        for kind, page, pages, skew in picks:
            start = self.bases[kind] + page * SZ_4K
            size = pages * SZ_4K
            if skew == 1:
                start += 0x200  # not page aligned
            elif skew == 2:
                size = 0  # empty
            elif skew == 3:
                out.append((start, size))  # not an AddressRange
                continue
            out.append(AddressRange(start, size))
        return out


PICKS = st.lists(
    st.tuples(
        st.sampled_from(KINDS),
        st.integers(0, 9),
        st.integers(1, 4),
        st.sampled_from((0,) * 20 + (1, 2, 3)),
    ),
    min_size=1,
    max_size=8,
)


def _outcome(call: object) -> tuple[object, PhysMem | None]:
    """What ``call`` gave (the wrap's fields) or raised, and the wrap."""
    try:
        wrap = call()  # type: ignore[operator]
    except vcmm.VcmmError as exc:
        return (type(exc).__name__, str(exc)), None
    pins = tuple((p.physmem.id, p.holder) for p in wrap.holds)
    return (wrap.id, wrap.chunk_ranges, wrap.size, wrap.owner, pins), wrap


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=PICKS, owner=st.sampled_from(("map_sg for dev", "", 7)))
def test_wrap_owned_is_owners_then_wrap(
    picks: list[tuple[str, int, int, int]], owner: object
) -> None:
    one, two = World(), World()
    ranges_one, ranges_two = one.ranges(picks), two.ranges(picks)
    sys1, sys2 = one.system, two.system
    got, wrap1 = _outcome(
        lambda: sys1.vcm_phys_wrap_owned(ranges_one, owner=owner),  # type: ignore[arg-type]
    )
    want, wrap2 = _outcome(
        lambda: sys2.vcm_phys_wrap(
            ranges_two,  # type: ignore[arg-type]
            owner=owner,  # type: ignore[arg-type]
            of=sys2.vcm_phys_owners(ranges_two),  # type: ignore[arg-type]
        ),
    )
    assert got == want
    assert sys1.snapshot() == sys2.snapshot()
    if wrap1 is not None and wrap2 is not None:  # freeing the wraps gives the pins back
        sys1.vcm_phys_free(wrap1)
        sys2.vcm_phys_free(wrap2)
        assert sys1.snapshot() == sys2.snapshot()
        assert all(not p.pins for p in sys1.physmems)


def _owners_by_walk(owners: OwnerMap, ranges: list[AddressRange]) -> tuple[object, ...]:
    """:meth:`OwnerMap.owners` without its one-bisect case: every range through
    ``allocations_in`` and ``_refuse_unowned`` (the general walk)."""
    found: dict[int, object] = {}
    for r in ranges:
        held = owners.allocations_in(r)
        owners._refuse_unowned("t", r, (part for part, _ in held))
        for _, physmem in held:
            found.setdefault(physmem.id, physmem)
    return tuple(found.values())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(picks=PICKS)
def test_owner_lookup_agrees_with_the_general_walk(picks: list[tuple[str, int, int, int]]) -> None:
    world = World()
    owners = world.system.vcmm.state.owners
    ranges = [r for r in world.ranges(picks) if isinstance(r, AddressRange)]
    if not ranges:
        return
    outcomes = []
    for lookup in (lambda: owners.owners("t", ranges), lambda: _owners_by_walk(owners, ranges)):
        try:
            outcomes.append(lookup())
        except vcmm.VcmmError as exc:
            outcomes.append((type(exc).__name__, str(exc)))
    assert outcomes[0] == outcomes[1]


def test_empty_and_checked_ranges_are_looked_up_alike() -> None:
    """An empty range inside an allocation holds nothing (the one-bisect case must not
    claim its allocation); whole pages are what the wrap's checks pass."""
    world = World()
    owners = world.system.vcmm.state.owners
    start = world.bases["alloc_a"]
    assert owners.owners("t", [AddressRange(start, 0)]) == ()
    pages = check_page_ranges("t", world.system.memory, [AddressRange(start, SZ_4K)])
    assert [p.target for p in owners.owners("t", pages)] == ["ebi"]
