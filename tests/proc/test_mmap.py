"""mmap/munmap and protections: real page-table entries under the process's ASID, and
the CPU's own SegmentationFault for any access outside a mapping or against it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_4K, AddressRange, FaultKind, MemType
from vcmm.errors import AlignmentError, InvalidArgumentError, SegmentationFault, StateError
from vcmm.proc import (
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_PRIVATE,
    MAP_SHARED,
    MMAP_WINDOW,
    PROT_NONE,
    PROT_READ,
    PROT_WRITE,
    MemFile,
    ProcessTable,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS


def test_anonymous_memory_is_zeroed_private_and_really_mapped(
    system: vcmm.System, table: ProcessTable
) -> None:
    # Leave garbage in the pages the next allocation will get (lowest address first).
    used = system.vcm_phys_alloc("ebi", 3 * SZ_4K)
    for chunk in used.chunk_ranges:
        system.memory.write(chunk.start, b"\xaa" * chunk.size)
    garbage = used.chunk_ranges[0].start
    system.vcm_phys_free(used)
    a, b = table.spawn("a"), table.spawn("b")
    va = a.mmap(3 * SZ_4K, PROT_READ | PROT_WRITE, ANON)
    vb = b.mmap(3 * SZ_4K, PROT_READ | PROT_WRITE, ANON)
    walk = system.cpu.address_space(a.asid).walk(va)
    assert walk.pa == garbage  # the same page, now zeroed
    assert a.read(va, 3 * SZ_4K) == bytes(3 * SZ_4K)
    a.write(va + 100, b"mine")
    assert b.read(vb + 100, 4) == bytes(4)
    # The page-table entry: user accessible, non-global (ASID-tagged), write-back.
    walk = system.cpu.address_space(a.asid).walk(va + 100)
    assert walk.attrs is not None and walk.attrs.user and not walk.attrs.global_
    assert walk.attrs.memtype is MemType.NORMAL_WB_WA
    assert walk.pa is not None
    assert system.cpu.read(system.cpu.phys_to_virt(walk.pa), 4) == b"mine"
    # ...and it is an edge of the mapping graph in the process's own address space.
    edges = [m for m in system.graph.all() if m.space == a.space]
    assert sum(m.phys.size for m in edges) == 3 * SZ_4K


def test_accesses_outside_or_against_the_protection_fault(
    table: ProcessTable, system: vcmm.System
) -> None:
    proc = table.spawn()
    ro = proc.mmap(SZ_4K, PROT_READ, ANON)
    none = proc.mmap(SZ_4K, PROT_NONE, ANON)
    with pytest.raises(SegmentationFault) as err:
        proc.write(ro, b"x")
    assert err.value.kind is FaultKind.PERMISSION and err.value.address == ro
    with pytest.raises(SegmentationFault) as err:
        proc.read(none, 1)
    assert err.value.kind is FaultKind.TRANSLATION
    with pytest.raises(SegmentationFault):
        proc.read(MMAP_WINDOW.end - SZ_4K, 1)  # nothing mapped there
    # An access running off the end of a mapping writes nothing at all.
    rw = proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, ANON, addr=0x7000_0000)
    with pytest.raises(SegmentationFault):
        proc.write(rw + SZ_4K - 2, b"abcd")
    assert proc.read(rw + SZ_4K - 2, 2) == bytes(2)
    # Kernel addresses are never reachable from user mode.
    with pytest.raises(SegmentationFault):
        proc.read(system.cpu.phys_to_virt(0x8000_0000), 1)


def test_partial_munmap_splits_the_mapping(system: vcmm.System, table: ProcessTable) -> None:
    proc = table.spawn()
    mem = MemFile(system, 4 * SZ_4K)
    fd = proc.open(mem)
    va = proc.mmap(4 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    for i in range(4):
        proc.write(va + i * SZ_4K, bytes([0x30 + i]) * 4)
    proc.munmap(va + SZ_4K, SZ_4K)
    left, right = proc.vmas
    assert (left.start, left.length, left.pgoff) == (va, SZ_4K, 0)
    assert (right.start, right.length, right.pgoff) == (va + 2 * SZ_4K, 2 * SZ_4K, 2)
    assert mem.mappings == 2
    with pytest.raises(SegmentationFault):
        proc.read(va + SZ_4K, 1)
    assert proc.read(va + 2 * SZ_4K, 4) == b"2222"
    assert proc.read(va + 3 * SZ_4K, 4) == b"3333"
    # Unmapping beyond and around what is mapped is fine (POSIX).
    proc.munmap(va - 16 * SZ_4K, 32 * SZ_4K)
    assert proc.vmas == [] and mem.mappings == 0
    assert not [m for m in system.graph.all() if m.space == proc.space]


def test_fixed_and_hinted_placement(table: ProcessTable, state: Callable) -> None:
    proc = table.spawn()
    at = 0x2000_0000
    assert proc.mmap(SZ_4K, PROT_READ, ANON | MAP_FIXED, addr=at) == at
    before = state()
    with pytest.raises(StateError, match="MAP_FIXED_NOREPLACE"):
        proc.mmap(2 * SZ_4K, PROT_READ, ANON | MAP_FIXED, addr=at - SZ_4K)
    with pytest.raises(AlignmentError):
        proc.mmap(SZ_4K, PROT_READ, ANON | MAP_FIXED, addr=at + 1)
    assert state() == before
    hinted = proc.mmap(SZ_4K, PROT_READ, ANON, addr=at)  # taken: placed elsewhere
    assert hinted != at and proc.vma_at(hinted) is not None


def test_bad_mmap_arguments_change_nothing(
    system: vcmm.System, table: ProcessTable, state: Callable
) -> None:
    proc = table.spawn()
    mem = MemFile(system, 2 * SZ_4K)
    fd = proc.open(mem)
    before = state()
    for call in (
        lambda: proc.mmap(0, PROT_READ, ANON),
        lambda: proc.mmap(SZ_4K, 8, ANON),
        lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED | MAP_PRIVATE, fd),
        lambda: proc.mmap(SZ_4K, PROT_READ, ANON, fd),
        lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED),
        lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, offset=100),
        lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, offset=2 * SZ_4K),  # past the end
        lambda: proc.munmap(1, SZ_4K),
    ):
        with pytest.raises((InvalidArgumentError, AlignmentError)):
            call()
    assert state() == before


def test_shared_file_seen_by_two_processes_at_different_offsets(
    system: vcmm.System, table: ProcessTable
) -> None:
    a, b = table.spawn(), table.spawn()
    mem = MemFile(system, 3 * SZ_4K, target="contig", memtype=MemType.NORMAL_NC)
    fa = a.open(mem)
    fb = a.send_fd(fa, b)
    va = a.mmap(3 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fa)
    vb = b.mmap(SZ_4K, PROT_READ, MAP_SHARED, fb, offset=2 * SZ_4K)
    a.write(va + 2 * SZ_4K + 5, b"hello")
    assert b.read(vb + 5, 5) == b"hello"
    # Carve-out memory: not shareable while one process maps it; once a second one
    # does, both aliases of the page they share are (the first was rewritten, PTE and
    # graph edge alike).  The two pages only a maps stay non-shareable: the rule is
    # per page.
    table_a = system.cpu.address_space(a.asid)
    walk_b = system.cpu.address_space(b.asid).walk(vb)
    assert walk_b.attrs is not None and walk_b.attrs.shareable
    walk_a = table_a.walk(va + 2 * SZ_4K)
    assert walk_a.attrs is not None and walk_a.attrs.shareable
    for page in (0, 1):
        alone = table_a.walk(va + page * SZ_4K)
        assert alone.attrs is not None and not alone.attrs.shareable
    chunk = mem.physmem.chunk_ranges[0]
    shared = AddressRange(chunk.start + 2 * SZ_4K, SZ_4K)
    assert {m.attrs.shareable for m in system.graph.of_chunk(shared)} == {True}
    assert {m.space for m in system.graph.of_chunk(shared)} == {a.space, b.space}
    alone_pages = AddressRange(chunk.start, 2 * SZ_4K)
    assert {m.attrs.shareable for m in system.graph.of_chunk(alone_pages)} == {False}
    assert a.read(va + 2 * SZ_4K + 5, 5) == b"hello"  # the rewrite kept the mapping
    # When b goes, a's alias of the shared page loses the bit again.
    b.munmap(vb, SZ_4K)
    walk_a = table_a.walk(va + 2 * SZ_4K)
    assert walk_a.attrs is not None and not walk_a.attrs.shareable
    assert {m.attrs.shareable for m in system.graph.of_chunk(chunk)} == {False}
    assert a.read(va + 2 * SZ_4K + 5, 5) == b"hello"


def test_a_lone_carve_out_mapping_is_not_shareable(
    system: vcmm.System, table: ProcessTable
) -> None:
    proc = table.spawn()
    mem = MemFile(system, SZ_4K, target="contig", memtype=MemType.NORMAL_NC)
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, proc.open(mem))
    walk = system.cpu.address_space(proc.asid).walk(va)
    assert walk.attrs is not None and not walk.attrs.shareable
    assert walk.attrs.memtype is MemType.NORMAL_NC


def test_exit_gives_the_memory_back(system: vcmm.System, table: ProcessTable) -> None:
    physmems = len(system.physmems)
    proc = table.spawn()
    proc.mmap(5 * SZ_4K, PROT_READ | PROT_WRITE, ANON)
    mem = MemFile(system, SZ_4K)
    proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, proc.open(mem))
    assert len(system.physmems) == physmems + 2
    proc.exit()
    assert len(system.physmems) == physmems and mem.freed
    assert not [m for m in system.graph.all() if m.space == proc.space]
