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
from types import TracebackType
from typing import Any, Protocol, TypeVar

from vcmm.errors import InvalidArgumentError

_F = TypeVar("_F", bound=Callable[..., Any])

#: Every machine lock alive, so a thread can ask whether it holds any of them.
_ALL_LOCKS: weakref.WeakSet[MachineLock] = weakref.WeakSet()
_ALL_LOCKS_GUARD = threading.Lock()


class MachineLock:
    """A re-entrant lock that knows whether the calling thread holds it.

    ``with lock:`` is the C ``RLock`` plus one Python frame; :meth:`held` asks the
    ``RLock`` itself (its owner check, as :class:`threading.Condition` does), so no
    per-thread bookkeeping slows the hot paths.
    """

    __slots__ = ("__weakref__", "_rlock", "name")

    def __init__(self, name: str = "machine") -> None:
        self.name = name
        self._rlock = threading.RLock()
        with _ALL_LOCKS_GUARD:
            _ALL_LOCKS.add(self)

    def __repr__(self) -> str:
        return f"<MachineLock {self.name}>"

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._rlock.acquire(blocking, timeout)

    def release(self) -> None:
        self._rlock.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock (at any depth)."""
        return bool(self._rlock._is_owned())  # type: ignore[attr-defined]

    def __enter__(self) -> MachineLock:
        self._rlock.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._rlock.release()


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
