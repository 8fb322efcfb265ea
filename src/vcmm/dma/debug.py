"""DMA API debugging, like CONFIG_DMA_API_DEBUG, with what only a simulator knows.

Linux's ``lib/dma-debug.c`` checks the *calls*: unmapping what was never mapped,
unmapping with another size, direction or function than the map, syncing outside a
mapping, an sg list unmapped with another entry count, mappings left when a driver
lets go of its device.  The simulator also sees every *access*, so the checker adds
what real hardware hides:

- a CPU access to a streaming buffer the device owns (after map or
  ``sync_for_device``, before ``sync_for_cpu`` or unmap); reading a ``TO_DEVICE``
  buffer the device only reads is allowed;
- the CPU reading data a device wrote without ``sync_for_cpu`` (and how many of those
  lines the CPU cache holds stale), also after an unmap with ``DMA_ATTR_SKIP_CPU_SYNC``
  until a sync or unmap invalidates those bytes;
- a map, sync or unmap whose cache invalidation (ARMv7 invalidates for
  ``FROM_DEVICE``) discards dirty lines the CPU wrote while *another* mapping of the
  same bytes was handed to it: a second dma-buf importer mapping ``FROM_DEVICE``
  inside a CPU write bracket silently loses the writes the first importer was to
  see (the report names both mappings);
- a device access to a buffer the CPU owns (missing ``sync_for_device``), a device
  reading memory while the CPU cache holds dirty lines for it (the data it gets is
  stale), a device writing a ``TO_DEVICE`` buffer, a device access after unmap
  (also when the IOMMU faults it, one access or a batch: the report says why it
  faulted);
- a device access that *succeeded* after unmap because lazy invalidation left the
  translation in the IOTLB (the IOVA waits in its domain's flush queue): strict mode
  would have faulted it (``DEVICE_ACCESS_STALE_IOTLB``, naming the unmap's call site).

Accesses reach the checker through the hardware's access observers
(:mod:`vcmm.dma.hooks`), with the physical runs each one resolved to; a device's
``access_batch`` arrives as one event and is checked vectorised over its bursts.

Every report names the device, the addresses, the call that created the mapping (and
the one that unmapped it) with a short stack summary.  In ``"raise"`` mode a report
raises :class:`~vcmm.errors.DmaApiError` *before* the offending call or access
changes anything; in ``"warn"`` mode it is recorded and the call proceeds as Linux
would (an unmap with the wrong size still unmaps what the allocator says was mapped;
a device still reads stale memory), which is how a test shows the consequence.
Misuse the API cannot carry out at all (a double unmap) raises in both modes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcmm.attrs import Access, DmaDirection
from vcmm.dma.bracketwatch import ReadBracket, ReadBrackets
from vcmm.dma.callsite import CallSite
from vcmm.dma.records import DmaMapping, MapKind, Owner
from vcmm.errors import DmaApiError, InvalidArgumentError
from vcmm.ranges import AddressRange

if TYPE_CHECKING:
    from vcmm.dma.hooks import AccessHooks
    from vcmm.dma.state import DeviceEntry, DmaState
    from vcmm.hw.cache import DataCache
    from vcmm.hw.observe import AccessEvent


class ReportKind(enum.Enum):
    """What a report is about (dma-debug's message families, plus access checks)."""

    UNMAP_NOT_MAPPED = "unmap of memory never mapped"
    DOUBLE_UNMAP = "double unmap"
    UNMAP_WRONG_SIZE = "unmap with a different size"
    UNMAP_WRONG_DIRECTION = "unmap with a different direction"
    UNMAP_WRONG_FUNCTION = "unmap with the wrong function"
    UNMAP_WRONG_NENTS = "sg unmap with a different entry count"
    UNMAP_WRONG_DEVICE = "unmap by another device"
    SYNC_NOT_MAPPED = "sync of memory not mapped"
    SYNC_OUT_OF_RANGE = "sync outside the mapping"
    SYNC_WRONG_DIRECTION = "sync with a different direction"
    SYNC_WRONG_NENTS = "sg sync with a different entry count"
    CPU_ACCESS_DEVICE_OWNED = "CPU access to a buffer the device owns"
    CPU_READ_WITHOUT_SYNC = "CPU read of device-written data without sync_for_cpu"
    DEVICE_ACCESS_CPU_OWNED = "device access to a buffer the CPU owns"
    DEVICE_READ_STALE = "device read of memory the CPU cache holds dirty"
    DEVICE_WRITE_READ_ONLY = "device write to a TO_DEVICE buffer"
    DEVICE_ACCESS_AFTER_UNMAP = "device access after unmap"
    DEVICE_ACCESS_STALE_IOTLB = "device access through a stale IOTLB entry (lazy invalidation)"
    CPU_WRITES_DISCARDED = "cache invalidation discards CPU writes made for another mapping"
    LEAK_ON_REMOVE = "mappings alive when the device is removed"
    FREE_NOT_ALLOCATED = "free of a coherent buffer never allocated"
    FREE_MISMATCH = "free with a different size, handle or device"
    FREE_WHILE_MAPPED = "free of a coherent buffer still mapped by a process"
    CPU_WRITE_IN_READ_BRACKET = "CPU write to a dma-buf inside a read-only CPU-access bracket"


@dataclass(frozen=True, slots=True)
class DmaReport:
    """One finding: what, which device, where, and who made the mapping."""

    kind: ReportKind
    device: str
    message: str
    dma_addr: int | None = None
    size: int | None = None
    mapped_by: CallSite | None = None
    unmapped_by: CallSite | None = None
    call: CallSite | None = None

    def __str__(self) -> str:
        text = f"DMA-API: {self.device}: {self.message}"
        if self.call is not None:
            text += f" [in {self.call}]"
        if self.mapped_by is not None:
            text += f" [mapped by {self.mapped_by}]"
        if self.unmapped_by is not None:
            text += f" [unmapped by {self.unmapped_by}]"
        return text


MODES = ("raise", "warn")


class DebugChecker:
    """Collects :class:`DmaReport` objects; see the module notes for the checks."""

    def __init__(self, mode: str = "raise") -> None:
        self.mode = mode
        self.reports: list[DmaReport] = []
        self._state: DmaState | None = None
        self._hooks: AccessHooks | None = None
        #: READ-only dma-buf CPU-access brackets open now (:mod:`vcmm.dma.bracketwatch`).
        self.read_brackets = ReadBrackets()

    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, mode: str) -> None:
        if mode not in MODES:
            raise InvalidArgumentError(f"DebugChecker mode {mode!r} is not one of {MODES}")
        self._mode = mode

    @contextmanager
    def warning(self) -> Iterator[DebugChecker]:
        """Temporarily record instead of raising (to watch a misuse's consequence)."""
        saved = self._mode
        self._mode = "warn"
        try:
            yield self
        finally:
            self._mode = saved

    def take(self, kind: ReportKind | None = None) -> list[DmaReport]:
        """Remove and return the reports (of ``kind`` only, if given)."""
        if kind is None:
            taken, self.reports = self.reports, []
            return taken
        taken = [r for r in self.reports if r.kind is kind]
        self.reports = [r for r in self.reports if r.kind is not kind]
        return taken

    def report(
        self,
        kind: ReportKind,
        device: str,
        message: str,
        *,
        dma_addr: int | None = None,
        size: int | None = None,
        rec: DmaMapping | None = None,
        call: CallSite | None = None,
        recoverable: bool = True,
    ) -> DmaReport:
        """Record a finding; in ``raise`` mode a recoverable one raises now."""
        found = DmaReport(
            kind,
            device,
            message,
            dma_addr,
            size,
            rec.created_by if rec is not None else None,
            rec.unmapped_by if rec is not None else None,
            call,
        )
        self.reports.append(found)
        if recoverable and self._mode == "raise":
            raise DmaApiError(str(found))
        return found

    # -- installation ---------------------------------------------------------------------

    def attach(self, state: DmaState) -> None:
        """Start checking ``state``'s mappings and the system's CPU and devices."""
        from vcmm.dma.hooks import AccessHooks

        if self._state is not None:
            raise DmaApiError("this DebugChecker already watches a DMA API")
        self._state = state
        state.checker = self
        self._hooks = AccessHooks(self, state.system)
        self._hooks.install()

    def detach(self) -> None:
        if self._state is None:
            return
        assert self._hooks is not None
        self._hooks.uninstall()
        self._state.checker = None
        self._state = None
        self._hooks = None

    # -- READ-only brackets (the sharing layer opens and closes the watch) ----------------

    def watch_read_bracket(self, key: object, bracket: ReadBracket) -> None:
        """Report CPU writes to ``bracket.ranges`` until :meth:`unwatch_read_bracket`."""
        self.read_brackets.open(key, bracket)

    def unwatch_read_bracket(self, key: object) -> None:
        self.read_brackets.close(key)

    def write_in_read_bracket(
        self, bracket: ReadBracket, writer: str, where: str, hit: AddressRange, *, raising: bool
    ) -> DmaReport:
        """Report a CPU write at ``where`` (physical ``hit``) inside ``bracket``;
        ``raising=False`` records it without raising (the caller refuses the write)."""
        return self.report(
            ReportKind.CPU_WRITE_IN_READ_BRACKET,
            bracket.buffer,
            f"{writer} wrote {hit} ({where}) of {bracket.buffer} inside the "
            f"DMA_BUF_SYNC_START|READ bracket {bracket.opener} opened; END does not clean a "
            "read bracket, so the write may never reach the devices (open it READ|WRITE)",
            size=hit.size,
            recoverable=raising,
        )

    # -- access checks (called by the hooks before each access moves data) ---------------

    def cpu_access(self, event: AccessEvent) -> None:
        """A CPU load or store about to touch ``event.runs``."""
        state = self._state
        if state is None:
            return
        if event.access is Access.WRITE and self.read_brackets and event.length > 0:
            stored = [AddressRange(pa, n) for pa, n in event.runs]
            for bracket, landed in self.read_brackets.hits(stored):
                writer = bracket.writer(event.asid, event.user)
                self.write_in_read_bracket(
                    bracket, writer, f"va {event.address:#x}", landed, raising=True
                )
        streaming = [r for r in state.live.values() if r.kind is not MapKind.COHERENT]
        if not (streaming or state.unsynced) or event.length <= 0:
            return
        runs = [AddressRange(pa, n) for pa, n in event.runs]
        if not runs:
            return
        va, write = event.address, event.access is Access.WRITE
        verb = "write" if write else "read"
        if not write:
            self._unsynced_read(f"CPU read of {{}} (va {va:#x})", runs)
        for rec in streaming:
            hit = _clip(rec.cpu_ranges, runs)
            if not hit:
                continue
            where = f"CPU {verb} of {hit[0]} (va {va:#x})"
            wrote = _clip(rec.device_wrote, hit) if not write else []
            if wrote:
                lines = _count_lines(state.cpu.cache, wrote, dirty_only=False)
                self.report(
                    ReportKind.CPU_READ_WITHOUT_SYNC,
                    rec.device.name,
                    f"{where}: {rec.device.name} wrote it and no dma_sync_*_for_cpu or unmap "
                    f"followed; the CPU cache holds {lines} line(s) of it, which read stale",
                    dma_addr=rec.dma_addr,
                    size=rec.size,
                    rec=rec,
                )
            elif rec.owner is Owner.DEVICE and (
                write or rec.direction is not DmaDirection.TO_DEVICE
            ):
                self.report(
                    ReportKind.CPU_ACCESS_DEVICE_OWNED,
                    rec.device.name,
                    f"{where}: the buffer belongs to {rec.device.name} until "
                    "dma_sync_*_for_cpu or unmap",
                    dma_addr=rec.dma_addr,
                    size=rec.size,
                    rec=rec,
                )

    def _unsynced_read(self, where: str, runs: list[AddressRange]) -> None:
        """A CPU read of bytes a device wrote into a mapping that was then unmapped with
        ``DMA_ATTR_SKIP_CPU_SYNC``, with no invalidating sync since."""
        assert self._state is not None
        for rec in self._state.unsynced:
            wrote = _clip(rec.device_wrote, runs)
            if wrote:
                lines = _count_lines(self._state.cpu.cache, wrote, dirty_only=False)
                self.report(
                    ReportKind.CPU_READ_WITHOUT_SYNC,
                    rec.device.name,
                    f"{where.format(wrote[0])}: {rec.device.name} wrote it, the mapping was "
                    "unmapped with DMA_ATTR_SKIP_CPU_SYNC and no dma_sync_*_for_cpu "
                    f"followed; the CPU cache holds {lines} line(s) of it, which read stale",
                    dma_addr=rec.dma_addr,
                    size=rec.size,
                    rec=rec,
                )
                return

    def discarding(
        self, ranges: list[AddressRange], keep: list[DmaMapping]
    ) -> tuple[DmaMapping, int, AddressRange] | None:
        """The first live streaming mapping other than ``keep`` that the CPU owns and
        whose bytes an invalidation of ``ranges`` would lose dirty lines of: that
        mapping, the number of lines and the first range they are in."""
        state = self._state
        assert state is not None
        cache = state.cpu.cache
        line = cache.config.line
        dirty = [a for a, d in cache.lines() if d]
        if not dirty:
            return None
        # invalidate_exact cleans the lines a range covers only partly: those survive
        lost = [a for a in dirty if any(r.start <= a and a + line <= r.end for r in ranges)]
        for rec in state.live.values():
            if rec.kind is MapKind.COHERENT or rec.owner is not Owner.CPU:
                continue
            if any(rec is k for k in keep):
                continue
            mine = _clip(rec.cpu_ranges, [AddressRange(a, line) for a in lost])
            if mine:
                return rec, len(mine), mine[0]
        return None

    def _device_hits(
        self, device: Any, addr: int, length: int
    ) -> list[tuple[DmaMapping, list[AddressRange]]]:
        state = self._state
        if state is None or device.name not in state.entries or length <= 0:
            return []
        entry = state.entries[device.name]
        dev = AddressRange(addr, length)
        hits = []
        for rec in state.records_of(entry):
            phys = rec.phys_for(dev)
            if phys:
                hits.append((rec, phys))
        return hits

    def _stale_iotlb(self, entry: DeviceEntry, addr: int, length: int, write: bool) -> bool:
        """Report an access that went through a translation lazy invalidation left in
        the IOTLB (its IOVA is still in the domain's flush queue); whether it was one."""
        assert self._state is not None
        domain = entry.domain
        queued = domain.invalidation.holding(addr) if domain is not None else None
        if domain is None or queued is None:
            return False
        old = self._state.unmapped(entry, AddressRange(addr, length))
        verb = "write" if write else "read"
        self.report(
            ReportKind.DEVICE_ACCESS_STALE_IOTLB,
            entry.name,
            f"device {verb} at {addr:#x} (+{length:#x}) went through a stale IOTLB entry: "
            f"{queued.iova} was unmapped but waits in the flush queue of domain {domain.name!r} "
            "(lazy invalidation); strict invalidation would have faulted it",
            dma_addr=addr,
            size=length,
            rec=old,
        )
        return True

    def _after_unmap(
        self, entry: DeviceEntry, addr: int, length: int, write: bool, faulted: bool = True
    ) -> None:
        assert self._state is not None
        if not faulted and self._stale_iotlb(entry, addr, length, write):
            return
        old = self._state.unmapped(entry, AddressRange(addr, length))
        if old is not None:
            verb = "write" if write else "read"
            self.report(
                ReportKind.DEVICE_ACCESS_AFTER_UNMAP,
                entry.name,
                f"device {verb} at {addr:#x} (+{length:#x}) after the mapping there was unmapped",
                dma_addr=addr,
                size=length,
                rec=old,
            )

    def device_access(
        self, device: Any, addr: int, length: int, write: bool, faulted: bool = False
    ) -> None:
        """A device access about to move data, or one the translation refused
        (``faulted``: the misuse behind a fault is reported too: a write to a
        ``TO_DEVICE`` buffer, an access after unmap)."""
        state = self._state
        if state is None or device.name not in state.entries or length <= 0:
            return
        entry = state.entries[device.name]
        hits = self._device_hits(device, addr, length)
        verb = "write" if write else "read"
        if not hits:
            self._after_unmap(entry, addr, length, write, faulted)
            return
        for rec, phys in hits:
            if rec.kind is MapKind.COHERENT:
                continue
            where = f"device {verb} at {addr:#x} (+{length:#x}, physical {phys[0]}...)"
            if write and rec.direction is DmaDirection.TO_DEVICE:
                self.report(
                    ReportKind.DEVICE_WRITE_READ_ONLY,
                    device.name,
                    f"{where}: the buffer was mapped DMA_TO_DEVICE",
                    dma_addr=addr,
                    size=length,
                    rec=rec,
                )
            if rec.owner is Owner.CPU:
                self.report(
                    ReportKind.DEVICE_ACCESS_CPU_OWNED,
                    device.name,
                    f"{where}: the CPU owns the buffer since dma_sync_*_for_cpu; call "
                    "dma_sync_*_for_device first",
                    dma_addr=addr,
                    size=length,
                    rec=rec,
                )
            if not write and not device.coherent:
                dirty = _count_lines(state.cpu.cache, phys, dirty_only=True)
                if dirty:
                    self.report(
                        ReportKind.DEVICE_READ_STALE,
                        device.name,
                        f"{where}: the CPU cache holds {dirty} dirty line(s) of it, so the "
                        "device reads stale memory; a dma_sync_*_for_device (clean) is missing",
                        dma_addr=addr,
                        size=length,
                        rec=rec,
                    )

    def device_done(self, device: Any, addr: int, length: int, write: bool) -> None:
        """After a successful device write: remember what the CPU must not read unsynced."""
        if not write:
            return
        for rec, phys in self._device_hits(device, addr, length):
            if rec.kind is not MapKind.COHERENT:
                rec.device_wrote.extend(phys)

    def device_batch(self, device: Any, event: AccessEvent) -> None:
        """A device's ``access_batch``: the per-access checks over every burst at once.

        A burst inside a live streaming mapping is checked as one access would be
        (reports name the first burst and how many the mapping saw); a burst outside
        every live mapping that hits an unmapped one is an access after unmap.  When
        the batch faulted, the bursts up to the faulting one are checked (the event
        carries no physical addresses then: the mapping's own pieces give them), so
        the report says why it faulted (a write into a ``TO_DEVICE`` buffer, an access
        after unmap); the faulting burst itself wrote nothing.
        """
        state = self._state
        if state is None or device.name not in state.entries or event.addrs is None:
            return
        entry = state.entries[device.name]
        write = event.access is Access.WRITE
        addrs, pas = event.addrs, event.pas
        done = addrs.size
        if event.fault is not None:
            done = int(getattr(event.fault, "details", {}).get("completed", 0))
            addrs = addrs[: done + 1]
        burst = event.burst
        live = np.zeros(addrs.size, dtype=bool)
        for rec in state.records_of(entry):
            hit = _bursts_in(addrs, burst, [p.dev_range for p in rec.dev_pieces])
            if not hit.any():
                continue
            live |= hit
            if rec.kind is not MapKind.COHERENT:
                mine = addrs[hit]
                phys = pas[hit] if pas is not None else _pas_of(rec, mine)
                completed = np.flatnonzero(hit) < done
                self._check_bursts(device, rec, mine, phys, burst, write, completed)
        if not live.all():
            completed = np.arange(addrs.size) < done
            stale = (~live) & completed
            if stale.any() and self._stale_bursts(entry, addrs[stale], burst, write):
                return
            self._bursts_after_unmap(entry, addrs[~live], burst, write)

    def _check_bursts(
        self,
        device: Any,
        rec: DmaMapping,
        addrs: np.ndarray,
        pas: np.ndarray,
        burst: int,
        write: bool,
        completed: np.ndarray,
    ) -> None:
        assert self._state is not None
        verb = "write" if write else "read"
        first = int(addrs[0])
        where = (
            f"device {verb} batch at {first:#x} ({addrs.size} burst(s) of {burst} bytes in "
            f"the mapping, physical {int(pas[0]):#x}...)"
        )
        if write and rec.direction is DmaDirection.TO_DEVICE:
            self.report(
                ReportKind.DEVICE_WRITE_READ_ONLY,
                device.name,
                f"{where}: the buffer was mapped DMA_TO_DEVICE",
                dma_addr=first,
                size=int(addrs.size) * burst,
                rec=rec,
            )
        if rec.owner is Owner.CPU:
            self.report(
                ReportKind.DEVICE_ACCESS_CPU_OWNED,
                device.name,
                f"{where}: the CPU owns the buffer since dma_sync_*_for_cpu; call "
                "dma_sync_*_for_device first",
                dma_addr=first,
                size=int(addrs.size) * burst,
                rec=rec,
            )
        if not write and not device.coherent:
            dirty = _dirty_lines_in_bursts(self._state.cpu.cache, pas, burst)
            if dirty:
                self.report(
                    ReportKind.DEVICE_READ_STALE,
                    device.name,
                    f"{where}: the CPU cache holds {dirty} dirty line(s) of it, so the "
                    "device reads stale memory; a dma_sync_*_for_device (clean) is missing",
                    dma_addr=first,
                    size=int(addrs.size) * burst,
                    rec=rec,
                )
        if write and completed.any():
            rec.device_wrote.extend(_burst_runs(pas[completed], burst))

    def _stale_bursts(self, entry: DeviceEntry, addrs: np.ndarray, burst: int, write: bool) -> bool:
        """The first burst that completed outside every live mapping through a stale
        IOTLB entry (its IOVA queued for lazy invalidation), reported; whether any."""
        queue = entry.domain.invalidation.queue if entry.domain is not None else None
        if queue is None or not queue.held:
            return False
        hit = _bursts_in(addrs, burst, [q.iova for q in queue.held])
        if not hit.any():
            return False
        return self._stale_iotlb(entry, int(addrs[int(np.argmax(hit))]), burst, write)

    def _bursts_after_unmap(
        self, entry: DeviceEntry, addrs: np.ndarray, burst: int, write: bool
    ) -> None:
        """The most recently unmapped mapping of ``entry``'s space that any burst hits
        (as :meth:`DmaState.unmapped` for one access)."""
        assert self._state is not None
        for rec in reversed(self._state.history):
            same = rec.domain is entry.domain if entry.domain else rec.device is entry.device
            if not same:
                continue
            hit = _bursts_in(addrs, burst, [p.dev_range for p in rec.dev_pieces])
            if hit.any():
                first = int(addrs[int(np.argmax(hit))])
                verb = "write" if write else "read"
                self.report(
                    ReportKind.DEVICE_ACCESS_AFTER_UNMAP,
                    entry.name,
                    f"device {verb} batch: {int(hit.sum())} burst(s) of {burst} bytes from "
                    f"{first:#x} after the mapping there was unmapped",
                    dma_addr=first,
                    size=burst,
                    rec=rec,
                )
                return


def _pas_of(rec: DmaMapping, addrs: np.ndarray) -> np.ndarray:
    """Physical addresses of device addresses ``addrs`` inside ``rec``, from its pieces
    (what the translation would have given)."""
    pas = np.zeros(addrs.size, dtype=np.uint64)
    for p in rec.dev_pieces:
        inside = (addrs >= np.uint64(p.dev_addr)) & (addrs < np.uint64(p.dev_addr + p.size))
        pas[inside] = addrs[inside] - np.uint64(p.dev_addr) + np.uint64(p.pa)
    return pas


def _bursts_in(addrs: np.ndarray, burst: int, ranges: list[AddressRange]) -> np.ndarray:
    """Which bursts ``[addr, addr+burst)`` overlap any of ``ranges``."""
    hit = np.zeros(addrs.size, dtype=bool)
    b = np.uint64(burst)
    for r in ranges:
        hit |= (addrs < np.uint64(r.end)) & (addrs + b > np.uint64(r.start))
    return hit


def _burst_runs(pas: np.ndarray, burst: int) -> list[AddressRange]:
    """The physical bursts ``[pa, pa+burst)`` as merged ranges."""
    starts = np.unique(pas.astype(np.int64))
    if not starts.size:
        return []
    ends = starts + burst
    new = np.ones(starts.size, dtype=bool)
    new[1:] = starts[1:] > ends[:-1]  # ends grow with starts: one burst size
    first = np.flatnonzero(new)
    last = np.append(first[1:], starts.size) - 1
    return [
        AddressRange(int(a), int(e) - int(a))
        for a, e in zip(starts[first], ends[last], strict=True)
    ]


def _dirty_lines_in_bursts(cache: DataCache, pas: np.ndarray, burst: int) -> int:
    """Dirty CPU cache lines overlapping any physical burst (searchsorted per line)."""
    lines = [a for a, dirty in cache.lines() if dirty]
    if not lines:
        return 0
    line_addrs = np.array(lines, dtype=np.int64)
    starts = np.sort(pas.astype(np.int64))
    # the last burst starting before a line ends is the only one that may reach it
    i = np.searchsorted(starts, line_addrs + cache.config.line, side="left") - 1
    ok = i >= 0
    reach = np.zeros(line_addrs.size, dtype=bool)
    reach[ok] = starts[i[ok]] + burst > line_addrs[ok]
    return int(reach.sum())


def _clip(ranges: Iterable[AddressRange], runs: list[AddressRange]) -> list[AddressRange]:
    out = []
    for r in ranges:
        for run in runs:
            inside = r & run
            if inside is not None:
                out.append(inside)
    return out


def _count_lines(cache: DataCache, ranges: list[AddressRange], *, dirty_only: bool) -> int:
    lines = cache.lines()
    if not lines:
        return 0
    addrs = np.array([a for a, _ in lines], dtype=np.int64)
    dirty = np.array([d for _, d in lines], dtype=bool)
    line = cache.config.line
    hit = np.zeros(len(addrs), dtype=bool)
    for r in ranges:
        first = r.start - r.start % line
        hit |= (addrs >= first) & (addrs < r.end)
    if dirty_only:
        hit &= dirty
    return int(hit.sum())
