"""dma-buf heaps: /dev/dma_heap/<target> and DMA_HEAP_IOCTL_ALLOC, with the kernel's
checks (drivers/dma-buf/dma-heap.c, uapi linux/dma-heap.h)."""

from __future__ import annotations

from typing import Any

import pytest

from vcmm import SZ_4K, SZ_64K, DmaDirection
from vcmm.errors import (
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    SegmentationFault,
)
from vcmm.proc import MAP_SHARED, O_RDONLY, O_RDWR, PROT_READ, PROT_WRITE
from vcmm.proc.errors import BadFileDescriptorError, PermissionDeniedError
from vcmm.ranges import AddressRange
from vcmm.share import SyncFlags, dma_buf_get, dma_buf_sync
from vcmm.share.dmabuf import DmaBufFile
from vcmm.share.heap import (
    DMA_HEAP_IOCTL_ALLOC,
    O_CLOEXEC,
    DmaHeapAllocationData,
    dma_heap_alloc,
    register_heaps,
)
from vcmm.share.heap import (
    O_RDWR as FD_RDWR,
)

from ..core.policies import BottomUpCarveout

RW = PROT_READ | PROT_WRITE


def _state(rig: Any, proc: Any) -> tuple[object, ...]:
    return (rig.system.snapshot(), rig.api.snapshot(), sorted(proc.fds))


def test_the_request_number_is_the_uapi_one() -> None:
    # _IOWR('H', 0, struct dma_heap_allocation_data): dir 3, size 24, type 'H', nr 0
    assert DMA_HEAP_IOCTL_ALLOC == 0xC0184800
    assert O_CLOEXEC == 0o2000000  # asm-generic/fcntl.h


def test_every_target_is_a_heap_and_runtime_targets_appear(rig: Any) -> None:
    system = rig.system
    register_heaps(rig.table)
    assert rig.table.listdir("/dev/dma_heap") == sorted(system.targets)
    carve = BottomUpCarveout("carve", AddressRange(0xB000_0000, 0x10_0000))
    system.vcm_register_target(carve)
    secret = BottomUpCarveout("secret", AddressRange(0xB100_0000, 0x10_0000))
    system.vcm_register_target(secret, secure=True)
    assert "carve" in rig.table.listdir("/dev/dma_heap")
    assert "secret" not in rig.table.listdir("/dev/dma_heap")  # secure: no heap
    proc = rig.spawn("app")
    heap = proc.open("/dev/dma_heap/carve", O_RDONLY)
    fd = dma_heap_alloc(proc, heap, 5000)
    buf = dma_buf_get(proc, fd)
    assert buf.size == 2 * SZ_4K  # PAGE_ALIGN(len)
    assert buf.priv.physmem.chunk_ranges == (AddressRange(0xB000_0000, 2 * SZ_4K),)
    buf.put()
    with pytest.raises(NotFoundError, match="no such file"):
        proc.open("/dev/dma_heap/secret", O_RDONLY)
    proc.close(fd)
    system.vcm_unregister_target("carve")
    with pytest.raises(NotFoundError, match="no such file"):
        proc.open("/dev/dma_heap/carve", O_RDONLY)
    with pytest.raises(NotFoundError, match="is gone"):
        dma_heap_alloc(proc, heap, SZ_4K)  # an fd opened before: ENODEV


def test_a_heap_buffer_works_with_every_sharing_feature(rig: Any) -> None:
    system = rig.system
    register_heaps(rig.table)
    ebi = system.target("ebi")
    free0 = ebi.free_bytes
    producer, consumer = rig.spawn("producer"), rig.spawn("consumer")
    heap = producer.open("/dev/dma_heap/ebi", O_RDONLY)
    data = DmaHeapAllocationData(len=SZ_64K, fd_flags=FD_RDWR | O_CLOEXEC)
    assert (
        rig.table.lookup("/dev/dma_heap/ebi").ioctl(producer, heap, DMA_HEAP_IOCTL_ALLOC, data) == 0
    )
    fd = data.fd
    assert isinstance(producer.file(fd).file, DmaBufFile)
    assert ebi.free_bytes == free0 - SZ_64K
    # a device maps it and writes; the process reads inside a sync bracket
    buf = dma_buf_get(producer, fd)
    att = buf.attach("vcodec_b_mm2")
    sg = att.map(DmaDirection.BIDIRECTIONAL)
    system.device("vcodec_b_mm2").write(sg.dma_address, b"from the codec")
    va = producer.mmap(SZ_64K, RW, MAP_SHARED, fd)
    dma_buf_sync(producer, fd, SyncFlags.START | SyncFlags.READ)
    assert producer.read(va, 14) == b"from the codec"
    dma_buf_sync(producer, fd, SyncFlags.END | SyncFlags.READ)
    # passed to another process, which sees the same bytes
    theirs = producer.send_fd(fd, consumer)
    cva = consumer.mmap(SZ_64K, PROT_READ, MAP_SHARED, theirs)
    dma_buf_sync(consumer, theirs, SyncFlags.START | SyncFlags.READ)
    assert consumer.read(cva, 14) == b"from the codec"
    dma_buf_sync(consumer, theirs, SyncFlags.END | SyncFlags.READ)
    # the memory lives until the last holder goes, then returns to its target
    att.unmap(sg)
    att.detach()
    buf.put()
    producer.munmap(va, SZ_64K)
    producer.close(fd)
    assert ebi.free_bytes == free0 - SZ_64K
    consumer.munmap(cva, SZ_64K)
    consumer.close(theirs)
    assert ebi.free_bytes == free0


def test_the_fd_mode_bounds_the_buffer(rig: Any) -> None:
    register_heaps(rig.table)
    proc = rig.spawn("reader")
    heap = proc.open("/dev/dma_heap/contig", O_RDONLY)
    fd = dma_heap_alloc(proc, heap, SZ_4K, fd_flags=0)  # O_RDONLY
    assert proc.file(fd).mode is O_RDONLY
    with pytest.raises(PermissionDeniedError):
        proc.mmap(SZ_4K, RW, MAP_SHARED, fd)
    with pytest.raises(PermissionDeniedError, match="SYNC_WRITE"):
        dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    va = proc.mmap(SZ_4K, PROT_READ, MAP_SHARED, fd)
    assert proc.read(va, 4) == b"\0\0\0\0"  # zeroed
    with pytest.raises(SegmentationFault):
        proc.write(va, b"x")


@pytest.mark.parametrize(
    ("change", "rule"),
    [
        ({"fd": 3}, "fd 3 must be 0 going in"),
        ({"fd_flags": FD_RDWR | 0o100}, "outside O_CLOEXEC"),  # O_CREAT
        ({"fd_flags": 3}, "access mode 3"),
        ({"heap_flags": 1}, "heap_flags 1 must be 0"),
        ({"len": 0}, "page-aligns to 0"),
        ({"len": (1 << 64) - 1}, "page-aligns to 0"),  # PAGE_ALIGN wraps a __u64
        ({"len": -1}, "not a __u64"),
    ],
)
def test_bad_allocation_data_is_einval_and_changes_nothing(
    rig: Any, change: dict[str, int], rule: str
) -> None:
    register_heaps(rig.table)
    proc = rig.spawn("app")
    heap = proc.open("/dev/dma_heap/ebi", O_RDWR)
    node = rig.table.lookup("/dev/dma_heap/ebi")
    data = DmaHeapAllocationData(len=SZ_4K)
    for key, value in change.items():
        setattr(data, key, value)
    before = _state(rig, proc)
    with pytest.raises(InvalidArgumentError, match=rule) as err:
        node.ioctl(proc, heap, DMA_HEAP_IOCTL_ALLOC, data)
    assert "(EINVAL)" in str(err.value)
    assert _state(rig, proc) == before


def test_other_misuse_changes_nothing(rig: Any) -> None:
    register_heaps(rig.table)
    proc = rig.spawn("app")
    heap = proc.open("/dev/dma_heap/ebi", O_RDWR)
    node = rig.table.lookup("/dev/dma_heap/ebi")
    before = _state(rig, proc)
    with pytest.raises(InvalidArgumentError, match="ENOTTY"):
        node.ioctl(proc, heap, 0xC0184801, DmaHeapAllocationData(len=SZ_4K))
    with pytest.raises(InvalidArgumentError, match="EFAULT"):
        node.ioctl(proc, heap, DMA_HEAP_IOCTL_ALLOC, {"len": SZ_4K})
    with pytest.raises(BadFileDescriptorError):
        dma_heap_alloc(proc, 42, SZ_4K)
    with pytest.raises(OutOfMemoryError, match="ENOMEM"):
        dma_heap_alloc(proc, heap, 1 << 40)
    other = proc.open("/dev/dma_heap/contig", O_RDWR)
    before = _state(rig, proc)
    with pytest.raises(InvalidArgumentError, match="is /dev/dma_heap/contig"):
        node.ioctl(proc, other, DMA_HEAP_IOCTL_ALLOC, DmaHeapAllocationData(len=SZ_4K))
    assert _state(rig, proc) == before


def test_a_failed_install_gives_the_memory_back(rig: Any) -> None:
    from vcmm.proc.process import MAX_FDS

    register_heaps(rig.table)
    proc = rig.spawn("app")
    heap = proc.open("/dev/dma_heap/ebi", O_RDWR)
    fill = [proc.dup(heap) for _ in range(MAX_FDS - 1)]
    assert len(proc.fds) == MAX_FDS and fill
    before = _state(rig, proc)
    with pytest.raises(Exception, match="descriptors"):
        dma_heap_alloc(proc, heap, SZ_64K)
    assert _state(rig, proc) == before


@pytest.mark.parametrize("heap_name", ["ebi", "blocks", "carve"])
def test_every_failing_allocation_of_the_ioctl_changes_nothing(rig: Any, heap_name: str) -> None:
    from vcmm.inject import fail_nth

    rig.system.vcm_register_target(BottomUpCarveout("carve", AddressRange(0xB000_0000, 1 << 20)))
    register_heaps(rig.table)
    proc = rig.spawn("app")
    heap = proc.open(f"/dev/dma_heap/{heap_name}", O_RDWR)
    n = 1
    while True:
        before = _state(rig, proc)
        with fail_nth(n) as injector:
            try:
                fd = dma_heap_alloc(proc, heap, 3 * SZ_64K)
            except OutOfMemoryError:
                assert injector.fired
                assert _state(rig, proc) == before
                n += 1
                continue
        assert not injector.fired and isinstance(proc.file(fd).file, DmaBufFile)
        break
    assert n >= 2  # at least one allocation was failed and rolled back
