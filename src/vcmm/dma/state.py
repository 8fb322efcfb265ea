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
from typing import TYPE_CHECKING, Any, Literal, overload

from vcmm.attrs import MemType
from vcmm.core.flags import PhysAttr
from vcmm.dma.callsite import CallSite
from vcmm.dma.domain import DmaDomain, PolicyChoice
from vcmm.dma.params import DmaParams
from vcmm.dma.pools import AtomicPool, CoherentPool
from vcmm.dma.records import CoherentBuffer, DmaMapping, MapKind
from vcmm.errors import (
    AttributeConflictError,
    BusyError,
    DmaApiError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    StateError,
)
from vcmm.mm.roles import PoolChoice
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K

if TYPE_CHECKING:
    from vcmm.dma.debug import DebugChecker, ReportKind

#: Unmapped mappings remembered for double-unmap and use-after-unmap reports.
HISTORY = 1024


@dataclass(eq=False)
class DeviceEntry:
    """A device the DMA API serves: its parameters and, behind an IOMMU, its domain."""

    device: Any
    params: DmaParams
    domain: DmaDomain | None

    @property
    def ops(self) -> str:
        """``"iommu"`` (dma-iommu ops) or ``"direct"`` (dma-direct ops)."""
        return "iommu" if self.domain is not None else "direct"

    @property
    def name(self) -> str:
        return str(self.device.name)


class DmaState:
    """Shared state of one :class:`~vcmm.dma.api.DmaApi`."""

    def __init__(
        self,
        system: Any,
        *,
        devices: Iterable[str] | None,
        domains: Mapping[str, str] | None,
        rcache: bool,
        kernel_target: str,
        coherent_pool: PoolChoice | None,
        atomic_pool: PoolChoice | None,
        iova_policy: str | Mapping[str, str] | None = None,
    ) -> None:
        self.system = system
        #: The target cacheable pages come from (coherent devices, the scratch page).
        self.kernel_target = kernel_target
        self.cpu = system.cpu
        self.rcache = bool(rcache)
        self._domain_names = self._domain_map(system, domains)
        self.iova_policy = self._policy_choice(system, iova_policy)
        self.domains: dict[str, DmaDomain] = {}
        self.entries: dict[str, DeviceEntry] = {}
        self.direct: dict[str, list[DmaMapping]] = {}
        self.live: dict[int, DmaMapping] = {}
        self.buffers: dict[int, CoherentBuffer] = {}
        self.history: deque[DmaMapping] = deque(maxlen=HISTORY)
        self.freed: deque[CoherentBuffer] = deque(maxlen=HISTORY)
        self.checker: DebugChecker | None = None
        self.last_error: Exception | None = None
        self._ids = itertools.count(1)
        self.scratch: dict[MemType, AddressRange] = {}
        self.pool: CoherentPool | None = None
        self.atomic: AtomicPool | None = None
        self._built: list[Any] = []
        try:
            self._build(system, coherent_pool, atomic_pool)
            names = [n for n in system.devices if n != "cpu"] if devices is None else list(devices)
            for name in names:
                self.attach(name)
        except BaseException:
            self.close()
            raise
        for page in self.scratch.values():
            self.cpu.cache.invalidate(page.start, page.size)
            system.memory.fill(page.start, page.size, 0)

    def _build(
        self, system: Any, coherent_pool: PoolChoice | None, atomic_pool: PoolChoice | None
    ) -> None:
        """The kernel's VMM VCM, the pools and the scratch pages; each step recorded so
        :meth:`close` (or a failed construction) can take it back."""
        built = self._built
        self.vmm = system.vcm_create_from_prebuilt(0)
        built.append(lambda: system.vcm_free(self.vmm))
        self.vmm_assoc = system.vcm_assoc(self.vmm, system.cpu)
        built.append(lambda: system.vcm_deassoc(self.vmm_assoc))
        system.vcm_activate(self.vmm_assoc)
        built.append(lambda: system.vcm_deactivate(self.vmm_assoc))
        if coherent_pool is not None:
            pool = self.pool = CoherentPool(system, coherent_pool.target, coherent_pool.size)
            built.append(pool.release)
        if atomic_pool is not None:
            atomic = self.atomic = AtomicPool(
                system, self.vmm, atomic_pool.target, atomic_pool.size
            )
            built.append(atomic.release)
        wb = system.vcm_phys_alloc(
            self.kernel_target, SZ_4K, PhysAttr.CONTIGUOUS, holder="the DMA API (scratch page)"
        )
        built.append(lambda: system.vcm_phys_free(wb))
        self.scratch[MemType.NORMAL_WB_WA] = wb.chunk_ranges[0]
        if self.pool is not None:
            pool, nc = self.pool, self.pool.alloc(SZ_4K)
            built.append(lambda: pool.free(nc))
            self.scratch[MemType.NORMAL_NC] = nc[0].range

    def close(self) -> None:
        """Give everything back: devices, pools, scratch pages, the VMM VCM, in the
        reverse order they were set up, so table memory ends up exactly as before."""
        for entry in reversed(list(self.entries.values())):
            self.detach(entry)
        while self._built:
            self._built.pop()()

    @staticmethod
    def _domain_map(system: Any, domains: Mapping[str, str] | None) -> dict[str, str]:
        out: dict[str, str] = {}
        spec = getattr(system, "spec", None)
        for d in getattr(spec, "devices", ()):
            if getattr(d, "domain", None):
                out[d.name] = d.domain
        if domains is not None:
            if not isinstance(domains, Mapping):
                raise InvalidArgumentError(f"domains {domains!r} must map device -> domain name")
            for dev, dom in domains.items():
                system.device(dev)
                if not isinstance(dom, str) or not dom:
                    raise InvalidArgumentError(f"domain name {dom!r} for {dev} is not a string")
                out[dev] = dom
        return out

    def _policy_choice(self, system: Any, choice: object) -> PolicyChoice:
        """The platform's IOVA policy, overridden by ``DmaApi(iova_policy=...)``."""
        iommu = [d.name for d in system.spec.devices if d.kind == "smmu"]
        names = {self._domain_names.get(n, n) for n in iommu}
        return PolicyChoice(system.spec.iova_policy, choice, names)

    # -- devices -------------------------------------------------------------------------

    def attach(self, dev: Any) -> DeviceEntry:
        """Set up DMA ops for ``dev``: its domain (created on first use) or direct."""
        system = self.system
        device = system.device(dev) if isinstance(dev, str) else dev
        if device is system.cpu:
            raise InvalidArgumentError("the CPU is not a DMA master")
        if device.name in self.entries:
            raise StateError(f"{device.name} is already attached to the DMA API")
        domain: DmaDomain | None = None
        if hasattr(device, "ctx"):
            name = self._domain_names.get(device.name, device.name)
            domain = self.domains.get(name)
            if domain is None:
                domain = DmaDomain(
                    system, name, rcache=self.rcache, iova_policy=self.iova_policy(name)
                )
            domain.attach(device)
            self.domains[name] = domain
        else:
            self.direct[device.name] = []
        entry = DeviceEntry(device, DmaParams.of(device), domain)
        self.entries[device.name] = entry
        return entry

    def detach(self, entry: DeviceEntry) -> None:
        """Undo :meth:`attach`; the caller checked nothing of the device is live."""
        domain = entry.domain
        if domain is not None:
            domain.detach(self.system, entry.device)
            if not domain.members:
                domain.destroy(self.system)
                del self.domains[domain.name]
        else:
            del self.direct[entry.name]
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
        """The ``which`` pool, or why a non-coherent device gets no such buffer."""
        pool = self.pool if which == "coherent" else self.atomic
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
        other = domain.blocker(self.system, entry.device)
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
        elif any(dev is d for d in self.system.devices.values()):
            name = str(getattr(dev, "name", ""))
        else:
            raise InvalidArgumentError(f"{call}: {dev!r} is not a device of this system")
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
        del self.live[rec.id]
        if rec.domain is not None:
            del rec.domain.records[rec.dev_range.start]
            for teardown in rec.teardown:
                if teardown.activated:
                    rec.domain.give_back(self.system, teardown.activated)
        else:
            self.direct[rec.device.name].remove(rec)
        rec.unmapped_by = site
        self.history.append(rec)

    def lookup(self, entry: DeviceEntry, handle: int) -> DmaMapping | None:
        """The live mapping of ``entry``'s address space containing ``handle``."""
        if entry.domain is not None:
            return entry.domain.record_at(handle)
        found = [r for r in self.direct[entry.name] if handle in r.dev_range]
        exact = [r for r in found if r.dma_addr == handle]
        best = exact or found
        return best[-1] if best else None

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
        self,
        kind: ReportKind,
        entry: DeviceEntry,
        message: str,
        *,
        dma_addr: int | None = None,
        size: int | None = None,
        rec: DmaMapping | None = None,
        call: CallSite | None = None,
    ) -> DmaApiError:
        """A misuse the API cannot carry out: report it (if debugging) and return the
        error to raise."""
        if self.checker is not None:
            self.checker.report(
                kind,
                entry.name,
                message,
                dma_addr=dma_addr,
                size=size,
                rec=rec,
                call=call,
                recoverable=False,
            )
        return DmaApiError(message)

    def misuse(
        self,
        kind: ReportKind,
        entry: DeviceEntry,
        message: str,
        *,
        dma_addr: int | None = None,
        size: int | None = None,
        rec: DmaMapping | None = None,
        call: CallSite | None = None,
    ) -> None:
        """A misuse the API can still carry out (as Linux does): report it; the
        checker raises instead in ``raise`` mode, before anything changed."""
        if self.checker is not None:
            self.checker.report(
                kind, entry.name, message, dma_addr=dma_addr, size=size, rec=rec, call=call
            )

    # -- memory types ----------------------------------------------------------------------

    def streaming_memtype(
        self, call: str, entry: DeviceEntry, pieces: list[AddressRange]
    ) -> MemType:
        """The memory type a new device alias of ``pieces`` must have: the one every
        existing alias uses; with none, cacheable for a coherent device only (seed 002's
        ``dma_direction_to_prot``)."""
        graph = self.system.graph
        found: set[MemType] = set()
        for piece in pieces:
            found |= graph.memtypes(piece)
        if len(found) > 1:
            kinds = ", ".join(sorted(m.value for m in found))
            raise AttributeConflictError(
                f"{call}: the memory {pieces[0]}... is already mapped as {kinds}; the "
                "aliases disagree, so no memory type for a new one can be right"
            )
        if found:
            return found.pop()
        return MemType.NORMAL_WB_WA if entry.params.coherent else MemType.NORMAL_NC

    def scratch_page(self, memtype: MemType) -> AddressRange:
        """A zeroed page of ``memtype`` that padding between sg slots maps to."""
        page = self.scratch.get(memtype)
        if page is None:
            raise AttributeConflictError(
                f"map_sg: no scratch page of memory type {memtype.value} for segment-boundary "
                "padding (only write-back and non-cacheable memory can be padded)"
            )
        return page

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
        )

    def refuse_busy(self, call: str, entry: DeviceEntry) -> None:
        maps, bufs = self.busy(entry)
        if maps or bufs:
            what = [m.describe() for m in maps] + [repr(b) for b in bufs]
            raise BusyError(
                f"{call}: {entry.name} still has {len(maps)} mapping(s) and {len(bufs)} "
                f"coherent buffer(s): {'; '.join(what)}"
            )
