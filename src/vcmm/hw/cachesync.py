"""Cache maintenance by DMA direction: what a non-coherent transfer needs of the CPU cache.

:func:`dma_sync` is the one place that turns a transfer direction into maintenance on
the CPU's data cache by physical range, the rule Linux's ``arch_sync_dma_for_device``
and ``arch_sync_dma_for_cpu`` implement (the table Russell King drew for them, which
ARMv7's ``__dma_page_cpu_to_dev``/``dev_to_cpu`` follow):

=================  ===========================  =========================
direction          for the device (map, sync)   for the CPU (unmap, sync)
=================  ===========================  =========================
TO_DEVICE          clean                        nothing
FROM_DEVICE        invalidate                   invalidate
BIDIRECTIONAL      clean                        invalidate
=================  ===========================  =========================

Cleaning makes memory hold what the CPU wrote, so a non-coherent device reads it;
invalidating drops lines that would otherwise be read stale (or written back over
what the device stored).  A bidirectional buffer is thus cleaned on the way to the
device and invalidated on the way back: over a whole transfer, clean and invalidate.
(Mainline arm64 cleans rather than invalidates a FROM_DEVICE buffer on its way to the
device; either is correct for bytes the device then writes, and invalidating is what
the table and ARMv7 say.)

**Partly covered lines.**  A buffer that does not start or end on a cache line shares
its edge lines with neighbouring data, which may be dirty in the cache.  Invalidating
such a line would destroy the neighbour's newer bytes, so :func:`dma_sync` cleans and
invalidates the edge lines and invalidates only the lines the range covers wholly, as
arm64's ``dcache_inval_poc`` does.  Cleaning an edge line is always harmless.

Coherent devices snoop the cache and need none of this; callers skip them.
"""

from __future__ import annotations

from collections.abc import Iterable

from vcmm.attrs import DmaDirection
from vcmm.errors import InvalidArgumentError
from vcmm.hw.cache import DataCache
from vcmm.ranges import AddressRange


def invalidate_exact(cache: DataCache, pa: int, size: int) -> None:
    """Invalidate ``[pa, pa+size)``, cleaning first any line it only partly covers."""
    line = cache.config.line
    end = pa + size
    first_full = -(-pa // line) * line
    last_full = end - end % line
    if first_full >= last_full:  # no whole line inside: every line is an edge
        cache.clean_invalidate(pa, size)
        return
    if pa < first_full:
        cache.clean_invalidate(pa, first_full - pa)
    cache.invalidate(first_full, last_full - first_full)
    if last_full < end:
        cache.clean_invalidate(last_full, end - last_full)


def invalidates(direction: DmaDirection, for_cpu: bool) -> bool:
    """Whether the hand-over in ``direction`` (to the CPU if ``for_cpu``) invalidates
    (the rest clean, or, for the CPU after TO_DEVICE, do nothing): the table above."""
    if for_cpu:
        return direction is not DmaDirection.TO_DEVICE
    return direction is DmaDirection.FROM_DEVICE


def dma_sync(
    cache: DataCache,
    ranges: Iterable[AddressRange],
    direction: DmaDirection,
    *,
    for_cpu: bool,
) -> bool:
    """Hand the physical ``ranges`` of a buffer to a non-coherent device (``for_cpu``
    False) or back to the CPU (True) for a transfer in ``direction``; whether any
    maintenance was needed.

    Each range is maintained as given: ranges of one buffer that share a cache line
    should be joined first (:func:`vcmm.ranges.coalesce`), or the shared line is
    treated as an edge of both.  Every range is checked to be memory before any line
    changes.  One search of the cache's tags (:meth:`DataCache.held_lines`) finds the
    ranges it holds lines of; only those are maintained, so a 64-page scatterlist the
    CPU has not touched costs one numpy pass, not 64 (a single range asks
    :meth:`DataCache.holds_any`, which looks at its own sets only).
    """
    if not isinstance(cache, DataCache):
        raise InvalidArgumentError(f"dma_sync: cache {cache!r} is not a DataCache")
    if not isinstance(direction, DmaDirection) or direction is DmaDirection.NONE:
        raise InvalidArgumentError(
            f"dma_sync: direction {direction!r} is not TO_DEVICE, FROM_DEVICE or BIDIRECTIONAL"
        )
    if not isinstance(for_cpu, bool):
        raise InvalidArgumentError(f"dma_sync: for_cpu={for_cpu!r} is not a bool")
    spans = list(ranges)
    is_backed = cache.memory.is_backed
    for r in spans:
        if not isinstance(r, AddressRange):
            raise InvalidArgumentError(f"dma_sync: {r!r} is not an AddressRange")
        if not is_backed(r.start, r.size):  # the cache's check names the first hole
            cache.check_backed("dma_sync", r.start, r.size)
    if for_cpu and direction is DmaDirection.TO_DEVICE:
        return False
    invalidate = invalidates(direction, for_cpu)
    # Maintenance only ever removes or cleans lines, so a range holding none when the
    # call starts holds none when its turn comes: skipping it changes nothing.
    # One range (a map_page) asks only the sets it maps to.
    held = [cache.holds_any(spans[0])] if len(spans) == 1 else cache.held_lines(spans).tolist()
    for r, lines in zip(spans, held, strict=True):
        if not lines:
            continue
        if invalidate:
            invalidate_exact(cache, r.start, r.size)
        else:
            cache.clean(r.start, r.size)
    return True
