"""Running scenarios: counters against the arithmetic of pages, the ARMv7 table format
and the hardware's own counters, read back independently from the booted system."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vcmm.sizes import SZ_1M, SZ_4K, SZ_64K
from vcmm.workload.runner import ScenarioRunner, run_scenario, step_stream
from vcmm.workload.scenario import ScenarioError, load_scenario, loads_scenario

# ARMv7 short descriptors: a first-level table has 4096 4-byte entries (16 KiB), a
# second-level table 256 (1 KiB).  A section (1M) or supersection is found at the first
# level (one descriptor read per walk); small (4K) and large (64K) pages need the second
# level too (two reads).
L1_BYTES = 4096 * 4
L2_BYTES = 256 * 4
BIG_TLB = "tlb = { entries = 1024, ways = 1024 }"
N = 300 * SZ_4K + 123  # a buffer that ends inside a page


@pytest.mark.parametrize(
    ("policy", "page", "reads"), [("4k", SZ_4K, 2), ("64k", SZ_64K, 2), ("1m", SZ_1M, 1)]
)
def test_a_linear_sweep_misses_once_per_page_with_a_large_tlb(
    make_linear: Callable[..., str], policy: str, page: int, reads: int
) -> None:
    sc = loads_scenario(make_linear(f"{N}", policy, frames=3, tlb=BIG_TLB))
    result = run_scenario(sc)
    (step,) = result.steps
    pages = math.ceil(N / page)
    assert step.misses_per_frame == [pages, 0, 0]
    bursts = math.ceil(N / 64)
    assert step.bursts_per_frame == bursts
    ctx = result.context("vcodec_a_mm1")
    assert ctx.tlb["lookups"] == 3 * bursts
    assert ctx.tlb["hits"] == 3 * bursts - pages
    assert ctx.tlb["walks"] == pages
    assert ctx.tlb["walk_reads"] == reads * pages
    (buf,) = result.buffers
    assert buf.chunks == {page: pages}
    assert buf.mappings[0].pages == {page: pages}


def test_table_memory_is_one_l1_table_plus_an_l2_table_per_megabyte_of_small_pages(
    make_linear: Callable[..., str],
) -> None:
    small = run_scenario(loads_scenario(make_linear("3M", "4k")))
    assert small.context("vcodec_a_mm1").table_bytes == L1_BYTES + 3 * L2_BYTES
    assert small.context("vcodec_a_mm1").table_pages == 4
    sections = run_scenario(loads_scenario(make_linear("3M", "1m")))
    assert sections.context("vcodec_a_mm1").table_bytes == L1_BYTES


def test_an_lru_tlb_smaller_than_the_page_count_misses_every_page_every_frame(
    make_linear: Callable[..., str],
) -> None:
    # 100 pages of 4K through the default smmu0 TLB (64 entries, 4-way LRU): a cyclic
    # sweep over more pages than a set holds evicts each page before it comes back.
    sc = loads_scenario(make_linear("400K", "4k", frames=3))
    assert run_scenario(sc).steps[0].misses_per_frame == [100, 100, 100]


def test_result_counters_are_the_hardware_counters(tiny_file: Path) -> None:
    result = run_scenario(load_scenario(tiny_file))
    system = result.system
    assert system is not None
    for ctx in result.contexts:
        hw = system.device(ctx.devices[0]).ctx.stats()
        assert ctx.tlb == {
            name: getattr(hw.tlb, name)
            for name in (
                "lookups",
                "hits",
                "misses",
                "walks",
                "walk_reads",
                "evictions",
                "invalidations",
            )
        }
        assert (ctx.faults, ctx.bytes_read, ctx.bytes_written) == (
            hw.faults,
            hw.bytes_read,
            hw.bytes_written,
        )
    for dev in result.devices:
        counters = system.device(dev.name).counters()
        assert (dev.bytes_read, dev.bytes_written, dev.transactions, dev.faults) == (
            counters["bytes_read"],
            counters["bytes_written"],
            counters["transactions"],
            counters["faults"],
        )
    # Each context serves one step here: its misses are the sum of the step's frames.
    for step in result.steps:
        assert sum(step.misses_per_frame) == result.context(str(step.context)).tlb["misses"]
    totals = result.totals()
    assert totals["misses"] == sum(c.tlb["misses"] for c in result.contexts)
    assert totals["bytes_moved"] == 2 * 2 * (256 * 128 * 3 // 2)  # 2 devices x 2 frames


def test_device_addresses_translate_to_the_buffer_s_physical_memory(tiny_file: Path) -> None:
    runner = ScenarioRunner(load_scenario(tiny_file))
    result = runner.run()
    physmem = runner.physmems["frame"]
    for mapping in result.buffers[0].mappings:
        ctx = runner.system.device(mapping.device).ctx
        for offset in (0, 5 * SZ_4K + 17):
            chunk = offset // SZ_4K  # 4k policy: chunk i backs page i
            pa, _ = physmem.chunks[chunk]
            assert ctx.translate(mapping.dev_addr + offset) == pa + offset % SZ_4K


def test_contexts_sharing_one_smmu_tlb_evict_each_other() -> None:
    # Two codec ports on smmu0 (64 entries, 16 sets of 4) each stream 48 64K pages.
    # Alone, 48 pages fit (3 per set) and later frames hit; together, 96 pages want
    # 6 ways per set, and the global TLB the seed describes thrashes.
    one = """\
name = "shared"
frames = 2
[[buffers]]
name = "a"
size = "3M"
target = "blocks"
policy = "64k"
[[buffers]]
name = "b"
size = "3M"
target = "blocks"
policy = "64k"
[[steps]]
device = "vcodec_a_mm1"
buffer = "a"
access = "read"
"""
    alone = run_scenario(loads_scenario(one))
    assert alone.steps[0].misses_per_frame == [48, 0]
    both = one + '[[steps]]\ndevice = "vcodec_b_mm2"\nbuffer = "b"\naccess = "read"\n'
    shared = run_scenario(loads_scenario(both))
    assert shared.steps[0].misses_per_frame[1] > 0
    assert shared.steps[1].misses_per_frame[1] > 0
    # Different SMMUs never meet: mdp's frame 2 still hits with codec traffic on smmu0.
    other = both.replace('device = "vcodec_b_mm2"', 'device = "mdp"')
    apart = run_scenario(loads_scenario(other))
    assert apart.steps[0].misses_per_frame == [48, 0]


def test_steps_run_frame_by_frame_in_file_order(tiny_file: Path) -> None:
    sc = load_scenario(tiny_file).with_params(frames=3)
    result = run_scenario(sc)
    assert [len(s.frames) for s in result.steps] == [3, 3]
    assert [f.frame for f in result.steps[1].frames] == [0, 1, 2]


def test_a_write_through_a_read_only_mapping_faults_and_ends_the_step() -> None:
    text = """\
name = "ro"
frames = 3
[[buffers]]
name = "buf"
size = "64K"
access = "ro"
[[steps]]
device = "vcodec_a_mm1"
buffer = "buf"
access = "write"
[[steps]]
device = "mdp"
buffer = "buf"
access = "read"
"""
    result = run_scenario(loads_scenario(text))
    writer, reader = result.steps
    assert writer.fault is not None and "permission" in writer.fault
    assert len(writer.frames) == 1
    assert result.device("vcodec_a_mm1").faults == 1
    assert result.context("vcodec_a_mm1").faults == 1
    assert result.device("vcodec_a_mm1").bytes_written == 0
    # The reader is unaffected and reads all three frames.
    assert reader.fault is None and len(reader.frames) == 3
    assert result.totals()["faults"] == 1


def test_real_data_moves_between_physically_addressed_devices() -> None:
    runner = ScenarioRunner(load_scenario("camera_dsp"))
    result = runner.run()
    camera, dsp = result.steps
    assert camera.data_check == "written" and dsp.data_check == "ok"
    assert camera.misses_per_frame == [None, None]
    system = runner.system
    ((pa, _),) = runner.physmems["capture"].chunks
    size = result.buffers[0].size
    in_memory = system.memory.read(pa, size)
    assert in_memory != bytes(size)
    # The DSP sees RAM at bus address physical - 0x40000000 (its dma-ranges window).
    dsp_view = next(m for m in result.buffers[0].mappings if m.device == "dsp")
    assert dsp_view.dev_addr == pa - 0x4000_0000
    assert system.device("dsp").read(dsp_view.dev_addr, size) == in_memory


def test_a_data_read_before_any_write_says_so() -> None:
    text = """\
name = "r"
[[buffers]]
name = "buf"
size = "16K"
[[steps]]
device = "mdp"
buffer = "buf"
access = "read"
data = true
"""
    assert run_scenario(loads_scenario(text)).steps[0].data_check == "nothing written yet"


def test_random_streams_differ_per_frame_but_repeat_per_seed() -> None:
    text = """\
name = "rnd"
frames = 2
[[buffers]]
name = "buf"
size = "4M"
target = "blocks"
policy = "4k"
[[steps]]
device = "vcodec_a_mm1"
buffer = "buf"
access = "read"
pattern = "random"
count = 2000
seed = 3
"""
    sc = loads_scenario(text)
    buf, step = sc.buffers[0], sc.steps[0]
    assert not np.array_equal(step_stream(buf, step, 64, 0), step_stream(buf, step, 64, 1))
    first = run_scenario(sc).steps[0].misses_per_frame
    assert first == run_scenario(sc).steps[0].misses_per_frame
    # 2000 random bursts over 1024 pages through 64 entries: nearly every one misses.
    assert all(m is not None and m > 1500 for m in first)


def test_plane_selection_streams_only_that_plane() -> None:
    text = """\
name = "p"
[[buffers]]
name = "f"
size = "1920x1080 nv12"
[[steps]]
device = "mdp"
buffer = "f"
access = "read"
pattern = "raster"
plane = "chroma"
"""
    sc = loads_scenario(text)
    stream = step_stream(sc.buffers[0], sc.steps[0], 64)
    assert stream.min() == 1920 * 1080 and stream.size == 1920 * 540 // 64


def test_an_allocation_the_platform_cannot_serve_names_the_buffer() -> None:
    # The default block pools hold 1024 4K blocks (4M); two 3M buffers need 1536.
    text = """\
name = "big"
[[buffers]]
name = "a"
size = "3M"
target = "blocks"
policy = "4k"
[[buffers]]
name = "b"
size = "3M"
target = "blocks"
policy = "4k"
[[steps]]
device = "mdp"
buffer = "a"
access = "read"
"""
    with pytest.raises(ScenarioError) as info:
        run_scenario(loads_scenario(text, source="big.toml"))
    assert info.value.key == "buffers[1]"
    assert "cannot allocate 3M for buffer 'b' with policy '4k' from blocks" in str(info.value)


def test_the_runner_refuses_what_is_not_a_scenario() -> None:
    with pytest.raises(ScenarioError, match="needs a Scenario"):
        ScenarioRunner("video_1080p")  # type: ignore[arg-type]


def test_to_dict_is_plain_json_data(tiny_file: Path) -> None:
    import json

    data = run_scenario(load_scenario(tiny_file)).to_dict()
    text = json.dumps(data)
    back = json.loads(text)
    assert back["totals"]["misses"] == sum(c["tlb"]["misses"] for c in back["contexts"])
    assert back["buffers"][0]["chunks"] == {"4K": 12}
    assert "system" not in back
