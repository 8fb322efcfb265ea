"""The machine lock: one thread at a time drives one simulated machine.

Caches, TLBs and page tables in memory are plain Python state, not thread-safe, while
the sharing layer runs device jobs on their own threads next to the callers' threads.
A booted :class:`vcmm.System` therefore owns one re-entrant :class:`MachineLock` and
hands it to every hardware object it builds; each public entry point for data movement
or table changes (a device's ``read``/``write``/``copy``/``access_batch``, the CPU's
loads, stores, cache and TLB maintenance and mapping calls, an SMMU context's map,
unmap and translation) runs under it, and so does every public VCMM call.  Re-entrant,
because those calls nest: a device access faults, the fault handler backs the page
through the VCMM, which edits the tables.

Hardware built on its own (no system) gets a private lock per object, so ``vcmm.hw``
stays usable alone and costs the same.

:meth:`MachineLock.held` answers "does *this* thread hold it", which is what the
sharing layer's deadlock rule needs (a thread holding a machine's lock must not wait
for a fence that a job needing the lock will signal); :func:`held_machine_locks`
counts the machine locks the calling thread holds, over every machine alive.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from threading import get_ident
from types import TracebackType
from typing import Any, Protocol, TypeVar

from vcmm.errors import InvalidArgumentError, StateError

_F = TypeVar("_F", bound=Callable[..., Any])

#: Every machine lock alive, so a thread can ask whether it holds any of them.
_ALL_LOCKS: weakref.WeakSet[MachineLock] = weakref.WeakSet()
_ALL_LOCKS_GUARD = threading.Lock()


class MachineLock:
    """A re-entrant lock that knows which thread holds it and how deep.

    It tracks its owner (the holding thread's ident) and the nesting depth itself, over
    a plain :class:`threading.Lock`, so :meth:`held` is a documented attribute compare
    rather than a call into CPython's private ``RLock._is_owned``.  Only the owning
    thread ever writes ``_owner``: another thread may read a stale value, but never its
    own ident, so ``held()`` is exact for the calling thread without extra locking.
    """

    __slots__ = ("__weakref__", "_depth", "_lock", "_owner", "name")

    def __init__(self, name: str = "machine") -> None:
        self.name = name
        self._lock = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        with _ALL_LOCKS_GUARD:
            _ALL_LOCKS.add(self)

    def __repr__(self) -> str:
        return f"<MachineLock {self.name}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Take the lock (again, if this thread holds it); False if it timed out."""
        me = get_ident()
        if self._owner == me:
            self._depth += 1
            return True
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = me
        self._depth = 1
        return True

    def release(self) -> None:
        """Undo one :meth:`acquire`; the lock is free when the outermost one is undone."""
        if self._owner != get_ident():
            raise StateError(
                f"{self!r}: release by a thread that does not hold the lock (it is "
                f"{'free' if self._owner is None else 'held by another thread'})"
            )
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock (at any depth)."""
        return self._owner == get_ident()

    def __enter__(self) -> MachineLock:
        # acquire() inlined: every device access and CPU load enters here.
        me = get_ident()
        if self._owner == me:
            self._depth += 1
        else:
            self._lock.acquire()
            self._owner = me
            self._depth = 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # release() inlined; a with-block entered by this thread is always its owner.
        self._depth -= 1
        if not self._depth:
            self._owner = None
            self._lock.release()


def held_machine_locks() -> list[MachineLock]:
    """The machine locks the calling thread holds (of every machine alive)."""
    with _ALL_LOCKS_GUARD:
        alive = list(_ALL_LOCKS)
    return [lock for lock in alive if lock.held()]


def check_lock(who: str, lock: object) -> MachineLock:
    """``lock`` as given to a hardware constructor: a :class:`MachineLock`, or ``None``
    for a private one (a standalone object)."""
    if lock is None:
        return MachineLock(who)
    if not isinstance(lock, MachineLock):
        raise InvalidArgumentError(f"{who}: lock {lock!r} is not a vcmm.hw.MachineLock")
    return lock


class _HasLock(Protocol):
    lock: MachineLock


def machine_locked(fn: _F) -> _F:
    """Run a method under ``self.lock`` (for entry points off the hottest paths, which
    take the lock inline with ``with self.lock:``)."""

    @functools.wraps(fn)
    def method(self: _HasLock, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return fn(self, *args, **kwargs)

    return method  # type: ignore[return-value]
