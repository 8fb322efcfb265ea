"""Device jobs ordered by fences; wound/wait on the buffers' locks; timeouts, not hangs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from vcmm import SZ_4K
from vcmm.attrs import DmaDirection
from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.proc import MAP_SHARED, PROT_READ, PROT_WRITE
from vcmm.share import SyncFlags, dma_buf_sync
from vcmm.share.fence import Fence
from vcmm.share.resv import RESERVATION_CLASS
from vcmm.share.ww import AcquireContext

SIZE = 2 * SZ_4K


def _wait_until(cond: Any, polls: int = 5000) -> None:
    """Poll ``cond`` every millisecond; fail (instead of hanging) after ``polls`` tries."""
    for _ in range(polls):
        if cond():
            return
        time.sleep(0.001)
    pytest.fail("condition never became true")


def test_submitters_taking_buffers_in_opposite_orders_both_finish(rig: Any) -> None:
    """The wound/wait path on real reservation locks, with the conflict forced.

    An older transaction holds A and then wants B; a job submission (younger) holds B
    and waits for A.  The older wounds the submitter, which backs off, lets the older
    finish, then retries and completes.
    """
    buf_a = rig.exporter.allocate(SIZE, name="A")
    buf_b = rig.exporter.allocate(SIZE, name="B")
    engine = rig.engine("codec")
    older = AcquireContext(RESERVATION_CLASS, "older")
    older.lock(buf_a.resv.mutex)
    jobs: list[Any] = []
    submitter = threading.Thread(
        target=lambda: jobs.append(engine.submit(lambda: None, writes=[buf_b, buf_a], timeout=5.0))
    )
    submitter.start()
    _wait_until(lambda: buf_b.resv.mutex.locked and buf_b.resv.mutex.holder is not older)
    older.lock(buf_b.resv.mutex, 5.0)  # wounds the submitter, waits for it to back off
    assert older.backoffs == 0
    older_fence = Fence("older-job")
    buf_a.resv.add_exclusive_fence(older_fence)
    buf_b.resv.add_exclusive_fence(older_fence)
    older.unlock_all()
    older.fini()
    submitter.join(5.0)
    assert not submitter.is_alive()
    (job,) = jobs
    assert job.backoffs == 1
    # The submitter came second, so its job depends on the older transaction's work.
    assert job.deps == (older_fence,)
    assert not job.fence.signaled
    older_fence.signal()
    job.fence.wait(5.0)
    assert job.fence.error is None


def test_many_threads_submitting_crossing_jobs_all_complete(rig: Any) -> None:
    bufs = [rig.exporter.allocate(SIZE, name=f"b{i}") for i in range(3)]
    engines = [rig.engine(f"e{i}") for i in range(3)]
    log: list[tuple[str, int]] = []
    all_jobs: list[Any] = []
    lock = threading.Lock()

    def submitter(k: int) -> None:
        for i in range(15):
            order = bufs[k:] + bufs[:k]  # each thread names the buffers in its own order
            job = engines[k].submit(
                lambda k=k, i=i: log.append((f"t{k}", i)),
                writes=order[:2],
                reads=order[2:],
                timeout=5.0,
            )
            with lock:
                all_jobs.append(job)

    threads = [threading.Thread(target=submitter, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10.0)
    assert not any(t.is_alive() for t in threads)
    for job in all_jobs:
        job.fence.wait(10.0)
        assert job.fence.error is None
    assert len(log) == 45
    # Every job writing a buffer ran after the previous writer of that buffer.
    for job in all_jobs:
        for dep in job.deps:
            assert dep.timestamp <= job.fence.timestamp


def test_a_device_waits_for_the_cpu_until_its_access_ends(rig: Any) -> None:
    """Cooksey's rule (001 L114-116): a device is held back until the CPU finishes."""
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("mdp").map(DmaDirection.TO_DEVICE)
    proc = rig.spawn("painter")
    fd = buf.install_fd(proc)
    va = proc.mmap(SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    seen: list[bytes] = []
    mdp = system.device("mdp")
    job = rig.engine("mdp").submit(lambda: seen.append(mdp.read(sg.dma_address, 8)), reads=[buf])
    time.sleep(0.05)
    assert not job.fence.signaled and seen == []
    proc.write(va, b"painted!")
    dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.WRITE)
    job.fence.wait(5.0)
    assert seen == [b"painted!"]


def test_a_fence_never_signalled_gives_timeout_errors_not_hangs(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    proc = rig.spawn("app")
    fd = buf.install_fd(proc)
    stuck = Fence("stuck-decoder")
    buf.resv.lock()
    buf.resv.add_exclusive_fence(stuck)
    buf.resv.unlock()
    before = buf.snapshot()
    with pytest.raises(WaitTimeoutError, match="stuck-decoder"):
        dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.READ, timeout=0.05)
    assert buf.snapshot() == before  # no CPU access was opened
    with pytest.raises(StateError, match="END without START"):
        dma_buf_sync(proc, fd, SyncFlags.END | SyncFlags.READ)
    with pytest.raises(WaitTimeoutError):
        buf.begin_cpu_access(DmaDirection.FROM_DEVICE, timeout=0.05)
    # A job behind the stuck fence fails with a timeout instead of waiting forever.
    engine = rig.engine("codec")
    ran: list[str] = []
    first = engine.submit(lambda: ran.append("first"), reads=[buf], timeout=0.05)
    first.fence.wait(5.0)
    assert ran == []
    assert first.fence.error is not None and "dependency timeout" in first.fence.error
    assert "stuck-decoder" in first.fence.error
    # Once the stuck job completes, new work flows again.
    stuck.signal()
    third = engine.submit(lambda: ran.append("third"), writes=[buf])
    third.fence.wait(5.0)
    assert ran == ["third"] and third.fence.error is None


def test_locking_a_buffer_held_elsewhere_times_out_and_publishes_nothing(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    buf.resv.lock()  # held by this thread outside any transaction
    engine = rig.engine("codec")
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            engine.submit(lambda: None, writes=[buf], timeout=0.05)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=submit)
    thread.start()
    thread.join(5.0)
    buf.resv.unlock()
    assert len(errors) == 1 and isinstance(errors[0], WaitTimeoutError)
    assert buf.resv.exclusive_fence is None and buf.resv.shared_fences == ()


def test_failing_work_marks_its_fence_and_the_engine_goes_on(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    engine = rig.engine("codec")

    def broken() -> None:
        raise RuntimeError("decoder hang")

    ran: list[str] = []
    bad = engine.submit(broken, writes=[buf])
    reader = rig.engine("mdp").submit(lambda: ran.append("display"), reads=[buf])
    good = engine.submit(lambda: ran.append("unrelated"))
    good.fence.wait(5.0)
    reader.fence.wait(5.0)
    assert bad.fence.error == "RuntimeError: decoder hang"
    # A job that would read what the broken job wrote does not run: it fails too.
    assert reader.fence.error == f"dependency {bad.fence.name} failed: RuntimeError: decoder hang"
    assert ran == ["unrelated"] and good.fence.error is None
    # Overwriting the buffer does not need the broken output: that job runs, and
    # readers after it are fine again.
    rewrite = engine.submit(lambda: ran.append("rewrite"), writes=[buf])
    after = rig.engine("mdp2").submit(lambda: ran.append("display again"), reads=[buf])
    after.fence.wait(5.0)
    assert rewrite.fence.error is None and after.fence.error is None
    assert ran[-2:] == ["rewrite", "display again"]


def test_submit_validates_its_arguments(rig: Any) -> None:
    buf = rig.exporter.allocate(SIZE)
    engine = rig.engine("codec")
    with pytest.raises(InvalidArgumentError, match="not callable"):
        engine.submit(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not an iterable of DmaBuf"):
        engine.submit(lambda: None, writes=buf)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not a DmaBuf"):
        engine.submit(lambda: None, reads=["buf"])  # type: ignore[list-item]
    assert buf.resv.exclusive_fence is None
    engine.close(5.0)
    with pytest.raises(StateError, match="closed"):
        engine.submit(lambda: None)


def test_a_process_dying_inside_a_cpu_access_does_not_block_devices(rig: Any) -> None:
    system = rig.system
    buf = rig.exporter.allocate(SIZE)
    sg = buf.attach("mdp").map(DmaDirection.TO_DEVICE)
    proc = rig.spawn("crasher")
    fd = buf.install_fd(proc)
    va = proc.mmap(SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    dma_buf_sync(proc, fd, SyncFlags.START | SyncFlags.WRITE)
    proc.write(va, b"last words")
    mdp = system.device("mdp")
    seen: list[bytes] = []
    job = rig.engine("mdp").submit(lambda: seen.append(mdp.read(sg.dma_address, 10)), reads=[buf])
    time.sleep(0.02)
    assert not job.fence.signaled
    proc.exit()  # closes the fd with the bracket open: the kernel ends it
    job.fence.wait(5.0)
    assert job.fence.error is None
    assert seen == [b"last words"]  # the bracket's end flushed the CPU's writes
