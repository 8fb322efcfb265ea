"""An attachment's mapping, made by the importing device's DMA API (``map_dma_buf``).

In Linux an exporter's ``map_dma_buf`` builds an ``sg_table`` of the buffer's pages
and calls ``dma_map_sg`` *on the importing device*, so the importer gets DMA addresses
in its own address space, from its own DMA ops: an IOVA from its IOMMU domain (top-down
below its ``dma_mask``), or the bus address of a physically addressed device (its
dma-ranges offset applied).  ``unmap_dma_buf`` is ``dma_unmap_sg``.  The DMA API makes
every mapping through the VCMM core, so the mapping graph sees each of them.

The list handed to ``map_sg`` has one entry per physically contiguous run of the
buffer (chunks of the allocation that touch are joined, as ``sg_alloc_table_from_pages``
joins pages), clipped to the buffer's size.  An IOMMU merges the entries into few DMA
segments; a direct device gets one segment per entry, so a scattered buffer is fine for
a device with a scatter-gather engine.

Cache maintenance follows the DMA API: the map hands the buffer to the device (clean
or invalidate for the direction) unless ``DmaAttr.SKIP_CPU_SYNC``, the unmap hands it
back.  CPU-access brackets use :func:`sync_range`, the DMA API's syncs on the bytes
the bracket covers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.dma.api import DmaApi
from vcmm.dma.attrs import DmaAttr
from vcmm.dma.sg import ScatterList as DmaScatterList
from vcmm.dma.sg import SgEntry
from vcmm.errors import StateError, VcmmError
from vcmm.ranges import AddressRange, join_adjacent

if TYPE_CHECKING:
    from vcmm.hw.master import AnyMaster


@dataclass(eq=False)
class DeviceMapping:
    """A buffer mapped for one device through its DMA API, and how to undo it."""

    api: DmaApi
    device: AnyMaster
    direction: DmaDirection
    attrs: DmaAttr
    #: The list given to ``map_sg``, with the DMA segments it wrote.
    table: DmaScatterList
    #: DMA segments ``map_sg`` returned.
    segments: int
    #: Per entry, in buffer order: physical address and length, its own device address.
    entries: tuple[SgEntry, ...]


def map_pieces(
    call: str,
    api: DmaApi,
    device: AnyMaster,
    pieces: list[AddressRange],
    direction: DmaDirection,
    attrs: DmaAttr,
    label: str = "",
) -> DeviceMapping:
    """``dma_map_sg`` of ``pieces`` (physical ranges in buffer order) for ``device``;
    ``label`` names the list (the attachment) in DMA-debug reports.

    A mapping the DMA API cannot make raises the reason it recorded; nothing changed.
    """
    pieces = join_adjacent(pieces)
    table = DmaScatterList([(p.start, p.size) for p in pieces], label=label)
    count = api.map_sg(device, table, len(table), direction, int(attrs))
    if count == 0:
        reason = api.last_error
        if isinstance(reason, VcmmError):
            raise reason
        raise StateError(f"{call}: the DMA API could not map it ({reason!r})")
    return DeviceMapping(
        api, device, direction, attrs, table, count, _per_entry(table, count, pieces)
    )


def _per_entry(
    table: DmaScatterList, count: int, pieces: list[AddressRange]
) -> tuple[SgEntry, ...]:
    """Each entry's device address: DMA segments are runs of whole entries laid end to
    end (the IOMMU merge joins only entries without a hole between them)."""
    out: list[SgEntry] = []
    index = 0
    for address, length in table.dma_segments(count):
        pos = 0
        while pos < length:
            piece = pieces[index]
            out.append(SgEntry(piece.start, piece.size, address + pos, piece.size))
            pos += piece.size
            index += 1
        if pos != length:
            raise StateError(
                f"map_sg returned a segment of {length:#x} bytes at {address:#x} that does "
                "not end on an entry"
            )
    return tuple(out)


def unmap(mapping: DeviceMapping) -> None:
    """``dma_unmap_sg`` with what the map used (hands the buffer back to the CPU)."""
    api = mapping.api
    api.unmap_sg(
        mapping.device,
        mapping.table,
        len(mapping.table),
        mapping.direction,
        int(mapping.attrs),
    )


def sync_range(mapping: DeviceMapping, offset: int, length: int, *, for_cpu: bool) -> None:
    """Hand bytes ``[offset, offset+length)`` of the buffer to the CPU (``for_cpu``) or
    back to the device, with the maintenance the mapping's direction needs.

    The whole buffer is one ``dma_sync_sg_*``; part of it is a ``dma_sync_single_*``
    per device-address run inside the range (the maintenance then touches only those
    bytes).  The DMA API finds a run inside a direct device's mapping only in its first
    entry, so a part of a direct multi-entry mapping is synced whole.
    """
    api, dev, direction = mapping.api, mapping.device, mapping.direction
    total = sum(e.length for e in mapping.entries)
    runs: list[tuple[int, int]] = []
    pos = 0
    for e in mapping.entries:
        inside = AddressRange(pos, e.length) & AddressRange(offset, length)
        if inside is not None:
            runs.append((e.dma_address + inside.start - pos, inside.size))
        pos += e.length
    direct_many = api.ops(dev) == "direct" and len(mapping.entries) > 1
    if (offset == 0 and length >= total) or direct_many:
        sync = api.sync_sg_for_cpu if for_cpu else api.sync_sg_for_device
        sync(dev, mapping.table, len(mapping.table), direction)
        return
    single = api.sync_single_for_cpu if for_cpu else api.sync_single_for_device
    for address, n in runs:
        single(dev, address, n, direction)
