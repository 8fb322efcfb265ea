"""A device's own coherent memory: the reserved region its ``memory-region`` names.

In Linux a device whose devicetree ``memory-region`` is a ``shared-dma-pool`` gets that
region as its DMA memory when its driver probes (``of_reserved_mem_device_init``: a
``no-map`` pool becomes the device's ``dma_coherent_mem``, a ``reusable`` one its CMA
area), and ``dma_alloc_coherent`` serves the device from it first
(``dma_alloc_from_dev_coherent``, which does not fall back when the region is full).
vcmm does the same with the platform's ``memory_regions`` (an imported board's
``memory-region``):

- the region's target (a ``contiguous`` or ``cma`` target made of the pool) is carved
  into a :class:`~vcmm.dma.pools.CoherentPool` when the first device naming it is
  attached; devices naming the same region share it; the DMA API gives it back at
  ``close``.  A region that is the target of the DMA API's own coherent pool is that
  pool.
- a buffer from it is one contiguous block (the per-device allocator is a bitmap of
  contiguous runs), mapped non-cacheable on the CPU side whether or not the device
  snoops (Linux remaps the region write-combining), and mapped for the device as any
  coherent buffer: an IOVA in its domain, or its bus address.  (Linux hands an
  IOMMU-translated device the region's bus address itself, which only works for a
  device that bypasses or identity-maps; vcmm maps it so the device reaches it.)
"""

from __future__ import annotations

from vcmm.core.interfaces import VcmmApi
from vcmm.dma.pools import CoherentPool
from vcmm.mm.pools import ContiguousPool
from vcmm.sizes import SZ_4K


class RegionPools:
    """The coherent pools made of reserved regions, by target, and which device uses
    which."""

    def __init__(self, system: VcmmApi) -> None:
        self.system = system
        self.pools: dict[str, CoherentPool] = {}
        self.users: dict[str, str] = {}

    def region_target(self, device: str) -> str | None:
        """The target of the first ``shared-dma-pool`` region ``device`` names."""
        return self.system.device_record(device).coherent_region

    def attach(self, device: str, shared: CoherentPool | None) -> bool:
        """Give ``device`` its region's pool (carved now if no device had it); whether
        a pool was carved (so a failing attach can :meth:`undo` it)."""
        target = self.region_target(device)
        if target is None:
            return False
        if shared is not None and shared.physmem.target == target:
            self.pools.setdefault(target, shared)
            self.users[device] = target
            return False
        if target in self.pools:
            self.users[device] = target
            return False
        pool = self.system.target(target)
        # The platform makes a region's target contiguous or cma (a ContiguousPool).
        size = pool.largest_free() // SZ_4K * SZ_4K if isinstance(pool, ContiguousPool) else 0
        if size == 0:
            return False
        self.pools[target] = CoherentPool(self.system, target, size)
        self.users[device] = target
        return True

    def undo(self, device: str, carved: bool) -> None:
        """Take back what :meth:`attach` did for ``device``."""
        target = self.users.pop(device, None)
        if carved and target is not None:
            self.pools.pop(target).release()

    def pool_for(self, device: str) -> CoherentPool | None:
        target = self.users.get(device)
        return None if target is None else self.pools[target]

    def release(self, shared: CoherentPool | None) -> None:
        """Give every carved region back (the DMA API's own pool stays its own)."""
        for pool in reversed(list(self.pools.values())):
            if pool is not shared:
                pool.release()
        self.pools.clear()
        self.users.clear()

    def snapshot(self) -> tuple[object, ...]:
        return (
            tuple(sorted(self.users.items())),
            tuple((t, p.snapshot()) for t, p in sorted(self.pools.items())),
        )
