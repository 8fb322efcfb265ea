"""Buffer collections on the default platform: negotiation with the platform's facts,
bytes through the allocated buffers from several devices, IOTLB entries read back
from the SMMU's tables, refusals that name who broke what and change nothing."""

from __future__ import annotations

import dataclasses

import pytest

import vcmm
from vcmm.attrs import Access, DmaDirection
from vcmm.errors import ConstraintError, InvalidArgumentError, NotFoundError, StateError
from vcmm.inject import fail_nth
from vcmm.mm.pools import BlockPool
from vcmm.platform import load_default
from vcmm.share import dma_api
from vcmm.share.collection import BufferCollection
from vcmm.share.constraints import Constraints, Domain, ImageConstraints
from vcmm.share.placement import choose_blocks
from vcmm.sizes import SZ_1M, SZ_2M, SZ_4K, SZ_16M, SZ_64K

NV12_720P = ImageConstraints({"nv12"}, min_width=1280, min_height=720)


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


def state(system: vcmm.System) -> tuple[object, ...]:
    api = dma_api(system)
    return system.snapshot(), api.snapshot()


def video(system: vcmm.System) -> BufferCollection:
    """camera -> codec -> display -> CPU, as the bundled scenario has it."""
    frames = BufferCollection(system, "video", ["camera", "vcodec_a_mm1", "mdp", "cpu"])
    frames.join(
        "camera", Constraints(camping=1, image=NV12_720P), direction=DmaDirection.FROM_DEVICE
    )
    frames.join(
        "vcodec_a_mm1",
        Constraints(camping=2, image=ImageConstraints({"nv12", "yuyv"}, bytes_per_row_divisor=256)),
    )
    frames.join("mdp", Constraints(camping=1), direction=DmaDirection.TO_DEVICE)
    return frames


def test_allocation_waits_for_the_last_participant(system: vcmm.System) -> None:
    frames = video(system)
    assert not frames.allocated and frames.waiting_for == ("cpu",)
    cpu = frames.join("cpu")
    placement = frames.placement
    assert placement is not None and frames.allocated
    # camping 1 + 2 + 1; the camera has no IOMMU, so each buffer is one chunk.
    assert placement.count == 4 and placement.contiguous
    assert placement.image is not None and placement.image.bytes_per_row == 1280
    assert placement.size == 1280 * 720 * 3 // 2 // SZ_4K * SZ_4K + SZ_4K
    assert all(len(frames.chunks(i)) == 1 for i in range(4))
    assert cpu.buffers == frames.buffers and not cpu.attachments
    assert placement.domain is Domain.CPU and placement.cached
    # A contiguous pool before a 16 MiB block (the blocks pool would waste 14 MiB).
    assert placement.target == "contig"


def test_bytes_move_from_the_camera_through_the_codec_to_the_display(
    system: vcmm.System,
) -> None:
    frames = video(system)
    frames.join("cpu")
    camera, codec, display = (frames.members[n] for n in ("camera", "vcodec_a_mm1", "mdp"))
    pa = frames.chunks(1)[0][0]
    # The camera addresses memory physically; the codec and display through IOVAs.
    assert camera.dma_addresses[1] == pa
    assert codec.dma_addresses[1] != pa
    payload = bytes(range(256)) * 64
    system.device("camera").write(camera.dma_addresses[1], payload)
    assert system.device("vcodec_a_mm1").read(codec.dma_addresses[1], len(payload)) == payload
    system.device("vcodec_a_mm1").write(codec.dma_addresses[1] + SZ_4K, b"decoded")
    assert system.device("mdp").read(display.dma_addresses[1] + SZ_4K, 7) == b"decoded"
    buf = frames.buffers[1]
    buf.begin_cpu_access(DmaDirection.FROM_DEVICE)
    kernel = buf.vmap()
    assert kernel.read(SZ_4K, 7) == b"decoded"
    kernel.unmap()
    buf.end_cpu_access(DmaDirection.FROM_DEVICE)


def test_the_dsp_gets_bus_addresses_through_its_window(system: vcmm.System) -> None:
    pair = BufferCollection(system, "post", ["camera", "dsp"])
    pair.join("camera", Constraints(min_size=64 * SZ_4K), direction=DmaDirection.FROM_DEVICE)
    pair.join("dsp", direction=DmaDirection.TO_DEVICE)
    pa = pair.chunks()[0][0]
    assert pair.members["dsp"].dma_addresses == (pa - 0x4000_0000,)
    system.device("camera").write(pa, b"raw")
    assert system.device("dsp").read(pa - 0x4000_0000, 3) == b"raw"


def test_iommu_devices_get_1m_blocks_and_the_tables_use_1m_pages(system: vcmm.System) -> None:
    frames = BufferCollection(system, "decode", ["vcodec_a_mm1", "mdp"])
    frames.join("vcodec_a_mm1", Constraints(min_size=3 * SZ_1M + 5 * SZ_64K, camping=2))
    frames.join("mdp", Constraints(camping=1), direction=DmaDirection.TO_DEVICE)
    placement = frames.placement
    assert placement is not None and not placement.contiguous and placement.target == "blocks"
    assert placement.block_sizes == (SZ_16M, SZ_1M, SZ_64K, SZ_4K)
    assert sorted(size for _, size in frames.chunks()) == [SZ_64K] * 5 + [SZ_1M] * 3
    # The IOTLB entries the SMMU's own tables give for buffer 0: distinct leaves.
    base = frames.members["mdp"].dma_addresses[0]
    found = leaves(system, "mdp", base, placement.size)
    assert frames.iotlb_entries("mdp") == (found, placement.size // SZ_4K)
    assert found == 3 + 5


def test_an_lpae_smmu_is_given_only_blocks_it_maps_as_large_pages() -> None:
    pool = BlockPool.carve("blocks", 0xA000_0000, {SZ_16M: 1, SZ_1M: 4, SZ_64K: 4, SZ_4K: 4})
    lpae = Constraints(page_sizes=frozenset({SZ_4K, SZ_2M, 1 << 30}))
    blocks, why = choose_blocks(pool, lpae)
    assert blocks == (SZ_16M, SZ_4K)
    assert "16M blocks as 2M pages" in why
    short = Constraints(page_sizes=frozenset({SZ_4K, SZ_64K, SZ_1M, SZ_16M}))
    assert choose_blocks(pool, short)[0] == (SZ_16M, SZ_1M, SZ_64K, SZ_4K)
    both = Constraints(page_sizes=lpae.page_sizes & short.page_sizes)  # type: ignore[operator]
    assert choose_blocks(pool, both)[0] == (SZ_4K,)


def test_a_cpu_that_wants_uncached_buffers_gets_a_carve_out(system: vcmm.System) -> None:
    ram = BufferCollection(system, "scanout", ["mdp", "cpu"])
    ram.join("mdp", Constraints(min_size=SZ_1M))
    ram.join("cpu", Constraints(domains=frozenset({Domain.RAM})))
    assert ram.placement is not None and ram.placement.domain is Domain.RAM
    assert not system.target(ram.placement.target).linear_mapped


def test_secure_buffers_are_for_devices_only(system: vcmm.System) -> None:
    secure = BufferCollection(system, "drm", ["vcodec_a_mm1", "mdp"])
    secure.join("vcodec_a_mm1", Constraints(min_size=SZ_1M, secure=True))
    secure.join("mdp")
    assert secure.placement is not None and secure.placement.domain is Domain.INACCESSIBLE
    assert not system.target(secure.placement.target).linear_mapped
    with_cpu = BufferCollection(system, "leak", ["vcodec_a_mm1", "cpu"])
    with_cpu.join("vcodec_a_mm1", Constraints(min_size=SZ_1M, secure=True))
    with pytest.raises(ConstraintError, match="'cpu' breaks the secure constraint") as info:
        with_cpu.join("cpu")
    assert info.value.participant == "cpu"


def test_a_target_the_dsp_cannot_reach_is_refused_naming_its_window(system: vcmm.System) -> None:
    sram = BufferCollection(system, "sram", ["vcodec_a_mm1", "dsp"])
    sram.join("vcodec_a_mm1", Constraints(min_size=SZ_64K, targets={"smi"}))
    before = state(system)
    with pytest.raises(ConstraintError) as info:
        sram.join("dsp")
    assert (info.value.participant, info.value.constraint) == ("dsp", "memory targets")
    assert "'vcodec_a_mm1': smi; 'dsp': blocks, contig, ebi" in str(info.value)
    assert state(system) == before and sram.waiting_for == ("dsp",)


def test_the_last_join_refused_when_no_target_can_hold_changes_nothing(
    system: vcmm.System,
) -> None:
    huge = BufferCollection(system, "huge", ["vcodec_a_mm1", "mdp"])
    huge.join("vcodec_a_mm1", Constraints(min_size=SZ_16M, camping=40))
    before = state(system)
    with pytest.raises(ConstraintError, match="no memory target can hold") as info:
        huge.join("mdp")
    assert (info.value.participant, info.value.constraint) == ("platform", "memory targets")
    assert state(system) == before and not huge.allocated and huge.waiting_for == ("mdp",)


def test_an_image_too_big_for_max_size_names_the_participant(system: vcmm.System) -> None:
    small = BufferCollection(system, "small", ["camera", "mdp"])
    small.join("camera", Constraints(image=NV12_720P))
    with pytest.raises(ConstraintError, match="'mdp' allows at most 1M") as info:
        small.join("mdp", Constraints(max_size=SZ_1M))
    assert (info.value.participant, info.value.constraint) == ("mdp", "size")


def test_every_failed_allocation_of_the_last_join_is_taken_back() -> None:
    """fail_nth over the final join: each failure leaves the system and the DMA API as
    they were, and the participant may join again (a failure some layer absorbs with
    a fallback starts the next round on a fresh system)."""
    system = vcmm.System.default()
    frames = video(system)
    failures = 0
    for n in range(1, 300):
        before = state(system)
        with fail_nth(n) as injector:
            try:
                frames.join("cpu")
            except vcmm.VcmmError:
                assert injector.fired
                assert state(system) == before, f"n={n}: {injector.failed}"
                assert not frames.allocated and frames.waiting_for == ("cpu",)
                failures += 1
                continue
        if not injector.fired:
            assert frames.allocated and failures >= 4  # each buffer's block failed once
            return
        system = vcmm.System.default()
        frames = video(system)
    raise AssertionError("the join never succeeded")


def test_close_gives_the_memory_back(system: vcmm.System) -> None:
    dma_api(system)
    contig = system.target("contig")
    free = contig.free_bytes
    frames = video(system)
    frames.join("cpu")
    assert contig.free_bytes < free
    frames.close()
    assert contig.free_bytes == free and not dma_api(system).mappings()
    with pytest.raises(StateError, match="already closed"):
        frames.close()
    with pytest.raises(StateError, match="was closed"):
        frames.join("cpu")


def test_misuse_is_refused_and_changes_nothing(system: vcmm.System) -> None:
    with pytest.raises(InvalidArgumentError, match="at least one participant"):
        BufferCollection(system, "x", [])
    with pytest.raises(InvalidArgumentError, match="named twice"):
        BufferCollection(system, "x", ["mdp", "mdp"])
    with pytest.raises(NotFoundError, match="gpu"):
        BufferCollection(system, "x", ["gpu"])
    with pytest.raises(InvalidArgumentError, match="must be a list"):
        BufferCollection(system, "x", "mdp")
    with pytest.raises(InvalidArgumentError, match="name"):
        BufferCollection(system, "", ["mdp"])
    with pytest.raises(InvalidArgumentError, match="booted"):
        BufferCollection(object(), "x", ["mdp"])
    pair = BufferCollection(system, "pair", ["mdp", "cpu"])
    pair.join("mdp", Constraints(min_size=SZ_64K))
    before = state(system)
    with pytest.raises(InvalidArgumentError, match="not a participant"):
        pair.join("camera")
    with pytest.raises(StateError, match="already joined"):
        pair.join("mdp")
    with pytest.raises(InvalidArgumentError, match="is not a Constraints"):
        pair.join("cpu", {"min_size": 1})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="direction"):
        pair.join("cpu", direction="read")  # type: ignore[arg-type]
    assert state(system) == before
    pair.join("cpu")
    with pytest.raises(StateError, match="is allocated"):
        pair.join("cpu")
    with pytest.raises(InvalidArgumentError, match="buffer index 1"):
        pair.chunks(1)
    with pytest.raises(InvalidArgumentError, match="buffer index True"):
        pair.chunks(True)


def test_a_refused_first_join_closes_the_dma_api_it_made() -> None:
    spec = load_default()
    system = vcmm.System(dataclasses.replace(spec))
    from vcmm.dma import DmaApi

    lone = BufferCollection(system, "lone", ["mdp"])
    with pytest.raises(ConstraintError):
        lone.join("mdp", Constraints(min_size=SZ_1M, max_size=SZ_64K))
    assert DmaApi.current(system) is None
    assert lone.waiting_for == ("mdp",)


def test_the_exporter_takes_allocation_attributes(system: vcmm.System) -> None:
    from vcmm.core.flags import PhysAttr
    from vcmm.share import VcmExporter

    exporter = VcmExporter(system)
    first = exporter.allocate(SZ_64K, target="contig")
    plain = exporter.allocate(SZ_64K, target="contig")
    aligned = exporter.allocate(SZ_64K, target="contig", attr=PhysAttr.align(SZ_1M))
    assert plain.priv.physmem.chunks[0][0] == first.priv.physmem.chunks[0][0] + SZ_64K
    assert aligned.priv.physmem.chunks[0][0] % SZ_1M == 0
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match="is not a PhysAttr"):
        exporter.allocate(SZ_64K, attr=SZ_1M)  # type: ignore[arg-type]
    assert system.snapshot() == before


def leaves(system: vcmm.System, device: str, base: int, size: int) -> int:
    """Distinct IOTLB entries (leaf pages) the device's tables give for a range."""
    ctx = system.device(device).ctx
    found = set()
    for offset in range(0, size, SZ_4K):
        tr = ctx.translate_access(base + offset, Access.READ)
        found.add((base + offset) // tr.page_size * tr.page_size)
    return len(found)


def test_on_lpae_smmus_16m_blocks_map_as_2m_pages_and_the_prediction_holds() -> None:
    spec = load_default()
    lpae = tuple(dataclasses.replace(s, format="lpae") for s in spec.smmus)
    system = vcmm.System(dataclasses.replace(spec, smmus=lpae))
    big = BufferCollection(system, "big", ["vcodec_a_mm1", "mdp"])
    big.join("vcodec_a_mm1", Constraints(min_size=SZ_16M + 3 * SZ_1M))
    big.join("mdp")
    placement = big.placement
    assert placement is not None and placement.block_sizes == (SZ_16M, SZ_4K)
    assert placement.size == SZ_16M + 3 * SZ_1M
    predicted, small = big.iotlb_entries("mdp")  # type: ignore[misc]
    base = big.members["mdp"].dma_addresses[0]
    assert leaves(system, "mdp", base, placement.size) == predicted
    assert small == placement.size // SZ_4K and predicted < small // 10
