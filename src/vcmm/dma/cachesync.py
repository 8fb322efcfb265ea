"""The cache maintenance each transfer direction needs (arm64 ``__dma_map_area`` /
``__dma_unmap_area``), on the CPU's data cache by physical range.

=================  ===========================  =========================
direction          for the device (map, sync)   for the CPU (unmap, sync)
=================  ===========================  =========================
TO_DEVICE          clean                        nothing
FROM_DEVICE        invalidate                   invalidate
BIDIRECTIONAL      clean                        invalidate
=================  ===========================  =========================

Cleaning makes memory hold what the CPU wrote, so a non-coherent device reads it;
invalidating drops lines that would otherwise be read stale (or written back over
what the device stored).  Invalidation of a buffer that does not start or end on a
cache line would destroy a neighbour's dirty bytes sharing the line, so the partial
edge lines are cleaned and invalidated instead, as ``dcache_inval_poc`` does.
Coherent devices snoop the cache and need none of this.
"""

from __future__ import annotations

from collections.abc import Iterable

from vcmm.attrs import DmaDirection
from vcmm.hw.cache import DataCache
from vcmm.ranges import AddressRange


def invalidate_exact(cache: DataCache, pa: int, size: int) -> None:
    """Invalidate ``[pa, pa+size)``, cleaning first any line it only partly covers."""
    line = cache.config.line
    end = pa + size
    first_full = -(-pa // line) * line
    last_full = end - end % line
    if first_full >= last_full:
        cache.clean_invalidate(pa, size)
        return
    if pa < first_full:
        cache.clean_invalidate(pa, first_full - pa)
    cache.invalidate(first_full, last_full - first_full)
    if last_full < end:
        cache.clean_invalidate(last_full, end - last_full)


def for_device(cache: DataCache, ranges: Iterable[AddressRange], direction: DmaDirection) -> None:
    """Hand ``ranges`` to a non-coherent device for a transfer in ``direction``."""
    for r in ranges:
        if direction is DmaDirection.FROM_DEVICE:
            invalidate_exact(cache, r.start, r.size)
        else:
            cache.clean(r.start, r.size)


def for_cpu(cache: DataCache, ranges: Iterable[AddressRange], direction: DmaDirection) -> None:
    """Hand ``ranges`` back to the CPU after a transfer in ``direction``."""
    if direction is DmaDirection.TO_DEVICE:
        return
    for r in ranges:
        invalidate_exact(cache, r.start, r.size)
