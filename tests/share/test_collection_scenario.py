"""Buffer collections in scenario files: the bundled camera -> codec -> display run
moves real bytes through negotiated buffers with the IOTLB entries the choice
predicts, and every kind of mistake in a file is an error keyed where it is."""

from __future__ import annotations

import json

import pytest

from vcmm.report.tables import render_result
from vcmm.workload import run_scenario
from vcmm.workload.scenario import ScenarioError, load_scenario, loads_scenario

HEAD = """
name = "t"
platform = "default"
frames = 2
"""
CAMERA = """
[[collections]]
name = "frames"
[[collections.participants]]
device = "camera"
usage = "write"
min_size = "64K"
"""
MDP = """
[[collections.participants]]
device = "mdp"
usage = "read"
"""
STEP = """
[[steps]]
device = "camera"
buffer = "frames"
access = "write"
data = true
"""


def test_the_bundled_pipeline_moves_bytes_with_the_predicted_iotlb_misses() -> None:
    result = run_scenario(load_scenario("video_collection").with_params(frames=3))
    (col,) = result.collections
    choice = dict(col.choice)
    assert choice["buffers"] == "4 x 1M+328K" and choice["target"] == "contig"
    assert choice["contiguous"] == "yes" and choice["alignment"] == "1M"
    assert [s.data_check for s in result.steps] == ["written", "ok", "ok"]
    for step in result.steps[1:]:
        entries, small = col.iotlb[step.device]
        # A 64-entry (and a 32-entry) IOTLB holds one buffer's pages: one miss each.
        assert step.misses_per_frame == [entries] * 3
        assert small == (1280 * 720 * 3 // 2 + 4095) // 4096
    # Every frame used the next buffer: four buffers, distinct addresses.
    assert len(set(col.addresses["mdp"])) == 4
    text = render_result(result)
    assert "Buffer collection frames" in text and "why" in text
    data = json.loads(json.dumps(result.to_dict()))
    assert data["collections"][0]["chunks"] == {"1M+328K": 1}


def test_a_conflict_is_keyed_by_the_participant_that_broke_it() -> None:
    text = HEAD + CAMERA + MDP + 'max_size = "32K"\n' + STEP
    sc = loads_scenario(text, "c.toml")
    with pytest.raises(ScenarioError) as info:
        run_scenario(sc)
    assert info.value.key == "collections[0].participants[1]"
    assert "'mdp' breaks the size constraint" in str(info.value)


@pytest.mark.parametrize(
    ("edit", "key", "words"),
    [
        (
            ('device = "camera"', 'device = "camra"'),
            "collections[0].participants[0].device",
            "did you mean 'camera'",
        ),
        (
            ('min_size = "64K"', "width = 64"),
            "collections[0].participants[0].width",
            "give the image's formats",
        ),
        (
            ('min_size = "64K"', 'domains = ["gpu"]'),
            "collections[0].participants[0].domains",
            "'gpu' is not one of",
        ),
        (
            ('min_size = "64K"', 'formats = ["nv13"]'),
            "collections[0].participants[0].formats",
            "unknown pixel format",
        ),
        (
            ('min_size = "64K"', 'targets = ["ram"]'),
            "collections[0].participants[0].targets",
            "unknown memory target",
        ),
        (
            ('min_size = "64K"', "size_alignment = 3"),
            "collections[0].participants[0].size_alignment",
            "power of two",
        ),
        (
            ('usage = "write"', 'usage = "writ"'),
            "collections[0].participants[0].usage",
            "not one of",
        ),
        (
            ('access = "write"\ndata', 'access = "write"\nplane = "luma"\ndata'),
            "steps[0].plane",
            'plane = "all"',
        ),
        (('min_size = "64K"', 'min_size = "65M"'), "steps[0].data", "ask for 65M"),
        (
            ('access = "write"\ndata', 'access = "write"\npattern = "raster"\ndata'),
            "steps[0].pattern",
            "states image formats",
        ),
    ],
)
def test_mistakes_in_a_collection_are_keyed(edit: tuple[str, str], key: str, words: str) -> None:
    text = (HEAD + CAMERA + STEP).replace(*edit)
    with pytest.raises(ScenarioError) as info:
        loads_scenario(text, "c.toml")
    assert info.value.key == key
    assert words in str(info.value)


def test_cross_references_are_checked() -> None:
    twice = HEAD + CAMERA + '[[collections.participants]]\ndevice = "camera"\n' + STEP
    with pytest.raises(ScenarioError, match="joins twice"):
        loads_scenario(twice)
    stranger = (HEAD + CAMERA + STEP).replace(
        '[[steps]]\ndevice = "camera"', '[[steps]]\ndevice = "mdp"'
    )
    with pytest.raises(ScenarioError, match="not a participant") as info:
        loads_scenario(stranger)
    assert info.value.key == "steps[0].device"
    plain = HEAD + CAMERA + STEP + '[[buffers]]\nname = "frames"\nsize = "64K"\ncontiguous = true\n'
    with pytest.raises(ScenarioError, match="already names a buffer"):
        loads_scenario(plain)
    both = (
        HEAD
        + CAMERA
        + STEP
        + '[[buffers]]\nname = "raw"\nsize = "64K"\ncontiguous = true\n'
        + '[[steps]]\ndevice = "camera"\nbuffer = "raw"\naccess = "read"\n'
    )
    with pytest.raises(ScenarioError, match="driven either") as info:
        loads_scenario(both)
    assert info.value.key == "collections[0].participants[0].device"


def test_a_scenario_of_collections_alone_runs() -> None:
    result = run_scenario(
        loads_scenario(
            HEAD
            + CAMERA
            + MDP
            + STEP
            + STEP.replace('device = "camera"', 'device = "mdp"').replace('"write"', '"read"')
        )
    )
    assert not result.buffers and [s.data_check for s in result.steps] == ["written", "ok"]
    # The camera needs one chunk; mdp's SMMU maps 64K pages, so the chunk is 64K-aligned
    # and mdp's mapping of it is one IOTLB entry instead of sixteen.
    assert result.collections[0].iotlb["mdp"] == (1, 16)


def test_sweeps_estimate_a_collection_step_from_the_statements() -> None:
    from vcmm.workload.cost import estimate_cost

    sc = load_scenario("video_collection")
    estimated = sc.step_buffer("frames")
    assert estimated.size == 1280 * 720 * 3 // 2 and estimated.frame is not None
    assert estimated.frame.describe() == "1280x720 nv12"
    assert estimate_cost(sc.with_params(frames=8)) > estimate_cost(sc.with_params(frames=2))
