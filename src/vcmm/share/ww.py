"""Wound/wait mutexes: taking several buffer locks in any order without deadlock.

Alan Cox asked of the dma-buf prepare call: "How do you avoid deadlocks on this? ...
this API has no 'prepare-multiple-buffers' support" (001 L11-15).  A job that reads
buffer A and writes buffer B must own both reservation locks at once, and another job
may want them as B then A.  Ordinary mutexes deadlock; the kernel's answer is the
wound/wait mutex, and this module implements its algorithm with real threads.

The rules, as implemented here:

- Every :class:`AcquireContext` (one multi-lock transaction) draws a *stamp* from its
  :class:`WWClass` when it is created.  A smaller stamp is an *older* transaction.  The
  stamp is kept across retries, so a transaction that backs off keeps its age and
  eventually becomes the oldest: nobody starves and there is no livelock.
- An **older** transaction that finds a lock held by a **younger** one *wounds* the
  holder (sets its ``wounded`` flag and wakes it) and then waits for the lock.
- A **younger** transaction that finds a lock held by an older one simply waits.
- A wounded transaction notices the wound the next time it would have to wait for a
  lock while it holds at least one: the call raises :class:`WoundedError` (the
  kernel's ``-EDEADLK``).  The transaction must then release every lock it holds
  (:meth:`AcquireContext.unlock_all`), take the contended lock with
  :meth:`AcquireContext.lock_slow` (it holds nothing, so it can only wait, never be
  asked to back off) and retry the rest.  :meth:`AcquireContext.acquire_all` is that
  loop.  A wounded transaction that never needs to wait again just finishes: the
  wound only forbids waiting while holding locks, which is what a deadlock needs.
- The wound flag is cleared when the transaction holds no locks (it then cannot be in
  anybody's way).

All mutexes of one class share the class's condition variable, which keeps the
bookkeeping (holder, wound flags) consistent without lock-ordering problems of its
own.  Every wait has a timeout; running out raises :class:`WaitTimeoutError` and
leaves the locks held by the caller exactly as they were.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from types import TracebackType

from vcmm.errors import (
    AlreadyHeldError,
    BusyError,
    InvalidArgumentError,
    StateError,
    WaitTimeoutError,
    WoundedError,
)
from vcmm.share.fence import DEFAULT_TIMEOUT, Deadline, check_timeout


class WWClass:
    """A family of wound/wait mutexes that may be taken together in one transaction.

    It hands out the stamps that order transactions and counts wounds and back-offs
    so tests and reports can see the algorithm at work.
    """

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"WWClass name {name!r} must be a non-empty string")
        self.name = name
        self.cond = threading.Condition(threading.Lock())
        self._stamps = itertools.count(1)
        #: Times an older transaction wounded a younger lock holder.
        self.wounds = 0
        #: Times a wounded transaction was told to back off.
        self.backoffs = 0

    def _next_stamp(self) -> int:
        return next(self._stamps)

    def __repr__(self) -> str:
        return f"<WWClass {self.name} wounds={self.wounds} backoffs={self.backoffs}>"


class WWMutex:
    """A lock that an :class:`AcquireContext` takes with deadlock avoidance.

    It can also be taken without a context (:meth:`lock`), like the kernel's
    ``ww_mutex_lock(lock, NULL)``: then it is a plain mutex that never wounds and is
    never wounded, so taking two of them in opposite orders can deadlock; the timeout
    turns that into :class:`WaitTimeoutError`.
    """

    def __init__(self, ww_class: WWClass, name: str = "ww") -> None:
        if not isinstance(ww_class, WWClass):
            raise InvalidArgumentError(f"WWMutex needs a WWClass, got {ww_class!r}")
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"WWMutex name {name!r} must be a non-empty string")
        self.ww_class = ww_class
        self.name = name
        self._locked = False
        self._ctx: AcquireContext | None = None
        self._thread: int | None = None

    @property
    def locked(self) -> bool:
        return self._locked

    @property
    def holder(self) -> AcquireContext | None:
        """The context holding the lock (``None`` if free or held without a context)."""
        return self._ctx

    def held_by_current_thread(self) -> bool:
        return self._locked and self._thread == threading.get_ident()

    def __repr__(self) -> str:
        if not self._locked:
            return f"<WWMutex {self.name} free>"
        who = f"ctx stamp {self._ctx.stamp}" if self._ctx else f"thread {self._thread}"
        return f"<WWMutex {self.name} held by {who}>"

    def _take(self, ctx: AcquireContext | None) -> None:
        self._locked = True
        self._ctx = ctx
        self._thread = threading.get_ident()

    def lock(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Take the lock without a transaction (waits; never wounds, never backs off)."""
        call = f"{self.name}.lock"
        limit = check_timeout(call, timeout)
        deadline = Deadline(limit)
        cond = self.ww_class.cond
        with cond:
            if self.held_by_current_thread():
                raise AlreadyHeldError(f"{call}: this thread already holds {self.name}")
            while self._locked:
                remaining = deadline.remaining()
                if remaining == 0.0:
                    raise WaitTimeoutError(f"{call}: {self!r} was not released within {limit} s")
                cond.wait(remaining)
            self._take(None)

    def trylock(self) -> bool:
        """Take the lock if it is free, without waiting and without a transaction."""
        with self.ww_class.cond:
            if self._locked:
                return False
            self._take(None)
            return True

    def unlock(self) -> None:
        """Release the lock; only the thread that holds it may."""
        call = f"{self.name}.unlock"
        cond = self.ww_class.cond
        with cond:
            if not self._locked:
                raise StateError(f"{call}: {self.name} is not locked")
            if self._thread != threading.get_ident():
                raise StateError(
                    f"{call}: {self.name} is held by thread {self._thread}, "
                    f"not by the calling thread {threading.get_ident()}"
                )
            ctx = self._ctx
            if ctx is not None:
                ctx._held.remove(self)
            self._locked = False
            self._ctx = None
            self._thread = None
            cond.notify_all()


class AcquireContext:
    """One transaction taking several :class:`WWMutex` of a class (``ww_acquire_ctx``).

    Use :meth:`acquire_all` for the whole back-off loop, or :meth:`lock`,
    :meth:`unlock_all` and :meth:`lock_slow` to write it out.  A context belongs to the
    thread that created it.  As a context manager it releases what it still holds and
    finishes on exit.
    """

    def __init__(self, ww_class: WWClass, name: str = "") -> None:
        if not isinstance(ww_class, WWClass):
            raise InvalidArgumentError(f"AcquireContext needs a WWClass, got {ww_class!r}")
        if not isinstance(name, str):
            raise InvalidArgumentError(f"AcquireContext name {name!r} is not a string")
        self.ww_class = ww_class
        with ww_class.cond:
            self.stamp = ww_class._next_stamp()
        self.name = name or f"ctx{self.stamp}"
        self.wounded = False
        #: Times this context had to back off.
        self.backoffs = 0
        #: The lock to take first after a back-off.
        self.contending: WWMutex | None = None
        self._held: list[WWMutex] = []
        self._thread = threading.get_ident()
        self._done = False
        self._finished = False

    @property
    def held(self) -> tuple[WWMutex, ...]:
        return tuple(self._held)

    @property
    def acquired(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return f"<AcquireContext {self.name} stamp={self.stamp} holds {len(self._held)}>"

    def __enter__(self) -> AcquireContext:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.unlock_all()
            self.fini()

    # -- checks --------------------------------------------------------------------------

    def _check_usable(self, call: str) -> None:
        if self._finished:
            raise StateError(f"{call}: {self.name} was finished (fini); create a new context")
        if self._thread != threading.get_ident():
            raise StateError(
                f"{call}: {self.name} belongs to thread {self._thread}, "
                f"not the calling thread {threading.get_ident()}"
            )

    def _check_mutex(self, call: str, mutex: object) -> WWMutex:
        if not isinstance(mutex, WWMutex):
            raise InvalidArgumentError(f"{call}: {mutex!r} is not a WWMutex")
        if mutex.ww_class is not self.ww_class:
            raise InvalidArgumentError(
                f"{call}: {mutex.name} belongs to class {mutex.ww_class.name}, "
                f"{self.name} to {self.ww_class.name}; stamps only order one class"
            )
        return mutex

    # -- locking ---------------------------------------------------------------------------

    def lock(self, mutex: WWMutex, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Take ``mutex`` inside this transaction.

        Raises :class:`WoundedError` when an older transaction wounded this one and the
        lock is not free (back off), :class:`AlreadyHeldError` if it is already held
        here, :class:`WaitTimeoutError` when ``timeout`` runs out.
        """
        self._lock_common(f"{self.name}.lock", mutex, timeout, slow=False)

    def lock_slow(self, mutex: WWMutex, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """After a back-off: take the contended lock while holding nothing (only waits)."""
        self._lock_common(f"{self.name}.lock_slow", mutex, timeout, slow=True)

    def _lock_common(self, call: str, mutex: object, timeout: object, slow: bool) -> None:
        self._check_usable(call)
        m = self._check_mutex(call, mutex)
        limit = check_timeout(call, timeout)
        if self._done:
            raise StateError(f"{call}: {self.name} called done(); its acquire phase is over")
        deadline = Deadline(limit)
        cls = self.ww_class
        with cls.cond:
            if m._ctx is self:
                raise AlreadyHeldError(f"{call}: {self.name} already holds {m.name}")
            if slow and self._held:
                raise StateError(
                    f"{call}: {self.name} still holds {', '.join(x.name for x in self._held)}; "
                    "lock_slow is for after unlock_all"
                )
            if self.contending is not None and self._held:
                raise StateError(
                    f"{call}: {self.name} was told to back off on {self.contending.name}; "
                    "unlock_all first"
                )
            if not self._held:
                # Holding nothing, we are in nobody's way: an old wound no longer matters.
                self.wounded = False
            while m._locked:
                if self.wounded and self._held:
                    self.contending = m
                    self.backoffs += 1
                    cls.backoffs += 1
                    raise WoundedError(
                        f"{call}: {self.name} (stamp {self.stamp}) was wounded by an older "
                        f"transaction and {m.name} is taken; unlock_all and retry",
                        m,
                    )
                holder = m._ctx
                if holder is not None and holder.stamp > self.stamp and not holder.wounded:
                    holder.wounded = True
                    cls.wounds += 1
                    cls.cond.notify_all()
                remaining = deadline.remaining()
                if remaining == 0.0:
                    raise WaitTimeoutError(
                        f"{call}: {m!r} was not released within {limit} s "
                        f"({self.name} holds {len(self._held)} lock(s))"
                    )
                cls.cond.wait(remaining)
            m._take(self)
            self._held.append(m)
            self.contending = None

    def unlock(self, mutex: WWMutex) -> None:
        """Release one lock held by this transaction."""
        call = f"{self.name}.unlock"
        self._check_usable(call)
        m = self._check_mutex(call, mutex)
        if m._ctx is not self:
            raise StateError(f"{call}: {m.name} is not held by {self.name}")
        m.unlock()

    def unlock_all(self) -> None:
        """Release every lock this transaction holds (the back-off step)."""
        self._check_usable(f"{self.name}.unlock_all")
        for m in reversed(list(self._held)):
            m.unlock()

    def done(self) -> None:
        """Mark the end of the acquire phase: further lock calls are refused."""
        self._check_usable(f"{self.name}.done")
        self._done = True

    def fini(self) -> None:
        """Finish the transaction; every lock must have been released."""
        call = f"{self.name}.fini"
        self._check_usable(call)
        if self._held:
            raise BusyError(
                f"{call}: {self.name} still holds {', '.join(m.name for m in self._held)}"
            )
        self._finished = True

    def acquire_all(
        self, mutexes: Iterable[WWMutex], timeout: float | None = DEFAULT_TIMEOUT
    ) -> int:
        """Take every mutex, in the given order, backing off as often as needed.

        Duplicates are taken once.  Returns how many times this call backed off.  On a
        timeout every lock taken by this call is released again before the error leaves.
        """
        call = f"{self.name}.acquire_all"
        self._check_usable(call)
        if isinstance(mutexes, WWMutex) or not isinstance(mutexes, Iterable):
            raise InvalidArgumentError(f"{call}: {mutexes!r} is not an iterable of WWMutex")
        items: list[WWMutex] = []
        for m in mutexes:
            self._check_mutex(call, m)
            if not any(m is x for x in items):
                items.append(m)
        limit = check_timeout(call, timeout)
        if self._held:
            raise StateError(
                f"{call}: {self.name} already holds {len(self._held)} lock(s); "
                "acquire_all starts from nothing"
            )
        deadline = Deadline(limit)
        backoffs = 0
        first: WWMutex | None = None
        try:
            while True:
                try:
                    if first is not None:
                        self.lock_slow(first, deadline.remaining())
                    for m in items:
                        if m is not first:
                            self.lock(m, deadline.remaining())
                    return backoffs
                except WoundedError as exc:
                    backoffs += 1
                    assert isinstance(exc.mutex, WWMutex)
                    first = exc.mutex
                    self.unlock_all()
        except BaseException:
            self.unlock_all()
            self.contending = None
            raise
