"""The sharing layer and the machine lock: whose lock, and when not to wait.

The simulated machine is not thread-safe, while the sharing layer runs device jobs on
their own threads (:mod:`vcmm.share.jobs`) next to the callers' threads.  The machine
serialises itself: a booted :class:`vcmm.System` owns one re-entrant lock
(``system.lock``, :mod:`vcmm.hw.lock`) that its CPU, SMMUs and bus masters hold for
each transaction, table change and maintenance operation, and that every VCMM call
takes.  ``Process.read``/``write``, a device's ``read``/``write``/``copy`` and every
``vcm_*`` call are therefore atomic against job work from any thread, with no lock in
user code.

The sharing layer adds what is atomic at *its* level: every entry point (an exporter
call, a dma-buf operation, a /dev node ioctl) holds the lock of the system it works
on, and a job's work holds the locks of the systems its buffers belong to, so a job is
one atomic step of the machine.  Code that reaches below the public calls
(``system.memory``, ``cpu.cache``, the mapping graph) or drives one software object
(a process, the DMA API) from several threads wraps that in
``with vcmm.share.locked(system):``.

Waiting for a fence while holding a machine lock would deadlock (the fence is signalled
by a job that needs the lock), so :func:`check_may_wait` refuses it with an error
instead; every wait in the sharing layer calls it.  A fence does not know which
machine its job drives, so any machine lock the thread holds counts.
"""

from __future__ import annotations

from vcmm.core.interfaces import VcmmApi
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.lock import MachineLock, held_machine_locks


def lock_of(system: VcmmApi) -> MachineLock:
    """The machine lock of ``system`` (a booted :class:`vcmm.System`)."""
    try:
        lock = system.lock
    except AttributeError:
        lock = None
    if not isinstance(lock, MachineLock):
        raise InvalidArgumentError(f"vcmm.share: {system!r} has no machine lock (not a System)")
    return lock


def locked(system: VcmmApi) -> MachineLock:
    """``with vcmm.share.locked(system):`` -- hold the system's machine lock for a block
    that must not interleave with device jobs (only needed below the public calls)."""
    return lock_of(system)


def check_may_wait(call: str) -> None:
    """Refuse to block while this thread holds a machine lock: the fence waited for is
    signalled by a job that needs the lock, so the wait could never end."""
    held = held_machine_locks()
    if held:
        raise StateError(
            f"{call}: would wait for a fence while this thread holds the hardware lock "
            f"of {held[0].name} (inside job work, a VCMM or device call, or a locked() "
            "block); the job that signals it needs the lock, so this would deadlock; "
            "wait outside"
        )
