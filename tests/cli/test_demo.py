"""``vcmm demo``: the triple-mapping check, a miss table that obeys the arithmetic, and
King's hazard (an uncached alias hitting a speculatively loaded line) shown and refused."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from click.testing import Result

from vcmm.cli.demo import expected_misses, video_pipeline
from vcmm.cli.hazard import NEW, OLD, alias_hazard
from vcmm.cli.topology import triple_mapping
from vcmm.errors import AttributeConflictError
from vcmm.hw.cpu import VMALLOC_AREA
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_1M, SZ_4K, SZ_64K

FRAME = 1920 * 1080 * 3 // 2  # NV12: luma plus half-height interleaved chroma


def _row(output: str, policy: str) -> list[int]:
    """The numbers of one policy's row of the demo's miss table."""
    line = next(ln for ln in output.splitlines() if re.match(rf"\s+{policy}\s+\d", ln))
    after_chunks = re.split(r"\d+ x \d+[KM]\s{2,}", line, maxsplit=1)[-1]
    return [int(n.replace(",", "")) for n in re.findall(r"[\d,]+", after_chunks)]


def test_demo_prints_the_checks_and_misses_that_follow_the_page_count(
    vcmm: Callable[..., Result],
) -> None:
    result = vcmm("demo")
    out = result.stdout
    assert "check: dsp read them back through its dma-ranges window: OK, identical" in out
    assert "check: cpu read them back through the VMM mapping and its cache: OK, identical" in out
    assert "2 x 1M + 1 x 4K" in out  # the seed's 2M+4K on the IOMMU: two sections, one page
    assert "first-frame misses of the writer = pages touched" in out and "FAILED" not in out
    # Columns: pages touched, writer misses f0 f1 f2, reader misses f0 f1 f2, walk reads, pt bytes.
    for policy, page in (("4k", SZ_4K), ("64k", SZ_64K), ("1m", SZ_1M)):
        row = _row(out, policy)
        pages = math.ceil(FRAME / page)
        assert row[0] == pages and row[1] == pages
    # 3 sections fit every TLB: only compulsory misses; 760 4K pages never fit.
    assert _row(out, "1m")[1:7] == [3, 0, 0, 3, 0, 0]
    assert _row(out, "4k")[1:7] == [760] * 6
    # 48 64K pages fit smmu0's 64 entries but not smmu1's 32.
    assert _row(out, "64k")[1:7] == [48, 0, 0, 48, 48, 48]
    misses = [sum(_row(out, p)[1:7]) for p in ("4k", "64k", "1m")]
    assert misses == sorted(misses, reverse=True)


def test_the_triple_mapping_puts_one_allocation_behind_three_bus_masters() -> None:
    tm = triple_mapping()
    assert tm.dsp_ok and tm.cpu_ok
    # dsp dma-ranges: bus 0x4000_0000 reaches physical 0x8000_0000.
    assert tm.dsp_addr == tm.phys_addr - 0x8000_0000 + 0x4000_0000
    assert tm.iommu_pages == {SZ_1M: 2, SZ_4K: 1}
    # Every path lands on the same physical bytes.
    system = tm.system
    assert (
        system.device("vcodec_a_mm1").ctx.translate(tm.iommu_addr + SZ_1M + 8)
        == tm.phys_addr + SZ_1M + 8
    )


def test_demo_numbers_come_from_the_counters() -> None:
    results = video_pipeline(frames=2)
    assert list(results) == ["4k", "64k", "1m", "largest"]
    largest = results["largest"]
    # Largest-first: 2 x 1M + 15 x 64K + 8 x 4K blocks cover the frame with no waste.
    assert largest.buffers[0].chunks == {SZ_1M: 2, SZ_64K: 15, SZ_4K: 8}
    assert expected_misses(largest, "vcodec_a_mm1") == 25
    for result in results.values():
        writer = result.steps[0]
        assert writer.frames[0].misses == expected_misses(result, writer.device)
        assert sum(writer.misses_per_frame) == result.context("vcodec_a_mm1").tlb["misses"]


# -- section 4: King's mismatched-alias hazard ----------------------------------------------


def test_the_uncached_alias_returns_the_line_speculation_left() -> None:
    """With the check off: DRAM holds the device's page, the uncached alias returns the
    kernel's old bytes in exactly the one line the prefetch loaded, the device's
    elsewhere."""
    shown = alias_hazard(check_attributes=False)
    line = shown.system.cpu.cache.config.line
    assert shown.refused is None and shown.buffer.size == SZ_4K
    assert shown.dram == NEW[:SZ_4K]
    assert shown.uncached == OLD[:line] + NEW[line:SZ_4K]
    assert shown.stale == (shown.buffer.start,)
    assert shown.prefetched == AddressRange(shown.buffer.start, line)
    assert shown.system.cpu.cache.counters.uncached_hits == 1
    assert alias_hazard(check_attributes=False).uncached == shown.uncached  # deterministic


def test_with_the_check_on_the_same_steps_are_refused_naming_both_mappings() -> None:
    refused = alias_hazard(check_attributes=True)
    error = refused.refused
    assert isinstance(error, AttributeConflictError)
    message = str(error)
    buffer = str(refused.buffer)
    assert f"would map {buffer} at {VMALLOC_AREA.start:#x} as normal-nc" in message
    assert "the kernel linear map maps" in message and "as normal-wb-wa" in message
    # Nothing was mapped: the kernel VA the alias would have used still faults.
    walk = refused.system.cpu.kernel_table.walk(VMALLOC_AREA.start & ((1 << 48) - 1))
    assert walk.fault is not None
    assert refused.uncached_va is None and refused.uncached == b""


def test_demo_prints_the_hazard_both_ways(vcmm: Callable[..., Result]) -> None:
    out = vcmm("demo", "--frames", "1").stdout
    section = out[out.index("4. Mismatched aliases") :]
    assert "vcm_back is refused" in section and "mismatched attributes" in section
    assert repr(NEW[:32]) in section and repr(OLD[:32]) in section
    assert "stale lines: 1 of 64" in section
    assert "uncached reads that hit the cache: 1" in section
