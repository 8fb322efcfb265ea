"""map_sg: one IOVA range, merged DMA segments, true lengths; failure restores the list.

The merge is checked three independent ways: against a small reference of the rule
written here from its description (slots laid end to end, a slot that would cross a
segment boundary moved to the next one, an entry joins the previous segment when they
touch in DMA space, it does not start on a boundary and the result is not too long),
against the invariants the device relies on (no segment crosses a boundary or exceeds
the maximum size when no input did), and byte for byte: the device reading its
segments gets exactly the entries' bytes in order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_4K, SZ_64K
from vcmm import DmaDirection as D
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi, ReportKind, ScatterList
from vcmm.errors import DmaApiError, OutOfAddressSpaceError

DEV = "vcodec_a_mm1"
G = SZ_4K


def pattern(n: int, seed: int) -> bytes:
    return np.random.default_rng(seed).integers(1, 256, n, dtype=np.uint8).tobytes()


def reference(
    entries: list[tuple[int, int]], boundary_mask: int, max_seg: int, base: int
) -> list[tuple[int, int]]:
    """The merge rule, from its description."""
    window = boundary_mask + 1
    cursor = 0
    placed = []
    for phys, length in entries:
        off = phys % G
        slot = -(-(off + length) // G) * G
        if cursor % window and cursor // window != (cursor + slot - 1) // window:
            cursor = (cursor // window + 1) * window
        placed.append((base + cursor + off, length))
        cursor += slot
    segments: list[tuple[int, int]] = []
    for start, length in placed:
        if segments:
            s0, l0 = segments[-1]
            if s0 + l0 == start and start % window and l0 + length <= max_seg:
                segments[-1] = (s0, l0 + length)
                continue
        segments.append((start, length))
    return segments


def fill(system: vcmm.System, entries: list[tuple[int, int]], seed: int) -> bytes:
    """Write a pattern into each entry through the linear map; the entries' bytes in
    order afterwards (entries may overlap, so read them back)."""
    cpu = system.cpu
    for i, (phys, length) in enumerate(entries):
        cpu.write(cpu.phys_to_virt(phys), pattern(length, seed * 1000 + i))
    return b"".join(cpu.read(cpu.phys_to_virt(phys), length) for phys, length in entries)


def device_bytes(system: vcmm.System, segments: list[tuple[int, int]]) -> bytes:
    dev = system.device(DEV)
    return b"".join(dev.read(a, n) for a, n in segments)


def check_map(
    system: vcmm.System,
    dma: DmaApi,
    entries: list[tuple[int, int]],
    boundary_mask: int,
    max_seg: int,
    seed: int = 0,
) -> list[tuple[int, int]]:
    dma.set_seg_boundary(DEV, boundary_mask)
    dma.set_max_seg_size(DEV, max_seg)
    expected_bytes = fill(system, entries, seed)
    sgl = ScatterList(entries)
    n = dma.map_sg(DEV, sgl, len(entries), D.TO_DEVICE)
    assert n > 0, dma.last_error
    segments = sgl.dma_segments(n)
    base = segments[0][0] - entries[0][0] % G
    assert segments == reference(entries, boundary_mask, max_seg, base)
    # True lengths: nothing of the padding or granule rounding leaks into a segment.
    assert sum(length for _, length in segments) == sum(length for _, length in entries)
    window = boundary_mask + 1
    if all(length <= window for _, length in entries):
        assert all(a // window == (a + length - 1) // window for a, length in segments)
    if all(length <= max_seg for _, length in entries):
        assert all(length <= max_seg for _, length in segments)
    # Entries past the last segment carry no DMA segment.
    assert all(e.dma_address == DMA_MAPPING_ERROR and e.dma_length == 0 for e in sgl[n:])
    # The CPU side is untouched.
    assert [(e.phys, e.length) for e in sgl] == entries
    assert device_bytes(system, segments) == expected_bytes
    dma.unmap_sg(DEV, sgl, len(entries), D.TO_DEVICE)
    return segments


def test_page_aligned_entries_merge_into_one_segment(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    # Scattered pages, each a whole granule: contiguous in IOVA space, one segment.
    entries = [(buf.pa + i * 3 * G, G) for i in range(8)]
    segments = check_map(system, dma, entries, (1 << 32) - 1, SZ_64K)
    assert len(segments) == 1 and segments[0][1] == 8 * G


def test_sub_granule_offsets_and_gaps_split_segments(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    entries = [
        (buf.pa + 0x100, 0x300),  # ends mid-granule: nothing may join it
        (buf.pa + 0x10000, G),  # whole granule
        (buf.pa + 0x20000, 2 * G),  # whole granules: joins the previous
        (buf.pa + 0x30800, 0x800),  # starts mid-granule: a new segment
        (buf.pa + 0x40000, 0x10),  # tiny, page aligned, but the previous ended at its slot end
    ]
    segments = check_map(system, dma, entries, (1 << 32) - 1, SZ_64K)
    assert [n for _, n in segments] == [0x300, 3 * G, 0x810]
    # The first handle keeps the entry's offset inside its granule.
    assert segments[0][0] % G == 0x100


def test_max_segment_size_caps_merging(system: vcmm.System, dma: DmaApi, kbuf: Callable) -> None:
    buf = kbuf(1 << 20)
    entries = [(buf.pa + i * 2 * G, G) for i in range(7)]
    segments = check_map(system, dma, entries, (1 << 32) - 1, 3 * G)
    assert [n for _, n in segments] == [3 * G, 3 * G, G]


def test_segment_boundary_pads_a_slot_to_the_next_boundary(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    # 16 KiB windows: 12K then 8K would straddle, so the second slot moves to the
    # next boundary and starts a new segment there.
    entries = [(buf.pa, 3 * G), (buf.pa + 0x10000, 2 * G), (buf.pa + 0x20000, G)]
    segments = check_map(system, dma, entries, 0x3FFF, SZ_64K)
    assert [n for _, n in segments] == [3 * G, 3 * G]
    assert segments[1][0] % 0x4000 == 0
    assert segments[1][0] - segments[0][0] == 0x4000  # one granule of padding between


def test_padding_maps_a_scratch_page_not_a_neighbour(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    dma.set_seg_boundary(DEV, 0x3FFF)
    secret = b"S" * G
    system.cpu.write(buf.va + 3 * G, secret)  # the page after the first entry
    sgl = ScatterList([(buf.pa, 3 * G), (buf.pa + 0x10000, 2 * G)])
    assert dma.map_sg(DEV, sgl, 2, D.TO_DEVICE) == 2
    pad = sgl[0].dma_address + 3 * G
    assert system.device(DEV).read(pad, G) == bytes(G)  # zeroed scratch, not "SSS..."
    dma.unmap_sg(DEV, sgl, 2, D.TO_DEVICE)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    data=st.lists(
        st.tuples(
            st.integers(0, 200),
            st.sampled_from([0, 0, 0, 0x10, 0x800, 0xFF0]),
            st.integers(1, 3 * G),
        ),
        min_size=1,
        max_size=10,
    ),
    boundary_bits=st.sampled_from([14, 15, 16, 32]),
    max_seg=st.sampled_from([G, 2 * G, 5 * G, SZ_64K, 1 << 22]),
)
def test_merge_matches_the_reference(
    make_system: Callable, data: list[tuple[int, int, int]], boundary_bits: int, max_seg: int
) -> None:
    system = make_system()
    dma = DmaApi(system, debug="raise")
    physmem = system.vcm_phys_alloc("ebi", 1 << 20, vcmm.PhysAttr.CONTIGUOUS)
    base = physmem.chunk_ranges[0].start
    entries = [(base + page * G + off, length) for page, off, length in data]
    check_map(system, dma, entries, (1 << boundary_bits) - 1, max_seg, seed=len(data))
    assert dma.checker is not None and not dma.checker.reports


def test_unmap_after_merge_releases_the_whole_range(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    sgl = ScatterList([(buf.pa + i * 2 * G + (0x80 if i == 0 else 0), G) for i in range(6)])
    n = dma.map_sg(DEV, sgl, 6, D.BIDIRECTIONAL)
    assert n == 2  # the first entry ends mid-granule, the other five join
    domain = dma.domain(DEV)
    assert domain is not None and len(domain.vcm.reservations) == 1
    dma.unmap_sg(DEV, sgl, 6, D.BIDIRECTIONAL)
    assert not domain.vcm.reservations and not dma.mappings()
    # The segments are gone for the device: it faults, and the checker says why.
    assert dma.checker is not None
    with dma.checker.warning(), pytest.raises(vcmm.errors.DeviceFaultError):
        system.device(DEV).read(sgl[0].dma_address, 4)
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_ACCESS_AFTER_UNMAP
    assert report.unmapped_by is not None and report.unmapped_by.call == "unmap_sg"
    # Nothing of it is left: no live IOVA, no table entry, no graph edge.
    assert domain.iova.allocated() == []
    assert list(domain.vcm.table.mappings()) == []
    assert not [m for m in system.graph.all() if m.space == domain.vcm.space]


def test_failed_map_sg_returns_zero_and_leaves_everything_as_it_was(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(1 << 20)
    dma.set_mask(DEV, 0x3FFF)  # three usable granules (page frame 0 never)
    sgl = ScatterList([(buf.pa + 0x40, G), (buf.pa + 0x5000, G)])
    sgl[1].dma_address, sgl[1].dma_length = 0x1234, 7  # stale DMA fields stay as given
    before = (state(), sgl.snapshot())
    assert dma.map_sg(DEV, sgl, 2, D.TO_DEVICE) == 0
    assert isinstance(dma.last_error, OutOfAddressSpaceError)
    assert (state(), sgl.snapshot()) == before


def test_sync_and_unmap_with_the_segment_count_are_reported(
    system: vcmm.System, dma: DmaApi, kbuf: Callable, state: Callable
) -> None:
    buf = kbuf(1 << 20)
    sgl = ScatterList([(buf.pa + i * 2 * G, G) for i in range(4)])
    n = dma.map_sg(DEV, sgl, 4, D.FROM_DEVICE)
    assert n == 1
    before = state()
    with pytest.raises(DmaApiError, match=r"map count=4\] \[sync count=1\]"):
        dma.sync_sg_for_cpu(DEV, sgl, n, D.FROM_DEVICE)
    with pytest.raises(DmaApiError, match=r"map count=4\] \[unmap count=1\]"):
        dma.unmap_sg(DEV, sgl, n, D.FROM_DEVICE)
    assert state() == before
    reports = dma.checker.take()
    assert [r.kind for r in reports] == [ReportKind.SYNC_WRONG_NENTS, ReportKind.UNMAP_WRONG_NENTS]
    assert all(r.mapped_by is not None and r.mapped_by.call == "map_sg" for r in reports)
    dma.sync_sg_for_cpu(DEV, sgl, 4, D.FROM_DEVICE)
    dma.unmap_sg(DEV, sgl, 4, D.FROM_DEVICE)


def test_direct_device_gets_bus_addresses_unmerged(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    buf = kbuf(1 << 20)
    entries = [(buf.pa + 0x10, 0x100), (buf.pa + G, G), (buf.pa + 2 * G, G)]
    data = fill(system, entries, 3)
    sgl = ScatterList(entries)
    n = dma.map_sg("dsp", sgl, 3, D.TO_DEVICE)
    assert n == 3
    # The DSP sees RAM at 0x4000_0000 where the CPU sees 0x8000_0000 (seed 000).
    assert sgl.dma_segments(3) == [(p - 0x8000_0000 + 0x4000_0000, n) for p, n in entries]
    dsp = system.device("dsp")
    assert b"".join(dsp.read(a, n) for a, n in sgl.dma_segments(3)) == data
    dma.unmap_sg("dsp", sgl, 3, D.TO_DEVICE)


def test_sg_sync_with_the_segment_count_leaves_part_of_the_buffer_stale(
    system: vcmm.System, dma: DmaApi, kbuf: Callable
) -> None:
    """Seed 002 (Sept 2015): syncs walk the CPU side, so they need the original nents."""
    buf = kbuf(1 << 20)
    entries = [(buf.pa + i * 2 * G, G) for i in range(4)]
    sgl = ScatterList(entries)
    n = dma.map_sg(DEV, sgl, 4, D.BIDIRECTIONAL)
    assert n == 1  # one merged DMA segment for four CPU pages
    dev, cpu = system.device(DEV), system.cpu
    dma.sync_sg_for_cpu(DEV, sgl, 4, D.BIDIRECTIONAL)
    for phys, length in entries:
        cpu.write(cpu.phys_to_virt(phys), b"\x5a" * length)
    assert dma.checker is not None
    with dma.checker.warning():
        dma.sync_sg_for_device(DEV, sgl, n, D.BIDIRECTIONAL)  # wrong: the segment count
        seen = dev.read(sgl[0].dma_address, 4 * G)
    assert seen[:G] == b"\x5a" * G  # the first entry was cleaned...
    assert seen[G:] != b"\x5a" * (3 * G)  # ...the other three were not: stale
    kinds = {r.kind for r in dma.checker.take()}
    assert kinds == {ReportKind.SYNC_WRONG_NENTS, ReportKind.DEVICE_READ_STALE}
    dma.sync_sg_for_device(DEV, sgl, 4, D.BIDIRECTIONAL)  # right: the original nents
    assert dev.read(sgl[0].dma_address, 4 * G) == b"\x5a" * (4 * G)
    dma.unmap_sg(DEV, sgl, 4, D.BIDIRECTIONAL)
