"""Small scenario texts and a recording sweep executor shared by the workload tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vcmm.workload.sweep import run_point

#: A 1080p-free pipeline that runs in milliseconds: a 256x128 NV12 frame (48 KiB).
TINY = """\
name = "tiny"
platform = "default"
frames = {frames}

[[buffers]]
name = "frame"
size = "{size}"
target = "blocks"
policy = "{policy}"

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


def frame_scenario(size: str = "256x128 nv12", policy: str = "4k", *, frames: int = 2) -> str:
    """The tiny pipeline (a codec writes a frame, the display reads it, raster order)
    over a frame of ``size`` allocated with ``policy``."""
    return TINY.format(size=size, policy=policy, frames=frames)


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(frame_scenario(), encoding="utf-8")
    return path


@pytest.fixture
def make_frame() -> Callable[..., str]:
    return frame_scenario


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


class Recorder:
    """A sweep executor that runs the points in the order submitted, in this process,
    and records which points it was given."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self.ran: list[dict[str, object]] = []
        self._work: list[tuple[int, Any, dict[str, object]]] = []

    def submit(self, index: int, scenario: Any, params: dict[str, object]) -> None:
        self.order.append(index)
        self._work.append((index, scenario, params))

    def completed(self) -> Iterator[tuple[int, list[dict[str, Any]]]]:
        for index, scenario, params in self._work:
            self.ran.append(params)
            yield index, run_point(scenario, params)

    def cancel(self) -> None:
        pass

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
