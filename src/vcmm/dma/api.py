"""The DMA API of the simulated kernel: one object per :class:`~vcmm.System`.

It is Linux's dma-mapping interface (``dma_map_page``, ``dma_map_sg``,
``dma_alloc_coherent``, the sync calls, ``dma_mmap_coherent``...) with the ``dma_``
prefix dropped, on top of the VCMM: each device gets the ops its platform gives it,
IOMMU-backed (seed 002's dma-iommu: IOVA allocator, one VCM per IOMMU domain) or
direct (physical addresses through the bus window), and every mapping it makes is a
VCMM reservation, so it appears in the mapping graph and obeys its attribute rules.

Failure conventions: ``map_page`` returns :data:`DMA_MAPPING_ERROR` and ``map_sg``
returns 0 when the mapping cannot be made (address space or memory exhausted, an alias
conflict), as callers of the kernel API test for; the reason is kept in
:attr:`DmaApi.last_error`.  Everything else raises a
:class:`~vcmm.errors.VcmmError` subclass, and every failure changes nothing.

**One DMA API per system**, as Linux has one set of DMA ops per device, shared by
every driver and by dma-buf: :meth:`DmaApi.of` returns the system's (creating it with
the platform's choices on first use) and a second ``DmaApi(system)`` is refused while
the first is open.  Creating it programs no device: a device's IOMMU domain takes its
context at the first mapping made for it (:mod:`vcmm.dma.domain`), so devices driven
through the seed's calls and devices driven through the DMA API share one system.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.checks import is_int
from vcmm.core.interfaces import VcmmApi, front_ends_of
from vcmm.dma import coherent, streaming, syncops
from vcmm.dma import lean as lean_path
from vcmm.dma.attrs import DMA_MAPPING_ERROR
from vcmm.dma.callsite import capture
from vcmm.dma.clock import SimClock
from vcmm.dma.debug import DebugChecker, ReportKind
from vcmm.dma.domain import DmaDomain
from vcmm.dma.invalidation import InvalidationStats
from vcmm.dma.params import (
    DmaParams,
    check_boundary_mask,
    check_mask,
    check_max_segment_size,
)
from vcmm.dma.pools import AtomicPool, CoherentPool
from vcmm.dma.records import CoherentBuffer, DmaMapping
from vcmm.dma.sg import ScatterList
from vcmm.dma.state import DmaState
from vcmm.errors import BusyError, InvalidArgumentError, StateError
from vcmm.mm.roles import DEFAULT_ATOMIC_POOL_SIZE, PoolChoice
from vcmm.sizes import SZ_4K

if TYPE_CHECKING:
    from vcmm.proc.vma import Vma

#: Default atomic pool size (ARM Linux's ``atomic_pool_size``).
DEFAULT_ATOMIC_POOL = DEFAULT_ATOMIC_POOL_SIZE


class DmaApi:
    """The DMA mapping API over one system.

    ``devices`` limits which bus masters get DMA ops (default: all but the CPU);
    ``domains`` maps device names to IOMMU domain names, adding to what the platform
    file says (devices naming the same domain share one IOVA space and page table);
    ``rcache`` switches the IOVA range cache of every domain; ``iova_policy`` chooses
    how domains place IOVAs, ``"seed"`` or ``"linux"`` (mainline 6.x), for every domain
    or per domain name with a mapping (default: the platform file's ``iova_policy``);
    ``invalidation`` chooses, the same way, how domains invalidate the IOTLB after an
    unmap, ``"strict"`` or ``"lazy"`` (default: the platform's ``invalidation``);
    ``coherent_pool`` is
    ``(target, size)`` of the non-cacheable carve-out for non-coherent devices'
    coherent buffers and ``atomic_pool_size`` the premapped atomic pool taken from the
    same target (0: none); left out, both are the platform's choice
    (``system.memory_roles``, its ``[dma]`` table); ``debug`` installs a
    :class:`DebugChecker` (``True``/``"raise"``, ``"warn"``, or a checker object);
    ``lean=False`` runs every streaming map and unmap on the reference path
    (:mod:`vcmm.dma.streaming`) instead of the lean one (:mod:`vcmm.dma.lean`, the same
    mappings in fewer steps), for comparing the two.
    Refused (``BusyError``) while the system has another open DMA API.
    """

    def __init__(
        self,
        system: VcmmApi,
        *,
        devices: Iterable[str] | None = None,
        domains: Mapping[str, str] | None = None,
        rcache: bool = True,
        coherent_pool: tuple[str, int] | None = None,
        atomic_pool_size: int | None = None,
        debug: bool | str | DebugChecker = False,
        iova_policy: str | Mapping[str, str] | None = None,
        invalidation: str | Mapping[str, str] | None = None,
        lean: bool = True,
    ) -> None:
        if not isinstance(rcache, bool):
            raise InvalidArgumentError(f"DmaApi: rcache={rcache!r} is not a bool")
        if not isinstance(lean, bool):
            raise InvalidArgumentError(f"DmaApi: lean={lean!r} is not a bool")
        #: The streaming calls' module: the lean path, or the reference path only.
        self._streaming: ModuleType = lean_path if lean else streaming
        slots = front_ends_of("DmaApi", system)
        roles = system.memory_roles
        pool, atomic = _pools(
            roles.coherent_pool, roles.atomic_pool, coherent_pool, atomic_pool_size
        )
        checker = _checker(debug)
        with system.lock:
            other = slots.get(DmaApi)
            if other is not None:
                raise BusyError(
                    f"DmaApi: system {system.name!r} already has an open DMA API "
                    f"({other!r}), and a device has one set of DMA ops; share it with "
                    "DmaApi.of(system) (or vcmm.share.dma_api(system)), or close() it first"
                )
            self._state = DmaState(
                system,
                devices=devices,
                domains=domains,
                rcache=rcache,
                kernel_target=roles.kernel,
                coherent_pool=pool,
                atomic_pool=atomic,
                iova_policy=iova_policy,
                invalidation=invalidation,
            )
            self.system = system
            if checker is not None:
                checker.attach(self._state)
            slots.put(self)

    @classmethod
    def of(cls, system: VcmmApi) -> DmaApi:
        """The system's DMA API, created with the platform's choices if it has none."""
        slots = front_ends_of("DmaApi.of", system)
        with system.lock:
            return slots.get(DmaApi) or cls(system)

    @staticmethod
    def current(system: VcmmApi) -> DmaApi | None:
        """The system's open DMA API, if one was made."""
        return front_ends_of("DmaApi.current", system).get(DmaApi)

    def close(self) -> None:
        """Tear the DMA API down: refused while any mapping or coherent buffer lives;
        otherwise every domain, pool and kernel mapping it made is released."""
        state = self._state
        if state.live or state.buffers:
            live = sorted(state.live.values(), key=lambda r: r.id)
            raise BusyError(
                f"DmaApi.close: {len(live)} mapping(s) and {len(state.buffers)} coherent "
                f"buffer(s) are still alive; first: {live[0].describe()}"
            )
        self.disable_debug()
        state.close()
        self.system.front_ends.remove(self)

    @property
    def closed(self) -> bool:
        return self.system.front_ends.get(DmaApi) is not self

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"{len(self._state.entries)} device(s)"
        return f"<DmaApi of {self.system.name!r}: {state}>"

    # -- introspection -------------------------------------------------------------------

    @property
    def checker(self) -> DebugChecker | None:
        return self._state.checker

    def enable_debug(self, mode: str = "raise") -> DebugChecker:
        """Install a :class:`DebugChecker` now (``dma_debug`` on)."""
        if self._state.checker is not None:
            return self._state.checker
        checker = DebugChecker(mode)
        checker.attach(self._state)
        return checker

    def disable_debug(self) -> None:
        if self._state.checker is not None:
            self._state.checker.detach()

    # -- IOTLB invalidation and the simulated clock ------------------------------------------

    @property
    def clock(self) -> SimClock:
        """The simulated clock lazy invalidation's flush-queue timers run on."""
        return self._state.clock

    def advance(self, ns: int) -> int:
        """Let ``ns`` simulated nanoseconds pass (flush-queue timers due meanwhile
        fire); returns the new time."""
        with self.system.lock:
            return self._state.clock.advance(ns)

    def flush_queues(self) -> int:
        """Flush every lazy domain's queue now (an explicit flush); ranges freed."""
        with self.system.lock:
            return sum(d.invalidation.flush() for d in self._state.domains.values())

    def invalidation_stats(self) -> dict[str, InvalidationStats]:
        """Per domain name: its invalidation mode, commands, syncs, modelled time,
        IOVAs held back and flushes by cause."""
        return {name: d.invalidation.stats() for name, d in self._state.domains.items()}

    @property
    def last_error(self) -> Exception | None:
        """Why the last ``map_page``/``map_sg`` that failed did (the kernel only says 0)."""
        return self._state.last_error

    def ops(self, dev: object) -> str:
        """The device's DMA ops: ``"iommu"`` or ``"direct"``."""
        return self._state.entry("ops", dev).ops

    def domain(self, dev: object) -> DmaDomain | None:
        """The IOMMU domain of ``dev`` (None for a direct device)."""
        return self._state.entry("domain", dev).domain

    def page_sizes(self, dev: object) -> tuple[int, ...]:
        """The page sizes the device's IOMMU maps with, largest first (its SMMU's
        table format): one IOTLB entry covers one such page, so an allocator that
        knows them can choose blocks the IOMMU maps as large pages.  Empty for a
        direct device (no IOMMU)."""
        entry = self._state.entry("page_sizes", dev)
        if entry.domain is None:
            return ()
        return tuple(entry.domain.fmt.sizes)

    @property
    def domains(self) -> dict[str, DmaDomain]:
        return dict(self._state.domains)

    @property
    def pool(self) -> CoherentPool | None:
        """The non-cacheable coherent pool (its ``buddy`` can be fragmented in tests);
        ``None`` when the platform has none."""
        return self._state.pool

    @property
    def atomic_pool(self) -> AtomicPool | None:
        """The premapped atomic pool, or ``None``."""
        return self._state.atomic

    def mappings(self, dev: object | None = None) -> list[DmaMapping]:
        """Live mappings (of one device, if given), oldest first."""
        live = sorted(self._state.live.values(), key=lambda r: r.id)
        if dev is None:
            return live
        device = self._state.entry("mappings", dev).device
        return [r for r in live if r.device is device]

    def buffers(self, dev: object | None = None) -> list[CoherentBuffer]:
        bufs = sorted(self._state.buffers.values(), key=lambda b: b.id)
        if dev is None:
            return bufs
        device = self._state.entry("buffers", dev).device
        return [b for b in bufs if b.device is device]

    def snapshot(self) -> tuple[object, ...]:
        """The DMA API's own state (the system's is ``system.snapshot()``)."""
        return self._state.snapshot()

    # -- device parameters ------------------------------------------------------------------

    def params(self, dev: object) -> DmaParams:
        """A copy of the device's DMA parameters."""
        p = self._state.entry("params", dev).params
        return DmaParams(*p.snapshot())

    def set_mask(self, dev: object, mask: int) -> None:
        """``dma_set_mask``: the highest address streaming mappings may use."""
        entry = self._state.entry("set_mask", dev)
        entry.params.mask = check_mask("set_mask", "mask", mask)

    def set_coherent_mask(self, dev: object, mask: int) -> None:
        """``dma_set_coherent_mask``: the limit for coherent buffers."""
        entry = self._state.entry("set_coherent_mask", dev)
        entry.params.coherent_mask = check_mask("set_coherent_mask", "mask", mask)

    def set_mask_and_coherent(self, dev: object, mask: int) -> None:
        entry = self._state.entry("set_mask_and_coherent", dev)
        value = check_mask("set_mask_and_coherent", "mask", mask)
        entry.params.mask = entry.params.coherent_mask = value

    def set_max_seg_size(self, dev: object, size: int) -> None:
        """``dma_set_max_seg_size``: the longest DMA segment ``map_sg`` may produce."""
        entry = self._state.entry("set_max_seg_size", dev)
        entry.params.max_segment_size = check_max_segment_size("set_max_seg_size", size)

    def set_seg_boundary(self, dev: object, mask: int) -> None:
        """``dma_set_seg_boundary``: DMA segments must not cross a multiple of mask+1."""
        entry = self._state.entry("set_seg_boundary", dev)
        granule = entry.domain.granule if entry.domain is not None else SZ_4K
        entry.params.segment_boundary_mask = check_boundary_mask("set_seg_boundary", mask, granule)

    # -- devices --------------------------------------------------------------------------

    def attach_device(self, dev: object) -> None:
        """Give ``dev`` DMA ops again after :meth:`remove_device`."""
        self._state.attach(dev)

    def remove_device(self, dev: object) -> None:
        """The driver lets go of ``dev``: refused (and reported) while mappings or
        coherent buffers of it are alive, as dma-debug warns on driver unbind."""
        call = "remove_device"
        state = self._state
        entry = state.entry(call, dev)
        maps, bufs = state.busy(entry)
        if maps or bufs:
            site = capture(call, "{}", entry.name)
            first = maps[0] if maps else bufs[0].mapping
            state.fatal(
                ReportKind.LEAK_ON_REMOVE,
                entry,
                f"{call}: device driver has pending DMA allocations while released from "
                f"device [{len(maps)} mapping(s), {len(bufs)} coherent buffer(s)]; first: "
                f"{first.describe()}",
                dma_addr=first.dma_addr,
                rec=first,
                call=site,
            )
        state.refuse_busy(call, entry)
        state.detach(entry)

    # -- coherent memory ----------------------------------------------------------------------

    def alloc_coherent(
        self, dev: object, size: int, *, atomic: bool = False, attrs: int = 0
    ) -> CoherentBuffer:
        """``dma_alloc_coherent``: a zeroed buffer seen by the CPU (``.cpu_addr``) and
        the device (``.dma_handle``) without cache maintenance.  ``atomic`` takes it
        from the premapped atomic pool (non-coherent devices)."""
        return coherent.alloc_coherent(self._state, dev, size, atomic=atomic, attrs=attrs)

    def free_coherent(self, dev: object, size: int, cpu_addr: int, dma_handle: int) -> None:
        """``dma_free_coherent``; refused while a process maps the buffer."""
        coherent.free_coherent(self._state, dev, size, cpu_addr, dma_handle)

    def mmap_coherent(
        self, dev: object, vma: Vma, cpu_addr: int, dma_handle: int, size: int
    ) -> None:
        """``dma_mmap_coherent``: fill a process's VMA (from a file's mmap hook) with
        the buffer's pages from ``vma.pgoff`` on."""
        coherent.mmap_coherent(self._state, dev, vma, cpu_addr, dma_handle, size)

    def can_mmap(self, dev: object) -> bool:
        """``dma_can_mmap``: whether :meth:`mmap_coherent` can map ``dev``'s coherent
        buffers into a process, answered as Linux's ``kernel/dma/mapping.c`` does.

        A device behind an IOMMU (dma-iommu ops) can: True.  A direct device asks
        ``dma_direct_can_mmap``: a coherent one can, a non-coherent one only when the
        kernel can hand user space a non-cacheable mapping of the buffer
        (``CONFIG_DMA_NONCOHERENT_MMAP``, which arm64's ``DMA_DIRECT_REMAP`` brings):
        here, when the DMA API has a non-cacheable allocator for such buffers (the
        remapped coherent pool or the premapped atomic pool).  Without either, a
        non-coherent direct device gets no coherent buffer to map: False.
        """
        entry = self._state.entry("can_mmap", dev)
        if entry.ops == "iommu" or entry.params.coherent:
            return True
        return self._state.pool is not None or self._state.atomic is not None

    def get_sgtable(self, dev: object, cpu_addr: int, dma_handle: int, size: int) -> ScatterList:
        """``dma_get_sgtable``: the buffer's pages as a scatterlist."""
        return coherent.get_sgtable(self._state, dev, cpu_addr, dma_handle, size)

    # -- streaming mappings -------------------------------------------------------------------

    def map_page(
        self,
        dev: object,
        page: int,
        offset: int,
        size: int,
        direction: DmaDirection,
        attrs: int = 0,
    ) -> int:
        """``dma_map_page``: the handle, or :data:`DMA_MAPPING_ERROR`."""
        return self._streaming.map_page(self._state, dev, page, offset, size, direction, attrs)

    def map_single(
        self, dev: object, cpu_addr: int, size: int, direction: DmaDirection, attrs: int = 0
    ) -> int:
        """``dma_map_single``: a buffer given by its linear-map kernel address."""
        if not is_int(cpu_addr):
            raise InvalidArgumentError(f"map_single: cpu_addr {cpu_addr!r} is not an integer")
        pa = self.system.cpu.virt_to_phys(cpu_addr)
        return self.map_page(dev, pa - pa % SZ_4K, pa % SZ_4K, size, direction, attrs)

    def unmap_page(
        self, dev: object, handle: int, size: int, direction: DmaDirection, attrs: int = 0
    ) -> None:
        """``dma_unmap_page`` (and ``dma_unmap_single``)."""
        self._streaming.unmap_page(self._state, dev, handle, size, direction, attrs)

    unmap_single = unmap_page

    @staticmethod
    def mapping_error(dev: object, handle: int) -> bool:
        """``dma_mapping_error``."""
        return handle == DMA_MAPPING_ERROR

    def map_sg(
        self,
        dev: object,
        sgl: ScatterList,
        nents: int,
        direction: DmaDirection,
        attrs: int = 0,
    ) -> int:
        """``dma_map_sg``: merged DMA segments written into the list; their count, or
        0 with the list untouched."""
        return self._streaming.map_sg(self._state, dev, sgl, nents, direction, attrs)

    def unmap_sg(
        self,
        dev: object,
        sgl: ScatterList,
        nents: int,
        direction: DmaDirection,
        attrs: int = 0,
    ) -> None:
        """``dma_unmap_sg``: ``nents`` as passed to :meth:`map_sg`."""
        self._streaming.unmap_sg(self._state, dev, sgl, nents, direction, attrs)

    # -- ownership and cache maintenance ----------------------------------------------------

    def sync_single_for_cpu(
        self, dev: object, handle: int, size: int, direction: DmaDirection
    ) -> None:
        syncops.sync_single(self._state, dev, handle, size, direction, for_cpu=True)

    def sync_single_for_device(
        self, dev: object, handle: int, size: int, direction: DmaDirection
    ) -> None:
        syncops.sync_single(self._state, dev, handle, size, direction, for_cpu=False)

    def sync_sg_for_cpu(
        self, dev: object, sgl: ScatterList, nents: int, direction: DmaDirection
    ) -> None:
        syncops.sync_sg(self._state, dev, sgl, nents, direction, for_cpu=True)

    def sync_sg_for_device(
        self, dev: object, sgl: ScatterList, nents: int, direction: DmaDirection
    ) -> None:
        syncops.sync_sg(self._state, dev, sgl, nents, direction, for_cpu=False)


def _pools(
    platform_pool: PoolChoice | None,
    platform_atomic: PoolChoice | None,
    coherent_pool: object,
    atomic_pool_size: object,
) -> tuple[PoolChoice | None, PoolChoice | None]:
    """The pools a ``DmaApi`` carves: its arguments where given, else the platform's."""
    pool = platform_pool
    if coherent_pool is not None:
        if (
            not isinstance(coherent_pool, tuple)
            or len(coherent_pool) != 2
            or not isinstance(coherent_pool[0], str)
        ):
            raise InvalidArgumentError(
                f"DmaApi: coherent_pool {coherent_pool!r} must be (target name, size)"
            )
        pool = PoolChoice(*coherent_pool)
    if atomic_pool_size is None:
        if coherent_pool is None:
            return pool, platform_atomic
        atomic_pool_size = DEFAULT_ATOMIC_POOL
    if not is_int(atomic_pool_size):
        raise InvalidArgumentError(f"DmaApi: atomic_pool_size {atomic_pool_size!r} is not an int")
    if atomic_pool_size == 0:
        return pool, None
    target = pool or platform_atomic
    if target is None:
        raise StateError(
            "DmaApi: an atomic pool needs a carve-out and the platform declares none; pass "
            "coherent_pool=(target, size) or declare [dma] atomic_pool (docs/PLATFORM.md)"
        )
    return pool, PoolChoice(target.target, atomic_pool_size)


def _checker(debug: object) -> DebugChecker | None:
    if isinstance(debug, DebugChecker):
        return debug
    if debug is False or debug is None:
        return None
    if debug is True:
        return DebugChecker("raise")
    if isinstance(debug, str):
        return DebugChecker(debug)
    raise InvalidArgumentError(
        f"DmaApi: debug={debug!r} must be a bool, 'raise', 'warn' or a DebugChecker"
    )
