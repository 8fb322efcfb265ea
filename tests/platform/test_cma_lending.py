"""CMA lending: a ``reusable`` region's free pages are lent to the kernel's system
allocator, and a ``cma`` allocation takes them back, migrating movable borrowers and
refusing windows that pinned ones sit in (Linux's ``alloc_contig_range``)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vcmm import SZ_1M, Attr, PhysAttr, System
from vcmm.errors import OutOfMemoryError
from vcmm.inject import fail_nth
from vcmm.ranges import AddressRange

from .mixed_board import mixed_tree

MakeDtb = Callable[..., str]
CMA = "cma@a0000000"
AREA = AddressRange(0xA000_0000, 8 * SZ_1M)  # the board's reusable region


@pytest.fixture
def system(make_dtb: MakeDtb) -> System:
    return System.from_file(make_dtb(mixed_tree()))


def exhaust_kernel(system: System) -> object:
    """Take every page the kernel's system RAM target has of its own."""
    kernel = system.memory_roles.kernel
    return system.vcm_phys_alloc(kernel, system.target(kernel).free_bytes, PhysAttr.NONE)


def test_free_cma_pages_are_lent_when_system_ram_runs_out(system: System) -> None:
    kernel, area = system.memory_roles.kernel, system.target(CMA)
    before = system.vcm_phys_alloc(kernel, SZ_1M, PhysAttr.NONE)
    assert all(AddressRange(pa, n) not in AREA for pa, n in before.chunks)  # own RAM first
    big = exhaust_kernel(system)
    loan = system.vcm_phys_alloc(kernel, 3 * SZ_1M, PhysAttr.NONE)
    # from the top of the area down, so cma allocations (first fit) meet it last
    assert loan.chunks == [(AREA.end - 3 * SZ_1M, 3 * SZ_1M)] and loan.target == kernel
    assert area.lent_bytes == 3 * SZ_1M and area.free_bytes == 5 * SZ_1M
    # contiguous (kernel) allocations are not movable: Linux never serves them from CMA
    with pytest.raises(OutOfMemoryError, match="cannot allocate"):
        system.vcm_phys_alloc(kernel, SZ_1M, PhysAttr.CONTIGUOUS)
    system.vcm_phys_free(loan)
    assert area.lent_bytes == 0 and area.free_bytes == AREA.size
    system.vcm_phys_free(big)


def test_a_cma_allocation_migrates_a_movable_borrower(system: System) -> None:
    kernel, area = system.memory_roles.kernel, system.target(CMA)
    big = exhaust_kernel(system)
    loan = system.vcm_phys_alloc(kernel, 3 * SZ_1M, PhysAttr.NONE)
    ((old, _),) = loan.chunks
    system.memory.write(old + 0x1234, b"borrowed bytes")
    system.vcm_phys_free(big)  # room for the migration target
    whole = system.vcm_phys_alloc(CMA, AREA.size, PhysAttr.CONTIGUOUS)
    assert whole.chunks == [(AREA.start, AREA.size)]
    ((new, size),) = loan.chunks
    assert size == 3 * SZ_1M and AddressRange(new, size) in system.spec.target(kernel).range
    assert system.memory.read(new + 0x1234, 14) == b"borrowed bytes"
    assert area.lent_bytes == 0
    system.vcm_phys_free(loan)  # the handle still works: its pages are the system's now
    system.vcm_phys_free(whole)
    assert area.free_bytes == AREA.size


def test_a_pinned_borrower_is_not_moved_and_its_window_is_refused(system: System) -> None:
    kernel = system.memory_roles.kernel
    big = exhaust_kernel(system)
    loan = system.vcm_phys_alloc(kernel, 3 * SZ_1M, PhysAttr.NONE)
    system.vcm_phys_free(big)
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, system.cpu))
    res = system.vcm_reserve(vmm, 3 * SZ_1M, Attr.READ | Attr.WRITE)
    system.vcm_back(res, loan)  # mapped: its address is in the kernel's table now
    before = system.snapshot()
    with pytest.raises(OutOfMemoryError, match=rf"cannot move: {loan.name}"):
        system.vcm_phys_alloc(CMA, AREA.size, PhysAttr.CONTIGUOUS)
    assert system.snapshot() == before
    low = system.vcm_phys_alloc(CMA, 5 * SZ_1M, PhysAttr.CONTIGUOUS)  # the window below it
    assert low.chunks == [(AREA.start, 5 * SZ_1M)]


def test_no_room_to_migrate_changes_nothing(system: System) -> None:
    kernel = system.memory_roles.kernel
    exhaust_kernel(system)
    system.vcm_phys_alloc(kernel, 2 * SZ_1M, PhysAttr.NONE)
    system.vcm_phys_alloc(kernel, 1 * SZ_1M, PhysAttr.NONE)
    before = system.snapshot()
    with pytest.raises(OutOfMemoryError, match="has no 1M of its own to move"):
        system.vcm_phys_alloc(CMA, AREA.size, PhysAttr.CONTIGUOUS)
    assert system.snapshot() == before


def test_every_failing_allocation_of_a_reclaim_changes_nothing(make_dtb: MakeDtb) -> None:
    board = make_dtb(mixed_tree())
    failed = 0
    for n in range(1, 20):  # a fresh board each time: an injected failure may be recovered
        system = System.from_file(board)
        kernel = system.memory_roles.kernel
        big = exhaust_kernel(system)
        loans = [system.vcm_phys_alloc(kernel, SZ_1M, PhysAttr.NONE) for _ in range(3)]
        system.vcm_phys_free(big)
        before = system.snapshot()
        with fail_nth(n) as injector:
            try:
                whole = system.vcm_phys_alloc(CMA, AREA.size, PhysAttr.CONTIGUOUS)
            except OutOfMemoryError:
                assert injector.fired
                assert system.snapshot() == before
                failed += 1
                continue
        assert whole.chunks == [(AREA.start, AREA.size)]
        assert all(AddressRange(pa, s) not in AREA for p in loans for pa, s in p.chunks)
        if not injector.fired:
            break
    else:
        raise AssertionError("the reclaim never ran without an injected failure")
    assert failed >= 3  # the three replacements (and the window) each made to fail
