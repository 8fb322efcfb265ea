"""dma-buf: export, import, mapping in each importer's space, CPU brackets, lifetime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_64K
from vcmm.attrs import DmaDirection, MemType
from vcmm.core.flags import PhysAttr
from vcmm.dma import DmaApi, DmaAttr, SgEntry
from vcmm.errors import (
    BusyError,
    DeviceFaultError,
    InvalidArgumentError,
    NotFoundError,
    NotMappedError,
    SegmentationFault,
    StateError,
)
from vcmm.proc import (
    MAP_SHARED,
    O_RDONLY,
    O_RDWR,
    PROT_READ,
    PROT_WRITE,
    BadFileDescriptorError,
    MemFile,
    PermissionDeniedError,
)
from vcmm.share import SyncFlags, dma_buf_get, dma_buf_needs_sync, dma_buf_sync
from vcmm.share.exporter import VcmExporter
from vcmm.share.state import dma_api, set_dma_api

SIZE = 4 * SZ_4K
RW = PROT_READ | PROT_WRITE


def pattern(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def phys_of(buf: Any) -> int:
    return int(buf.priv.physmem.chunk_ranges[0].start)


# -- export -------------------------------------------------------------------------------------


def test_exporting_one_allocation_twice_gives_one_dmabuf(rig: Any) -> None:
    system, exporter = rig.system, rig.exporter
    physmem = system.vcm_phys_alloc("ebi", SIZE)
    first = exporter.export(physmem)
    second = exporter.export(physmem)
    assert second is first and first.refcount == 2
    with pytest.raises(InvalidArgumentError, match="must not change how it is shared"):
        exporter.export(physmem, writable=False)
    assert first.refcount == 2
    first.put()
    second.put()
    assert first.released and not physmem.freed  # not owned: the caller still owns it
    again = exporter.export(physmem)
    assert again is not first and again.refcount == 1
    again.put()
    system.vcm_phys_free(physmem)


def test_memory_outlives_the_exporters_fd_until_the_last_reference(rig: Any) -> None:
    system, exporter = rig.system, rig.exporter
    ebi = system.target("ebi")
    free0 = ebi.free_bytes
    buf = exporter.allocate(SIZE, name="shared")
    physmem = buf.priv.physmem
    assert ebi.free_bytes == free0 - SIZE
    producer, consumer = rig.spawn("producer"), rig.spawn("consumer")
    fd = buf.install_fd(producer)
    buf.put()  # the exporter keeps no reference: the fd is the only holder
    assert buf.refcount == 1
    q_fd = producer.send_fd(fd, consumer)
    # A driver working for the consumer imports the buffer and maps it for its device.
    imported = dma_buf_get(consumer, q_fd)
    assert imported is buf
    att = imported.attach("vcodec_b_mm2")
    sg = att.map(DmaDirection.BIDIRECTIONAL)
    data = pattern(SIZE)
    device = system.device("vcodec_b_mm2")
    device.write(sg.dma_address, data)
    va = consumer.mmap(SIZE, PROT_READ, MAP_SHARED, q_fd)
    assert buf.user_mappings == 1
    producer.close(fd)
    consumer.close(q_fd)
    # Every descriptor is closed; the mapping and the importer keep the memory.
    assert not buf.released and ebi.free_bytes == free0 - SIZE
    consumer.munmap(va, SIZE)
    assert buf.user_mappings == 0
    assert buf.refcount == 2  # the importer's get and its attachment
    att.unmap(sg)
    att.detach()
    assert not buf.released and ebi.free_bytes == free0 - SIZE
    assert system.memory.read(phys_of(buf), SIZE) == data.tobytes()
    imported.put()
    # The last drop releases it, and the allocator gets the memory back.
    assert buf.released and physmem.freed
    assert ebi.free_bytes == free0
    assert rig.exporter.exported == ()
    with pytest.raises(StateError, match="already released"):
        buf.put()
    with pytest.raises(StateError, match="already released"):
        buf.attach("mdp")


# -- importers ----------------------------------------------------------------------------------


def test_each_importer_gets_addresses_in_its_own_address_space(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE, contiguous=True)
    pa = phys_of(buf)
    dsp_sg = buf.attach("dsp").map(DmaDirection.FROM_DEVICE)
    # The DSP sees RAM at 0x4000_0000 where the CPU sees it at 0x8000_0000 (000 L1352).
    assert dsp_sg.segments() == [(pa - 0x8000_0000 + 0x4000_0000, SIZE)]
    data = pattern(SIZE, 2)
    system.device("dsp").write(dsp_sg.dma_address, data)
    assert system.memory.read(pa, SIZE) == data.tobytes()
    codec_sg = buf.attach("vcodec_b_mm2").map(DmaDirection.TO_DEVICE)
    # An IOVA of the codec port's own DMA domain: its first, so the top SIZE bytes
    # below its 32-bit DMA mask (the IOVA allocator places top-down, size-aligned).
    assert codec_sg.dma_address == (1 << 32) - SIZE
    assert [m.dma_addr for m in rig.api.mappings("vcodec_b_mm2")] == [codec_sg.dma_address]
    assert system.device("vcodec_b_mm2").read(codec_sg.dma_address, SIZE) == data.tobytes()
    # The mapping graph knows both mappings of the chunk.
    spaces = {m.space for m in system.graph.of_chunk(buf.priv.physmem.chunk_ranges[0])}
    assert len(spaces) == 2


def test_an_iommu_makes_scattered_memory_one_run_a_physical_device_gets_each_piece(
    rig: Any,
) -> None:
    system = rig.system
    physmem = system.vcm_phys_alloc("blocks", SZ_1M + SZ_64K)  # a 1M and a 64K block
    (a, b) = physmem.chunk_ranges
    assert a.end != b.start
    buf = rig.exporter.export(physmem, owned=True)
    sg = buf.attach("vcodec_a_mm1").map(DmaDirection.TO_DEVICE)
    assert [e.phys for e in sg] == [a.start, b.start]
    assert sg.segments() == [(sg.dma_address, SZ_1M + SZ_64K)]
    # One entry type for the DMA API and dma-buf: each piece carries its own device
    # address, so its DMA length is its length, and the pieces lie back to back.
    assert all(type(e) is SgEntry for e in sg)
    assert [(e.length, e.dma_length) for e in sg] == [(SZ_1M, SZ_1M), (SZ_64K, SZ_64K)]
    assert [e.dma_address for e in sg] == [sg.dma_address, sg.dma_address + SZ_1M]
    # dma_map_sg's own view: the port's 64K max segment size keeps the 1M entry and the
    # 64K entry apart as two DMA segments, back to back in IOVA space.
    assert sg.table is not None
    assert sg.table.dma_segments() == [(sg.dma_address, SZ_1M), (sg.dma_address + SZ_1M, SZ_64K)]
    # The DMA API's direct ops map each piece where it is, so a physically addressed
    # device with a scatter-gather engine can use scattered memory too.
    cam_sg = buf.attach("camera").map(DmaDirection.TO_DEVICE)
    assert cam_sg.segments() == [(a.start, SZ_1M), (b.start, SZ_64K)]
    data = pattern(SZ_64K, 7)
    system.memory.write(b.start, data)
    assert system.device("camera").read(cam_sg.entries[1].dma_address, SZ_64K) == data.tobytes()
    # A device that cannot reach the memory at all is refused at attach, unchanged.
    sram = rig.exporter.allocate(SZ_4K, target="smi")  # on-chip SRAM at 0x2000_0000
    before = (system.snapshot(), sram.snapshot(), rig.api.snapshot())
    with pytest.raises(InvalidArgumentError, match="cannot reach"):
        sram.attach("dsp")  # the DSP's only window is RAM
    assert (system.snapshot(), sram.snapshot(), rig.api.snapshot()) == before


def test_a_to_device_mapping_is_read_only_for_the_device(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("mdp").map(DmaDirection.TO_DEVICE)
    mdp = system.device("mdp")
    before = system.memory.read(phys_of(buf), SIZE)
    with pytest.raises(DeviceFaultError, match="permission"):
        mdp.write(sg.dma_address, b"\xff" * 64)
    assert system.memory.read(phys_of(buf), SIZE) == before


def test_a_device_whose_attachment_was_unmapped_faults(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    att = buf.attach("vcodec_stream")
    sg = att.map(DmaDirection.BIDIRECTIONAL)
    device = system.device("vcodec_stream")
    device.write(sg.dma_address, b"\x5a" * 64)  # warms the SMMU's TLB
    att.unmap(sg)
    with pytest.raises(DeviceFaultError, match="translation"):
        device.read(sg.dma_address, 64)
    assert system.graph.of_chunk(buf.priv.physmem.chunk_ranges[0]) == []


# -- CPU access ---------------------------------------------------------------------------------


def test_kernel_cpu_access_is_bracketed_and_sees_device_writes(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("vcodec_a_mm1").map(DmaDirection.BIDIRECTIONAL)
    codec = system.device("vcodec_a_mm1")
    kmap = buf.vmap()
    assert buf.refcount == 3 and buf.kernel_mappings == 1
    kernel_aliases = [
        m for m in system.graph.of_chunk(buf.priv.physmem.chunk_ranges[0]) if m.space == "cpu"
    ]
    assert [m.va for m in kernel_aliases] == [kmap.va]
    with pytest.raises(StateError, match="outside an open begin_cpu_access"):
        kmap.read(0, 16)
    # The kernel writes the second page; the device reads it after end_cpu_access.
    buf.begin_cpu_access(DmaDirection.TO_DEVICE, SZ_4K, SZ_4K)
    with pytest.raises(StateError, match="outside an open begin_cpu_access"):
        kmap.write(0, b"x")  # outside the bracketed range
    with pytest.raises(StateError, match="kernel read"):
        kmap.read(SZ_4K, 4)  # the bracket allows writing only
    kmap.write(SZ_4K, b"kernel!!")
    assert codec.read(sg.dma_address + SZ_4K, 8) != b"kernel!!"  # still in the CPU cache
    buf.end_cpu_access(DmaDirection.TO_DEVICE, SZ_4K, SZ_4K)
    assert codec.read(sg.dma_address + SZ_4K, 8) == b"kernel!!"
    # The device writes; the kernel reads it inside a FROM_DEVICE bracket.
    buf.begin_cpu_access(DmaDirection.FROM_DEVICE)
    assert kmap.read(0, 4) == bytes(4)  # leaves a line in the cache
    buf.end_cpu_access(DmaDirection.FROM_DEVICE)
    codec.write(sg.dma_address, b"dev!")
    buf.begin_cpu_access(DmaDirection.FROM_DEVICE)
    assert kmap.read(0, 4) == b"dev!"
    buf.end_cpu_access(DmaDirection.FROM_DEVICE)
    kmap.unmap()
    assert buf.refcount == 2 and buf.kernel_mappings == 0
    with pytest.raises(StateError, match="vunmapped"):
        kmap.read(0, 4)
    with pytest.raises(NotMappedError):
        buf.vunmap(kmap)


def test_a_sync_range_limits_the_cache_work_to_that_range(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("vcodec_a_mm1").map(DmaDirection.TO_DEVICE)
    proc = rig.spawn("writer")
    fd = buf.install_fd(proc, O_RDWR)
    va = proc.mmap(SIZE, RW, MAP_SHARED, fd)
    half = SIZE // 2
    flags = SyncFlags.START | SyncFlags.WRITE
    dma_buf_sync(proc, fd, flags, 0, half)
    proc.write(va, b"\x11" * SIZE)  # the second half lies outside the bracket: a bug
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE, 0, half)
    seen = system.device("vcodec_a_mm1").read(sg.dma_address, SIZE)
    assert seen[:half] == b"\x11" * half  # cleaned by END
    assert seen[half:] == bytes(half)  # still dirty in the CPU cache: never cleaned


def test_needs_sync_tells_when_the_bracket_has_no_cache_work(rig: Any) -> None:
    system, exporter = rig.system, rig.exporter
    cached = exporter.allocate(SIZE)
    proc = rig.spawn("app")
    fd = cached.install_fd(proc)
    assert not dma_buf_needs_sync(proc, fd)  # CPU only: one cache, always coherent
    cached.attach("mdp")
    assert dma_buf_needs_sync(proc, fd)  # a non-coherent device joined
    with pytest.raises(InvalidArgumentError, match="carve-out"):
        exporter.allocate(SIZE, cached=False)  # kernel RAM is cacheable in the linear map
    uncached = exporter.allocate(SIZE, target="contig", cached=False)
    mdp_sg = uncached.attach("mdp").map(DmaDirection.TO_DEVICE)
    uncached.attach("vcodec_a_mm1").map(DmaDirection.FROM_DEVICE)
    ufd = uncached.install_fd(proc)
    assert not dma_buf_needs_sync(proc, ufd)
    va = proc.mmap(SIZE, RW, MAP_SHARED, ufd)
    assert proc.vma_at(va).memtype is MemType.NORMAL_NC  # type: ignore[union-attr]
    # No sync call at all, and the display still sees what the CPU wrote.
    proc.write(va, b"uncached")
    assert system.device("mdp").read(mdp_sg.dma_address, 8) == b"uncached"


# -- misuse and security ------------------------------------------------------------------------


def _state(rig: Any, buf: Any, *procs: Any) -> tuple[object, ...]:
    return (
        rig.system.snapshot(),
        rig.api.snapshot(),
        buf.snapshot(),
        tuple((sorted(p.fds), [(v.start, v.length) for v in p.vmas]) for p in procs),
    )


def test_every_misuse_raises_a_clear_error_and_changes_nothing(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    proc = rig.spawn("app")
    fd = buf.install_fd(proc)
    ro_fd = buf.install_fd(proc, O_RDONLY)
    memfd = proc.open(MemFile(system, SZ_4K))
    att = buf.attach("vcodec_a_mm1")
    sg = att.map(DmaDirection.BIDIRECTIONAL)
    other = buf.attach("mdp")
    done = buf.attach("vcodec_b_mm2")
    done.detach()
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ, 0, SZ_4K)
    kmap = buf.vmap()
    stale_kmap = buf.vmap()
    stale_kmap.unmap()
    before = _state(rig, buf, proc)
    start_rw = SyncFlags.START | SyncFlags.RW
    cases: list[tuple[type[Exception], str, Any]] = [
        (BadFileDescriptorError, "not an open file descriptor", lambda: dma_buf_get(proc, 99)),
        (BadFileDescriptorError, "99", lambda: dma_buf_sync(proc, 99, start_rw)),
        (InvalidArgumentError, "not a dma-buf", lambda: dma_buf_get(proc, memfd)),
        (StateError, "was detached", lambda: done.detach()),
        (BusyError, "still mapped", lambda: att.detach()),
        (StateError, "already mapped", lambda: att.map(DmaDirection.TO_DEVICE)),
        (NotMappedError, "is not the mapping", lambda: other.unmap(sg)),
        (InvalidArgumentError, "direction", lambda: other.map(DmaDirection.NONE)),
        (
            InvalidArgumentError,
            "only hold DmaAttr.SKIP_CPU_SYNC",
            lambda: other.map(DmaDirection.TO_DEVICE, DmaAttr.WRITE_COMBINE),
        ),
        (InvalidArgumentError, "not a device", lambda: buf.attach(object())),
        (NotFoundError, "no device named", lambda: buf.attach("gpu")),
        (InvalidArgumentError, "CPU is not an importer", lambda: buf.attach("cpu")),
        (
            StateError,
            "END without START",
            lambda: dma_buf_sync(proc, ro_fd, SyncFlags.END | SyncFlags.READ),
        ),
        (
            StateError,
            "does not match the START",
            lambda: dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ),
        ),
        (
            StateError,
            "already open",
            lambda: dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ),
        ),
        (
            InvalidArgumentError,
            "name no access",
            lambda: dma_buf_sync(proc, ro_fd, SyncFlags.START),
        ),
        (
            InvalidArgumentError,
            "bits outside",
            lambda: dma_buf_sync(proc, ro_fd, 8 | SyncFlags.READ),
        ),
        (
            InvalidArgumentError,
            "not inside",
            lambda: dma_buf_sync(proc, ro_fd, SyncFlags.READ, SIZE - 16, 32),
        ),
        (
            InvalidArgumentError,
            "timeout",
            lambda: dma_buf_sync(proc, ro_fd, SyncFlags.READ, timeout=-1),
        ),
        (
            InvalidArgumentError,
            "beyond the buffer",
            lambda: proc.mmap(2 * SIZE, PROT_READ, MAP_SHARED, fd),
        ),
        (
            InvalidArgumentError,
            "beyond the buffer",
            lambda: proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd, SIZE),
        ),
        (PermissionDeniedError, "EACCES", lambda: proc.mmap(SIZE, RW, MAP_SHARED, ro_fd)),
        (PermissionDeniedError, "SYNC_WRITE", lambda: dma_buf_sync(proc, ro_fd, start_rw)),
        (StateError, "outside an open", lambda: kmap.read(0, 1)),
        (NotMappedError, "not a live kernel mapping", lambda: buf.vunmap(stale_kmap)),
        (InvalidArgumentError, "direction NONE", lambda: buf.begin_cpu_access(DmaDirection.NONE)),
        (StateError, "END without START", lambda: buf.end_cpu_access(DmaDirection.FROM_DEVICE)),
    ]
    for error, message, call in cases:
        with pytest.raises(error, match=message):
            call()
        assert _state(rig, buf, proc) == before, f"{error.__name__} {message!r} changed state"


def test_only_a_process_holding_the_fd_reaches_the_buffer(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    owner, stranger = rig.spawn("owner"), rig.spawn("stranger")
    fd = buf.install_fd(owner)
    va = owner.mmap(SIZE, RW, MAP_SHARED, fd)
    owner.write(va, b"secret")
    with pytest.raises(BadFileDescriptorError):
        dma_buf_get(stranger, fd)
    with pytest.raises(BadFileDescriptorError):
        stranger.mmap(SIZE, PROT_READ, MAP_SHARED, fd)
    with pytest.raises(SegmentationFault):
        stranger.read(va, 6)  # the owner's address means nothing in another process
    # Access after munmap faults, in the owner too.
    owner.munmap(va, SIZE)
    with pytest.raises(SegmentationFault):
        owner.read(va, 6)


def test_read_only_access_is_enforced_by_fd_mode_and_page_tables(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    proc = rig.spawn("viewer")
    ro_fd = buf.install_fd(proc, O_RDONLY)
    va = proc.mmap(SIZE, PROT_READ, MAP_SHARED, ro_fd)
    with pytest.raises(SegmentationFault, match="permission"):
        proc.write(va, b"x")
    ro_buf = rig.exporter.allocate(SIZE, writable=False)
    with pytest.raises(PermissionDeniedError, match="read-only"):
        ro_buf.install_fd(proc, O_RDWR)
    with pytest.raises(PermissionDeniedError, match="exported read-only"):
        ro_buf.attach("mdp").map(DmaDirection.FROM_DEVICE)
    with pytest.raises(PermissionDeniedError, match="read-only"):
        ro_buf.begin_cpu_access(DmaDirection.TO_DEVICE)


def test_a_carve_out_buffer_has_the_buffers_memory_type_in_every_importer(rig: Any) -> None:
    """Carve-out memory has no linear-map alias: before its first device mapping the
    exporter maps it into the kernel for the buffer's life, which fixes the memory
    type the DMA API gives every device (and makes the memory shareable at once)."""
    system = rig.system
    buf = rig.exporter.allocate(SIZE, target="contig")
    (chunk,) = buf.priv.physmem.chunk_ranges
    assert system.graph.of_chunk(chunk) == []
    sg = buf.attach("mdp").map(DmaDirection.TO_DEVICE)  # mdp is not coherent
    assert sorted((m.space == "cpu", m.attrs.memtype) for m in system.graph.of_chunk(chunk)) == [
        (False, MemType.NORMAL_WB_WA),  # the display, write-back like the buffer
        (True, MemType.NORMAL_WB_WA),  # the exporter's kernel mapping
    ]
    proc = rig.spawn("viewer")
    fd = buf.install_fd(proc)
    va = proc.mmap(SIZE, RW, MAP_SHARED, fd)
    kmap = buf.vmap()
    aliases = system.graph.aliases(chunk)
    assert len(aliases) == 4  # the pin, the display, the process, the vmap
    assert {m.attrs.memtype for m in aliases} == {MemType.NORMAL_WB_WA}
    assert all(m.attrs.shareable for m in aliases)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    proc.write(va, b"carve-out")
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE)
    assert system.device("mdp").read(sg.dma_address, 9) == b"carve-out"
    kmap.unmap()
    # Without the pin the DMA API gives the non-coherent display a non-cacheable alias
    # of carve-out memory nobody maps (dma_direction_to_prot), which a process's
    # write-back mapping would then contradict.
    bare = system.vcm_phys_alloc("contig", SZ_4K)
    (bare_chunk,) = bare.chunk_ranges
    handle = rig.api.map_page("mdp", bare_chunk.start, 0, SZ_4K, DmaDirection.TO_DEVICE)
    assert [m.attrs.memtype for m in system.graph.of_chunk(bare_chunk)] == [MemType.NORMAL_NC]
    rig.api.unmap_page("mdp", handle, SZ_4K, DmaDirection.TO_DEVICE)
    # The pin goes with the buffer, after the last holder.
    buf.attachments[0].unmap(sg)
    buf.attachments[0].detach()
    buf.put()
    assert not buf.released  # the process's fd and mapping still hold it
    proc.exit()
    assert buf.released and system.graph.of_chunk(chunk) == []


def test_a_carve_out_buffer_a_process_maps_first_becomes_shareable_in_its_page_table(
    rig: Any,
) -> None:
    """Carve-out memory is shareable exactly while two or more address spaces map it.
    A process maps it first (alone: not shareable); the display and the kernel join
    and the core rewrites the process's page-table entry too; when they go, it is
    cleared again.  Any order of process, device and kernel mappings works."""
    system = rig.system
    buf = rig.exporter.allocate(SIZE, target="contig")
    (chunk,) = buf.priv.physmem.chunk_ranges
    proc = rig.spawn("early")
    fd = buf.install_fd(proc)
    va = proc.mmap(SIZE, PROT_READ, MAP_SHARED, fd)

    def user_pte_shareable() -> bool:
        walk = system.cpu.address_space(proc.asid).walk(va)
        assert walk.attrs is not None and walk.pa == chunk.start
        return walk.attrs.shareable

    assert not user_pte_shareable()
    att = buf.attach("mdp")
    sg = att.map(DmaDirection.TO_DEVICE)
    assert user_pte_shareable()
    kmap = buf.vmap()
    aliases = system.graph.aliases(chunk)
    assert len(aliases) == 3  # the process, the display, the vmap (no pin: aliased)
    assert {m.attrs.memtype for m in aliases} == {MemType.NORMAL_WB_WA}
    assert all(m.attrs.shareable for m in aliases)
    kmap.unmap()
    att.unmap(sg)
    assert [m.space for m in system.graph.of_chunk(chunk)] == [proc.space]
    assert not user_pte_shareable()


@pytest.mark.parametrize("api_first", [True, False], ids=["api-first", "attach-first"])
def test_the_dma_api_and_attachments_share_a_device_in_either_order(api_first: bool) -> None:
    system = vcmm.System.default()
    exporter = VcmExporter(system)
    buf = exporter.allocate(SIZE)
    if api_first:
        api = dma_api(system)
    att = buf.attach("mdp")  # the attachment maps through the system's DMA API
    sg = att.map(DmaDirection.TO_DEVICE)
    if not api_first:
        api = dma_api(system)  # made by the attach, and handed out from now on
    assert att.api is api and dma_api(system) is api
    # A second DMA API would find the contexts taken: one per system is the rule.
    before = system.snapshot()
    with pytest.raises(BusyError):
        DmaApi(system, coherent_pool=("contig", SZ_1M))  # (the default pool is taken too)
    assert system.snapshot() == before
    # A driver maps its own page for the same device: one domain, one IOVA space, the
    # driver's range right below the attachment's (top-down allocation).
    page = system.vcm_phys_alloc("ebi", SZ_4K, PhysAttr.CONTIGUOUS).chunk_ranges[0].start
    system.memory.write(page, b"driver page")
    handle = api.map_page("mdp", page, 0, SZ_4K, DmaDirection.TO_DEVICE)
    assert sg.dma_address == (1 << 32) - SIZE
    assert handle == sg.dma_address - SZ_4K
    domain = api.domain("mdp")
    assert domain is not None
    assert sorted(int(r.addr or 0) for r in domain.vcm.reservations) == [handle, sg.dma_address]
    mdp = system.device("mdp")
    assert mdp.read(handle, 11) == b"driver page"
    assert mdp.ctx.translate(sg.dma_address) == phys_of(buf)
    # Closing the API is refused while the attachment's mapping lives in it.
    with pytest.raises(BusyError, match="still alive"):
        api.close()
    api.unmap_page("mdp", handle, SZ_4K, DmaDirection.TO_DEVICE)
    att.unmap(sg)
    assert api.mappings("mdp") == []


def test_a_dma_api_built_by_a_driver_with_its_own_options_can_be_the_shared_one() -> None:
    system = vcmm.System.default()
    closed = DmaApi(system)
    closed.close()
    own = DmaApi(system, rcache=False)
    assert set_dma_api(own) is own and set_dma_api(own) is own
    assert dma_api(system) is own
    with pytest.raises(StateError, match="already has its shared DmaApi"):
        set_dma_api(closed)
    with pytest.raises(InvalidArgumentError, match="not a DmaApi"):
        set_dma_api(system)  # type: ignore[arg-type]
    buf = VcmExporter(system).allocate(SIZE)
    att = buf.attach("vcodec_stream")
    assert att.api is own
    sg = att.map(DmaDirection.FROM_DEVICE)
    assert own.mappings("vcodec_stream")[0].dma_addr == sg.dma_address
