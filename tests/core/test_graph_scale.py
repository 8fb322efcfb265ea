"""The graph at scale: a carve-out buffer in thousands of scattered 4 KiB pieces.

The second address space mapping it makes every alias of every page shareable, which
rewrites one edge (and one descriptor) per piece; with a graph whose edge replacement
cost grew with the graph this took about 30 s at 16384 pieces (docs/DMA.md, before).
The test counts the work instead of timing it (``benchmarks/bench_scale.py`` times
it): four times the pieces must cost about four times the function calls, where a
cost that grows with the graph costs sixteen times.  And every bit must be right."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.core import Attr, PhysAttr

SMALL, LARGE = 512, 2048


def _share_and_unshare(
    system: vcmm.System,
    pages: int,
    count_calls: Callable[[Callable[[], object]], int],
    check: Callable[[Any, Any, int, list[int]], None] | None = None,
) -> int:
    """Back a kernel and a device reservation with ``pages`` scattered pieces, then
    unback both; returns the function calls the four operations made."""
    carve = system.vcm_phys_alloc("contig", pages * SZ_4K, PhysAttr.CONTIGUOUS)
    # Neighbouring pages swapped: no two pieces continue each other physically.
    order = [i ^ 1 for i in range(pages)]
    view = system.vcm_phys_view(carve, windows=[(i * SZ_4K, SZ_4K) for i in order])
    assert len(view.chunk_ranges) == pages
    vmm = system.vcm_create_from_prebuilt(0)
    kernel = system.vcm_reserve(vmm, pages * SZ_4K, Attr.RW | Attr.NONCACHED)
    device = system.vcm_create(0x4000_0000, 128 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(device, "vcodec_a_mm1", 0))
    dres = system.vcm_reserve(device, pages * SZ_4K, Attr.RW | Attr.NONCACHED)

    def share() -> None:
        system.vcm_back(kernel, view)
        system.vcm_back(dres, view)  # flips every kernel edge shareable

    def unshare() -> None:
        system.vcm_unback(dres)  # flips them back
        system.vcm_unback(kernel)

    calls = count_calls(share)
    edges = system.graph.of_reservation(kernel.id)
    assert len(edges) == pages and all(m.attrs.shareable for m in edges)
    if check is not None:
        check(kernel, dres, carve.chunk_ranges[0].start, order)
    calls += count_calls(unshare)
    assert system.graph.is_empty()
    return calls


def test_sharing_a_fragmented_buffer_costs_work_linear_in_its_pieces(
    system: vcmm.System, armv7: Any, count_calls: Callable[[Callable[[], object]], int]
) -> None:
    def check(kernel: Any, dres: Any, start: int, order: list[int]) -> None:
        for i in (0, 1, 257, LARGE // 2 + 1, LARGE - 1):
            leaf = armv7.leaf(dres.vcm.table.root, dres.dev_addr + i * SZ_4K)
            assert leaf.pa == start + order[i] * SZ_4K and leaf.shareable
            va = (kernel.dev_addr + i * SZ_4K) & ((1 << 48) - 1)
            walk = system.cpu.kernel_table.walk(va)
            assert walk.pa == start + order[i] * SZ_4K and walk.attrs.shareable

    # Once first: the first backing in a process fills caches (each format's memo of
    # attribute field values) that would count as work of the small run only.
    _share_and_unshare(vcmm.System.default(), SMALL, count_calls)
    small = _share_and_unshare(vcmm.System.default(), SMALL, count_calls)
    large = _share_and_unshare(system, LARGE, count_calls, check)
    # Linear work gives 4x (per piece: one edge, one descriptor, one TLB entry); a
    # rewrite whose cost grew with the graph would give 16x.
    assert 3.5 * small < large < 5 * small, (small, large)
