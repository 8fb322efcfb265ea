"""Everything the DMA API keeps, in one place the call modules share.

It owns the kernel's VMM VCM (for CPU aliases of coherent buffers), the DMA domains
(one IOMMU VCM each), the per-device parameters and ops, the index of live mappings
and buffers, a short history of unmapped ones (so a double unmap can say where the
first unmap happened), the pools, and the optional debugging checker.

Which targets the pools and the cacheable pages come from is the platform's choice
(``system.memory_roles``, from its ``[dma]`` table); every allocation the DMA API
makes for itself names it as ``holder``, so graphs and reports show the carve-outs.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict, Unpack, overload

from vcmm.attrs import DmaDirection, MemType
from vcmm.core.flags import PhysAttr
from vcmm.dma.callsite import CallSite
from vcmm.dma.clock import SimClock
from vcmm.dma.debug import ReportKind
from vcmm.dma.domain import DmaDomain, PolicyChoice
from vcmm.dma.params import DmaParams
from vcmm.dma.pools import AtomicPool, CoherentPool
from vcmm.dma.records import CoherentBuffer, DmaDevice, DmaMapping, MapKind
from vcmm.dma.regionpool import RegionPools
from vcmm.errors import (
    AttributeConflictError,
    BusyError,
    DmaApiError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    StateError,
)
from vcmm.hw.bus import PhysicalDevice, SmmuDevice
from vcmm.hw.cachesync import dma_sync, invalidates
from vcmm.hw.master import TranslationPath
from vcmm.mm.roles import PoolChoice
from vcmm.ranges import AddressRange, subtract
from vcmm.sizes import SZ_4K
from vcmm.tlbcost import check_mode
from vcmm.undo import Transaction, rolling_back

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi
    from vcmm.dma.debug import DebugChecker
    from vcmm.dma.sg import ScatterList

#: Unmapped mappings remembered for double-unmap and use-after-unmap reports.
HISTORY = 1024


@dataclass(frozen=True, slots=True)
class Wanted:
    """What an unmap or sync call says about the mapping it means, beyond the handle:
    the call kind, the size (``None``: the call gives none), the direction and, for
    the scatterlist calls, the list itself."""

    kind: MapKind
    size: int | None
    direction: DmaDirection
    sgl: ScatterList | None = None


class MisuseDetails(TypedDict, total=False):
    """What a misuse report may say beyond its kind and message (all optional): the
    device address and size involved, the mapping, and the call that misused it."""

    dma_addr: int | None
    size: int | None
    rec: DmaMapping | None
    call: CallSite | None


def _score(
    rec: DmaMapping, entry: DeviceEntry, handle: int, want: Wanted | None
) -> tuple[bool, bool, int]:
    """How well ``rec`` matches the call; compared as a tuple, larger is better."""
    exact = rec.dma_addr == handle and rec.device is entry.device
    if want is None:
        return exact, False, 0
    agree = (
        (want.size is None or rec.size == want.size)
        + (rec.kind is want.kind)
        + (rec.direction is want.direction)
    )
    return exact, rec.sgl is want.sgl, agree


@dataclass(eq=False)
class DeviceEntry:
    """A device the DMA API serves: its parameters and, behind an IOMMU, its domain."""

    device: DmaDevice
    params: DmaParams
    domain: DmaDomain | None

    @property
    def ops(self) -> str:
        """``"iommu"`` (dma-iommu ops) or ``"direct"`` (dma-direct ops)."""
        return "iommu" if self.domain is not None else "direct"

    @property
    def name(self) -> str:
        return self.device.name

    @property
    def iommu_device(self) -> SmmuDevice:
        """The device as the SMMU master it is when it has a domain."""
        if not isinstance(self.device, SmmuDevice):
            raise StateError(f"{self.name} is physically addressed: it has no IOMMU domain")
        return self.device


def _forget(rec: DmaMapping, ranges: list[AddressRange]) -> bool:
    """Drop ``ranges`` from what ``rec``'s device wrote unsynced; whether any is left."""
    rec.device_wrote = subtract(rec.device_wrote, ranges)
    return bool(rec.device_wrote)


class DmaState:
    """Shared state of one :class:`~vcmm.dma.api.DmaApi`."""

    def __init__(
        self,
        system: VcmmApi,
        *,
        devices: Iterable[str] | None,
        domains: Mapping[str, str] | None,
        rcache: bool,
        kernel_target: str,
        coherent_pool: PoolChoice | None,
        atomic_pool: PoolChoice | None,
        iova_policy: str | Mapping[str, str] | None = None,
        invalidation: str | Mapping[str, str] | None = None,
    ) -> None:
        self.system = system
        #: The target cacheable pages come from (coherent devices, the scratch page).
        self.kernel_target = kernel_target
        self.cpu = system.cpu
        self.rcache = bool(rcache)
        self._domain_names = self._domain_map(system, domains)
        self.iova_policy = self._policy_choice(system, iova_policy)
        self.invalidation = self._policy_choice(system, invalidation, key="invalidation")
        #: Simulated time the domains' flush queues run on (``DmaApi.advance``).
        self.clock = SimClock()
        self.domains: dict[str, DmaDomain] = {}
        self.entries: dict[str, DeviceEntry] = {}
        self.direct: dict[str, list[DmaMapping]] = {}
        self.live: dict[int, DmaMapping] = {}
        self.buffers: dict[int, CoherentBuffer] = {}
        self.history: deque[DmaMapping] = deque(maxlen=HISTORY)
        #: Mappings unmapped with DMA_ATTR_SKIP_CPU_SYNC after a device wrote them: their
        #: ``device_wrote`` bytes read stale until the CPU cache is invalidated for them.
        self.unsynced: deque[DmaMapping] = deque(maxlen=HISTORY)
        self.freed: deque[CoherentBuffer] = deque(maxlen=HISTORY)
        self.checker: DebugChecker | None = None
        self.last_error: Exception | None = None
        self._ids = itertools.count(1)
        self.pool: CoherentPool | None = None
        self.atomic: AtomicPool | None = None
        self.closed = False
        #: Devices' own coherent memory (their ``memory-region``), docs/DMA.md.
        self.regions = RegionPools(system)
        with Transaction("DmaApi", boundary=True) as txn:
            self._build(txn, system, coherent_pool, atomic_pool)
            txn.on_undo(self.regions.release, self.pool)  # regions carved by attaches
            names = [n for n in system.devices if n != "cpu"] if devices is None else list(devices)
            for name in names:
                txn.on_undo(self.detach, self.attach(name))

    def _build(
        self,
        txn: Transaction,
        system: VcmmApi,
        coherent_pool: PoolChoice | None,
        atomic_pool: PoolChoice | None,
    ) -> None:
        """The kernel's VMM VCM and the pools, each step recorded in ``txn`` so a
        failed construction takes it back (:meth:`close` gives them back in the same
        reverse order)."""
        self.vmm = system.vcm_create_from_prebuilt(0)
        txn.on_undo(system.vcm_free, self.vmm)
        self.vmm_assoc = system.vcm_assoc(self.vmm, system.cpu)
        txn.on_undo(system.vcm_deassoc, self.vmm_assoc)
        system.vcm_activate(self.vmm_assoc)
        txn.on_undo(system.vcm_deactivate, self.vmm_assoc)
        if coherent_pool is not None:
            self.pool = CoherentPool(system, coherent_pool.target, coherent_pool.size)
            txn.on_undo(self.pool.release)
        if atomic_pool is not None:
            self.atomic = AtomicPool(system, self.vmm, atomic_pool.target, atomic_pool.size)
            txn.on_undo(self.atomic.release)

    def close(self) -> None:
        """Give everything back: devices (and their domains' padding pages), pools, the
        VMM VCM, in the reverse order they were set up, so table memory ends up exactly
        as before.  A second call has nothing left to give back."""
        if self.closed:
            return
        for entry in reversed(list(self.entries.values())):
            self.detach(entry)
        self.closed = True
        self.regions.release(self.pool)
        if self.atomic is not None:
            self.atomic.release()
        if self.pool is not None:
            self.pool.release()
        self.system.vcm_deactivate(self.vmm_assoc)
        self.system.vcm_deassoc(self.vmm_assoc)
        self.system.vcm_free(self.vmm)

    @staticmethod
    def _domain_map(system: VcmmApi, domains: Mapping[str, str] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        for record in system.device_records():
            if record.domain:
                out[record.name] = record.domain
        if domains is not None:
            if not isinstance(domains, Mapping):
                raise InvalidArgumentError(f"domains {domains!r} must map device -> domain name")
            for dev, dom in domains.items():
                system.device(dev)
                if not isinstance(dom, str) or not dom:
                    raise InvalidArgumentError(f"domain name {dom!r} for {dev} is not a string")
                out[dev] = dom
        return out

    def _policy_choice(
        self, system: VcmmApi, choice: object, key: str = "iova_policy"
    ) -> PolicyChoice:
        """The platform's IOVA policy (or invalidation mode), overridden by
        ``DmaApi(iova_policy=...)`` (``invalidation=...``)."""
        iommu = [r for r in system.device_records() if r.path is TranslationPath.IOMMU]
        names = {self._domain_names.get(r.name, r.name) for r in iommu}
        if key == "invalidation":
            modes = PolicyChoice(system.invalidation, choice, names, check=check_mode, key=key)
            if not isinstance(choice, str):  # the devices' own modes, unless overridden
                for r in iommu:
                    name = self._domain_names.get(r.name, r.name)
                    if r.invalidation is not None and name not in modes.per_domain:
                        modes.per_domain[name] = r.invalidation
            return modes
        return PolicyChoice(system.iova_policy, choice, names)

    # -- devices -------------------------------------------------------------------------

    def attach(self, dev: object) -> DeviceEntry:
        """Set up DMA ops for ``dev`` (a name or a device of this system): its domain
        (created on first use) or direct."""
        system = self.system
        device = system.device(dev) if isinstance(dev, str) else dev
        if device is system.cpu:
            raise InvalidArgumentError("the CPU is not a DMA master")
        if not isinstance(device, (SmmuDevice, PhysicalDevice)) or all(
            d is not device for d in system.devices.values()
        ):
            raise InvalidArgumentError(f"{dev!r} is not a device of this system")
        if device.name in self.entries:
            raise StateError(f"{device.name} is already attached to the DMA API")
        domain: DmaDomain | None = None
        carved = self.regions.attach(device.name, self.pool)
        try:
            if isinstance(device, SmmuDevice):
                name = self._domain_names.get(device.name, device.name)
                domain = self.domains.get(name)
                if domain is None:
                    domain = DmaDomain(
                        system,
                        name,
                        device.ctx.smmu.fmt,
                        rcache=self.rcache,
                        iova_policy=self.iova_policy(name),
                        invalidation=self.invalidation(name),
                        clock=self.clock,
                    )
                else:
                    domain.check_member(device)
                domain.attach(device)
                self.domains[name] = domain
            else:
                self.direct[device.name] = []
        except BaseException:
            self.regions.undo(device.name, carved)
            raise
        entry = DeviceEntry(device, DmaParams.of(system.device_record(device.name)), domain)
        self.entries[device.name] = entry
        return entry

    def detach(self, entry: DeviceEntry) -> None:
        """Undo :meth:`attach`; the caller checked nothing of the device is live."""
        domain = entry.domain
        if domain is not None:
            domain.detach(self.system, entry.iommu_device)
            if not domain.members:
                domain.destroy(self.system)
                del self.domains[domain.name]
        else:
            del self.direct[entry.name]
        self.regions.undo(entry.name, carved=False)  # the region stays carved until close
        del self.entries[entry.name]

    @property
    def kernel_linear(self) -> bool:
        """Whether the kernel target is in the CPU's linear map (one block of it then
        has a kernel address already)."""
        return bool(self.system.target(self.kernel_target).linear_mapped)

    @overload
    def need_pool(
        self, call: str, entry: DeviceEntry, which: Literal["coherent"]
    ) -> CoherentPool: ...
    @overload
    def need_pool(self, call: str, entry: DeviceEntry, which: Literal["atomic"]) -> AtomicPool: ...
    def need_pool(self, call: str, entry: DeviceEntry, which: str) -> CoherentPool | AtomicPool:
        """The ``which`` pool (for "coherent": the device's own region first), or why a
        non-coherent device gets no such buffer."""
        pool = self.atomic if which == "atomic" else self.regions.pool_for(entry.name) or self.pool
        if pool is None:
            raise OutOfMemoryError(
                f"{call}: {entry.name} is not coherent, so its coherent buffers need "
                f"non-cacheable memory outside the linear map, and this DMA API has no "
                f"{which} pool: declare [dma] {which}_pool in the platform (docs/PLATFORM.md) "
                f"or pass DmaApi(coherent_pool=(target, size))"
            )
        return pool

    def check_usable(self, call: str, entry: DeviceEntry) -> None:
        """Refuse to map for a device whose context runs a VCM of the seed calls: a
        device is driven through a VCM of its own or through the DMA API, not both."""
        domain = entry.domain
        if domain is None:
            return
        other = domain.blocker(self.system, entry.iommu_device)
        if other is not None:
            raise BusyError(
                f"{call}: {entry.name}'s context runs {other.vcm.name} through {other.name} "
                "(the seed calls), and a device is driven either through a VCM of its own or "
                f"through the DMA API's domain {domain.name!r}, not both; "
                f"vcm_deactivate({other.name}) first, or map for another device"
            )

    def entry(self, call: str, dev: object) -> DeviceEntry:
        """The attached device ``dev`` (a name or a device object)."""
        if isinstance(dev, str):
            name = dev
        else:
            found = [n for n, d in self.system.devices.items() if d is dev]
            if not found:
                raise InvalidArgumentError(f"{call}: {dev!r} is not a device of this system")
            name = found[0]
        entry = self.entries.get(name)
        if entry is None:
            if self.system.device(name) is self.system.cpu:
                raise InvalidArgumentError(f"{call}: the CPU is not a DMA master")
            raise NotFoundError(f"{call}: {name} is not attached to the DMA API")
        return entry

    # -- records -------------------------------------------------------------------------

    def new_id(self) -> int:
        return next(self._ids)

    def add(self, rec: DmaMapping) -> None:
        self.live[rec.id] = rec
        if rec.domain is not None:
            rec.domain.records[rec.dev_range.start] = rec
        else:
            self.direct[rec.device.name].append(rec)

    def remove(self, rec: DmaMapping, site: CallSite) -> None:
        """Forget a mapping being unmapped.  An unmap made while a transaction rolls
        back is the undo of a failed compound call: the contexts the mapping's domain
        programmed for it are then released again once the domain maps nothing, so
        the failed call leaves no trace (an ordinary unmap keeps them)."""
        del self.live[rec.id]
        if rec.domain is not None:
            del rec.domain.records[rec.dev_range.start]
            activated = tuple(a for t in rec.teardown for a in t.activated)
            if activated and rolling_back():
                rec.domain.release_unused(self.system, activated)
        else:
            self.direct[rec.device.name].remove(rec)
        rec.unmapped_by = site
        self.history.append(rec)

    def candidates(self, entry: DeviceEntry, handle: int) -> list[DmaMapping]:
        """Live mappings of ``entry``'s address space containing ``handle``, oldest
        first.  Behind an IOMMU there is at most one (IOVA ranges never overlap); a
        physically addressed device sees the same bytes at the same bus address however
        often they are mapped, so it may have several."""
        if entry.domain is not None:
            rec = entry.domain.record_at(handle)
            return [] if rec is None else [rec]
        return [r for r in self.direct[entry.name] if handle in r.dev_range]

    def lookup(
        self, entry: DeviceEntry, handle: int, want: Wanted | None = None
    ) -> DmaMapping | None:
        """The live mapping of ``entry``'s space that ``handle`` (and what the call says
        of it, ``want``) names: the one starting at ``handle`` of ``entry``'s device
        before one merely containing it; of those, the one made with ``want``'s
        scatterlist, then the one agreeing on most of call kind, size and direction
        (as dma-debug's ``hash_bucket_find`` matches); ties go to the oldest."""
        found = self.candidates(entry, handle)
        if len(found) <= 1:
            return found[0] if found else None
        return max(found, key=lambda r: _score(r, entry, handle, want))

    def records_of(self, entry: DeviceEntry) -> list[DmaMapping]:
        """Live mappings in ``entry``'s address space (its whole domain)."""
        if entry.domain is not None:
            return list(entry.domain.records.values())
        return list(self.direct[entry.name])

    def unmapped(self, entry: DeviceEntry, dev: AddressRange) -> DmaMapping | None:
        """The most recently unmapped mapping of ``entry``'s space overlapping ``dev``."""
        for rec in reversed(self.history):
            same = rec.domain is entry.domain if entry.domain else rec.device is entry.device
            if same and any(p.dev_range.overlaps(dev) for p in rec.dev_pieces):
                return rec
        return None

    # -- misuse --------------------------------------------------------------------------

    def fatal(
        self, kind: ReportKind, entry: DeviceEntry, message: str, **details: Unpack[MisuseDetails]
    ) -> DmaApiError:
        """A misuse the API cannot carry out: report it (if debugging) and return the
        error to raise."""
        self.misuse(kind, entry, message, fatal=True, **details)
        return DmaApiError(message)

    def misuse(
        self,
        kind: ReportKind,
        entry: DeviceEntry,
        message: str,
        *,
        fatal: bool = False,
        **details: Unpack[MisuseDetails],
    ) -> None:
        """A misuse the API can still carry out (as Linux does): report it; the
        checker raises instead in ``raise`` mode, before anything changed.  (A
        ``fatal`` one is reported as unrecoverable: :meth:`fatal`.)"""
        if self.checker is not None:
            self.checker.report(kind, entry.name, message, recoverable=not fatal, **details)

    # -- cache maintenance -------------------------------------------------------------------

    def maintain(
        self, ranges: Iterable[AddressRange], direction: DmaDirection, *, for_cpu: bool
    ) -> None:
        """The cache maintenance of a hand-over in ``direction`` (to the CPU if
        ``for_cpu``) on ``ranges``; what it invalidates no longer reads stale."""
        ranges = list(ranges)
        dma_sync(self.cpu.cache, ranges, direction, for_cpu=for_cpu)
        if self.unsynced and invalidates(direction, for_cpu):
            kept = [r for r in self.unsynced if _forget(r, ranges)]
            self.unsynced.clear()
            self.unsynced.extend(kept)

    def check_discard(
        self,
        entry: DeviceEntry,
        ranges: list[AddressRange],
        direction: DmaDirection,
        *,
        for_cpu: bool,
        what: str | DmaMapping,
        keep: Iterable[DmaMapping] = (),
        site: CallSite | None = None,
    ) -> None:
        """Report (before anything changes) a hand-over whose invalidation would drop
        dirty CPU lines of bytes another live mapping has handed to the CPU: the CPU
        wrote them for that mapping's device, and on ARMv7 they never reach memory.
        ``what`` is the mapping the hand-over is for (or names the one being made),
        ``keep`` the ones it hands over (which are not victims)."""
        checker = self.checker
        if checker is None or entry.params.coherent or not invalidates(direction, for_cpu):
            return
        found = checker.discarding(ranges, list(keep))
        if found is None:
            return
        victim, lines, where = found
        subject = what if isinstance(what, str) else what.describe()
        self.misuse(
            ReportKind.CPU_WRITES_DISCARDED,
            entry,
            f"{subject} invalidates the CPU cache for {direction.name} and discards {lines} "
            f"dirty line(s) of {where} that the CPU wrote while {victim.describe()} was "
            f"handed to it; {victim.device.name} will never see those writes",
            dma_addr=victim.dma_addr,
            rec=victim,
            call=site,
        )

    # -- memory types ----------------------------------------------------------------------

    def streaming_memtype(
        self, call: str, entry: DeviceEntry, pieces: list[AddressRange]
    ) -> MemType:
        """The memory type a new device alias of ``pieces`` must have: the one every
        existing alias uses; with none, cacheable for a coherent device only (seed 002's
        ``dma_direction_to_prot``)."""
        found = self.system.graph.memtypes_over(pieces)
        if len(found) > 1:
            kinds = ", ".join(sorted(m.value for m in found))
            raise AttributeConflictError(
                f"{call}: the memory {pieces[0]}... is already mapped as {kinds}; the "
                "aliases disagree, so no memory type for a new one can be right"
            )
        if found:
            return found.pop()
        return MemType.NORMAL_WB_WA if entry.params.coherent else MemType.NORMAL_NC

    def padding_page(self, domain: DmaDomain, memtype: MemType) -> tuple[AddressRange, bool]:
        """The page of ``memtype`` that padding between sg slots of ``domain`` maps, and
        whether this call made it (the caller zeroes a new page once its mapping
        succeeded, or gives it back with :meth:`drop_padding` if the mapping failed).

        Each domain has its own: padding is mapped writable with the rest of a
        mapping, and one page shared by every domain would carry data between devices
        that share nothing else.  Write-back padding is a page of kernel RAM (the linear
        map's memory type), non-cacheable padding a page of the coherent pool.
        """
        if memtype in domain.padding:
            return domain.padding[memtype][0], False
        system = self.system
        if memtype is MemType.NORMAL_WB_WA:
            physmem = system.vcm_phys_alloc(
                self.kernel_target,
                SZ_4K,
                PhysAttr.CONTIGUOUS,
                holder=f"the DMA API (map_sg padding of domain {domain.name!r})",
            )
            page = physmem.chunk_ranges[0]
            domain.padding[memtype] = (page, lambda: system.vcm_phys_free(physmem))
        elif memtype is MemType.NORMAL_NC:
            if self.pool is None:
                raise OutOfMemoryError(
                    f"map_sg: non-cacheable padding for domain {domain.name!r} needs a page of "
                    "the coherent pool, and the platform's [dma] coherent_pool is empty"
                )
            pool = self.pool
            chunks = pool.alloc(SZ_4K)
            page = chunks[0].range
            domain.padding[memtype] = (page, lambda: pool.free(chunks))
        else:
            raise AttributeConflictError(
                f"map_sg: no padding page of memory type {memtype.value} for segment-boundary "
                "padding (only write-back and non-cacheable memory can be padded)"
            )
        return page, True

    def drop_padding(self, domain: DmaDomain, memtype: MemType) -> None:
        """Give back a padding page :meth:`padding_page` just made for a mapping that
        then failed, so the failed call leaves nothing behind."""
        _page, give_back = domain.padding.pop(memtype)
        give_back()

    def zero_padding(self, page: AddressRange) -> None:
        """Zero a new padding page (memory and CPU cache): nothing of its last owner
        shows through."""
        self.cpu.cache.invalidate(page.start, page.size)
        self.system.memory.fill(page.start, page.size, 0)

    # -- state -------------------------------------------------------------------------

    def busy(self, entry: DeviceEntry) -> tuple[list[DmaMapping], list[CoherentBuffer]]:
        maps = [
            r
            for r in self.live.values()
            if r.device is entry.device and r.kind is not MapKind.COHERENT
        ]
        bufs = [b for b in self.buffers.values() if b.device is entry.device]
        return maps, bufs

    def snapshot(self) -> tuple[object, ...]:
        return (
            tuple((n, e.ops, e.params.snapshot()) for n, e in sorted(self.entries.items())),
            tuple(d.snapshot() for _, d in sorted(self.domains.items())),
            tuple(r.snapshot() for _, r in sorted(self.live.items())),
            tuple(b.snapshot() for _, b in sorted(self.buffers.items())),
            self.pool.snapshot() if self.pool is not None else None,
            self.atomic.snapshot() if self.atomic is not None else None,
            self.regions.snapshot(),
        )

    def refuse_busy(self, call: str, entry: DeviceEntry) -> None:
        maps, bufs = self.busy(entry)
        if maps or bufs:
            what = [m.describe() for m in maps] + [repr(b) for b in bufs]
            raise BusyError(
                f"{call}: {entry.name} still has {len(maps)} mapping(s) and {len(bufs)} "
                f"coherent buffer(s): {'; '.join(what)}"
            )
