"""``vcmm demo``: the seed's triple mapping, a video pipeline under four policies, and
King's mismatched-alias hazard with the attribute check on and off.

Everything the demo prints is measured on the simulated SoC: bytes written by one bus
master are read back by two others through their own translation paths, the graph is
built from the VCMM's objects and the page tables in memory, and the miss counts are
the SMMU contexts' own counters.  The expected column is plain arithmetic from the
page tables (how many pages the raster scan touches), so the reader can check the TLB.
"""

from __future__ import annotations

import math
import textwrap
import time

import click

from vcmm.cli.hazard import HAZARD_DEVICE, HAZARD_SEED, alias_hazard
from vcmm.cli.topology import triple_mapping
from vcmm.core.export import graph_data
from vcmm.report.graph import to_text
from vcmm.report.tables import Table, fmt_chunks
from vcmm.sizes import format_size
from vcmm.workload.runner import ScenarioResult, run_scenario
from vcmm.workload.scenario import packaged_scenario
from vcmm.workload.scenario_keys import POLICIES

#: The packaged scenario the demo's pipeline runs.
DEMO_SCENARIO = "video_1080p"
DEMO_POLICIES = ("4k", "64k", "1m", "largest")


def video_pipeline(frames: int = 3) -> dict[str, ScenarioResult]:
    """The packaged 1080p pipeline once per policy, on a fresh system each time."""
    base = packaged_scenario(DEMO_SCENARIO).with_params(frames=frames)
    return {policy: run_scenario(base.with_params(policy=policy)) for policy in DEMO_POLICIES}


def expected_misses(result: ScenarioResult, device: str) -> int:
    """Pages a raster scan of the whole frame touches: with a TLB that holds them all,
    the first frame's misses (one compulsory miss per page)."""
    buf = result.buffers[0]
    mapping = next(m for m in buf.mappings if m.device == device)
    sizes = POLICIES[buf.policy]
    if sizes is not None:
        return math.ceil(buf.size / sizes[0])
    # Mixed page sizes: count the leaf entries that start below the frame's end.
    pages = sorted((size for size, n in mapping.pages.items() for _ in range(n)), reverse=True)
    covered, touched = 0, 0
    for size in pages:
        if covered >= buf.size:
            break
        covered += size
        touched += 1
    return touched


def _frames_cell(values: list[int | None], width: int) -> str:
    return " ".join("-".rjust(width) if v is None else f"{v:>{width},}" for v in values)


def pipeline_table(results: dict[str, ScenarioResult]) -> Table:
    """Policy | chunks | pages touched | misses per frame of writer and reader | walks."""
    first = next(iter(results.values()))
    writer, reader = first.steps[0], first.steps[1]
    ctx = {c.name: c for c in first.contexts}
    w_ctx, r_ctx = ctx[str(writer.context)], ctx[str(reader.context)]
    width = max(
        len(f"{f.misses:,}")
        for r in results.values()
        for s in r.steps
        for f in s.frames
        if f.misses is not None
    )
    table = Table(
        f"IOTLB misses per frame ({writer.device}: {w_ctx.smmu} TLB, {w_ctx.tlb_entries} entries "
        f"{w_ctx.tlb_ways}-way; {reader.device}: {r_ctx.smmu} TLB, {r_ctx.tlb_entries} entries "
        f"{r_ctx.tlb_ways}-way; LRU)",
        [
            "policy",
            "chunks",
            "pages touched",
            f"{writer.device} misses/frame",
            f"{reader.device} misses/frame",
            "walk reads",
            "pt bytes",
        ],
    )
    for policy, result in results.items():
        w, r = result.steps[0], result.steps[1]
        tot = result.totals()
        table.add(
            [
                policy,
                fmt_chunks(result.buffers[0].chunks),
                expected_misses(result, w.device),
                _frames_cell([f.misses for f in w.frames], width),
                _frames_cell([f.misses for f in r.frames], width),
                tot["walk_reads"],
                tot["table_bytes"],
            ]
        )
    return table


def hazard_lines() -> list[str]:
    """Section 4: the same steps refused with the check on, corrupting with it off."""
    refused = alias_hazard(check_attributes=True)
    shown = alias_hazard(check_attributes=False)
    cache = shown.system.cpu.cache
    width, pad = 32, len(f"the uncached alias {shown.uncached_va:#x}")
    lines = [
        "4. Mismatched aliases (King, seed 000 L2075-2094): kernel RAM mapped uncached",
        f"   The kernel wrote a page of ebi at {shown.buffer.start:#x} through its cacheable "
        "linear map and",
        "   cleaned+invalidated it; a driver maps it uncached in a VMM VCM for "
        f"{HAZARD_DEVICE} to fill.",
        "   check on (the default): vcm_back is refused, nothing is mapped:",
        *textwrap.wrap(str(refused.refused), 96, initial_indent="     ", subsequent_indent="     "),
        "   check off (system.graph.check_attributes = False):",
        f"     speculative prefetch (seed {HAZARD_SEED}) pulled line {shown.prefetched} in "
        "through the linear map",
        f"     {HAZARD_DEVICE} wrote the page; its first {width} bytes as seen by",
        *(
            f"       {label:<{pad}}  {data[:width]!r}"
            for label, data in (
                (f"DRAM (physical {shown.buffer.start:#x})", shown.dram),
                (f"the uncached alias {shown.uncached_va:#x}", shown.uncached),
            )
        ),
        f"     stale lines: {len(shown.stale)} of {shown.buffer.size // cache.config.line} "
        f"({', '.join(f'{pa:#x}' for pa in shown.stale)}); uncached reads that hit the "
        f"cache: {cache.counters.uncached_hits}",
        "   The cache is searched even for a Normal non-cacheable read, and the line the",
        "   linear map loaded speculatively answers it.  Maintenance at map time cannot stop",
        "   a later prefetch, so every alias of a page must agree on its attributes.",
    ]
    return lines


@click.command("demo")
@click.option(
    "--frames",
    type=click.IntRange(1, 50),
    default=3,
    show_default=True,
    help="Frames of the video pipeline.",
)
def demo_command(frames: int) -> None:
    """The seed's triple mapping and a 1080p pipeline under four block policies."""
    started = time.perf_counter()
    tm = triple_mapping()
    system = tm.system
    echo = click.echo
    echo(f"vcmm demo on platform {system.spec.name}")
    echo("")
    echo("1. One allocation, three bus masters (the seed's triple mapping)")
    echo(
        f"   vcm_phys_alloc('contig', {format_size(tm.length)}, CONTIGUOUS) -> physical {tm.phys_addr:#x}"
    )
    echo(
        f"   vcodec_a_mm1  IOMMU VCM       device address {tm.iommu_addr:#x}  pages {fmt_chunks(tm.iommu_pages)}"
    )
    echo(
        f"   dsp           one-to-one VCM  bus address    {tm.dsp_addr:#x}  (dma-ranges: physical - 0x40000000)"
    )
    echo(f"   cpu           VMM VCM         kernel VA      {tm.cpu_addr:#x}")
    echo(f"   vcodec_a_mm1 wrote {tm.length:,} bytes through smmu0.")
    mark = {True: "OK, identical", False: "FAILED, the bytes differ"}
    echo(f"   check: dsp read them back through its dma-ranges window: {mark[tm.dsp_ok]}")
    echo(f"   check: cpu read them back through the VMM mapping and its cache: {mark[tm.cpu_ok]}")
    echo("")
    echo("2. Mapping graph (physical allocation <- every bus master that reaches it)")
    for line in to_text(graph_data(system.vcmm, chunks=False)).splitlines():
        echo("   " + line)
    echo("")
    scenario = packaged_scenario(DEMO_SCENARIO)
    buf = scenario.buffers[0]
    echo(
        f"3. Video pipeline: {buf.frame.describe() if buf.frame else buf.name} frame "
        f"({buf.size:,} bytes) written by {scenario.steps[0].device}, read by "
        f"{scenario.steps[1].device}, raster order, {frames} frames, {scenario.burst}-byte bursts"
    )
    results = video_pipeline(frames)
    for line in pipeline_table(results).to_text().splitlines():
        echo("   " + line)
    ok = all(
        r.steps[0].frames[0].misses == expected_misses(r, r.steps[0].device)
        for r in results.values()
    )
    echo(
        "   check: first-frame misses of the writer = pages touched (ceil(size / page size) "
        f"for one block size): {'OK' if ok else 'FAILED'}"
    )
    echo(
        "   Larger blocks mean fewer pages, so fewer misses and walks; once the pages fit the\n"
        "   TLB, later frames hit.  mdp's 32-entry TLB cannot hold 48 64K pages, so it keeps\n"
        "   missing at 64K; 'largest' mixes 1M, 64K and 4K blocks to waste no memory."
    )
    echo("")
    for line in hazard_lines():
        echo(line)
    echo(f"({time.perf_counter() - started:.1f} s)")


COMMANDS = [demo_command]
