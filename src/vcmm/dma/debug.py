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
  lines the CPU cache holds stale);
- a device access to a buffer the CPU owns (missing ``sync_for_device``), a device
  reading memory while the CPU cache holds dirty lines for it (the data it gets is
  stale), a device writing a ``TO_DEVICE`` buffer, a device access after unmap.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vcmm.attrs import DmaDirection
from vcmm.dma.callsite import CallSite
from vcmm.dma.records import DmaMapping, MapKind, Owner
from vcmm.errors import DmaApiError, InvalidArgumentError
from vcmm.hw.cpu import KERNEL_ASID, is_kernel_va, is_user_va
from vcmm.ranges import AddressRange

if TYPE_CHECKING:
    from vcmm.dma.hooks import AccessHooks
    from vcmm.dma.state import DmaState

_VA_MASK = (1 << 48) - 1


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
    LEAK_ON_REMOVE = "mappings alive when the device is removed"
    FREE_NOT_ALLOCATED = "free of a coherent buffer never allocated"
    FREE_MISMATCH = "free with a different size, handle or device"
    FREE_WHILE_MAPPED = "free of a coherent buffer still mapped by a process"


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

    # -- access checks (called by the hooks before/after each access) ---------------------

    def cpu_access(self, va: int, length: int, asid: int | None, user: bool, write: bool) -> None:
        state = self._state
        if state is None:
            return
        streaming = [r for r in state.live.values() if r.kind is not MapKind.COHERENT]
        if not streaming or length <= 0:
            return
        runs = _resolve_cpu(state.cpu, va, length, asid, user)
        if not runs:
            return
        verb = "write" if write else "read"
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

    def device_access(self, device: Any, addr: int, length: int, write: bool) -> None:
        state = self._state
        if state is None or device.name not in state.entries or length <= 0:
            return
        entry = state.entries[device.name]
        hits = self._device_hits(device, addr, length)
        verb = "write" if write else "read"
        if not hits:
            old = state.unmapped(entry, AddressRange(addr, length))
            if old is not None:
                self.report(
                    ReportKind.DEVICE_ACCESS_AFTER_UNMAP,
                    device.name,
                    f"device {verb} at {addr:#x} (+{length:#x}) after the mapping there was "
                    "unmapped",
                    dma_addr=addr,
                    size=length,
                    rec=old,
                )
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


def _resolve_cpu(
    cpu: Any, va: int, length: int, asid: int | None, user: bool
) -> list[AddressRange]:
    """Physical runs of a CPU access, by walking the tables (no TLB side effects);
    stops at the first untranslatable page (the access itself will fault there)."""
    tag = asid if asid is not None else (cpu.current_asid or KERNEL_ASID)
    out: list[AddressRange] = []
    pos, end = va, va + length
    while pos < end:
        if is_kernel_va(pos):
            walk = cpu.kernel_table.walk(pos & _VA_MASK)
        elif is_user_va(pos) and tag != KERNEL_ASID:
            try:
                walk = cpu.address_space(tag).walk(pos)
            except Exception:
                break
        else:
            break
        if not walk.ok or walk.pa is None:
            break
        step = min(end, pos - pos % walk.page_size + walk.page_size) - pos
        if out and out[-1].end == walk.pa:
            out[-1] = AddressRange(out[-1].start, out[-1].size + step)
        else:
            out.append(AddressRange(walk.pa, step))
        pos += step
    return out


def _clip(ranges: Any, runs: list[AddressRange]) -> list[AddressRange]:
    out = []
    for r in ranges:
        for run in runs:
            inside = r & run
            if inside is not None:
                out.append(inside)
    return out


def _count_lines(cache: Any, ranges: list[AddressRange], *, dirty_only: bool) -> int:
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
