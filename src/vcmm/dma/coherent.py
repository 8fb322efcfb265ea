"""Coherent allocations: ``dma_alloc_coherent``/``dma_free_coherent``,
``dma_mmap_coherent`` and ``dma_get_sgtable``.

Where the pages come from and how the CPU sees them (docs/DMA.md, "the coherent
alias"):

====================  ===========================================  =====================
device                pages                                        CPU alias
====================  ===========================================  =====================
coherent              kernel RAM (the platform's kernel target),  write-back: a vmalloc
                      largest order first with fallback; one      remap (or the linear
                      block if contiguous is needed (direct       map for one block)
                      device, atomic, FORCE_CONTIGUOUS)
non-coherent          the DMA coherent pool (a carve-out outside   non-cacheable vmalloc
                      the linear map), largest order first          remap
non-coherent atomic   the atomic pool                              its premapped NC alias
with a memory-region  that region (one contiguous block;           non-cacheable vmalloc
                      :mod:`vcmm.dma.regionpool`)                  remap
====================  ===========================================  =====================

Behind an IOMMU the pages are mapped contiguously at an IOVA below the device's
``coherent_dma_mask``; a direct device gets one physically contiguous block at its bus
address.  The buffer is zeroed.  The steps that can fail run first, in one
transaction that takes them back newest first (each one recorded as soon as it
succeeded: a pool allocation and its view are two steps); zeroing runs last, so a
failed allocation leaves memory untouched too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection, MemType
from vcmm.checks import check_int
from vcmm.core.flags import Attr, PhysAttr
from vcmm.core.objects import PhysMem
from vcmm.dma.attrs import DmaAttr, check_attrs, reservation_attr
from vcmm.dma.backend import map_direct, map_iommu
from vcmm.dma.callsite import CallSite, capture
from vcmm.dma.debug import ReportKind
from vcmm.dma.records import CoherentBuffer, DevPiece, DmaMapping, MapKind
from vcmm.dma.sg import ScatterList
from vcmm.dma.state import DeviceEntry, DmaState
from vcmm.errors import BusyError, InvalidArgumentError
from vcmm.mm.chunk import Chunk
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, align_up, format_size
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.proc.vma import Vma


def alloc_coherent(
    state: DmaState, dev: object, size: int, *, atomic: bool = False, attrs: int = 0
) -> CoherentBuffer:
    """A zeroed buffer the CPU and ``dev`` both see without cache maintenance."""
    call = "alloc_coherent"
    entry = state.entry(call, dev)
    state.check_usable(call, entry)
    size = check_int(call, "size", size, minimum=1)
    if not isinstance(atomic, bool):
        raise InvalidArgumentError(f"{call}: atomic={atomic!r} is not a bool")
    flags = check_attrs(call, attrs)
    site = capture(call, "{}, size={:#x}{}", entry.name, size, ", atomic" if atomic else "")
    system = state.system
    asize = align_up(size, SZ_4K)
    own = state.regions.pool_for(entry.name) is not None  # its memory-region serves it
    coherent = entry.params.coherent and not own
    memtype = MemType.NORMAL_WB_WA if coherent else MemType.NORMAL_NC
    contiguous = own or atomic or entry.domain is None or bool(flags & DmaAttr.FORCE_CONTIGUOUS)
    cpu_res = None
    cache_flag = Attr.NONCACHED if memtype is MemType.NORMAL_NC else Attr.WB_WA
    with Transaction(call, boundary=True) as txn:
        pages = _take_pages(
            call, state, entry, asize, coherent, atomic and not own, contiguous, txn
        )
        physmem = pages.physmem
        chunks = tuple(physmem.chunk_ranges)
        if pages.cpu_addr is not None:  # the atomic pool's premapped alias
            cpu_addr = pages.cpu_addr
        elif coherent and contiguous and (atomic or entry.domain is None) and state.kernel_linear:
            cpu_addr = system.cpu.phys_to_virt(chunks[0].start)
        else:
            cpu_res = system.vcm_reserve(state.vmm, asize, Attr.RW | cache_flag)
            txn.on_undo(system.vcm_unreserve, cpu_res)
            system.vcm_back(cpu_res, physmem)
            txn.on_undo(system.vcm_unback, cpu_res)
            cpu_addr = cpu_res.dev_addr  # a kernel virtual address
        rec = _map_device(state, entry, chunks, physmem, memtype, site)
    for c in chunks:
        system.cpu.cache.invalidate(c.start, c.size)
        system.memory.fill(c.start, c.size, 0)
    buf = CoherentBuffer(
        state.new_id(),
        entry.device,
        size,
        cpu_addr,
        rec.dma_addr,
        memtype,
        chunks,
        atomic,
        pages.source,
        rec,
        site,
        cpu_res=cpu_res,
        physmem=physmem,
        pool_chunks=pages.pool_chunks,
        atomic_pa=pages.atomic_pa,
    )
    state.add(rec)
    state.buffers[cpu_addr] = buf
    return buf


@dataclass(frozen=True, slots=True)
class _Pages:
    """Where a coherent buffer's pages came from (what ``free_coherent`` gives back)."""

    physmem: PhysMem  # the allocation, or the view of a pool, its mappings are backed with
    source: str
    pool_chunks: list[Chunk] | None = None
    atomic_pa: int | None = None
    cpu_addr: int | None = None  # the atomic pool's premapped alias


def _take_pages(
    call: str,
    state: DmaState,
    entry: DeviceEntry,
    size: int,
    coherent: bool,
    atomic: bool,
    contiguous: bool,
    txn: Transaction,
) -> _Pages:
    """Take the pages of a coherent buffer, recording in ``txn`` how to give back
    each step right after it succeeded (the pool allocation *and* its view), so a
    failure at any later step leaves the pools as they were."""
    system = state.system
    if coherent:
        physmem = system.vcm_phys_alloc(
            state.kernel_target, size, PhysAttr.CONTIGUOUS if contiguous else PhysAttr.NONE
        )
        txn.on_undo(system.vcm_phys_free, physmem)
        return _Pages(physmem, state.kernel_target)
    if atomic:
        atomic_pool = state.need_pool(call, entry, "atomic")
        atomic_pa, cpu_addr = atomic_pool.alloc(size)
        txn.on_undo(atomic_pool.free, atomic_pa)
        physmem = atomic_pool.view(atomic_pa, size)
        txn.on_undo(system.vcm_phys_free, physmem)
        return _Pages(physmem, "atomic pool", atomic_pa=atomic_pa, cpu_addr=cpu_addr)
    pool = state.need_pool(call, entry, "coherent")
    pool_chunks = pool.alloc(size, contiguous=contiguous)
    txn.on_undo(pool.free, pool_chunks)
    physmem = pool.view(pool_chunks)
    txn.on_undo(system.vcm_phys_free, physmem)
    own = state.regions.users.get(entry.name)
    source = "coherent pool" if own is None else f"memory-region {own}"
    return _Pages(physmem, source, pool_chunks=pool_chunks)


def _map_device(
    state: DmaState,
    entry: DeviceEntry,
    chunks: tuple[AddressRange, ...],
    backing: PhysMem,
    memtype: MemType,
    site: CallSite,
) -> DmaMapping:
    """The device side of a coherent buffer: IOVA below ``coherent_dma_mask``, or the
    bus address of the one contiguous block for a direct device."""
    system = state.system
    attr = reservation_attr(DmaDirection.BIDIRECTIONAL, memtype)
    owner = f"alloc_coherent for {entry.name}"
    total = sum(c.size for c in chunks)
    limit = entry.params.coherent_mask
    if entry.domain is not None:
        base, teardown = map_iommu(system, entry.domain, list(chunks), attr, limit, owner, backing)
        pieces, pos = [], base
        for c in chunks:
            pieces.append(DevPiece(pos, c.start, c.size))
            pos += c.size
        dev_range = entry.domain.allocator.find(base)
        assert dev_range is not None
        handle = base
    else:
        span = AddressRange(chunks[0].start, total)
        handle, teardown = map_direct(system, entry.device, span, attr, limit, owner, backing)
        pieces = [DevPiece(handle, span.start, span.size)]
        dev_range = AddressRange(handle, total)
    return DmaMapping(
        state.new_id(),
        MapKind.COHERENT,
        entry.device,
        entry.domain,
        handle,
        total,
        DmaDirection.BIDIRECTIONAL,
        chunks,
        tuple(pieces),
        dev_range,
        [teardown],
        site,
    )


def _buffer(state: DmaState, call: str, entry: DeviceEntry, cpu_addr: object) -> CoherentBuffer:
    addr = check_int(call, "cpu_addr", cpu_addr)
    buf = state.buffers.get(addr)
    if buf is not None:
        if buf.device is not entry.device:
            raise state.fatal(
                ReportKind.FREE_MISMATCH,
                entry,
                f"{call}: the coherent buffer at {addr:#x} belongs to {buf.device.name}, not "
                f"{entry.name}",
                dma_addr=buf.dma_handle,
                rec=buf.mapping,
            )
        return buf
    old = next((b for b in reversed(state.freed) if b.cpu_addr == addr), None)
    detail = (
        f"it was already freed by {old.freed_by} (allocated by {old.created_by})"
        if old is not None
        else "no coherent buffer starts there"
    )
    raise state.fatal(
        ReportKind.FREE_NOT_ALLOCATED,
        entry,
        f"{call} of cpu_addr {addr:#x}: {detail}",
        rec=old.mapping if old is not None else None,
    )


def free_coherent(state: DmaState, dev: object, size: int, cpu_addr: int, dma_handle: int) -> None:
    """Give back a coherent buffer; refused while a process still maps it."""
    call = "free_coherent"
    entry = state.entry(call, dev)
    size = check_int(call, "size", size, minimum=1)
    handle = check_int(call, "dma_handle", dma_handle)
    cpu_addr = check_int(call, "cpu_addr", cpu_addr)
    site = capture(call, "{}, size={:#x}, {:#x}, {:#x}", entry.name, size, cpu_addr, handle)
    buf = _buffer(state, call, entry, cpu_addr)
    if buf.user_maps:
        state.fatal(
            ReportKind.FREE_WHILE_MAPPED,
            entry,
            f"{call} of {buf!r}: {buf.user_maps} user mapping(s) still map it",
            dma_addr=buf.dma_handle,
            rec=buf.mapping,
            call=site,
        )
        owners = ", ".join(f"{v.process.name}[{v.process.pid}] {v.range}" for v in buf.vmas)
        raise BusyError(
            f"{call}: {buf!r} is still mapped into user space ({owners}); the memory must "
            "outlive every user mapping (munmap first)"
        )
    if buf.physmem is not None and buf.physmem.pins:
        holders = ", ".join(p.holder for p in buf.physmem.pins)
        raise BusyError(
            f"{call}: {buf!r} is pinned by {holders} (its memory was shared); release that first"
        )
    if handle != buf.dma_handle:
        state.misuse(
            ReportKind.FREE_MISMATCH,
            entry,
            f"{call} of {buf!r}: device driver frees DMA memory with a different handle "
            f"[allocated {buf.dma_handle:#x}] [freed {handle:#x}]",
            dma_addr=handle,
            rec=buf.mapping,
            call=site,
        )
    if align_up(size, SZ_4K) != align_up(buf.size, SZ_4K):
        state.misuse(
            ReportKind.FREE_MISMATCH,
            entry,
            f"{call} of {buf!r}: device driver frees DMA memory with different size "
            f"[allocated {buf.size} bytes] [freed {size} bytes]",
            dma_addr=buf.dma_handle,
            size=size,
            rec=buf.mapping,
            call=site,
        )
    system = state.system
    for teardown in reversed(buf.mapping.teardown):
        teardown.release(system)
    state.remove(buf.mapping, site)
    if buf.cpu_res is not None:
        system.vcm_unback(buf.cpu_res)
        system.vcm_unreserve(buf.cpu_res)
    if buf.physmem is not None:
        system.vcm_phys_free(buf.physmem)
    if buf.pool_chunks is not None:
        state.need_pool(call, entry, "coherent").free(buf.pool_chunks)
    if buf.atomic_pa is not None:
        state.need_pool(call, entry, "atomic").free(buf.atomic_pa)
    del state.buffers[buf.cpu_addr]
    buf.freed_by = site
    state.freed.append(buf)


def mmap_coherent(
    state: DmaState, dev: object, vma: Vma, cpu_addr: int, dma_handle: int, size: int
) -> None:
    """Map a coherent buffer into a process: the driver's ``mmap`` calls this with the
    new VMA.  ``vma.pgoff`` selects the first page; what does not fit is refused."""
    call = "mmap_coherent"
    entry = state.entry(call, dev)
    size = check_int(call, "size", size, minimum=1)
    handle = check_int(call, "dma_handle", dma_handle)
    buf = _buffer(state, call, entry, cpu_addr)
    if handle != buf.dma_handle:
        raise InvalidArgumentError(
            f"{call}: dma_handle {handle:#x} is not {buf!r}'s handle {buf.dma_handle:#x}"
        )
    if size > align_up(buf.size, SZ_4K):
        raise InvalidArgumentError(f"{call}: size {format_size(size)} is larger than {buf!r}")
    for name in ("pgoff", "npages", "remap"):
        if not hasattr(vma, name):
            raise InvalidArgumentError(f"{call}: {vma!r} is not a VMA (no {name})")
    npages = -(-size // SZ_4K)
    first, count = vma.pgoff, vma.npages
    if first >= npages or count > npages - first:
        raise InvalidArgumentError(
            f"{call}: the VMA wants pages {first}..{first + count - 1} of a "
            f"{npages}-page buffer; it does not fit (ENXIO)"
        )
    assert buf.physmem is not None  # every coherent buffer keeps what backs it
    vma.remap(buf.physmem, buf.memtype, buf, offset=first * SZ_4K)


def get_sgtable(
    state: DmaState, dev: object, cpu_addr: int, dma_handle: int, size: int
) -> ScatterList:
    """The buffer's pages as a scatterlist (CPU side), physically adjacent pages joined:
    what an exporter hands to another device's ``map_sg``."""
    call = "get_sgtable"
    entry = state.entry(call, dev)
    size = check_int(call, "size", size, minimum=1)
    handle = check_int(call, "dma_handle", dma_handle)
    buf = _buffer(state, call, entry, cpu_addr)
    if handle != buf.dma_handle or size > align_up(buf.size, SZ_4K):
        raise InvalidArgumentError(
            f"{call}: dma_handle {handle:#x} / size {size:#x} do not describe {buf!r}"
        )
    ranges: list[AddressRange] = []
    left = size
    for c in buf.chunks:
        if left <= 0:
            break
        n = min(left, c.size)
        ranges.append(AddressRange(c.start, n))
        left -= n
    return ScatterList.from_ranges(ranges)
