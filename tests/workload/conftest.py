"""Small scenario texts shared by the workload tests."""

from __future__ import annotations

from pathlib import Path

import pytest

#: A 1080p-free pipeline that runs in milliseconds: a 256x128 NV12 frame (48 KiB).
TINY = """\
name = "tiny"
platform = "default"
frames = 2

[[buffers]]
name = "frame"
size = "256x128 nv12"
target = "blocks"
policy = "4k"

[[steps]]
device = "vcodec_a_mm1"
buffer = "frame"
access = "write"
pattern = "raster"

[[steps]]
device = "mdp"
buffer = "frame"
access = "read"
pattern = "raster"
"""


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    return path


def linear_scenario(size: str, policy: str, *, frames: int = 2, tlb: str = "") -> str:
    """One device sweeping ``size`` bytes linearly; ``tlb`` is an optional [tlb] table."""
    return f"""\
name = "linear"
frames = {frames}
{tlb}

[[buffers]]
name = "buf"
size = "{size}"
target = "blocks"
policy = "{policy}"

[[steps]]
device = "vcodec_a_mm1"
buffer = "buf"
access = "read"
pattern = "linear"
"""


@pytest.fixture
def make_linear() -> object:
    return linear_scenario
