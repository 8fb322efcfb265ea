"""The machine lock: a System's one re-entrant lock held by its hardware and VCMM calls;
standalone hardware gets a private one; real threads leave counters and data intact."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import vcmm
from vcmm.attrs import Access
from vcmm.core.flags import Attr, PhysAttr
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.lock import MachineLock, held_machine_locks
from vcmm.hw.memory import MemoryRegion, PhysicalMemory
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory
from vcmm.hw.tlb import TLBConfig
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_4M, SZ_256M

RAM = 0x8000_0000


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Switch threads very often, so unprotected read-modify-writes would interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def run_threads(workers: list[Callable[[], None]], limit: float = 20.0) -> None:
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(w)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit)
    assert not any(t.is_alive() for t in threads), "a worker never finished"
    assert not errors, errors


def test_standalone_hardware_gets_private_locks() -> None:
    memory = PhysicalMemory([MemoryRegion("ddr", AddressRange(RAM, SZ_256M))])
    tables = TableMemory(memory, AddressRange(RAM, SZ_4M))
    smmu = Smmu("s", memory, tables, context_banks=1, tlb=TLBConfig(8, 2))
    ctx = smmu.context_init("c")
    ic = Interconnect(memory)
    smmu_dev = SmmuDevice("d", ctx, ic)
    phys_a, phys_b = PhysicalDevice("a", ic), PhysicalDevice("b", ic)
    assert isinstance(smmu.lock, MachineLock) and ctx.lock is smmu.lock
    assert smmu_dev.lock is smmu.lock  # it walks that SMMU's tables
    assert SmmuDevice("d2", ctx, ic, lock=smmu.lock).lock is smmu.lock
    with pytest.raises(InvalidArgumentError, match="shares its lock"):
        SmmuDevice("d3", ctx, ic, lock=MachineLock("foreign"))
    assert phys_a.lock is not phys_b.lock and phys_a.lock is not smmu.lock
    shared = MachineLock("mine")
    assert PhysicalDevice("c", ic, lock=shared).lock is shared
    with pytest.raises(InvalidArgumentError, match=r"not a vcmm\.hw\.MachineLock"):
        PhysicalDevice("e", ic, lock=threading.RLock())  # type: ignore[arg-type]


def test_the_lock_is_reentrant_and_knows_its_holder() -> None:
    lock = MachineLock("t")
    assert not lock.held() and lock not in held_machine_locks()
    with lock:
        with lock:
            assert lock.held() and lock in held_machine_locks()
        assert lock.held()
        seen: list[bool] = []
        other = threading.Thread(target=lambda: seen.append(lock.held()))
        other.start()
        other.join(5.0)
        assert seen == [False]  # another thread does not hold it
        got: list[bool] = []
        taker = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.01)))
        taker.start()
        taker.join(5.0)
        assert got == [False]
    assert not lock.held()


def test_release_by_a_thread_that_does_not_hold_it_is_refused() -> None:
    lock = MachineLock("t")
    with pytest.raises(StateError, match=r"does not hold the lock.*free"):
        lock.release()
    assert lock.acquire() and lock.acquire(blocking=False)  # depth 2
    errors: list[BaseException] = []

    def steal() -> None:
        try:
            lock.release()
        except BaseException as exc:
            errors.append(exc)

    thief = threading.Thread(target=steal)
    thief.start()
    thief.join(5.0)
    assert len(errors) == 1 and isinstance(errors[0], StateError)
    assert "held by another thread" in str(errors[0])
    lock.release()
    assert lock.held()  # one level is left: the failed release changed nothing
    lock.release()
    assert not lock.held()
    got: list[bool] = []
    taker = threading.Thread(target=lambda: got.append(lock.acquire(timeout=1.0)))
    taker.start()
    taker.join(5.0)
    assert got == [True]  # the outermost release freed it for another thread
    assert not lock.held()


def _device_buffers(system: vcmm.System) -> tuple[Any, int, int]:
    dev = system.device("vcodec_b_mm2")
    vcm = system.vcm_create(16 * SZ_1M, 16 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.vcm_back(res, physmem)
    return dev, res.dev_addr, physmem.chunk_ranges[0].start


def test_threads_hammering_a_device_and_the_cpu_keep_counters_and_data(
    fast_switching: None,
) -> None:
    system = vcmm.System.default()
    dev, dev_addr, _ = _device_buffers(system)
    kbuf = system.vcm_phys_alloc("ebi", 2 * SZ_4K, PhysAttr.NONE).chunk_ranges[0].start
    cpu = system.cpu
    rounds, size = 150, 512
    before = dev.counters()
    ctx_before = (dev.ctx.bytes_read, dev.ctx.bytes_written)

    def device_worker(page: int, seed: int) -> Callable[[], None]:
        def work() -> None:
            rng = np.random.default_rng(seed)
            for _ in range(rounds):
                pattern = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                dev.write(dev_addr + page * SZ_4K, pattern)
                assert dev.read(dev_addr + page * SZ_4K, size) == pattern

        return work

    def cpu_worker(page: int, seed: int) -> Callable[[], None]:
        va = cpu.phys_to_virt(kbuf + page * SZ_4K)

        def work() -> None:
            rng = np.random.default_rng(seed)
            for _ in range(rounds):
                pattern = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
                cpu.write(va, pattern)
                assert cpu.read(va, size) == pattern

        return work

    batch = np.arange(dev_addr + 2 * SZ_4K, dev_addr + 3 * SZ_4K, 64, dtype=np.uint64)

    def batch_worker() -> None:
        for _ in range(rounds):
            dev.access_batch(batch, Access.READ, 64)

    run_threads(
        [device_worker(0, 1), device_worker(1, 2), cpu_worker(0, 3), cpu_worker(1, 4), batch_worker]
    )
    after = dev.counters()
    per_batch = batch.size
    # exact counts: two device threads x rounds x (write + read), plus the batches
    assert after["transactions"] - before["transactions"] == 2 * rounds * 2 + rounds * per_batch
    assert after["bytes_written"] - before["bytes_written"] == 2 * rounds * size
    assert after["bytes_read"] - before["bytes_read"] == 2 * rounds * size + rounds * per_batch * 64
    assert dev.ctx.bytes_written - ctx_before[1] == 2 * rounds * size
    assert dev.ctx.bytes_read - ctx_before[0] == 2 * rounds * size + rounds * per_batch * 64
    assert after["faults"] == before["faults"]
    # the last patterns are still in place, as each thread's generator says
    for page, seed in ((0, 1), (1, 2)):
        rng = np.random.default_rng(seed)
        last = [rng.integers(0, 256, size, dtype=np.uint8).tobytes() for _ in range(rounds)][-1]
        assert dev.read(dev_addr + page * SZ_4K, size) == last
    assert not system.lock.held()


def test_a_vcmm_call_inside_a_device_access_reenters_the_lock() -> None:
    """A device access holds the lock; its fault handler backs the page through the
    VCMM, which takes the same lock again (no deadlock), from a thread of its own."""
    system = vcmm.System.default()
    dev = system.device("vcodec_b_mm2")
    vcm = system.vcm_create(16 * SZ_1M, 16 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.memory.write(physmem.chunk_ranges[0].start + 0x40, b"on demand")
    held_in_handler: list[bool] = []

    def back(fault: object, data: object) -> int:
        held_in_handler.append(system.lock.held())
        system.vcm_back(res, physmem)  # re-enters the lock the access holds
        return 1

    system.vcm_hook(dev, back)
    got: list[bytes] = []
    run_threads([lambda: got.append(dev.read(res.dev_addr + 0x40, 9))], limit=10.0)
    assert got == [b"on demand"] and held_in_handler == [True]
    assert res.physmem is physmem and not system.lock.held()


def test_a_vcmm_call_waits_for_a_thread_holding_the_lock() -> None:
    system = vcmm.System.default()
    taken, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with system.lock:
            taken.set()
            release.wait(5.0)

    def caller() -> None:
        system.vcm_phys_free(system.vcm_phys_alloc("ebi", SZ_4K))
        done.set()

    h = threading.Thread(target=holder)
    h.start()
    assert taken.wait(5.0)
    c = threading.Thread(target=caller)
    c.start()
    assert not done.wait(0.05)  # blocked behind the holder
    release.set()
    assert done.wait(5.0)
    h.join(5.0)
    c.join(5.0)
