"""CPU access to a dma-buf, bracketed: ``DMA_BUF_IOCTL_SYNC`` and ``begin_cpu_access``.

Tom Cooksey and Alan Cox asked for an access type and an optional byte range (001), and
the bracket is where CPU access takes part in the buffer's fences: START waits for the
device jobs it conflicts with (with a timeout), and until END the access is itself a
fence that later device jobs wait for (Cooksey's "another device could be blocked from
accessing that buffer until the client process called finish").  The kernel's own
bracket (key :data:`KERNEL`) guards its access through ``vmap``; user brackets are
keyed by the file description that opened them.

:class:`CpuBrackets` keeps the open brackets of one buffer and asks the buffer's
exporter for the cache work at each end; it works through the buffer's public calls.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.checks import is_int
from vcmm.dma.attrs import check_direction
from vcmm.dma.bracketwatch import ReadBracket
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.share.fence import Deadline, Fence, FenceTimeline
from vcmm.share.state import state_of

if TYPE_CHECKING:
    from vcmm.dma.debug import DebugChecker
    from vcmm.share.dmabuf import DmaBuf


class SyncFlags(enum.IntFlag):
    """``DMA_BUF_SYNC_*``: an access type (READ, WRITE or RW) and START or END."""

    START = 0
    READ = 1
    WRITE = 2
    RW = 3
    END = 4


#: Bits ``DMA_BUF_IOCTL_SYNC`` accepts.
SYNC_VALID_FLAGS = int(SyncFlags.RW | SyncFlags.END)

#: Fences of CPU accesses (user and kernel brackets) come from this timeline.
CPU_TIMELINE = FenceTimeline("cpu-access")

#: Key of the kernel's own CPU-access bracket (user brackets are keyed by description).
KERNEL = "kernel"


def check_sync_flags(call: str, flags: object) -> SyncFlags:
    """Validate a sync flag word: known bits only, and READ and/or WRITE."""
    if not is_int(flags):
        raise InvalidArgumentError(f"{call}: flags {flags!r} is not a SyncFlags word")
    if flags & ~SYNC_VALID_FLAGS:
        raise InvalidArgumentError(
            f"{call}: flags {flags:#x} has bits outside DMA_BUF_SYNC_* ({SYNC_VALID_FLAGS:#x})"
        )
    if not flags & SyncFlags.RW:
        raise InvalidArgumentError(
            f"{call}: flags {flags:#x} name no access; add SyncFlags.READ and/or WRITE"
        )
    return SyncFlags(flags)


def direction_access(call: str, direction: object) -> tuple[bool, bool]:
    """(read, write) of a kernel CPU access named as the DMA API names it: FROM_DEVICE
    (the CPU reads), TO_DEVICE (it writes) or BIDIRECTIONAL; NONE is refused."""
    direction = check_direction(call, direction)
    return (
        direction is not DmaDirection.TO_DEVICE,
        direction is not DmaDirection.FROM_DEVICE,
    )


@dataclass
class CpuSession:
    """One open CPU-access bracket: what it covers and the fence devices wait for."""

    key: object
    read: bool
    write: bool
    offset: int
    length: int
    fence: Fence
    #: The DMA-debug checker watching this READ-only bracket for writes, and what it
    #: watches (:mod:`vcmm.dma.bracketwatch`).
    watch: tuple[DebugChecker, ReadBracket] | None = None

    def allows(self, offset: int, n: int, write: bool) -> bool:
        """Whether an access of ``n`` bytes at ``offset`` falls inside the bracket."""
        permitted = self.write if write else self.read
        return permitted and self.offset <= offset and offset + n <= self.offset + self.length


class CpuBrackets:
    """The open CPU-access brackets of one dma-buf, by key."""

    def __init__(self, dmabuf: DmaBuf) -> None:
        self.dmabuf = dmabuf
        self._sessions: dict[object, CpuSession] = {}

    def session(self, key: object) -> CpuSession | None:
        """The bracket open under ``key``, if any."""
        return self._sessions.get(key)

    def begin(
        self,
        call: str,
        key: object,
        read: bool,
        write: bool,
        offset: int,
        length: int,
        timeout: float | None,
        *,
        opener: str = "",
        writers: Mapping[int, str] | None = None,
    ) -> None:
        """START: wait for conflicting jobs, publish the access's fence, prepare the cache.

        ``opener`` says who opens it and ``writers`` names processes by ASID, for the
        DMA-debug checker's report of a write inside a READ-only bracket."""
        dmabuf = self.dmabuf
        with dmabuf.lock:
            dmabuf.check_alive(call)
            if key in self._sessions:
                raise StateError(
                    f"{call}: a CPU access to {dmabuf.name} is already open here; END it first"
                )
        kind = "w" if write else "r"
        fence = CPU_TIMELINE.create(f"{dmabuf.name}:cpu-{kind}")
        self._publish(fence, write, timeout)
        with dmabuf.lock:
            if key in self._sessions or dmabuf.released:
                fence.signal()  # nothing was accessed: release whoever waits on it
                raise StateError(f"{call}: a CPU access to {dmabuf.name} was opened concurrently")
            dmabuf.exporter.begin_cpu_access(dmabuf, read, write, offset, length)
            session = CpuSession(key, read, write, offset, length, fence)
            self._sessions[key] = session
            if read and not write:
                self._watch(session, opener or str(key), writers or {})

    def _watch(self, session: CpuSession, opener: str, writers: Mapping[int, str]) -> None:
        """Have the DMA-debug checker, if one is on, report writes inside the bracket."""
        dmabuf = self.dmabuf
        api = state_of(dmabuf.exporter.system).api
        checker = api.checker if api is not None else None
        if checker is None:
            return
        ranges = dmabuf.exporter.cpu_ranges(dmabuf, session.offset, session.length)
        if not ranges:
            return
        bracket = ReadBracket(dmabuf.name, opener, tuple(ranges), dict(writers))
        checker.watch_read_bracket((dmabuf.id, session.key), bracket)
        session.watch = (checker, bracket)

    def _unwatch(self, session: CpuSession) -> None:
        if session.watch is not None:
            session.watch[0].unwatch_read_bracket((self.dmabuf.id, session.key))
            session.watch = None

    def refused_write(
        self, session: CpuSession, writer: str, where: str, offset: int, length: int
    ) -> None:
        """A write of ``[offset, offset+length)`` the caller refuses: if it lands in
        READ-only ``session``'s range, the checker watching it (if any) records it too,
        without raising."""
        if session.watch is None or session.write:
            return
        start = max(offset, session.offset)
        end = min(offset + length, session.offset + session.length)
        if start >= end:
            return  # outside the bracket: refused for that reason alone
        checker, bracket = session.watch
        ranges = self.dmabuf.exporter.cpu_ranges(self.dmabuf, start, end - start)
        if ranges:
            checker.write_in_read_bracket(bracket, writer, where, ranges[0], raising=False)

    def _publish(self, fence: Fence, write: bool, timeout: float | None) -> None:
        """Wait for conflicting jobs, then add the CPU access's own fence, atomically
        under the reservation lock (retrying if a job was queued in between)."""
        deadline = Deadline(timeout)
        resv = self.dmabuf.resv
        while True:
            resv.wait(for_write=write, timeout=deadline.remaining())
            resv.lock(timeout=deadline.remaining())
            try:
                if not resv.test_signaled(for_write=write):
                    continue
                if write:
                    resv.add_exclusive_fence(fence)
                else:
                    resv.add_shared_fence(fence)
                return
            finally:
                resv.unlock()

    def end(
        self, call: str, key: object, read: bool, write: bool, offset: int, length: int
    ) -> None:
        """END: must match the START; cleans what the CPU wrote and signals the fence."""
        dmabuf = self.dmabuf
        with dmabuf.lock:
            dmabuf.check_alive(call)
            session = self._sessions.get(key)
            if session is None:
                raise StateError(
                    f"{call}: END without START: no CPU access to {dmabuf.name} is open here"
                )
            started = (session.read, session.write, session.offset, session.length)
            if started != (read, write, offset, length):
                raise StateError(
                    f"{call}: END (read={read}, write={write}, [{offset:#x}, +{length:#x})) "
                    f"does not match the START (read={session.read}, write={session.write}, "
                    f"[{session.offset:#x}, +{session.length:#x}))"
                )
            dmabuf.exporter.end_cpu_access(dmabuf, read, write, offset, length)
            del self._sessions[key]
            self._unwatch(session)
        session.fence.signal()

    def abandon(self, key: object) -> None:
        """A description went away with its bracket open (the process closed or died):
        finish the bracket as END would, so devices waiting for it go on."""
        session = self._sessions.pop(key, None)
        if session is None:
            return
        self.dmabuf.exporter.end_cpu_access(
            self.dmabuf, session.read, session.write, session.offset, session.length
        )
        self._unwatch(session)
        session.fence.signal()

    def snapshot(self) -> tuple[tuple[object, ...], ...]:
        return tuple(
            sorted((str(k), s.read, s.write, s.offset, s.length) for k, s in self._sessions.items())
        )
