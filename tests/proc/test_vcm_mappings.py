"""A process address space is a VCM of the core: mmap is a reservation plus a backing,
munmap an unbacking, and the core keeps the shareable bit of user mappings in step with
devices' whoever maps first (the process model used to refuse such mappings)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm import SZ_2M, SZ_4K, MemType
from vcmm import DmaDirection as D
from vcmm.core import VcmKind
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi
from vcmm.errors import InvalidArgumentError, OutOfMemoryError, SegmentationFault
from vcmm.proc import (
    MAP_ANONYMOUS,
    MAP_PRIVATE,
    MAP_SHARED,
    PROT_READ,
    PROT_WRITE,
    File,
    MemFile,
    ProcessTable,
    Vma,
)

ANON = MAP_PRIVATE | MAP_ANONYMOUS
DEV = "vcodec_a_mm1"


def test_mappings_are_reservations_of_the_process_vcm(
    system: vcmm.System, table: ProcessTable
) -> None:
    proc = table.spawn("p")
    assert proc.vcm.kind is VcmKind.USER and proc.vcm.space == proc.space == f"pid{proc.pid}"
    assert proc.assoc.active and proc.assoc.device is system.cpu
    va = proc.mmap(3 * SZ_4K, PROT_READ | PROT_WRITE, ANON)
    (vma,) = proc.vmas
    assert vma.res is not None and vma.res in proc.vcm.reservations
    assert vma.res.addr == va and vma.res.physmem is vma.view
    edges = system.graph.of_reservation(vma.res.id)
    assert sum(m.phys.size for m in edges) == 3 * SZ_4K and {m.space for m in edges} == {proc.space}
    vcm = proc.vcm
    proc.exit()
    assert vcm.freed and vcm not in system.vcms and system.phys_views == []


def _pte_words(system: vcmm.System, proc: object, vas: list[int]) -> list[int]:
    """The level-3 descriptors of ``vas`` read from table memory (VMSAv8, 4 KiB)."""
    root = system.cpu.address_space(proc.asid).root  # type: ignore[attr-defined]
    out = []
    for va in vas:
        table = root
        for shift in (39, 30, 21, 12):
            desc = system.memory.read_u64(table + ((va >> shift) & 0x1FF) * 8)
            if shift == 12:
                out.append(int(desc))
            else:
                table = int(desc) & ((1 << 48) - 1) & ~0xFFF
    return out


def test_partial_munmap_leaves_the_entries_that_stay(
    system: vcmm.System, table: ProcessTable
) -> None:
    proc = table.spawn()
    mem = MemFile(system, 4 * SZ_4K, target="contig", memtype=MemType.NORMAL_NC)
    va = proc.mmap(4 * SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, proc.open(mem))
    kept = [va, va + 2 * SZ_4K, va + 3 * SZ_4K]
    words = _pte_words(system, proc, kept)
    proc.munmap(va + SZ_4K, SZ_4K)
    assert _pte_words(system, proc, kept) == words  # untouched, not unmapped and remapped
    left, right = proc.vmas
    assert (left.res.len, right.res.addr, right.res.len) == (SZ_4K, va + 2 * SZ_4K, 2 * SZ_4K)
    assert right.view is not None and right.view.parent is mem.physmem
    with pytest.raises(SegmentationFault):
        proc.read(va + SZ_4K, 1)
    proc.munmap(va, 4 * SZ_4K)
    assert proc.vmas == [] and mem.mappings == 0 and system.phys_views == []


def test_a_partial_munmap_that_runs_out_of_table_memory_changes_nothing(
    system: vcmm.System, table: ProcessTable, state: Callable
) -> None:
    """Unmapping one page of a 2 MiB block needs a level-3 table for the rest."""
    proc = table.spawn()
    va = proc.mmap(SZ_2M, PROT_READ | PROT_WRITE, ANON, addr=0x4000_0000)
    walk = system.cpu.address_space(proc.asid).walk(va)
    assert walk.page_size == SZ_2M  # one block
    proc.write(va + SZ_4K, b"still here")
    tm = system.table_memory
    for size in (4096, 1024, 256, 64):
        while True:
            try:
                tm.alloc(size)
            except OutOfMemoryError:
                break
    before = state()
    with pytest.raises(OutOfMemoryError, match="table memory"):
        proc.munmap(va + SZ_4K, SZ_4K)
    assert state() == before
    (vma,) = proc.vmas
    assert vma.range == vcmm.AddressRange(va, SZ_2M)
    assert proc.read(va + SZ_4K, 10) == b"still here"


@pytest.mark.parametrize("process_first", [True, False], ids=["process-first", "device-first"])
def test_a_process_and_a_device_share_a_carve_out_page_whoever_maps_first(
    system: vcmm.System, table: ProcessTable, process_first: bool
) -> None:
    """The refusal the process model used to make ("the core cannot rewrite it") is
    gone: the mapping is accepted and every alias's shareable bit agrees."""
    dma = DmaApi(system, debug="raise")
    proc = table.spawn()
    mem = MemFile(system, SZ_4K, target="contig", memtype=MemType.NORMAL_NC)
    page = mem.physmem.chunk_ranges[0].start
    fd = proc.open(mem)
    user_table = system.cpu.address_space(proc.asid)
    if process_first:
        va = proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
        alone = user_table.walk(va)
        assert alone.attrs is not None and not alone.attrs.shareable
        handle = dma.map_page(DEV, page, 0, SZ_4K, D.BIDIRECTIONAL)
    else:
        handle = dma.map_page(DEV, page, 0, SZ_4K, D.BIDIRECTIONAL)
        va = proc.mmap(SZ_4K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    assert handle != DMA_MAPPING_ERROR
    domain = dma.domain(DEV)
    assert domain is not None
    user = user_table.walk(va)
    dev = domain.vcm.table.walk(handle)
    assert user.pa == dev.pa == page
    assert user.attrs is not None and dev.attrs is not None
    assert user.attrs.shareable and dev.attrs.shareable
    assert user.attrs.memtype is dev.attrs.memtype is MemType.NORMAL_NC
    aliases = system.graph.aliases(mem.physmem.chunk_ranges[0])
    assert {m.space for m in aliases} == {proc.space, domain.vcm.space}
    assert all(m.attrs.shareable for m in aliases)
    # Data crosses, with the ownership hand-over the DMA API's checker insists on.
    dma.sync_single_for_cpu(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    proc.write(va + 8, b"user")
    dma.sync_single_for_device(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    assert system.device(DEV).read(handle + 8, 4) == b"user"
    # Either one going leaves the other alone and non-shareable.
    if process_first:
        dma.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
        after = user_table.walk(va)
        assert after.attrs is not None and not after.attrs.shareable
    else:
        proc.munmap(va, SZ_4K)
        after = domain.vcm.table.walk(handle)
        assert after.attrs is not None and not after.attrs.shareable
        dma.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    proc.exit()
    dma.close()


def test_a_hook_failing_after_it_populated_the_vma_undoes_it_all(
    system: vcmm.System, table: ProcessTable, state: Callable
) -> None:
    """The mapping the hook made goes, the descriptor's reference stays exactly one."""
    mem = MemFile(system, SZ_4K)

    class Flaky(File):
        def mmap(self, vma: Vma) -> None:
            mem.mmap(vma)
            raise InvalidArgumentError("the driver changed its mind")

    proc = table.spawn()
    flaky = Flaky("/dev/flaky")
    fd = proc.open(flaky)
    before = state()
    with pytest.raises(InvalidArgumentError, match="changed its mind"):
        proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert state() == before
    assert proc.file(fd).refs == 1 and flaky.open_count == 1 and mem.mappings == 0
