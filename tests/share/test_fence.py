"""Fences: one-shot events with timeouts, callbacks and timelines, under real threads."""

from __future__ import annotations

import threading
import time

import pytest

from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.share.fence import (
    Fence,
    FenceTimeline,
    signaled_fence,
    wait_all,
    wait_any,
)


def _signal_later(fence: Fence, delay: float, error: str | None = None) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), fence.signal(error)))
    thread.start()
    return thread


def _record_event_waits(monkeypatch: pytest.MonkeyPatch) -> list[float | None]:
    """The timeouts this thread passes to ``threading.Event.wait`` from now on: what
    a wait asks the OS for, which (unlike how long it took) is the same on any machine."""
    asked: list[float | None] = []
    real_wait = threading.Event.wait
    me = threading.get_ident()

    def wait(event: threading.Event, timeout: float | None = None) -> bool:
        if threading.get_ident() == me:
            asked.append(timeout)
        return real_wait(event, timeout)

    monkeypatch.setattr(threading.Event, "wait", wait)
    return asked


def test_a_fence_nobody_signals_times_out_instead_of_hanging(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fence = Fence("never")
    asked = _record_event_waits(monkeypatch)
    with pytest.raises(WaitTimeoutError, match=r"never\.wait: not signalled within 0\.05 s"):
        fence.wait(0.05)
    assert asked == [0.05]  # one bounded wait, not an endless one
    assert not fence.signaled and fence.timestamp is None


def test_signal_from_another_thread_wakes_the_waiter_after_the_signal() -> None:
    fence = Fence("job")
    thread = _signal_later(fence, 0.05)
    fence.wait(5.0)
    assert fence.signaled and fence.timestamp is not None
    thread.join()
    assert fence.error is None


def test_wait_forever_with_none_still_returns_once_signalled() -> None:
    fence = Fence("slow")
    thread = _signal_later(fence, 0.02)
    fence.wait(None)
    thread.join()
    assert fence.signaled


def test_signalling_twice_is_refused_and_keeps_the_first_signal() -> None:
    fence = Fence("once")
    fence.signal(error="decoder hang")
    stamp = fence.timestamp
    with pytest.raises(StateError, match="already signalled"):
        fence.signal()
    assert fence.error == "decoder hang" and fence.timestamp == stamp


def test_callbacks_run_once_in_the_signalling_thread_after_the_fence_is_visible() -> None:
    fence = Fence("cb")
    seen: list[tuple[str, bool, int]] = []
    fence.add_callback(lambda f: seen.append(("a", f.signaled, threading.get_ident())))
    removed = fence.add_callback(lambda f: seen.append(("removed", True, 0)))
    fence.add_callback(lambda f: seen.append(("b", f.signaled, threading.get_ident())))
    assert removed is not None and fence.remove_callback(removed)
    thread = _signal_later(fence, 0.0)
    thread.join()
    assert [s[0] for s in seen] == ["a", "b"]
    assert all(s[1] for s in seen)
    assert all(s[2] == thread.ident for s in seen)
    # After signalling, registering is refused (the event is past) and nothing runs.
    assert fence.add_callback(lambda f: seen.append(("late", True, 0))) is None
    assert len(seen) == 2


def test_a_raising_callback_does_not_stop_the_others() -> None:
    fence = Fence("cb")
    ran: list[str] = []

    def bad(_f: Fence) -> None:
        raise RuntimeError("callback bug")

    fence.add_callback(bad)
    fence.add_callback(lambda f: ran.append("good"))
    with pytest.raises(RuntimeError, match="callback bug"):
        fence.signal()
    assert ran == ["good"] and fence.signaled


def test_remove_callback_rejects_a_handle_of_another_fence() -> None:
    a, b = Fence("a"), Fence("b")
    handle = a.add_callback(lambda f: None)
    assert handle is not None
    with pytest.raises(InvalidArgumentError, match="not a handle of this fence"):
        b.remove_callback(handle)
    assert a.remove_callback(handle) is True
    assert a.remove_callback(handle) is False


def test_timeline_orders_its_fences_and_only_its_own() -> None:
    decoder, display = FenceTimeline("decoder"), FenceTimeline("display")
    f1, f2 = decoder.create(), decoder.create()
    assert (f1.seqno, f2.seqno) == (1, 2)
    assert f2.is_later(f1) and not f1.is_later(f2)
    with pytest.raises(InvalidArgumentError, match="not on one timeline"):
        display.create().is_later(f1)


@pytest.mark.parametrize("bad", [-1, -0.5, True, "1s", float("nan")])
def test_bad_timeouts_are_refused(bad: object) -> None:
    fence = Fence("x")
    with pytest.raises(InvalidArgumentError, match="timeout"):
        fence.wait(bad)  # type: ignore[arg-type]


def test_bad_constructor_arguments_are_refused() -> None:
    with pytest.raises(InvalidArgumentError):
        Fence(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        Fence("x", seqno=-1)
    with pytest.raises(InvalidArgumentError):
        FenceTimeline("")
    with pytest.raises(InvalidArgumentError, match="not callable"):
        Fence("x").add_callback(42)  # type: ignore[arg-type]


def test_wait_all_shares_one_deadline_between_fences(monkeypatch: pytest.MonkeyPatch) -> None:
    pending = [Fence(f"p{i}") for i in range(4)]
    asked = _record_event_waits(monkeypatch)
    with pytest.raises(WaitTimeoutError, match=r"p0 not signalled .*4 of 4 fences pending"):
        wait_all(pending, 0.08)
    # The first fence gets (what is left of) the 0.08 s; once it timed out nothing is
    # left for the others.  Four separate timeouts would ask for 0.32 s in all.
    assert all(t is not None for t in asked)
    assert 0 < asked[0] <= 0.08 and sum(t or 0.0 for t in asked) < 0.09, asked


def test_wait_all_returns_when_every_fence_signalled() -> None:
    fences = [Fence(f"j{i}") for i in range(3)]
    threads = [_signal_later(f, 0.01 * i) for i, f in enumerate(fences)]
    wait_all(fences, 5.0)
    for t in threads:
        t.join()
    assert all(f.signaled for f in fences)


def test_wait_any_returns_the_signalled_one_and_cleans_up_its_callbacks() -> None:
    slow, fast = Fence("slow"), Fence("fast")
    thread = _signal_later(fast, 0.02)
    assert wait_any([slow, fast], 5.0) is fast
    thread.join()
    assert slow._callbacks == {}
    assert wait_any([slow, signaled_fence()], 0.0).signaled
    with pytest.raises(WaitTimeoutError, match="none of 1 fences"):
        wait_any([slow], 0.02)
    with pytest.raises(InvalidArgumentError, match="no fences"):
        wait_any([], 1.0)
    with pytest.raises(InvalidArgumentError, match="not a Fence"):
        wait_all([slow, "fence"], 1.0)  # type: ignore[list-item]
