"""The graph at scale: a 64 MiB carve-out buffer in 16384 scattered 4 KiB pieces.

The second address space mapping it makes every alias of every page shareable, which
rewrites 16384 edges; with a graph whose edge replacement cost grew with the graph
this took about 30 s (docs/DMA.md, before).  Here the two backings and the two
unbackings must take a few seconds at most, and every bit must be right."""

from __future__ import annotations

import time

from vcmm import SZ_1M, SZ_4K
from vcmm.core import Attr, PhysAttr

PAGES = 16384  # 64 MiB


def test_a_16384_piece_buffer_shares_and_unshares_in_seconds(system, armv7) -> None:
    carve = system.vcm_phys_alloc("contig", PAGES * SZ_4K, PhysAttr.CONTIGUOUS)
    start = carve.chunk_ranges[0].start
    # Neighbouring pages swapped: no two pieces continue each other physically.
    order = [i ^ 1 for i in range(PAGES)]
    view = system.vcm_phys_view(carve, windows=[(i * SZ_4K, SZ_4K) for i in order])
    assert len(view.chunk_ranges) == PAGES
    vmm = system.vcm_create_from_prebuilt(0)
    kernel = system.vcm_reserve(vmm, PAGES * SZ_4K, Attr.RW | Attr.NONCACHED)
    device = system.vcm_create(0x4000_0000, 128 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(device, "vcodec_a_mm1", 0))
    dres = system.vcm_reserve(device, PAGES * SZ_4K, Attr.RW | Attr.NONCACHED)

    began = time.perf_counter()
    system.vcm_back(kernel, view)
    system.vcm_back(dres, view)  # flips the 16384 kernel edges shareable
    shared = time.perf_counter() - began
    edges = system.graph.of_reservation(kernel.id)
    assert len(edges) == PAGES and all(m.attrs.shareable for m in edges)
    for i in (0, 1, 4097, PAGES - 1):
        leaf = armv7.leaf(device.table.root, dres.dev_addr + i * SZ_4K)
        assert leaf.pa == start + order[i] * SZ_4K and leaf.shareable
        walk = system.cpu.kernel_table.walk((kernel.dev_addr + i * SZ_4K) & ((1 << 48) - 1))
        assert walk.pa == start + order[i] * SZ_4K and walk.attrs.shareable

    began = time.perf_counter()
    system.vcm_unback(dres)  # flips them back
    system.vcm_unback(kernel)
    unshared = time.perf_counter() - began
    assert system.graph.is_empty()
    assert shared < 5.0 and unshared < 3.0, (shared, unshared)
