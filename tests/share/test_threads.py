"""The machine lock: every use of a shared machine waits for job work, from any thread,
without the user taking a lock; a wait that could never end is an error instead."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm.attrs import DmaDirection
from vcmm.dma import DmaApi
from vcmm.errors import StateError
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.cpu import Cpu
from vcmm.hw.smmu import Smmu, SmmuContext
from vcmm.proc import MAP_SHARED, PROT_READ, PROT_WRITE, ProcessTable
from vcmm.share.exporter import VcmExporter
from vcmm.share.fence import Fence, wait_all, wait_any
from vcmm.share.lock import locked
from vcmm.share.state import set_dma_api

SIZE = 2 * SZ_4K
RW = PROT_READ | PROT_WRITE
#: How long a blocked call is watched before the lock is let go.
WATCH = 0.05


@contextmanager
def lock_held_elsewhere(system: vcmm.System) -> Iterator[None]:
    """Another thread holds the system's lock for the duration of the block."""
    taken, release = threading.Event(), threading.Event()

    def holder() -> None:
        with locked(system):
            taken.set()
            release.wait(5.0)

    thread = threading.Thread(target=holder)
    thread.start()
    assert taken.wait(5.0)
    try:
        yield
    finally:
        release.set()
        thread.join(5.0)


def waits_for_the_lock(system: vcmm.System, call: Callable[[], object]) -> bool:
    """Run ``call`` on a thread while the system's lock is held elsewhere: True when it
    did not finish until the lock was released, and then finished."""
    done = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        done.set()

    with lock_held_elsewhere(system):
        worker = threading.Thread(target=run)
        worker.start()
        blocked = not done.wait(WATCH)
    worker.join(5.0)
    assert not errors, errors
    return blocked and done.is_set()


def test_process_device_and_vcmm_calls_wait_for_the_hardware_lock(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("mdp").map(DmaDirection.BIDIRECTIONAL)
    proc = rig.spawn("app")
    fd = buf.install_fd(proc)
    va = proc.mmap(SIZE, RW, MAP_SHARED, fd)
    mdp = system.device("mdp")
    calls: list[Callable[[], object]] = [
        lambda: proc.read(va, 16),
        lambda: proc.write(va, b"x"),
        lambda: mdp.read(sg.dma_address, 16),
        lambda: mdp.write(sg.dma_address, b"y"),
        lambda: mdp.ctx.translate(sg.dma_address),
        lambda: system.cpu.translate(va, asid=proc.asid, user=True),
        lambda: system.vcm_phys_free(system.vcm_phys_alloc("ebi", SZ_4K)),
        lambda: buf.needs_sync,
    ]
    for call in calls:
        assert waits_for_the_lock(system, call)
    # Without the holder the same calls run at once (the lock is re-entrant and free),
    # and none of them keeps it.
    for call in calls:
        call()
    assert not system.lock.held() and system.lock.acquire(blocking=False)
    system.lock.release()


def test_a_process_access_waits_for_the_job_running_on_the_hardware(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    other = rig.exporter.allocate(SIZE)
    sg = other.attach("vcodec_a_mm1").map(DmaDirection.FROM_DEVICE)
    proc = rig.spawn("app")
    va = proc.mmap(SIZE, RW, MAP_SHARED, buf.install_fd(proc))
    inside: list[bool] = []
    started, finished = threading.Event(), threading.Event()
    codec = system.device("vcodec_a_mm1")

    def work() -> None:
        inside.append(system.lock.held())
        started.set()
        time.sleep(0.1)  # the device is busy with *another* buffer: no fence orders us
        codec.write(sg.dma_address, b"job")
        finished.set()

    job = rig.engine("codec").submit(work, writes=[other])
    assert started.wait(5.0)
    proc.write(va, b"cpu")  # not ordered by any fence, yet never interleaved with the job
    # The write could only run once the job's work had ended: it waited for the lock.
    assert finished.is_set()
    job.fence.wait(5.0)
    assert inside == [True] and job.fence.error is None


def test_the_machine_owns_its_lock_and_objects_keep_their_classes() -> None:
    system = vcmm.System.default()
    before = system.snapshot()
    VcmExporter(system)  # the sharing layer's first use changes nothing of the machine
    assert system.snapshot() == before
    cpu, codec = system.cpu, system.device("vcodec_a_mm1")
    # No class swapping: the objects are exactly the hardware classes ...
    assert type(cpu) is Cpu and type(codec) is SmmuDevice
    assert all(type(s) is Smmu for s in system.smmus.values())
    assert type(codec.ctx) is SmmuContext
    # ... and every one of them holds the system's one lock.
    assert cpu.lock is system.lock and codec.lock is system.lock and codec.ctx.lock is system.lock
    assert all(d.lock is system.lock for d in system.devices.values())
    assert all(s.lock is system.lock for s in system.smmus.values())
    other = vcmm.System.default()
    assert other.lock is not system.lock  # other systems have their own
    assert not system.lock.held()
    # Behaviour is the hardware's, errors included, and a failing call lets the lock go.
    with pytest.raises(vcmm.errors.InvalidArgumentError):
        cpu.read(-1, 4)
    assert not system.lock.held()
    with pytest.raises(vcmm.errors.VcmmError):
        system.vcm_phys_alloc("no such target", SZ_4K)
    assert not system.lock.held()


@pytest.mark.parametrize("checker_first", [True, False], ids=["checker-first", "share-first"])
def test_the_dma_debug_checker_observes_and_accesses_still_take_the_lock(
    checker_first: bool,
) -> None:
    """The checker is an access observer (no method shadows on the instances); the
    accesses take the lock with the checker on, and after it is removed."""
    system = vcmm.System.default()
    if checker_first:
        api = set_dma_api(DmaApi(system, debug="raise"))  # observers, then sharing
    else:
        api = set_dma_api(DmaApi(system))  # sharing ...
        api.enable_debug()  # ... then the observers
    table = ProcessTable(system)
    buf = VcmExporter(system).allocate(SZ_4K)
    proc = table.spawn("app")
    va = proc.mmap(SZ_4K, RW, MAP_SHARED, buf.install_fd(proc))
    mdp = system.device("mdp")
    assert len(system.cpu.observers) == 1 and len(mdp.observers) == 1  # the checker's
    assert "read" not in vars(system.cpu) and "write" not in vars(mdp)  # no shadows
    assert waits_for_the_lock(system, lambda: proc.read(va, 4))
    assert waits_for_the_lock(system, lambda: mdp.read(0, 0))
    api.disable_debug()
    assert system.cpu.observers == () and mdp.observers == ()
    assert waits_for_the_lock(system, lambda: proc.write(va, b"ok"))
    assert waits_for_the_lock(system, lambda: mdp.read(0, 0))


def test_waiting_for_a_fence_while_holding_the_lock_is_an_error_not_a_deadlock(
    rig: Any,
) -> None:
    pending, done = Fence("pending"), Fence("done")
    done.signal()
    with locked(rig.system):
        with pytest.raises(StateError, match="hardware lock"):
            pending.wait(5.0)
        with pytest.raises(StateError, match="hardware lock"):
            wait_all([done, pending], 5.0)
        with pytest.raises(StateError, match="hardware lock"):
            wait_any([pending], 5.0)
        done.wait(5.0)  # nothing to wait for: fine
        wait_all([done], 5.0)
        assert wait_any([pending, done], 5.0) is done
    # Job work runs under the lock, so a job that waits for a fence fails at once
    # (instead of hanging until the fence's own job, which needs the lock, gives up).
    buf = rig.exporter.allocate(SIZE)
    engine = rig.engine("codec")
    job = engine.submit(lambda: pending.wait(5.0), writes=[buf])
    job.fence.wait(5.0)
    # Refused at once: waiting out the 5 s would have ended in a timeout error instead.
    assert job.fence.error is not None and "hardware lock" in job.fence.error
    with locked(rig.system), pytest.raises(StateError, match="hardware lock"):
        engine.close(5.0)
    pending.signal()
