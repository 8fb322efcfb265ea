"""``sglayout.layout``'s one-pass case against the slot-by-slot layout it stands for.

When the slots laid end to end fit in one segment-boundary window, ``layout`` skips
the boundary arithmetic; the slots and the IOVA length must be exactly those of
``layout_padded`` (the boundary rule slot by slot) for any entries, granule and mask.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vcmm import SZ_4K, SZ_64K
from vcmm.dma.sglayout import Slot, finalise, layout, layout_padded

ENTRIES = st.lists(
    st.tuples(st.integers(0, 1 << 34), st.integers(1, 5 * SZ_64K)), min_size=0, max_size=40
)


@given(
    entries=ENTRIES,
    granule=st.sampled_from((SZ_4K, SZ_64K)),
    shift=st.integers(12, 33),
)
def test_layout_is_the_slot_by_slot_layout(
    entries: list[tuple[int, int]], granule: int, shift: int
) -> None:
    mask = (1 << max(shift, granule.bit_length() - 1)) - 1
    assert layout(entries, granule, mask) == layout_padded(entries, granule, mask)


def test_layout_pads_only_across_a_boundary() -> None:
    """The fast case and the padded case, each where it applies."""
    pages = [(k * SZ_4K, SZ_4K) for k in range(3)]
    slots, total = layout(pages, SZ_4K, 4 * SZ_4K - 1)  # 3 pages in a 4-page window
    assert total == 3 * SZ_4K and not any(s.pad for s in slots)
    two = [(0, SZ_4K), (0x800, 2 * SZ_4K)]  # the second slot (2 pages) would cross
    slots, total = layout(two, SZ_4K, 2 * SZ_4K - 1)
    assert slots == [Slot(0, 0, SZ_4K, SZ_4K, SZ_4K), Slot(2 * SZ_4K, 0x800, 2 * SZ_4K, 3 * SZ_4K)]
    assert total == 5 * SZ_4K
    # merging: the padded slot ends a segment; a full one joins the next
    assert finalise(slots, 0x10_0000, 2 * SZ_4K - 1, SZ_64K) == [
        (0x10_0000, SZ_4K, 1),
        (0x10_2800, 2 * SZ_4K, 1),
    ]
