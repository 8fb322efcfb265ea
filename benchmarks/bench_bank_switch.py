"""The TLB cost of more contexts than context banks (issue 15 item 3).

1. One context, three histories, the same second pass.  ``vcodec_a_mm1`` reads 16
   pages of 4 KiB (its whole working set fits smmu0's 64-entry IOTLB), then reads them
   again after one of:

   - *stays active*: nothing happens in between (enough banks: the default platform);
   - *parked, bank kept*: the context is deactivated and activated again, nobody
     touched its bank (the ``banked`` platform, two banks);
   - *parked, bank stolen*: deactivated, then ``vcodec_stream`` activates and takes
     its idle bank (a bank switch), ``vcodec_b_mm2`` holding the other bank; once
     ``vcodec_b_mm2`` is parked the context comes back on its bank (a second switch,
     invalidating nothing: ``vcodec_b_mm2`` translated nothing).

   The table gives the second pass's IOTLB misses and walk reads, the bank switches
   and the TLB entries the switch invalidated, read from the hardware counters.  A
   context back on the bank it kept, with the same table, keeps its entries (the
   VCMM flushed the parked bank on every change); a stolen bank comes back cold.

2. A pipeline: the packaged ``codec_banked`` scenario (three codec ports, 16 pages
   each, five steps, 8 frames) on the ``banked`` platform (two banks: the ports take
   turns) and on the default one (three banks: they stay active), run interleaved
   ``REPEATS`` times.  Counters are deterministic; the table gives them with the run
   time of each variant (min-max over the repeats) and the ratio of the minima.

Run: ``python benchmarks/bench_bank_switch.py``
"""

from __future__ import annotations

import dataclasses
import time
from importlib import resources

from vcmm import SZ_4K
from vcmm.core import Attr, PhysAttr
from vcmm.platform import load_default, load_platform
from vcmm.system import System
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import load_scenario

PAGES = 16
REPEATS = 3
FRAMES = 8


def banked_platform() -> System:
    path = resources.files("vcmm").joinpath("platforms/banked.toml")
    with resources.as_file(path) as file:
        return System(load_platform(file))


def _mapped(system: System, name: str) -> tuple[object, int]:
    vcm = system.vcm_create(0x1000_0000, 0x1000_0000)
    res = system.vcm_reserve(vcm, PAGES * SZ_4K, Attr.RW)
    pm = system.vcm_phys_alloc("blocks", PAGES * SZ_4K, PhysAttr(block_sizes=(SZ_4K,)))
    system.vcm_back(res, pm)
    return system.vcm_assoc(vcm, system.device(name)), res.dev_addr


def _pass(system: System, name: str, base: int) -> None:
    dev = system.device(name)
    for page in range(PAGES):
        dev.read(base + page * SZ_4K, 64)


def history(kind: str) -> dict[str, int]:
    """The second pass of ``vcodec_a_mm1`` after history ``kind``."""
    system = System.default() if kind == "stays active" else banked_platform()
    a, base = _mapped(system, "vcodec_a_mm1")
    system.vcm_activate(a)
    _pass(system, "vcodec_a_mm1", base)
    if kind != "stays active":
        system.vcm_deactivate(a)
        if kind == "parked, bank stolen":
            b, _ = _mapped(system, "vcodec_b_mm2")
            c, base_c = _mapped(system, "vcodec_stream")
            system.vcm_activate(b)
            system.vcm_activate(c)  # takes a's idle bank
            _pass(system, "vcodec_stream", base_c)
            system.vcm_deactivate(b)  # frees a bank for a to come back to
        system.vcm_activate(a)
    ctx = system.device("vcodec_a_mm1").ctx
    before = ctx.stats().tlb
    _pass(system, "vcodec_a_mm1", base)
    after = ctx.stats().tlb
    stats = system.smmus["smmu0"].bank_stats()
    return {
        "misses": after.misses - before.misses,
        "walk_reads": after.walk_reads - before.walk_reads,
        "switches": stats.switches,
        "invalidated": stats.invalidated,
    }


def pipeline(banked: bool) -> tuple[dict[str, int], float]:
    sc = load_scenario("codec_banked").with_params(frames=FRAMES)
    if not banked:
        sc = dataclasses.replace(sc, platform=load_default())
    started = time.perf_counter()
    result = run_scenario(sc)
    seconds = time.perf_counter() - started
    smmu0 = result.smmus[0]
    smmu0_steps = [s for s in result.steps if s.device != "mdp"]
    return {
        "misses": sum(sum(m or 0 for m in s.misses_per_frame) for s in smmu0_steps),
        "after frame 0": sum(sum(m or 0 for m in s.misses_per_frame[1:]) for s in smmu0_steps),
        "switches": smmu0.bank_switches,
        "invalidated": smmu0.invalidated,
    }, seconds


def main() -> None:
    print(f"1. vcodec_a_mm1's second pass over {PAGES} pages of 4 KiB (smmu0, 64-entry IOTLB)")
    print(f"{'history':<22}{'misses':>8}{'walk reads':>12}{'switches':>10}{'invalidated':>13}")
    for kind in ("stays active", "parked, bank kept", "parked, bank stolen"):
        row = history(kind)
        print(
            f"{kind:<22}{row['misses']:>8}{row['walk_reads']:>12}{row['switches']:>10}"
            f"{row['invalidated']:>13}"
        )
    print()
    print(f"2. codec_banked, {FRAMES} frames, smmu0's three contexts, interleaved x{REPEATS}")
    times: dict[bool, list[float]] = {True: [], False: []}
    counts: dict[bool, dict[str, int]] = {}
    for _ in range(REPEATS):
        for banked in (True, False):
            counts[banked], seconds = pipeline(banked)
            times[banked].append(seconds)
    print(
        f"{'banks':<18}{'misses':>8}{'after frame 0':>15}{'switches':>10}{'invalidated':>13}"
        f"{'seconds (min-max)':>20}"
    )
    for banked, label in ((False, "3 (all active)"), (True, "2 (take turns)")):
        c, t = counts[banked], times[banked]
        span = f"{min(t):.3f}-{max(t):.3f}"
        print(
            f"{label:<18}{c['misses']:>8}{c['after frame 0']:>15}{c['switches']:>10}"
            f"{c['invalidated']:>13}{span:>20}"
        )
    ratio = min(times[True]) / min(times[False])
    extra = counts[True]["misses"] - counts[False]["misses"]
    print(
        f"taking turns: {extra} more misses ({extra * 2} more descriptor reads with 4K pages), "
        f"{ratio:.2f}x the run time of the all-active run"
    )


if __name__ == "__main__":
    main()
