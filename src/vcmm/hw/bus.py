"""Bus masters and the interconnect that routes their transactions.

A device issues transactions in its own address space.  Its translation path turns a
device address into physical runs; the :class:`Interconnect` then moves the bytes:
a *coherent* master is snooped by the CPU data cache (it sees dirty lines and its writes
update them), a *non-coherent* master goes straight to DRAM and so sees stale memory
while the CPU holds newer data in its cache.  That difference is the reason the DMA
API's cache maintenance exists, so it is modelled rather than assumed away.

Two kinds of master:

- :class:`SmmuDevice` sits behind an SMMU context: every transaction is split at the
  boundaries of the pages that map it and each page is translated once (TLB, walk,
  permission, fault hook).
- :class:`PhysicalDevice` addresses memory one-to-one, possibly through ``dma-ranges``
  windows where its bus address differs from the physical address (the seed's "SDRAM
  at 0x80000000 physical is 0x40000000 as far as the DMA device is concerned").

Data moves in whole runs with numpy slices, never byte by byte; physically adjacent
runs are merged first so a buffer mapped with 4 KiB pages that happens to be physically
contiguous still moves in one slice.

Transactions are all-or-nothing for memory: every run is translated and checked
against the address map before any byte moves, so a faulting transaction writes
nothing.  The translation side effects that real hardware would also leave behind
(TLB fills, fault counters) do remain.

Every master has access observers (:mod:`vcmm.hw.observe`): they see each transaction
after translation and before data moves, and may refuse it.  Every transaction runs
under the master's machine lock (:mod:`vcmm.hw.lock`): the system's when a
:class:`vcmm.System` built it, else a private one (an :class:`SmmuDevice` shares its
SMMU's).
"""

from __future__ import annotations

import abc
import bisect
import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, FaultKind
from vcmm.checks import is_int
from vcmm.errors import (
    DeviceFaultError,
    InvalidArgumentError,
    NotMappedError,
    StateError,
)
from vcmm.hw import engine
from vcmm.hw.cache import DataCache
from vcmm.hw.lock import MachineLock, check_lock
from vcmm.hw.master import TranslationPath
from vcmm.hw.memory import Bytes, PhysicalMemory, as_u8
from vcmm.hw.observe import AccessEvent, Observable, Observer, frozen
from vcmm.hw.smmu import SmmuContext
from vcmm.hw.stream import merged_runs
from vcmm.ranges import AddressRange, join_runs

#: Device addresses are at most 64 bits wide.
ADDRESS_LIMIT = 1 << 64
#: Batch bursts must stay inside one page of the smallest granule, so that one burst is
#: exactly one translation on both the per-access and the batch path.
BURST_GRANULE = 4096

#: A physical run: (physical address, length).
Run = tuple[int, int]


#: The shortest transfer a device hands to the compiled engine as one span.  The
#: kernels' fixed cost (exporting the TLB to arrays, planning the span) is tens of
#: microseconds: below about 64 pages of 4 KiB the page-by-page Python steps are
#: cheaper.  Both give the same runs, TLB state and counters (the engines'
#: equivalence tests), so the choice is only about speed.
COMPILED_SPAN_MIN = 256 * 1024


def _check_addr_len(who: str, addr: object, length: object) -> tuple[int, int]:
    """Validate an (address, length) pair of a transaction and return them as ints."""
    for label, value in (("address", addr), ("length", length)):
        if not is_int(value):
            raise InvalidArgumentError(f"{who}: {label} {value!r} is not an integer")
    a, n = int(addr), int(length)  # type: ignore[call-overload]
    if a < 0 or n < 0:
        raise InvalidArgumentError(f"{who}: address {a:#x} and length {n} must be >= 0")
    if a + n > ADDRESS_LIMIT:
        raise InvalidArgumentError(
            f"{who}: range {AddressRange(a, n)} runs past the 64-bit address space"
        )
    return a, n


def _runs_overlap(a: list[Run], b: list[Run]) -> bool:
    """Whether any run of ``a`` overlaps any run of ``b`` (sort, prefix max, bisect)."""
    if not a or not b:
        return False
    b_sorted = sorted(b)
    starts = [pa for pa, _ in b_sorted]
    max_end = list(itertools.accumulate((pa + n for pa, n in b_sorted), max))
    for pa, n in a:
        i = bisect.bisect_left(starts, pa + n)  # b-runs that start before this run ends
        if i and max_end[i - 1] > pa:
            return True
    return False


class Interconnect:
    """Routes device transactions to DRAM or, for coherent masters, through the CPU cache.

    ``cpu_cache`` may be ``None`` for a system without a CPU data cache; coherent and
    non-coherent masters then behave alike.
    """

    def __init__(self, memory: PhysicalMemory, cpu_cache: DataCache | None = None) -> None:
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(
                f"Interconnect needs a PhysicalMemory, got {type(memory).__name__}"
            )
        if cpu_cache is not None and not isinstance(cpu_cache, DataCache):
            raise InvalidArgumentError(
                f"Interconnect cpu_cache must be a DataCache or None, got {cpu_cache!r}"
            )
        if cpu_cache is not None and cpu_cache.memory is not memory:
            raise InvalidArgumentError("Interconnect: the CPU cache fronts another PhysicalMemory")
        self.memory = memory
        self.cpu_cache = cpu_cache

    def check_backed(self, device: str, runs: list[Run], addrs: list[int]) -> None:
        """Refuse (before any byte moves) a transaction whose physical runs hit a hole."""
        for (pa, n), addr in zip(runs, addrs, strict=True):
            if not self.memory.is_backed(pa, n):
                raise DeviceFaultError(
                    f"device {device!r}: address {addr:#x} -> physical {pa:#x} "
                    f"(+{n:#x}) is not backed by memory: bus fault",
                    device=device,
                    address=addr,
                    pa=pa,
                    kind=FaultKind.BUS,
                )

    def read(self, pa: int, length: int, *, coherent: bool) -> npt.NDArray[np.uint8]:
        """Fetch ``length`` bytes at ``pa`` as the device sees them."""
        if coherent and self.cpu_cache is not None:
            return as_u8(self.cpu_cache.snoop_read(pa, length)).copy()
        return self.memory.read_array(pa, length)

    def write(self, pa: int, data: Bytes, *, coherent: bool) -> None:
        """Store ``data`` at ``pa`` as the device would."""
        if coherent and self.cpu_cache is not None:
            self.cpu_cache.snoop_write(pa, as_u8(data))
        else:
            self.memory.write(pa, data)

    def copy(self, dst: int, src: int, length: int, *, coherent: bool) -> None:
        """Move ``length`` bytes memory to memory (memmove semantics).

        The non-coherent path is zero-copy: memory moves one numpy slice per chunk of
        its sparse store, never through a staging buffer.
        """
        if length == 0:
            return
        if coherent and self.cpu_cache is not None:
            self.cpu_cache.snoop_write(dst, as_u8(self.cpu_cache.snoop_read(src, length)).copy())
            return
        self.memory.copy(dst, src, length)


@dataclass(frozen=True, slots=True)
class BatchCounts:
    """What :meth:`BusMaster.access_batch` did: bursts issued, bytes they carry."""

    transactions: int
    bytes: int


class BusMaster(Observable, abc.ABC):
    """A device that issues memory transactions in its own address space.

    Subclasses supply the translation (:meth:`resolve`); this base class moves the data
    through the :class:`Interconnect`, keeps the counters, tells the observers and
    holds the machine lock (``lock``; a private one if none is given) for each
    transaction.
    """

    def __init__(
        self,
        name: str,
        interconnect: Interconnect,
        *,
        coherent: bool = False,
        lock: MachineLock | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"bus master name {name!r} must be a non-empty string")
        if not isinstance(interconnect, Interconnect):
            raise InvalidArgumentError(
                f"bus master {name!r} needs an Interconnect, got {type(interconnect).__name__}"
            )
        if not isinstance(coherent, bool):
            raise InvalidArgumentError(f"bus master {name!r}: coherent={coherent!r} is not a bool")
        #: The machine lock every transaction of this master holds.
        self.lock = check_lock(f"bus master {name!r}", lock)
        self._observers: list[Observer] = []
        self.name = name
        self.interconnect = interconnect
        self.coherent = coherent
        #: Bytes this master read / wrote, transactions it issued, transactions a fault
        #: terminated.
        self.bytes_read = 0
        self.bytes_written = 0
        self.transactions = 0
        self.faults = 0

    # -- translation, supplied by subclasses ------------------------------------------------

    def resolve(self, addr: int, length: int, access: Access) -> list[Run]:
        """Translate ``[addr, addr+length)`` into physical runs, in order.

        Raises :class:`DeviceFaultError` (after any fault handling) if part of the range
        cannot be translated; moves no data.
        """
        addr, length = _check_addr_len(f"{self.name}.resolve", addr, length)
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"{self.name}.resolve: access {access!r} is not an Access")
        with self.lock:
            return self._resolve(addr, length, access)

    @abc.abstractmethod
    def _resolve(self, addr: int, length: int, access: Access) -> list[Run]:
        """:meth:`resolve`, called with the lock held and the arguments checked."""

    @abc.abstractmethod
    def _batch_translate(
        self, addrs: npt.NDArray[np.uint64], access: Access
    ) -> npt.NDArray[np.uint64]:
        """Translate every address of a batch with exact per-access accounting; the
        physical address of each."""

    def _account(self, access: Access, nbytes: int, transactions: int) -> None:
        self.transactions += transactions
        if access is Access.WRITE:
            self.bytes_written += nbytes
        else:
            self.bytes_read += nbytes

    def _resolve_checked(self, addr: int, length: int, access: Access) -> list[Run]:
        """Translate, check the physical side is backed, and merge adjacent runs."""
        try:
            runs = self._resolve(addr, length, access)
            starts, pos = [], addr
            for _, n in runs:
                starts.append(pos)
                pos += n
            self.interconnect.check_backed(self.name, runs, starts)
        except DeviceFaultError as exc:
            self.faults += 1
            if self._observers:
                self._notify(AccessEvent(self.name, access, addr, length, fault=exc))
            raise
        return join_runs(runs)  # physically adjacent runs move as one slice

    def _observe(self, access: Access, addr: int, length: int, runs: list[Run]) -> None:
        self._notify(AccessEvent(self.name, access, addr, length, tuple(runs)))

    # -- transactions -----------------------------------------------------------------------

    def read_array(self, addr: int, length: int) -> npt.NDArray[np.uint8]:
        """Read ``length`` bytes at device address ``addr`` into a fresh uint8 array."""
        addr, length = _check_addr_len(f"{self.name}.read", addr, length)
        with self.lock:
            runs = self._resolve_checked(addr, length, Access.READ) if length else []
            if self._observers:
                self._observe(Access.READ, addr, length, runs)
            out = np.empty(length, dtype=np.uint8)
            pos = 0
            for pa, n in runs:
                out[pos : pos + n] = self.interconnect.read(pa, n, coherent=self.coherent)
                pos += n
            self._account(Access.READ, length, 1)
        return out

    def read(self, addr: int, length: int) -> bytes:
        """Read ``length`` bytes at device address ``addr``."""
        return self.read_array(addr, length).tobytes()

    def write(self, addr: int, data: Bytes) -> None:
        """Write ``data`` at device address ``addr``; nothing is written if any page faults."""
        try:
            src = as_u8(data)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(f"{self.name}.write: {exc}") from None
        addr, length = _check_addr_len(f"{self.name}.write", addr, int(src.size))
        with self.lock:
            runs = self._resolve_checked(addr, length, Access.WRITE) if length else []
            if self._observers:
                self._observe(Access.WRITE, addr, length, runs)
            pos = 0
            for pa, n in runs:
                self.interconnect.write(pa, src[pos : pos + n], coherent=self.coherent)
                pos += n
            self._account(Access.WRITE, length, 1)

    def copy(self, src_addr: int, dst_addr: int, length: int) -> None:
        """DMA-engine memcpy inside this device's address space (memmove semantics).

        Both sides are translated first (source for read, destination for write); then
        the data moves run by run with numpy slices.  If the two sides overlap
        physically the source is staged first so the result equals a memmove.
        """
        src_addr, length = _check_addr_len(f"{self.name}.copy", src_addr, length)
        dst_addr, _ = _check_addr_len(f"{self.name}.copy", dst_addr, length)
        with self.lock:
            self._copy(src_addr, dst_addr, length)

    def _copy(self, src_addr: int, dst_addr: int, length: int) -> None:
        if length == 0:
            if self._observers:
                self._observe(Access.READ, src_addr, 0, [])
                self._observe(Access.WRITE, dst_addr, 0, [])
            self._account(Access.READ, 0, 1)
            self._account(Access.WRITE, 0, 1)
            return
        src_runs = self._resolve_checked(src_addr, length, Access.READ)
        dst_runs = self._resolve_checked(dst_addr, length, Access.WRITE)
        if self._observers:
            self._observe(Access.READ, src_addr, length, src_runs)
            self._observe(Access.WRITE, dst_addr, length, dst_runs)
        ic = self.interconnect
        if _runs_overlap(src_runs, dst_runs):
            staged = np.empty(length, dtype=np.uint8)
            pos = 0
            for pa, n in src_runs:
                staged[pos : pos + n] = ic.read(pa, n, coherent=self.coherent)
                pos += n
            pos = 0
            for pa, n in dst_runs:
                ic.write(pa, staged[pos : pos + n], coherent=self.coherent)
                pos += n
        else:
            si = di = 0
            s_pa, s_left = src_runs[0]
            d_pa, d_left = dst_runs[0]
            while True:
                n = min(s_left, d_left)
                ic.copy(d_pa, s_pa, n, coherent=self.coherent)
                s_pa, s_left, d_pa, d_left = s_pa + n, s_left - n, d_pa + n, d_left - n
                if s_left == 0:
                    si += 1
                    if si == len(src_runs):
                        break
                    s_pa, s_left = src_runs[si]
                if d_left == 0:
                    di += 1
                    d_pa, d_left = dst_runs[di]
        self._account(Access.READ, length, 1)
        self._account(Access.WRITE, length, 1)

    def access_batch(
        self, addrs: npt.NDArray[np.uint64], access: Access, burst: int = 64
    ) -> BatchCounts:
        """Translate a workload's bursts in one batch, moving no data.

        Each address is one burst of ``burst`` bytes that must not cross a 4 KiB
        boundary, so it is exactly one translation, as it would be on the per-access
        path (:meth:`read` / :meth:`write` of the same burst): TLB counters and this
        master's counters come out identical, also when a fault terminates the batch
        (the bursts before it count as done).  Observers get one event for the whole
        batch (addresses and physical addresses as arrays); the lock is taken once.
        """
        vas = self._check_batch(addrs, access, burst)
        total = int(vas.size) * burst
        with self.lock:
            try:
                pas = self._batch_translate(vas, access)
            except DeviceFaultError as exc:
                # the bursts before the fault completed, as they would have one by one
                done = exc.completed
                self._account(access, done * burst, done)
                self.faults += 1
                if self._observers:
                    self._notify(self._batch_event(access, vas, burst, fault=exc))
                raise
            if self._observers:
                self._notify(self._batch_event(access, vas, burst, pas=pas))
            self._account(access, total, int(vas.size))
        return BatchCounts(transactions=int(vas.size), bytes=total)

    def _batch_event(
        self,
        access: Access,
        vas: npt.NDArray[np.uint64],
        burst: int,
        *,
        pas: npt.NDArray[np.uint64] | None = None,
        fault: DeviceFaultError | None = None,
    ) -> AccessEvent:
        """The one event a batch gives its observers (translated, or refused)."""
        return AccessEvent(
            self.name,
            access,
            int(vas[0]) if vas.size else 0,
            int(vas.size) * burst,
            addrs=frozen(vas),
            pas=frozen(pas) if pas is not None else None,
            burst=burst,
            fault=fault,
        )

    def _check_batch(self, addrs: object, access: object, burst: object) -> npt.NDArray[np.uint64]:
        who = f"{self.name}.access_batch"
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"{who}: access {access!r} is not an Access")
        if not is_int(burst) or not 0 < burst <= BURST_GRANULE:
            raise InvalidArgumentError(
                f"{who}: burst {burst!r} must be an integer in 1..{BURST_GRANULE}"
            )
        if not isinstance(addrs, np.ndarray) or addrs.ndim != 1:
            raise InvalidArgumentError(f"{who}: addresses must be a 1-D numpy array")
        if addrs.dtype != np.uint64:
            if not np.issubdtype(addrs.dtype, np.integer) or (addrs.size and addrs.min() < 0):
                raise InvalidArgumentError(
                    f"{who}: addresses must be non-negative integers, got dtype {addrs.dtype}"
                )
            addrs = addrs.astype(np.uint64)
        crossing = (addrs % np.uint64(BURST_GRANULE)) + np.uint64(burst) > np.uint64(BURST_GRANULE)
        if crossing.any():
            bad = int(addrs[int(np.argmax(crossing))])
            raise InvalidArgumentError(
                f"{who}: burst of {burst} bytes at {bad:#x} crosses a 4 KiB boundary; "
                "split it so each burst is one translation"
            )
        return addrs

    def counters(self) -> dict[str, int]:
        """The master's transaction counters, for reports."""
        return {
            "bytes_read": self.bytes_read,
            "bytes_written": self.bytes_written,
            "transactions": self.transactions,
            "faults": self.faults,
        }


class SmmuDevice(BusMaster):
    """A device behind an SMMU context: every page of a transaction is translated.

    A transaction issued while the context is not active (unbound, or bound but
    deactivated) raises :class:`StateError` instead of faulting: on the seed's SMMU the
    context must be activated before its device runs, so this is a software sequencing
    bug, not a translation fault a handler could fix.
    """

    path: TranslationPath = TranslationPath.IOMMU

    def __init__(
        self,
        name: str,
        ctx: SmmuContext,
        interconnect: Interconnect,
        *,
        coherent: bool = False,
        lock: MachineLock | None = None,
    ) -> None:
        if not isinstance(ctx, SmmuContext):
            raise InvalidArgumentError(
                f"SmmuDevice {name!r} needs an SmmuContext, got {type(ctx).__name__}"
            )
        # The device holds its SMMU's lock: its transactions walk the SMMU's tables and
        # fill the TLB every context of that SMMU shares.
        if lock is not None and lock is not ctx.lock:
            raise InvalidArgumentError(
                f"SmmuDevice {name!r}: lock {lock!r} is not the lock of SMMU "
                f"{ctx.smmu.name!r} ({ctx.lock!r}); a device behind an SMMU shares its lock"
            )
        super().__init__(name, interconnect, coherent=coherent, lock=ctx.lock)
        self.ctx = ctx

    def _require_active(self) -> None:
        if not self.ctx.is_active:
            raise StateError(
                f"device {self.name!r}: SMMU context {self.ctx.name!r} is not active; "
                "bind and activate it before the device issues transactions"
            )

    def _resolve(self, addr: int, length: int, access: Access) -> list[Run]:
        self._require_active()
        if length >= COMPILED_SPAN_MIN and engine.compiled():
            span = self.ctx.translate_span_held(addr, length, access, device=self.name)
            return merged_runs(self.interconnect.memory, span.pa, span.length)
        runs: list[Run] = []
        va, end = addr, addr + length
        while va < end:
            tr = self.ctx.translate_access_held(va, access, device=self.name)
            page_end = va - va % tr.page_size + tr.page_size
            n = min(end, page_end) - va
            runs.append((tr.pa, n))
            va += n
        return runs

    def _account(self, access: Access, nbytes: int, transactions: int) -> None:
        super()._account(access, nbytes, transactions)
        self.ctx.account(access, nbytes)

    def _batch_translate(
        self, addrs: npt.NDArray[np.uint64], access: Access
    ) -> npt.NDArray[np.uint64]:
        self._require_active()
        return self.ctx.translate_batch(addrs, access, device=self.name)


@dataclass(frozen=True, slots=True)
class DmaWindow:
    """One ``dma-ranges`` entry: device addresses ``[bus, bus+size)`` reach ``[phys, ...)``."""

    bus: int
    phys: int
    size: int

    @property
    def bus_range(self) -> AddressRange:
        return AddressRange(self.bus, self.size)

    @property
    def phys_range(self) -> AddressRange:
        return AddressRange(self.phys, self.size)


class PhysicalDevice(BusMaster):
    """A device that addresses memory one-to-one, with optional bus-address offsets.

    Give either ``bus_offset`` (device address = physical - offset, everywhere) or
    ``dma_ranges`` as ``(bus_addr, phys_addr, size)`` windows.  A transaction touching a
    device address outside every window raises :class:`DeviceFaultError` (kind
    ``BUS``): the interconnect has no route for it.
    """

    path: TranslationPath = TranslationPath.PHYSICAL

    def __init__(
        self,
        name: str,
        interconnect: Interconnect,
        *,
        coherent: bool = False,
        bus_offset: int = 0,
        dma_ranges: list[tuple[int, int, int]] | None = None,
        lock: MachineLock | None = None,
    ) -> None:
        super().__init__(name, interconnect, coherent=coherent, lock=lock)
        if not is_int(bus_offset):
            raise InvalidArgumentError(f"device {name!r}: bus_offset {bus_offset!r} is not an int")
        if dma_ranges is not None and bus_offset != 0:
            raise InvalidArgumentError(
                f"device {name!r}: give bus_offset ({bus_offset:#x}) or dma_ranges, not both"
            )
        if dma_ranges is None:
            if bus_offset >= 0:
                windows = [DmaWindow(0, bus_offset, ADDRESS_LIMIT - bus_offset)]
            else:
                windows = [DmaWindow(-bus_offset, 0, ADDRESS_LIMIT + bus_offset)]
        else:
            windows = self._check_windows(name, dma_ranges)
        self.windows: tuple[DmaWindow, ...] = tuple(sorted(windows, key=lambda w: w.bus))

    @staticmethod
    def _check_windows(name: str, dma_ranges: object) -> list[DmaWindow]:
        if not isinstance(dma_ranges, list | tuple) or not dma_ranges:
            raise InvalidArgumentError(
                f"device {name!r}: dma_ranges must be a non-empty list of (bus, phys, size)"
            )
        windows = []
        for entry in dma_ranges:
            if (
                not isinstance(entry, tuple | list)
                or len(entry) != 3
                or any(not is_int(v) for v in entry)
            ):
                raise InvalidArgumentError(
                    f"device {name!r}: dma-ranges entry {entry!r} is not (bus, phys, size) ints"
                )
            bus, phys, size = entry
            if bus < 0 or phys < 0 or size <= 0 or bus + size > ADDRESS_LIMIT:
                raise InvalidArgumentError(
                    f"device {name!r}: dma-ranges entry bus={bus:#x} phys={phys:#x} "
                    f"size={size:#x} needs size > 0 and addresses >= 0 within 64 bits"
                )
            windows.append(DmaWindow(bus, phys, size))
        ordered = sorted(windows, key=lambda w: w.bus)
        for a, b in itertools.pairwise(ordered):
            if a.bus_range.overlaps(b.bus_range):
                raise InvalidArgumentError(
                    f"device {name!r}: dma-ranges bus windows {a.bus_range} and "
                    f"{b.bus_range} overlap"
                )
        return ordered

    def _window_of(self, addr: int) -> DmaWindow | None:
        for w in self.windows:
            if w.bus <= addr < w.bus + w.size:
                return w
        return None

    def bus_to_phys(self, addr: int) -> int:
        """The physical address device address ``addr`` reaches."""
        addr, _ = _check_addr_len(f"{self.name}.bus_to_phys", addr, 0)
        w = self._window_of(addr)
        if w is None:
            raise NotMappedError(
                f"device {self.name!r}: bus address {addr:#x} is outside every dma-ranges window"
            )
        return w.phys + (addr - w.bus)

    def phys_to_bus(self, pa: int) -> int:
        """The device address that reaches physical ``pa`` (what a DMA cookie holds)."""
        pa, _ = _check_addr_len(f"{self.name}.phys_to_bus", pa, 0)
        for w in self.windows:
            if w.phys <= pa < w.phys + w.size:
                return w.bus + (pa - w.phys)
        raise NotMappedError(
            f"device {self.name!r}: physical address {pa:#x} is outside every dma-ranges "
            "window; the device cannot reach it"
        )

    def _fault(self, addr: int, access: Access) -> DeviceFaultError:
        return DeviceFaultError(
            f"device {self.name!r}: {access.value} at bus address {addr:#x} is outside every "
            "dma-ranges window: bus fault",
            device=self.name,
            address=addr,
            access=access,
            kind=FaultKind.BUS,
        )

    def _resolve(self, addr: int, length: int, access: Access) -> list[Run]:
        runs: list[Run] = []
        pos, end = addr, addr + length
        while pos < end:
            w = self._window_of(pos)
            if w is None:
                raise self._fault(pos, access)
            n = min(end, w.bus + w.size) - pos
            runs.append((w.phys + (pos - w.bus), n))
            pos += n
        return runs

    def _batch_translate(
        self, addrs: npt.NDArray[np.uint64], access: Access
    ) -> npt.NDArray[np.uint64]:
        inside = np.zeros(addrs.size, dtype=bool)
        pas = np.zeros(addrs.size, dtype=np.uint64)
        for w in self.windows:
            lo = np.uint64(w.bus)
            hi = w.bus + w.size
            hit = addrs >= lo
            if hi < ADDRESS_LIMIT:
                hit &= addrs < np.uint64(hi)
            pas[hit] = addrs[hit] - lo + np.uint64(w.phys)
            inside |= hit
        if not inside.all():
            first = int(np.argmin(inside))
            err = self._fault(int(addrs[first]), access)
            err.completed = first
            raise err
        return pas
