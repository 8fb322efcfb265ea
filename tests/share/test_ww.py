"""Wound/wait mutexes with real threads: opposite lock orders finish, nobody starves."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import pytest

from vcmm.errors import BusyError, InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.share.ww import AcquireContext, AlreadyHeldError, WoundedError, WWClass, WWMutex


def _run(targets: list[Callable[[], None]], limit: float = 10.0) -> list[BaseException]:
    """Run callables in threads; return their exceptions; fail if any is still running."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> Callable[[], None]:
        def body() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)

        return body

    threads = [threading.Thread(target=wrap(t)) for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(limit)
    assert not any(t.is_alive() for t in threads), "a thread is still running: hang"
    return errors


def _wait_until(cond: Callable[[], bool], polls: int = 5000) -> None:
    """Poll ``cond`` every millisecond; fail (instead of hanging) after ``polls`` tries."""
    for _ in range(polls):
        if cond():
            return
        time.sleep(0.001)
    pytest.fail("condition never became true")


def test_stamps_order_transactions_by_creation() -> None:
    cls = WWClass("t")
    a, b = AcquireContext(cls), AcquireContext(cls)
    assert a.stamp < b.stamp


def test_two_agents_taking_a_b_and_b_a_both_finish() -> None:
    """The forced conflict: each holds its first lock before asking for the second."""
    cls = WWClass("pair")
    lock_a, lock_b = WWMutex(cls, "A"), WWMutex(cls, "B")
    both_hold_first = threading.Barrier(2)
    log: list[str] = []
    contexts: dict[str, AcquireContext] = {}
    older_ready = threading.Event()

    def agent(name: str, first: WWMutex, second: WWMutex) -> None:
        with AcquireContext(cls, name) as ctx:
            contexts[name] = ctx
            if name == "old":
                older_ready.set()
            ctx.lock(first, 5.0)
            both_hold_first.wait(5.0)
            try:
                ctx.lock(second, 5.0)
            except WoundedError as exc:
                log.append(f"{name} backs off on {exc.mutex.name}")
                ctx.unlock_all()
                ctx.lock_slow(exc.mutex, 5.0)
                ctx.lock(first, 5.0)
            assert lock_a.holder is ctx and lock_b.holder is ctx
            log.append(f"{name} holds both")
            ctx.unlock_all()

    def old() -> None:
        agent("old", lock_a, lock_b)

    def young() -> None:
        older_ready.wait(5.0)  # make sure "old" drew the smaller stamp
        agent("young", lock_b, lock_a)

    assert _run([old, young]) == []
    assert contexts["old"].stamp < contexts["young"].stamp
    # The older transaction never backs off; the younger does, then finishes.
    assert contexts["old"].backoffs == 0
    assert contexts["young"].backoffs == 1
    assert log[0] == "young backs off on A"
    assert log.index("old holds both") < log.index("young holds both")
    assert cls.wounds >= 1 and cls.backoffs == 1
    assert not lock_a.locked and not lock_b.locked


def test_plain_locks_in_opposite_orders_deadlock_and_only_the_timeout_saves_them() -> None:
    """The contrast: without an acquire context nobody backs off."""
    cls = WWClass("plain")
    lock_a, lock_b = WWMutex(cls, "A"), WWMutex(cls, "B")
    barrier = threading.Barrier(2)

    def agent(first: WWMutex, second: WWMutex) -> None:
        first.lock(1.0)
        try:
            barrier.wait(5.0)
            second.lock(0.1)
            second.unlock()
        finally:
            first.unlock()

    errors = _run([lambda: agent(lock_a, lock_b), lambda: agent(lock_b, lock_a)])
    assert errors and all(isinstance(e, WaitTimeoutError) for e in errors)
    assert not lock_a.locked and not lock_b.locked


def test_many_agents_random_orders_all_finish_with_mutual_exclusion() -> None:
    cls = WWClass("stress")
    locks = [WWMutex(cls, f"m{i}") for i in range(5)]
    counters = [0] * len(locks)
    expected = [0] * len(locks)
    rng = random.Random(7)
    plans = []
    for _ in range(4):
        plan = []
        for _ in range(25):
            chosen = rng.sample(range(len(locks)), rng.randint(2, 4))
            plan.append(chosen)
            for i in chosen:
                expected[i] += 1
        plans.append(plan)
    backoffs: list[int] = []

    def agent(plan: list[list[int]]) -> None:
        total = 0
        for chosen in plan:
            with AcquireContext(cls) as ctx:
                total += ctx.acquire_all([locks[i] for i in chosen], 5.0)
                for i in chosen:
                    value = counters[i]  # unprotected read-modify-write: needs the lock
                    time.sleep(0.0002)
                    counters[i] = value + 1
        backoffs.append(total)

    assert _run([lambda p=p: agent(p) for p in plans], limit=20.0) == []
    assert counters == expected
    assert len(backoffs) == 4
    assert cls.backoffs == sum(backoffs) and cls.backoffs > 0  # there was contention
    assert not any(m.locked for m in locks)


def test_a_wound_only_forbids_waiting_while_holding_locks() -> None:
    cls = WWClass("wound")
    lock_a, lock_b, lock_c = (WWMutex(cls, n) for n in "ABC")
    older_created, younger_holds_a, got_a = threading.Event(), threading.Event(), threading.Event()

    def older_wants_a() -> None:
        older = AcquireContext(cls, "older")  # created first: the smaller stamp
        older_created.set()
        younger_holds_a.wait(5.0)
        older.lock(lock_a, 5.0)
        got_a.set()
        older.unlock(lock_a)
        older.fini()

    thread = threading.Thread(target=older_wants_a)
    thread.start()
    older_created.wait(5.0)
    younger = AcquireContext(cls, "younger")
    younger.lock(lock_a)
    younger_holds_a.set()
    _wait_until(lambda: younger.wounded)
    # A free lock is still granted: the wound does not matter without a wait.
    younger.lock(lock_b, 1.0)
    # C is taken (plainly, by this thread): now waiting would be needed -> back off.
    lock_c.lock()
    with pytest.raises(WoundedError, match=r"younger .* was wounded") as info:
        younger.lock(lock_c, 1.0)
    assert info.value.mutex is lock_c and younger.contending is lock_c
    assert younger.held == (lock_a, lock_b)  # nothing released behind the caller's back
    # Until it backs off, it may not take more locks.
    with pytest.raises(StateError, match="unlock_all first"):
        younger.lock(WWMutex(cls, "D"), 1.0)
    with pytest.raises(StateError, match="lock_slow is for after unlock_all"):
        younger.lock_slow(lock_c, 1.0)
    assert not got_a.is_set()
    younger.unlock_all()
    thread.join(5.0)
    assert got_a.is_set()
    lock_c.unlock()
    younger.lock_slow(lock_c, 1.0)
    assert younger.contending is None and not younger.wounded
    younger.unlock_all()
    younger.fini()


def test_timeout_inside_a_transaction_keeps_what_was_held() -> None:
    cls = WWClass("timeout")
    lock_a, lock_b = WWMutex(cls, "A"), WWMutex(cls, "B")
    lock_b.lock()  # held outside any transaction: cannot be wounded
    with AcquireContext(cls) as ctx:
        ctx.lock(lock_a)
        with pytest.raises(WaitTimeoutError, match="B held by thread"):
            ctx.lock(lock_b, 0.03)
        assert ctx.held == (lock_a,) and lock_a.holder is ctx
    lock_b.unlock()
    assert not lock_a.locked


def test_acquire_all_is_all_or_nothing_on_timeout() -> None:
    cls = WWClass("aon")
    locks = [WWMutex(cls, n) for n in "ABC"]
    locks[2].lock()
    with AcquireContext(cls) as ctx:
        with pytest.raises(WaitTimeoutError):
            ctx.acquire_all(locks, 0.03)
        assert ctx.held == ()
        assert not locks[0].locked and not locks[1].locked
    locks[2].unlock()


def test_acquire_all_takes_duplicates_once() -> None:
    cls = WWClass("dup")
    lock_a, lock_b = WWMutex(cls, "A"), WWMutex(cls, "B")
    with AcquireContext(cls) as ctx:
        assert ctx.acquire_all([lock_a, lock_b, lock_a], 1.0) == 0
        assert ctx.held == (lock_a, lock_b)


def test_misuse_is_refused_with_state_unchanged() -> None:
    cls, other = WWClass("misuse"), WWClass("other")
    lock_a = WWMutex(cls, "A")
    ctx = AcquireContext(cls, "c")
    ctx.lock(lock_a)
    with pytest.raises(AlreadyHeldError, match="already holds A"):
        ctx.lock(lock_a)
    with pytest.raises(InvalidArgumentError, match="belongs to class other"):
        ctx.lock(WWMutex(other, "X"))
    with pytest.raises(InvalidArgumentError, match="not a WWMutex"):
        ctx.lock("A")  # type: ignore[arg-type]
    with pytest.raises(BusyError, match="still holds A"):
        ctx.fini()
    with pytest.raises(StateError, match="already holds 1 lock"):
        ctx.acquire_all([lock_a])
    stranger = AcquireContext(cls, "stranger")
    with pytest.raises(StateError, match="not held by stranger"):
        stranger.unlock(lock_a)
    assert ctx.held == (lock_a,) and lock_a.holder is ctx
    errors = _run([lambda: ctx.unlock(lock_a), lambda: lock_a.unlock()])
    assert len(errors) == 2 and all(isinstance(e, StateError) for e in errors)
    assert lock_a.holder is ctx
    ctx.done()
    with pytest.raises(StateError, match="acquire phase is over"):
        ctx.lock(WWMutex(cls, "B"))
    ctx.unlock_all()
    ctx.fini()
    with pytest.raises(StateError, match="was finished"):
        ctx.lock(lock_a)
    with pytest.raises(StateError, match="is not locked"):
        lock_a.unlock()
    lock_a.lock()
    with pytest.raises(AlreadyHeldError, match="this thread already holds A"):
        lock_a.lock(0.01)
    assert not lock_a.trylock()
    lock_a.unlock()
    assert lock_a.trylock()
    lock_a.unlock()
