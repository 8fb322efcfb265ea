"""Reservation objects: who is using a buffer now, as fences, plus the buffer's lock.

Tom Cooksey pictured every buffer carrying a queue of "buffer consumers" so that a
display scan-out waits for the GPU job rendering into it, and Rob Clark wanted the
dma_buf struct to point at such a sync object (001 L109-160).  Linux's answer, which
this module follows, is the reservation object: per buffer, at most one *exclusive*
fence (the last job that writes it) and any number of *shared* fences (jobs that read
it).  The rules a user follows:

- a reader must wait for the exclusive fence only (readers do not conflict);
- a writer must wait for the exclusive fence and every shared fence;
- fences are added with the buffer's lock held (a :class:`~vcmm.share.ww.WWMutex`, so
  a job that needs several buffers takes their locks with a wound/wait
  :class:`~vcmm.share.ww.AcquireContext`);
- a new exclusive fence replaces the shared ones: the writer that owns it was made to
  wait for them, so waiting for the writer implies them;
- a new shared fence replaces an older one from the same timeline (same engine).

Reading the fences and waiting for them needs no buffer lock, so a CPU waiting for a
device never blocks the job runner that will signal that device's fence.
"""

from __future__ import annotations

import threading

from vcmm.errors import InvalidArgumentError, StateError, WaitTimeoutError
from vcmm.share.fence import DEFAULT_TIMEOUT, Deadline, Fence, check_timeout
from vcmm.share.ww import AcquireContext, WWClass, WWMutex

#: The class every buffer's reservation lock belongs to, so that one transaction can
#: take the locks of any buffers together.
RESERVATION_CLASS = WWClass("reservation")


class ReservationObject:
    """The fences of one buffer and the lock that guards changing them."""

    def __init__(self, name: str = "resv", ww_class: WWClass | None = None) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"ReservationObject name {name!r} must be non-empty")
        if ww_class is not None and not isinstance(ww_class, WWClass):
            raise InvalidArgumentError(f"ReservationObject ww_class {ww_class!r} is not a WWClass")
        self.name = name
        self.mutex = WWMutex(ww_class or RESERVATION_CLASS, f"{name}.lock")
        self._fence_lock = threading.Lock()
        self._exclusive: Fence | None = None
        self._shared: list[Fence] = []

    def __repr__(self) -> str:
        excl = self._exclusive.name if self._exclusive else None
        return f"<ReservationObject {self.name} excl={excl} shared={len(self._shared)}>"

    # -- the lock -------------------------------------------------------------------------

    def lock(
        self, ctx: AcquireContext | None = None, timeout: float | None = DEFAULT_TIMEOUT
    ) -> None:
        """Take the buffer lock, inside transaction ``ctx`` if given."""
        if ctx is None:
            self.mutex.lock(timeout)
        elif isinstance(ctx, AcquireContext):
            ctx.lock(self.mutex, timeout)
        else:
            raise InvalidArgumentError(f"{self.name}.lock: ctx {ctx!r} is not an AcquireContext")

    def unlock(self) -> None:
        self.mutex.unlock()

    def _require_locked(self, call: str) -> None:
        if not self.mutex.held_by_current_thread():
            raise StateError(
                f"{call}: {self.name} must be locked by the calling thread to change its fences"
            )

    # -- adding fences (lock held) ----------------------------------------------------------

    @staticmethod
    def _check_fence(call: str, fence: object) -> Fence:
        if not isinstance(fence, Fence):
            raise InvalidArgumentError(f"{call}: {fence!r} is not a Fence")
        return fence

    def add_exclusive_fence(self, fence: Fence) -> None:
        """Record a job that writes the buffer; it replaces every earlier fence.

        The job must already depend on :meth:`fences` ``(for_write=True)``; that is what
        makes dropping the shared fences safe.
        """
        call = f"{self.name}.add_exclusive_fence"
        f = self._check_fence(call, fence)
        self._require_locked(call)
        with self._fence_lock:
            self._exclusive = f
            self._shared = []

    def add_shared_fence(self, fence: Fence) -> None:
        """Record a job that reads the buffer (alongside other readers)."""
        call = f"{self.name}.add_shared_fence"
        f = self._check_fence(call, fence)
        self._require_locked(call)
        with self._fence_lock:
            if any(f is old for old in self._shared):
                raise StateError(f"{call}: {f.name} is already a shared fence of {self.name}")
            kept = []
            for old in self._shared:
                if old.signaled:
                    continue
                if f.timeline is not None and old.timeline is f.timeline and f.is_later(old):
                    continue
                kept.append(old)
            kept.append(f)
            self._shared = kept

    # -- reading and waiting (no lock needed) -------------------------------------------------

    @property
    def exclusive_fence(self) -> Fence | None:
        with self._fence_lock:
            return self._exclusive

    @property
    def shared_fences(self) -> tuple[Fence, ...]:
        with self._fence_lock:
            return tuple(self._shared)

    def fences(self, for_write: bool) -> list[Fence]:
        """The unsignalled fences an access conflicts with.

        A reader (``for_write=False``) conflicts with the writer only; a writer with
        the writer and every reader.
        """
        if not isinstance(for_write, bool):
            raise InvalidArgumentError(f"{self.name}.fences: for_write={for_write!r} is not a bool")
        with self._fence_lock:
            found = [] if self._exclusive is None else [self._exclusive]
            if for_write:
                found += self._shared
        return [f for f in found if not f.signaled]

    def test_signaled(self, for_write: bool) -> bool:
        """Whether an access of that kind could start now without waiting."""
        return not self.fences(for_write)

    def wait(self, for_write: bool, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Wait until an access of that kind no longer conflicts with any job.

        One ``timeout`` covers every fence; on expiry :class:`WaitTimeoutError` names
        the fence still pending.
        """
        call = f"{self.name}.wait"
        pending = self.fences(for_write)
        limit = check_timeout(call, timeout)
        deadline = Deadline(limit)
        for fence in pending:
            try:
                fence.wait(deadline.remaining())
            except WaitTimeoutError:
                kind = "write" if for_write else "read"
                raise WaitTimeoutError(
                    f"{call}: a {kind} access still conflicts with {fence.name} "
                    f"after {limit} s; the job that owns it never completed"
                ) from None
