"""The seed's media pipeline on the default platform, sharing buffers by reference.

A physically addressed camera captures a frame into a dma-buf; the video codec behind
smmu0 reads it and writes a second buffer; the display behind smmu1 scans that out;
a user process maps both buffers and checks the pixels between sync calls.  The CPU,
the decoder and the display map the same buffers at once (000 L3762-3771), each in
its own address space, and nothing is copied between buffers.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from vcmm.attrs import DmaDirection
from vcmm.proc import MAP_SHARED, O_RDONLY, PROT_READ
from vcmm.share import SyncFlags, dma_buf_sync

SIZE = 16 * 1024  # small enough that the CPU cache (32K) keeps the viewer's stale lines
START_READ = SyncFlags.START | SyncFlags.READ
END_READ = SyncFlags.END | SyncFlags.READ


def decode(pixels: np.ndarray) -> np.ndarray:
    """The stand-in for the codec's work: a reference transform computed independently."""
    return (255 - pixels).astype(np.uint8)


def who_maps(system, chunk) -> set[str]:  # type: ignore[no-untyped-def]
    """Bus masters (or processes) that map ``chunk``, from the mapping graph alone."""
    owners = set()
    for m in system.graph.of_chunk(chunk):
        if m.space.startswith("pid"):
            owners.add("process")
            continue
        vcm = next(v for v in system.vcms if v.space == m.space)
        owners |= {a.device.name for a in vcm.associations}
        owners.add(vcm.kind.value)
    return owners


def test_camera_codec_display_share_two_buffers_ordered_by_fences(rig: Any) -> None:
    system = rig.system
    ebi = system.target("ebi")
    free_before, allocations_before = ebi.free_bytes, len(system.physmems)
    frame_buf = rig.exporter.allocate(SIZE, contiguous=True, name="frame")
    out_buf = rig.exporter.allocate(SIZE, name="decoded")

    # Drivers import: each device gets the buffer in its own address space.
    cam_sg = frame_buf.attach("camera").map(DmaDirection.FROM_DEVICE)
    dec_in_sg = frame_buf.attach("vcodec_a_mm1").map(DmaDirection.TO_DEVICE)
    dec_out_sg = out_buf.attach("vcodec_a_mm1").map(DmaDirection.FROM_DEVICE)
    disp_sg = out_buf.attach("mdp").map(DmaDirection.TO_DEVICE)
    frame_pa = frame_buf.priv.physmem.chunk_ranges[0].start
    assert cam_sg.segments() == [(frame_pa, SIZE)]  # the camera addresses memory physically
    codec, mdp, camera = (system.device(n) for n in ("vcodec_a_mm1", "mdp", "camera"))
    assert dec_in_sg.dma_address != frame_pa  # an IOVA, translated by smmu0's tables
    assert codec.ctx.translate(dec_in_sg.dma_address) == frame_pa
    out_pa = out_buf.priv.physmem.chunk_ranges[0].start
    assert mdp.ctx.translate(disp_sg.dma_address) == out_pa

    # The viewer maps both read-only and peeks at the frame without the sync calls (the
    # bug they exist for): it is all zeros, and the peek leaves the zeros in the CPU
    # cache.  (A bracketed look would not: its END hands the bytes back to the camera,
    # which maps FROM_DEVICE, and that invalidates them.)
    viewer = rig.spawn("viewer")
    fd_frame = frame_buf.install_fd(viewer, O_RDONLY)
    fd_out = out_buf.install_fd(viewer, O_RDONLY)
    va_frame = viewer.mmap(SIZE, PROT_READ, MAP_SHARED, fd_frame)
    va_out = viewer.mmap(SIZE, PROT_READ, MAP_SHARED, fd_out)
    assert viewer.read(va_frame, SIZE) == bytes(SIZE)

    frame = np.random.default_rng(5).integers(0, 256, SIZE, dtype=np.uint8)
    order: list[str] = []
    shown: list[np.ndarray] = []

    sensor = threading.Event()

    def capture() -> None:
        # A slow sensor: the frame comes once every job is queued, so the decoder and the
        # display are still waiting when their dependencies are checked, however slow
        # the machine is.
        assert sensor.wait(5.0)
        camera.write(cam_sg.dma_address, frame)
        order.append("capture")

    def run_decoder() -> None:
        pixels = codec.read_array(dec_in_sg.dma_address, SIZE)
        codec.write(dec_out_sg.dma_address, decode(pixels))
        order.append("decode")

    def scan_out() -> None:
        shown.append(mdp.read_array(disp_sg.dma_address, SIZE))
        order.append("display")

    counters_before = {d.name: d.counters() for d in (camera, codec, mdp)}
    cam_job = rig.engine("camera").submit(capture, writes=[frame_buf])
    dec_job = rig.engine("vcodec").submit(run_decoder, reads=[frame_buf], writes=[out_buf])
    disp_job = rig.engine("mdp").submit(scan_out, reads=[out_buf])
    # Implicit sync through the reservation objects: each job depends on the last writer.
    assert dec_job.deps == (cam_job.fence,)
    assert disp_job.deps == (dec_job.fence,)
    sensor.set()
    disp_job.fence.wait(5.0)
    assert order == ["capture", "decode", "display"]
    assert [j.fence.error for j in (cam_job, dec_job, disp_job)] == [None, None, None]
    assert cam_job.fence.timestamp < dec_job.fence.timestamp < disp_job.fence.timestamp  # type: ignore[operator]
    expected = decode(frame)
    assert np.array_equal(shown[0], expected)

    # The camera wrote DRAM behind the CPU's back: without a sync the viewer still sees
    # its stale cached zeros; the sync (START|READ) invalidates them.
    assert frame_buf.needs_sync
    assert viewer.read(va_frame, 64) == bytes(64)
    dma_buf_sync(viewer, fd_frame, START_READ, timeout=5.0)
    assert viewer.read(va_frame, SIZE) == frame.tobytes()
    dma_buf_sync(viewer, fd_frame, END_READ)
    dma_buf_sync(viewer, fd_out, START_READ, timeout=5.0)
    assert viewer.read(va_out, SIZE) == expected.tobytes()
    dma_buf_sync(viewer, fd_out, END_READ)

    # Nothing was copied between buffers: one allocation each, and the devices moved
    # exactly one frame per transfer.
    assert len(system.physmems) == allocations_before + 2
    assert free_before - ebi.free_bytes == 2 * SIZE
    moved = {
        d.name: {
            k: d.counters()[k] - counters_before[d.name][k] for k in ("bytes_read", "bytes_written")
        }
        for d in (camera, codec, mdp)
    }
    assert moved == {
        "camera": {"bytes_read": 0, "bytes_written": SIZE},
        "vcodec_a_mm1": {"bytes_read": SIZE, "bytes_written": SIZE},
        "mdp": {"bytes_read": SIZE, "bytes_written": 0},
    }
    # Four mappers see the buffers, according to the mapping graph: the camera's
    # one-to-one VCM, smmu0's and smmu1's IOMMU VCMs and the viewer's page table.
    (frame_chunk,) = frame_buf.priv.physmem.chunk_ranges
    (out_chunk,) = out_buf.priv.physmem.chunk_ranges
    assert who_maps(system, frame_chunk) == {
        "camera",
        "one-to-one",
        "vcodec_a_mm1",
        "iommu",
        "process",
    }
    assert who_maps(system, out_chunk) == {"vcodec_a_mm1", "mdp", "iommu", "process"}
    # Every alias of a shared page agrees on memory type and is shareable.
    for chunk in (frame_chunk, out_chunk):
        aliases = system.graph.aliases(chunk)
        assert len({m.attrs.memtype for m in aliases}) == 1
        assert all(m.attrs.shareable for m in aliases)
