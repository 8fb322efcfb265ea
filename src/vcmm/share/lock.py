"""The hardware lock: one thread at a time drives the simulated machine.

The simulated hardware (caches, TLBs, page tables in memory) and the VCMM core are
not thread-safe, while the sharing layer runs device jobs on their own threads
(:mod:`vcmm.share.jobs`) next to the caller's threads (processes reading mappings,
drivers mapping buffers).  So every use of the machine is serialised by one
re-entrant lock, :data:`SHARE_LOCK`, and users cannot forget to take it:

- every entry point of the sharing layer and every job's work runs under it;
- :func:`guard` makes every *public method* of the machine's objects take it: the
  system (the VCMM calls), the CPU, every bus master, every SMMU and SMMU context.
  ``Process.read``/``write``, a device's ``read``/``write`` and every VCMM call (the
  DMA API's and the process model's included) are then atomic against job work, from
  any thread, with no ``with`` block in user code.  (The DMA API object itself is left alone, so that its
  debugging call sites name the driver rather than a wrapper.)

:func:`guard` gives each object a subclass of its own class whose public methods
lock and then call the original (the hardware modules are not edited; ``isinstance``
still holds).  Method shadows set on the instance (the DMA-API checker's access
hooks, :mod:`vcmm.dma.hooks`) compose in either order: a shadow installed later
wraps the locked method, one installed earlier is itself wrapped, and removing a
shadow falls back to the locked class method.

Waiting for a fence while holding the lock would deadlock (the fence is signalled by
a job that needs the lock), so :func:`check_may_wait` refuses it with an error
instead; every wait in the sharing layer calls it.  Code that reaches *below* the
public methods (``system.memory``, ``cpu.cache`` or the mapping graph directly), or
drives one software object (a process, the DMA API) from several threads, wraps that
in ``with locked():``.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from vcmm.errors import StateError

#: Marks a class made by :func:`guard` (so guarding twice changes nothing).
_GUARD_MARK = "__vcmm_hardware_lock__"


class HardwareLock:
    """A re-entrant lock that knows whether the calling thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._local = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._local.depth = getattr(self._local, "depth", 0) + 1
        return got

    def release(self) -> None:
        self._lock.release()
        self._local.depth -= 1

    def held(self) -> bool:
        """Whether the calling thread holds the lock (at any depth)."""
        return getattr(self._local, "depth", 0) > 0

    def __enter__(self) -> HardwareLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


#: The one lock serialising all use of simulated machines by the sharing layer.
SHARE_LOCK = HardwareLock()


def locked() -> HardwareLock:
    """``with vcmm.share.locked():`` -- hold the hardware lock for a block of code
    that must not interleave with device jobs (only needed below the public calls)."""
    return SHARE_LOCK


def check_may_wait(call: str) -> None:
    """Refuse to block while this thread holds the hardware lock: the fence waited for
    is signalled by a job that needs the lock, so the wait could never end."""
    if SHARE_LOCK.held():
        raise StateError(
            f"{call}: would wait for a fence while this thread holds the hardware lock "
            "(inside job work or a locked() block); the job that signals it needs the "
            "lock, so this would deadlock; wait outside"
        )


def _locked_method(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        with SHARE_LOCK:
            return fn(self, *args, **kwargs)

    return method


def _locked_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with SHARE_LOCK:
            return fn(*args, **kwargs)

    setattr(call, _GUARD_MARK, True)
    return call


def _public_methods(cls: type) -> list[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        names.update(n for n in vars(klass) if not n.startswith("_"))
    return sorted(n for n in names if inspect.isfunction(inspect.getattr_static(cls, n)))


_guarded_classes: dict[type, type] = {}
_classes_lock = threading.Lock()


def _guarded_class(cls: type) -> type:
    if getattr(cls, _GUARD_MARK, False):
        return cls
    with _classes_lock:
        found = _guarded_classes.get(cls)
        if found is not None:
            return found
        body: dict[str, Any] = {
            "__slots__": (),
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            _GUARD_MARK: True,
        }
        for name in _public_methods(cls):
            body[name] = _locked_method(inspect.getattr_static(cls, name))
        made: type = type(cls)(cls.__name__, (cls,), body)
        _guarded_classes[cls] = made
        return made


def guard(obj: object) -> None:
    """Make every public method of ``obj`` run under :data:`SHARE_LOCK` (idempotent)."""
    with SHARE_LOCK:
        cls = type(obj)
        locked_cls = _guarded_class(cls)
        if locked_cls is not cls:
            obj.__class__ = locked_cls
        own = getattr(obj, "__dict__", {})
        for name in _public_methods(cls):
            shadow = own.get(name)
            if callable(shadow) and not getattr(shadow, _GUARD_MARK, False):
                setattr(obj, name, _locked_call(shadow))


def is_guarded(obj: object) -> bool:
    """Whether :func:`guard` was applied to ``obj``."""
    return bool(getattr(type(obj), _GUARD_MARK, False))
