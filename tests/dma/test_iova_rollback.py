"""The IOVA allocator hook frees exactly while a transaction rolls back, and only then."""

from __future__ import annotations

import pytest

from vcmm.dma.domain import aperture_of
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.hw.pgtable import ARMV7S
from vcmm.mm.iova_policy import new_iova_domain
from vcmm.sizes import SZ_4K
from vcmm.undo import Transaction

#: The IOVA space of an ARMv7 short-descriptor domain (32-bit input).
APERTURE = aperture_of(ARMV7S)


class Boom(Exception):
    pass


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_a_free_made_by_a_roll_back_leaves_the_domain_as_before(policy: str) -> None:
    allocator = IovaVcmAllocator(new_iova_domain(policy, SZ_4K, APERTURE))
    allocator.free(allocator.alloc(SZ_4K))  # the range cache now holds one range
    before = allocator.snapshot()
    with pytest.raises(Boom), Transaction("map") as txn:
        addr = allocator.alloc(SZ_4K)  # a range cache hit
        txn.on_undo(allocator.free, addr)
        raise Boom
    assert allocator.snapshot() == before
    # An ordinary free of the same allocation parks it in the range cache instead, so
    # the counters (one more allocation, one more hit) differ from before.
    allocator.free(allocator.alloc(SZ_4K))
    assert allocator.snapshot() != before


def test_a_roll_back_freeing_an_older_allocation_falls_back_to_an_ordinary_free() -> None:
    allocator = IovaVcmAllocator(new_iova_domain("seed", SZ_4K, APERTURE))
    older = allocator.alloc(SZ_4K)
    with pytest.raises(Boom), Transaction("map") as txn:
        txn.on_undo(allocator.free, older)  # not the most recent: no exact undo
        allocator.alloc(SZ_4K)
        raise Boom
    assert allocator.find(older) is None  # freed all the same
