"""dma-buf: export, import, mapping in each importer's space, CPU brackets, lifetime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from vcmm import SZ_1M, SZ_4K, SZ_64K
from vcmm.attrs import DmaDirection, MemType
from vcmm.errors import (
    AttributeConflictError,
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
from vcmm.share.dmabuf import SyncFlags, dma_buf_get, dma_buf_needs_sync, dma_buf_sync
from vcmm.share.spaces import IOVA_WINDOW

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
    assert codec_sg.dma_address in IOVA_WINDOW
    assert system.device("vcodec_b_mm2").read(codec_sg.dma_address, SIZE) == data.tobytes()
    # The mapping graph knows both mappings of the chunk.
    spaces = {m.space for m in system.graph.of_chunk(buf.priv.physmem.chunk_ranges[0])}
    assert len(spaces) == 2


def test_an_iommu_makes_scattered_memory_one_run_a_physical_device_cannot_use_it(
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
    before = (system.snapshot(), buf.snapshot())
    with pytest.raises(InvalidArgumentError, match="needs contiguous memory"):
        buf.attach("camera")
    assert (system.snapshot(), buf.snapshot()) == before


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


def test_a_device_mapping_that_would_leave_a_user_alias_disagreeing_is_refused(
    rig: Any,
) -> None:
    """Carve-out memory is shareable only once two address spaces map it; the core
    cannot rewrite a process's page-table entry, so the sharing layer refuses rather
    than leave the aliases disagreeing."""
    system = rig.system
    buf = rig.exporter.allocate(SIZE, target="contig")
    proc = rig.spawn("early")
    fd = buf.install_fd(proc)
    proc.mmap(SIZE, PROT_READ, MAP_SHARED, fd)  # alone: not shareable
    att = buf.attach("mdp")
    before = (system.snapshot(), buf.snapshot())
    with pytest.raises(AttributeConflictError, match="user mapping the core cannot rewrite"):
        att.map(DmaDirection.TO_DEVICE)
    with pytest.raises(AttributeConflictError, match="user mapping"):
        buf.vmap()
    assert (system.snapshot(), buf.snapshot()) == before
    aliases = system.graph.of_chunk(buf.priv.physmem.chunk_ranges[0])
    assert [m.attrs.shareable for m in aliases] == [False]


def test_importers_use_the_dma_api_domain_and_leave_contexts_free_after_detach(
    rig: Any,
) -> None:
    from vcmm.dma.api import DmaApi

    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    att = buf.attach("mdp")
    att.unmap(att.map(DmaDirection.TO_DEVICE))
    att.detach()
    assert not system.device("mdp").ctx.is_active  # the sharing layer let the context go
    api = DmaApi(system)  # so the DMA API can take every context now
    sg = buf.attach("mdp").map(DmaDirection.TO_DEVICE)
    domain = api.domain("mdp")
    assert domain is not None
    # The importer's mapping lives in the DMA API's domain VCM, in its IOVA space.
    (res,) = [r for r in domain.vcm.reservations if r.physmem is buf.priv.physmem]
    assert sg.dma_address == res.dev_addr
    assert system.device("mdp").ctx.translate(sg.dma_address) == phys_of(buf)
