"""How ``map_sg`` lays a scatterlist out in one IOVA range and merges it back.

Seed 002's ``iommu_dma_map_sg``: an IOMMU maps whole granules, so each entry gets a
granule-aligned *slot* holding it at its original sub-granule offset (the review's
"sub-granule offsets" finding: the offset inside the first granule must survive), and
the slots are laid end to end in one IOVA allocation.  A slot that would cross a
segment boundary of the device is moved to the next boundary (the gap is padding):
the reviewer's point that "subsequent segments could possibly end up inadvertently
straddling a boundary" and the fix Linux later made.  Because the allocation is
size-aligned to a power of two, a range longer than a boundary window starts on a
boundary, so the layout can be planned from offsets alone before the IOVA is known.

``__finalise_sg`` then walks the entries and joins an entry to the current DMA
segment when it starts on a granule boundary, the previous entry ended exactly at the
end of its slot (no hole between them in IOVA space), it does not start on a segment
boundary, and the joined length stays within the maximum segment size.  Lengths are
the entries' true lengths, never the padded slot sizes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from vcmm.sizes import align_up


class Slot(NamedTuple):
    """Where one entry sits in the IOVA range (offsets relative to its start).

    A named tuple: a ``map_sg`` makes one per entry, and a tuple is made in C."""

    #: Start of the granule-aligned slot.
    start: int
    #: Offset of the data inside the slot's first granule (the entry's own offset).
    offset: int
    #: True length of the entry.
    length: int
    #: Granule-aligned size of the slot, padding excluded.
    size: int
    #: Bytes of padding after the slot (to the next boundary).
    pad: int = 0

    @property
    def span(self) -> int:
        """IOVA bytes the slot consumes, padding included."""
        return self.size + self.pad


_new = tuple.__new__


def layout(
    entries: Sequence[tuple[int, int]], granule: int, boundary_mask: int
) -> tuple[list[Slot], int]:
    """Slots for ``entries`` (``(phys, length)``) and the IOVA length they need.

    The common case in one pass without boundary arithmetic: when the slots laid end
    to end fit in one boundary window (``boundary_mask`` is ``2**n - 1``), none
    crosses a boundary, so none is padded (:func:`layout_padded` would give the same).
    """
    slots: list[Slot] = []
    append = slots.append
    total = 0
    for phys, length in entries:
        offset = phys % granule
        size = -(-(offset + length) // granule) * granule
        append(_new(Slot, (total, offset, length, size, 0)))
        total += size
    if total <= boundary_mask + 1 and not (boundary_mask + 1) & boundary_mask:
        return slots, total
    return layout_padded(entries, granule, boundary_mask)


def layout_padded(
    entries: Sequence[tuple[int, int]], granule: int, boundary_mask: int
) -> tuple[list[Slot], int]:
    """:func:`layout` slot by slot: a slot that would cross a segment boundary moves
    to the next one, the slot before it padded up to there."""
    slots: list[Slot] = []
    total = 0
    for phys, length in entries:
        offset = phys % granule
        size = align_up(offset + length, granule)
        to_boundary = (boundary_mask - total + 1) & boundary_mask
        if to_boundary and to_boundary < size:
            prev = slots[-1]
            slots[-1] = Slot(prev.start, prev.offset, prev.length, prev.size, to_boundary)
            total += to_boundary
        slots.append(Slot(total, offset, length, size))
        total += size
    return slots, total


def finalise(
    slots: Sequence[Slot], base: int, boundary_mask: int, max_segment: int
) -> list[tuple[int, int, int]]:
    """Merged DMA segments ``(dma_address, dma_length, entries joined)``."""
    segments: list[list[int]] = []
    cur_len = 0
    for start, offset, length, size, pad in slots:
        dma = base + start
        if cur_len and offset == 0 and dma & boundary_mask and max_segment - cur_len >= length:
            cur_len += length
            segment = segments[-1]
            segment[1] = cur_len
            segment[2] += 1
        else:
            cur_len = length
            segments.append([dma + offset, length, 1])
        if offset + length < size + pad:
            cur_len = 0
    return [(a, n, k) for a, n, k in segments]
