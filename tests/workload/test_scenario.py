"""Scenario files: what they describe, and errors that name the file, key and problem."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from vcmm.platform import dumps_platform, load_default
from vcmm.sizes import SZ_1M, SZ_4K
from vcmm.workload.scenario import (
    POLICIES,
    Scenario,
    ScenarioError,
    load_scenario,
    loads_scenario,
    packaged_scenarios,
)

BASE = """\
name = "t"
[[buffers]]
name = "frame"
size = "256x128 nv12"
[[steps]]
device = "mdp"
buffer = "frame"
access = "read"
"""


def error_of(text: str, source: str = "t.toml", **kwargs: object) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        loads_scenario(text, source=source, **kwargs)  # type: ignore[arg-type]
    return info.value


def test_the_tiny_file_reads_back_its_description(tiny_file: Path) -> None:
    sc = load_scenario(tiny_file)
    assert sc.name == "tiny" and sc.source == str(tiny_file)
    assert sc.platform.name == load_default().name
    (buf,) = sc.buffers
    assert buf.size == 256 * 128 * 3 // 2 and buf.frame is not None
    assert buf.targets == ("blocks",) and buf.policy == "4k"
    assert [s.device for s in sc.steps] == ["vcodec_a_mm1", "mdp"]
    assert [s.frames for s in sc.steps] == [2, 2]
    assert sc.devices == ("vcodec_a_mm1", "mdp") and sc.frames == 2


def test_defaults_fill_what_a_minimal_file_leaves_out() -> None:
    sc = loads_scenario(BASE)
    (step,) = sc.steps
    assert (step.pattern, step.plane, step.frames, step.tile, step.data) == (
        "linear",
        "all",
        1,
        (64, 32),
        False,
    )
    assert sc.burst == 64 and sc.buffers[0].policy == "largest"


def test_policies_map_to_block_sizes() -> None:
    sc = loads_scenario(BASE)
    buf = sc.buffers[0]
    assert buf.phys_attr().block_sizes is None
    for policy, sizes in POLICIES.items():
        attr = sc.with_params(policy=policy).buffers[0].phys_attr()
        assert attr.block_sizes == sizes
    assert (
        loads_scenario(
            BASE.replace('size = "256x128 nv12"', 'size = "256x128 nv12"\ncontiguous = true')
        )
        .buffers[0]
        .phys_attr()
        .contiguous
    )


def test_byte_sizes_use_the_size_notation() -> None:
    sc = loads_scenario(BASE.replace('"256x128 nv12"', '"1M+4K"'))
    assert sc.buffers[0].size == SZ_1M + SZ_4K and sc.buffers[0].frame is None
    sc = loads_scenario(BASE.replace('"256x128 nv12"', "0x3000"))
    assert sc.buffers[0].size == 3 * SZ_4K


def test_every_packaged_scenario_loads_by_name() -> None:
    names = packaged_scenarios()
    assert {"video_1080p", "codec_tiled", "camera_dsp"} <= set(names)
    for name in names:
        sc = load_scenario(name)
        assert sc.name == name and sc.source == f"<{name}>"


def test_a_relative_platform_path_is_read_next_to_the_scenario(tmp_path: Path) -> None:
    text = dumps_platform(load_default()).replace('name = "msm-default"', 'name = "board"', 1)
    (tmp_path / "boards").mkdir()
    (tmp_path / "boards" / "b.toml").write_text(text, encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(BASE.replace('name = "t"', 'name = "t"\nplatform = "boards/b.toml"'))
    sc = load_scenario(path)
    assert sc.platform.name == "board" and sc.platform_ref == "boards/b.toml"


@pytest.mark.parametrize(
    ("edit", "key", "needle"),
    [
        (('name = "t"', 'name = "t"\nbuffer = 1'), "buffer", "did you mean 'buffers'?"),
        (
            ('device = "mdp"', 'device = "mdpp"'),
            "steps[0].device",
            "unknown device 'mdpp' (did you mean 'mdp'?)",
        ),
        (
            ('device = "mdp"', 'device = "cpu"'),
            "steps[0].device",
            "the CPU cannot run address streams",
        ),
        (
            ('buffer = "frame"', 'buffer = "frme"'),
            "steps[0].buffer",
            "unknown buffer 'frme' (did you mean 'frame'?)",
        ),
        (
            ('access = "read"', 'access = "reed"'),
            "steps[0].access",
            "'reed' is not one of read, write",
        ),
        (
            ('access = "read"', 'access = "read"\npattern = "zigzag"'),
            "steps[0].pattern",
            "'zigzag' is not one of",
        ),
        (
            ('access = "read"', 'access = "read"\nplane = "alpha"'),
            "steps[0].plane",
            "no plane 'alpha'; planes: all, luma, chroma",
        ),
        (
            ('access = "read"', 'access = "read"\nframes = 0'),
            "steps[0].frames",
            "0 is below the minimum 1",
        ),
        (('access = "read"', 'access = "read"\ntile = "64-32"'), "steps[0].tile", "'WIDTHxROWS'"),
        (
            ('access = "read"', 'access = "read"\ndata = "yes"'),
            "steps[0].data",
            "expected true or false",
        ),
        (('"256x128 nv12"', '"256x128 nv13"'), "buffers[0].size", "unknown pixel format 'nv13'"),
        (('"256x128 nv12"', '"12Q"'), "buffers[0].size", "bad size '12Q'"),
        (
            ('"256x128 nv12"', '"256x128 nv12"\npolicy = "2m"'),
            "buffers[0].policy",
            "'2m' is not one of 4k, 64k, 1m, 16m, largest",
        ),
        (
            ('"256x128 nv12"', '"256x128 nv12"\ntarget = "blok"'),
            "buffers[0].target",
            "unknown memory target 'blok' (did you mean 'blocks'?)",
        ),
        (
            ('"256x128 nv12"', '"256x128 nv12"\ntarget = 5'),
            "buffers[0].target",
            "expected a target name",
        ),
        (
            ('"256x128 nv12"', '"256x128 nv12"\naccess = "wo"'),
            "buffers[0].access",
            "'wo' is not one of rw, ro",
        ),
        (('name = "t"', 'name = "t"\nburst = 48'), "burst", "power of two"),
        (
            ('name = "t"', 'name = "t"\ntlb = { entries = 6, ways = 4 }'),
            "tlb",
            "4 ways do not divide 6 entries",
        ),
        (
            ('name = "t"', 'name = "t"\nplatform = "nowhere.toml"'),
            "platform",
            "platform file 'nowhere.toml' does not exist",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_the_problem(
    edit: tuple[str, str], key: str, needle: str
) -> None:
    err = error_of(BASE.replace(*edit, 1))
    assert err.source == "t.toml"
    assert err.key == key
    assert needle in err.problem
    assert str(err).startswith(f"t.toml: {key}: ")


def test_a_physical_device_needs_a_contiguous_buffer() -> None:
    err = error_of(BASE.replace('device = "mdp"', 'device = "dsp"'))
    assert err.key == "steps[0].device"
    assert "must be physically contiguous: set contiguous = true" in err.problem


def test_raster_needs_rows() -> None:
    text = BASE.replace('"256x128 nv12"', '"64K"').replace(
        'access = "read"', 'access = "read"\npattern = "raster"'
    )
    assert "needs rows" in error_of(text).problem
    # A stride gives a byte buffer its rows.
    sc = loads_scenario(text.replace('size = "64K"', 'size = "64K"\nstride = 4096'))
    assert sc.buffers[0].planes[0].rows == 16


def test_duplicate_buffers_and_missing_sections_are_refused() -> None:
    twice = BASE.replace("[[steps]]", '[[buffers]]\nname = "frame"\nsize = "4K"\n[[steps]]')
    err = error_of(twice)
    assert err.key == "buffers[1].name" and "used twice" in err.problem
    err = error_of('name = "t"\n[[buffers]]\nname = "b"\nsize = 4096\n')
    assert err.key == "steps" and "missing required" in err.problem


def test_moving_data_is_limited_to_small_buffers() -> None:
    text = BASE.replace('"256x128 nv12"', '"128M"').replace(
        'access = "read"', 'access = "read"\ndata = true'
    )
    err = error_of(text)
    assert err.key == "steps[0].data" and "at most 64M" in err.problem


def test_invalid_toml_and_missing_files_name_the_file(tmp_path: Path) -> None:
    err = error_of("name = \n", source="bad.toml")
    assert str(err).startswith("bad.toml: not valid TOML")
    missing = tmp_path / "absent.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(missing)
    assert str(info.value).startswith(f"{missing}: cannot read scenario file")
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe")
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(binary)


def test_with_params_returns_a_new_scenario_and_leaves_the_old_alone() -> None:
    sc = loads_scenario(BASE.replace('"256x128 nv12"', '"256x128 nv12"\npolicy = "64k"'))
    new = sc.with_params(policy="1m", tlb_entries=16, ways=2, pattern="raster", frames=5)
    assert sc.buffers[0].policy == "64k" and sc.steps[0].frames == 1 and sc.tlb.empty
    assert new.buffers[0].policy == "1m" and new.steps[0].pattern == "raster"
    assert new.steps[0].frames == 5
    assert dict(new.params) == {
        "policy": "1m",
        "tlb_entries": 16,
        "ways": 2,
        "pattern": "raster",
        "frames": 5,
    }
    smmus = new.effective_platform().smmus
    assert all((s.tlb.entries, s.tlb.ways) == (16, 2) for s in smmus)
    # The original platform keeps its TLBs (64 and 32 entries on the default SoC).
    assert [s.tlb.entries for s in sc.effective_platform().smmus] == [64, 32]


@pytest.mark.parametrize(
    ("params", "key", "needle"),
    [
        ({"policy": "2m"}, "--grid policy", "'2m' is not one of"),
        ({"colour": 1}, "--grid colour", "unknown parameter 'colour'"),
        ({"ways": 0}, "--grid ways", "0 is not an integer >= 1"),
        (
            {"tlb_entries": 6, "ways": 4},
            "--grid tlb_entries=6, ways=4",
            "4 ways do not divide 6 entries",
        ),
        ({"burst": 3}, "--grid burst=3", "power of two"),
    ],
)
def test_bad_parameters_name_the_grid_key(params: dict[str, object], key: str, needle: str) -> None:
    sc = loads_scenario(BASE, source="t.toml")
    with pytest.raises(ScenarioError) as info:
        sc.with_params(**params)
    assert info.value.key == key and needle in str(info.value)
    assert info.value.source == "t.toml"


def test_scenarios_and_their_errors_survive_pickling() -> None:
    sc = load_scenario("video_1080p")
    assert pickle.loads(pickle.dumps(sc)) == sc
    err = ScenarioError("bad", key="steps[1].device", source="x.toml")
    back = pickle.loads(pickle.dumps(err))
    assert (back.problem, back.key, back.source, str(back)) == (
        "bad",
        "steps[1].device",
        "x.toml",
        "x.toml: steps[1].device: bad",
    )


def test_scenarios_built_in_python_are_validated_too() -> None:
    sc = loads_scenario(BASE)
    with pytest.raises(ScenarioError, match="a scenario needs at least one step"):
        Scenario(name="x", platform=sc.platform, buffers=sc.buffers, steps=())


def test_docs_show_every_scenario_key() -> None:
    """docs/CLI.md's example file writes every key the records declare."""
    import re

    from vcmm.platform.fields import shape_of
    from vcmm.workload.scenario import BufferSpec, StepSpec, TlbOverride, TrafficSpec

    docs = Path(__file__).resolve().parents[2] / "docs" / "CLI.md"
    text = docs.read_text(encoding="utf-8")
    example = text[text.index("## Scenario files") :].split("```toml", 1)[1].split("```")[0]
    written = set(re.findall(r"^(\w+) =", example, re.MULTILINE))
    written |= set(re.findall(r"^\[\[(\w+)\]\]", example, re.MULTILINE))
    written |= {"entries", "ways", "replacement"}  # tlb = { ... } on one line
    written.add("collections")  # its own example follows
    for cls in (Scenario, BufferSpec, StepSpec, TlbOverride, TrafficSpec):
        missing = set(shape_of(cls).allowed()) - written
        assert not missing, f"docs/CLI.md's example lacks {cls.__name__} keys {missing}"
    from vcmm.workload.buffer_collections import CollectionSpec, ParticipantSpec

    section = text[text.index("### Buffer collections") :].split("```toml", 1)[1].split("```")[0]
    keys = set(re.findall(r"^(\w+) =", section, re.MULTILINE)) | {"participants"}
    for cls in (CollectionSpec, ParticipantSpec):
        missing = set(shape_of(cls).allowed()) - keys
        assert not missing, f"docs/CLI.md's collection example lacks {cls.__name__} keys {missing}"
    from vcmm.workload.scenario import loads_scenario

    steps = '\n[[steps]]\ndevice = "camera"\nbuffer = "frames"\naccess = "write"\n'
    parsed = loads_scenario(section + steps)
    assert parsed.collections[0].participants[0].constraints().max_size == 4 << 20
