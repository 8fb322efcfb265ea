"""Reservation objects: one writer fence, reader fences, and who waits for what."""

from __future__ import annotations

import threading
import time

import pytest

from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.share.fence import Fence, FenceTimeline
from vcmm.share.resv import RESERVATION_CLASS, ReservationObject
from vcmm.share.ww import AcquireContext


def _state(resv: ReservationObject) -> tuple[object, ...]:
    return (resv.exclusive_fence, resv.shared_fences)


def test_fences_change_only_under_the_buffer_lock() -> None:
    resv = ReservationObject("buf")
    before = _state(resv)
    with pytest.raises(StateError, match="must be locked by the calling thread"):
        resv.add_exclusive_fence(Fence("w"))
    with pytest.raises(StateError, match="must be locked"):
        resv.add_shared_fence(Fence("r"))
    assert _state(resv) == before
    # Held by another thread is not good enough either.
    holder_has_it, release = threading.Event(), threading.Event()

    def hold() -> None:
        resv.lock()
        holder_has_it.set()
        release.wait(5.0)
        resv.unlock()

    thread = threading.Thread(target=hold)
    thread.start()
    holder_has_it.wait(5.0)
    with pytest.raises(StateError, match="must be locked by the calling thread"):
        resv.add_shared_fence(Fence("r"))
    release.set()
    thread.join()
    assert _state(resv) == before


def test_readers_wait_for_the_writer_and_writers_wait_for_everyone() -> None:
    resv = ReservationObject("buf")
    writer, reader1, reader2 = Fence("camera-write"), Fence("codec-read"), Fence("mdp-read")
    resv.lock()
    resv.add_exclusive_fence(writer)
    resv.add_shared_fence(reader1)
    resv.add_shared_fence(reader2)
    resv.unlock()
    assert resv.fences(for_write=False) == [writer]
    assert resv.fences(for_write=True) == [writer, reader1, reader2]
    writer.signal()
    assert resv.test_signaled(for_write=False)
    assert not resv.test_signaled(for_write=True)
    resv.wait(for_write=False, timeout=0.0)  # nothing to wait for: returns at once
    with pytest.raises(WaitTimeoutError, match="write access still conflicts with codec-read"):
        resv.wait(for_write=True, timeout=0.02)
    reader1.signal()
    reader2.signal()
    resv.wait(for_write=True, timeout=0.0)


def test_a_new_writer_replaces_the_readers_it_was_ordered_after() -> None:
    resv = ReservationObject("buf")
    resv.lock()
    resv.add_shared_fence(Fence("r1"))
    resv.add_shared_fence(Fence("r2"))
    writer = Fence("w")
    resv.add_exclusive_fence(writer)
    resv.unlock()
    assert resv.exclusive_fence is writer and resv.shared_fences == ()


def test_shared_fences_keep_one_per_timeline_and_drop_signalled_ones() -> None:
    resv = ReservationObject("buf")
    codec, mdp = FenceTimeline("codec"), FenceTimeline("mdp")
    c1, c2, m1 = codec.create(), codec.create(), mdp.create()
    done = Fence("done")
    resv.lock()
    resv.add_shared_fence(c1)
    resv.add_shared_fence(done)
    resv.add_shared_fence(m1)
    done.signal()
    resv.add_shared_fence(c2)
    with pytest.raises(StateError, match="already a shared fence"):
        resv.add_shared_fence(c2)
    resv.unlock()
    assert resv.shared_fences == (m1, c2)


def test_waiting_needs_no_lock_so_the_lock_holder_can_signal() -> None:
    """A CPU waiting for a device never blocks the job runner that completes it."""
    resv = ReservationObject("buf")
    writer = Fence("dev-write")
    result: list[str] = []

    def device_job() -> None:
        resv.lock()
        resv.add_exclusive_fence(writer)
        time.sleep(0.02)
        result.append("pixels")
        writer.signal()
        time.sleep(0.02)  # still holding the buffer lock
        resv.unlock()

    thread = threading.Thread(target=device_job)
    thread.start()
    while resv.exclusive_fence is None:
        time.sleep(0.001)
    resv.wait(for_write=False, timeout=5.0)
    assert result == ["pixels"]
    assert resv.mutex.locked  # we did not need the lock to get here
    thread.join()


def test_several_buffers_are_locked_with_one_acquire_context() -> None:
    a, b = ReservationObject("a"), ReservationObject("b")
    fence = Fence("job")
    with AcquireContext(RESERVATION_CLASS) as ctx:
        a.lock(ctx)
        b.lock(ctx)
        a.add_shared_fence(fence)
        b.add_exclusive_fence(fence)
        ctx.unlock_all()
    assert a.shared_fences == (fence,) and b.exclusive_fence is fence
    assert not a.mutex.locked and not b.mutex.locked


def test_argument_errors() -> None:
    resv = ReservationObject("buf")
    with pytest.raises(InvalidArgumentError, match="not an AcquireContext"):
        resv.lock(ctx="ctx")  # type: ignore[arg-type]
    resv.lock()
    with pytest.raises(InvalidArgumentError, match="not a Fence"):
        resv.add_shared_fence("fence")  # type: ignore[arg-type]
    resv.unlock()
    with pytest.raises(InvalidArgumentError, match="for_write"):
        resv.fences(1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="timeout"):
        resv.wait(True, timeout=-1)
    with pytest.raises(InvalidArgumentError):
        ReservationObject("")
