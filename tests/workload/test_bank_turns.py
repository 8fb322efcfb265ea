"""Scenario runs with more contexts than context banks (issue 15 item 3), and the SMMU
fault registers in run results (issue 17 item 3).

The counts are checked against a reference model of the bank table written here from
the rules alone (free bank lowest first, else the idle bank whose context translated
least recently), and the fault registers against the ARM SMMUv2 bit positions.
"""

from __future__ import annotations

import dataclasses

from vcmm.platform import load_default
from vcmm.report.tables import render_result
from vcmm.workload.runner import run_scenario
from vcmm.workload.scenario import load_scenario, loads_scenario

PAGES = 16  # each codec_banked buffer: 64 KiB of 4 KiB pages


def _reference_turns(turns: list[str], banks: int) -> tuple[list[bool], list[str]]:
    """For contexts activated and deactivated in the order ``turns`` on ``banks``
    banks: whether each turn found its context still on its bank, and whom each bank
    switch evicted."""
    holder: dict[int, str | None] = dict.fromkeys(range(banks))
    stamp: dict[int, int] = dict.fromkeys(range(banks), 0)
    kept: list[bool] = []
    victims: list[str] = []
    for clock, ctx in enumerate(turns, start=1):
        bank = next((b for b, h in holder.items() if h == ctx), None)
        kept.append(bank is not None)
        if bank is None:
            free = [b for b, h in holder.items() if h is None]
            if free:
                bank = free[0]
            else:
                bank = min(holder, key=lambda b: stamp[b])
                victims.append(str(holder[bank]))
            holder[bank] = ctx
        stamp[bank] = clock  # every turn translated, so deactivation stamps the bank
    return kept, victims


def test_codec_ports_take_turns_on_two_banks() -> None:
    sc = load_scenario("codec_banked")
    result = run_scenario(sc)
    smmu0, smmu1 = result.smmus
    assert (smmu0.name, smmu0.context_banks, smmu0.takes_turns) == ("smmu0", 2, True)
    assert smmu0.contexts == ["vcodec_stream", "vcodec_b_mm2", "vcodec_a_mm1"]
    assert (smmu1.takes_turns, smmu1.bank_switches) == (False, 0)
    smmu0_steps = [s for s in result.steps if s.context != "mdp"]
    turns = [str(s.context) for s in smmu0_steps] * sc.frames
    kept, victims = _reference_turns(turns, 2)
    switches = len(victims)
    assert smmu0.bank_switches == switches > 0
    # Every victim had translated its 16 pages in its last turn; they all fit the TLB.
    assert smmu0.invalidated == PAGES * switches
    evicted = {c.name: c.bank_evictions for c in result.contexts}
    assert sum(evicted.values()) == switches
    assert evicted == {name: victims.count(name) for name in evicted}
    # Real bytes survive every steal.
    assert [s.data_check for s in result.steps if s.data_check] == [
        "written",
        "written",
        "ok",
        "ok",
    ]
    # A turn that finds its context still on its bank (same table) hits every page;
    # one whose bank was taken walks every page.  mdp, alone on smmu1, stays active.
    for i, step in enumerate(smmu0_steps):
        expected = [0 if kept[f * len(smmu0_steps) + i] else PAGES for f in range(sc.frames)]
        assert step.misses_per_frame == expected, step.device
    assert any(kept) and not all(kept)
    mdp = next(s for s in result.steps if s.device == "mdp")
    assert mdp.misses_per_frame == [PAGES, 0, 0]


def test_with_enough_banks_nobody_takes_turns_and_frames_stay_warm() -> None:
    sc = load_scenario("codec_banked")
    sc = dataclasses.replace(sc, platform=load_default())
    result = run_scenario(sc)
    smmu0 = result.smmus[0]
    assert (smmu0.context_banks, smmu0.takes_turns, smmu0.bank_switches) == (3, False, 0)
    assert smmu0.invalidated == 0
    for step in result.steps:
        # Step 3 reads back the bitstream step 0 wrote: warm from frame 0 on.
        expected = [0, 0, 0] if step.index == 3 else [PAGES, 0, 0]
        assert step.misses_per_frame == expected, step.device
    assert all(s.data_check in (None, "written", "ok") for s in result.steps)


def test_the_bank_table_shows_in_text_and_json() -> None:
    result = run_scenario(load_scenario("codec_banked"))
    text = render_result(result)
    assert "SMMU banks" in text and "take turns" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("smmu0 "))
    assert row.split() == [
        "smmu0",
        "0x4000000",
        "2",
        "3",
        "yes",
        str(result.smmus[0].bank_switches),
        str(result.smmus[0].invalidated),
    ]
    data = result.to_dict()
    assert data["smmus"][0]["bank_switches"] == result.smmus[0].bank_switches
    assert data["smmus"][0]["register_base"] == 0x0400_0000


RO = """\
name = "ro"
frames = 2
[[buffers]]
name = "buf"
size = "64K"
policy = "4k"
access = "ro"
[[steps]]
device = "vcodec_a_mm1"
buffer = "buf"
access = "write"
"""


def test_a_fault_shows_in_the_bank_fault_registers() -> None:
    result = run_scenario(loads_scenario(RO))
    (smmu0,) = result.smmus
    (bank,) = [b for b in smmu0.banks if b.faulted]
    assert bank.context == "vcodec_a_mm1"
    # SMMUv2 FSR: PF is bit 3, Format [10:9] 0b00 for the short-descriptor scheme,
    # SS (bit 30) clear again once the transaction was terminated.
    assert bank.fsr == 1 << 3
    # FAR: the first burst's IOVA, the start of the runner's IOVA window.
    assert bank.far == 0x1000_0000
    # FSYNR0: WNR (bit 4) for a write, PNU (bit 5) privileged, PLVL [1:0] = 2 (the
    # 4 KiB page is a second-level descriptor).
    assert bank.fsynr0 == 1 << 4 | 1 << 5 | 2
    assert "[PF Format=0]" in bank.decoded and "[WNR PNU PLVL=2]" in bank.decoded
    text = render_result(result)
    assert "SMMU fault registers" in text
    assert "0x00000008" in text and "0x10000000" in text
