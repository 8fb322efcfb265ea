"""Network-like DMA traffic in scenarios: strict against lazy invalidation, the window
stray reads fall into, the report and the command line."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vcmm.cli import cli
from vcmm.report.tables import render_result
from vcmm.workload import run_scenario
from vcmm.workload.scenario import ScenarioError, loads_scenario

SCENARIO = """
name = "net_small"
platform = "default"

[[buffers]]
name = "fb"
size = "64K"
target = "blocks"
policy = "64k"

[[steps]]
device = "mdp"
buffer = "fb"
access = "read"

[[traffic]]
device = "vcodec_stream"
direction = "rx"
packets = 300
ring = 8
gap_ns = 1000
stray_every = 50

[[traffic]]
device = "vcodec_b_mm2"
direction = "tx"
packets = 40
ring = 4
gap_ns = 1_000_000
"""


@pytest.fixture(scope="module")
def results() -> dict[str, object]:
    sc = loads_scenario(SCENARIO)
    return {mode: run_scenario(sc.with_params(invalidation=mode)) for mode in ("strict", "lazy")}


def test_strict_issues_a_command_and_a_sync_per_unmap_and_faults_strays(
    results: dict[str, object],
) -> None:
    result = results["strict"]
    inval = {d.domain: d for d in result.invalidation}  # type: ignore[attr-defined]
    rx = inval["vcodec_stream"]
    assert (rx.mode, rx.unmaps, rx.commands, rx.syncs) == ("strict", 300, 300, 300)
    assert rx.time_ns == pytest.approx(300 * (40 + 600) / 0.4)  # default costs, 400 MHz
    flow = result.traffic[0]  # type: ignore[attr-defined]
    # reclaims happen from packet 8 on: strays at packets 50, 100, ..., 250
    assert (flow.packets, flow.strays, flow.stray_faults, flow.stray_stale) == (300, 5, 5, 0)


def test_lazy_batches_the_invalidations_and_strays_go_through(
    results: dict[str, object],
) -> None:
    result = results["lazy"]
    inval = {d.domain: d for d in result.invalidation}  # type: ignore[attr-defined]
    rx, tx = inval["vcodec_stream"], inval["vcodec_b_mm2"]
    # 300 unmaps 1 us apart: the ring fills once (255 held, the 256th flushes), the
    # timer flushes the rest; one command and one sync per flush
    assert rx.flushes["ring_full"] == 1 and rx.peak_held == 255
    assert rx.commands == rx.syncs == sum(rx.flushes.values())
    # 40 unmaps 1 ms apart: only the 10 ms timer flushes
    assert tx.flushes["ring_full"] == 0 and tx.flushes["timeout"] >= 3
    assert tx.commands < 40 and tx.time_ns < 40 * 1600
    # the clock stands at the last packet: the 40th transmit, 39 ms in
    assert rx.simulated_ns == tx.simulated_ns == 39 * 1_000_000
    assert tx.flushes["timeout"] == 3  # armed by the unmaps at 4, 15 and 26 ms, 10 ms each
    flow = result.traffic[0]  # type: ignore[attr-defined]
    assert (flow.strays, flow.stray_faults, flow.stray_stale) == (5, 0, 5)
    text = render_result(result)  # type: ignore[arg-type]
    assert "IOTLB invalidation" in text and "DMA traffic" in text
    assert "lazy" in text


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('device = "vcodec_stream"', 'device = "dsp"'), "not behind an SMMU"),
        (('device = "vcodec_stream"', 'device = "mdp"'), "also runs pipeline steps"),
        (('device = "vcodec_stream"', 'device = "nic"'), "unknown device 'nic'"),
        (("packets = 300", "packets = 0"), "below the minimum 1"),
        (("ring = 8", "ring = 2000000"), "above the maximum"),
        (('direction = "rx"', 'direction = "up"'), "direction"),
        (('platform = "default"', 'platform = "default"\ninvalidation = "eager"'), "eager"),
    ],
)
def test_bad_traffic_is_refused_with_its_key(change: tuple[str, str], message: str) -> None:
    with pytest.raises(ScenarioError, match=message) as err:
        loads_scenario(SCENARIO.replace(*change, 1))
    assert "traffic[0]" in str(err.value) or "invalidation" in str(err.value)


def test_a_bad_invalidation_override_names_the_option() -> None:
    with pytest.raises(ScenarioError, match="--grid invalidation"):
        loads_scenario(SCENARIO).with_params(invalidation="sometimes")


def test_the_command_line_chooses_the_mode(tmp_path: object) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "net.toml"
    path.write_text(SCENARIO.replace("packets = 300", "packets = 30"), encoding="utf-8")
    runner = CliRunner()
    out = runner.invoke(cli, ["run", str(path), "--invalidation", "lazy", "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert data["params"] == {"invalidation": "lazy"}
    assert {d["mode"] for d in data["invalidation"]} == {"lazy"}
    bad = runner.invoke(cli, ["run", str(path), "--invalidation", "eager"])
    assert bad.exit_code == 2 and "eager" in bad.output
