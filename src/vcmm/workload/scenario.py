"""Scenario files: a platform, its buffers, and the devices' pipeline over them.

A scenario says *what happens* on a platform: which buffers exist (their size, the
memory target and block policy they are allocated with), and which device reads or
writes which buffer in which access pattern, frame after frame.  Running it (see
:mod:`vcmm.workload.runner`) sets the VCMM up for every device that touches a buffer
and drives the address streams through the real translation path.

The file is TOML (format: docs/CLI.md).  Like the platform's, each record here
declares its fields once (:mod:`vcmm.platform.fields`): the file key, how the value
is read, the rules it follows.  The same reader checks the file's shape (unknown keys
are errors with a suggestion, each value is checked for its type), each record
checks its own values when it is built, and the :class:`Scenario` resolves the cross
references (devices, targets, buffers, planes) against the platform.  Every error
reads ``video.toml: steps[1].device: unknown device 'mdpp' (did you mean 'mdp'?) ...``
and carries ``.source``, ``.key`` and ``.problem``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from vcmm.core.flags import PhysAttr
from vcmm.errors import InvalidArgumentError
from vcmm.platform import PlatformSpec, load_default, load_platform, loads_platform
from vcmm.platform.codecs import Boolean, Integer, Record, Records, Size, Text
from vcmm.platform.devicetree import is_devicetree_path
from vcmm.platform.errors import suggest
from vcmm.platform.fields import Invalid, check_fields, key, one_of, shape_of
from vcmm.platform.inputfile import read_text_input
from vcmm.platform.toml_table import Reading, TomlTable, read_record
from vcmm.sizes import SZ_1M, SZ_4K, align_up, format_size
from vcmm.tlbcost import INVALIDATION_MODES
from vcmm.workload.buffer_collections import (
    CollectionSpec,
    check_collection_step,
    check_collections,
    estimated_shape,
)
from vcmm.workload.examples import example, examples, local_file
from vcmm.workload.patterns import (
    DEFAULT_BURST,
    DEFAULT_TILE,
    PATTERNS,
    FrameFormat,
    Plane,
    check_burst,
)
from vcmm.workload.scenario_keys import (
    POLICIES,
    REPLACEMENTS,
    AccessMode,
    BufferSize,
    RowStride,
    ScenarioError,
    TargetNames,
    Tile,
    frame_of,
    is_frame,
)
from vcmm.workload.scenario_params import apply_params
from vcmm.workload.traffic_spec import TrafficSpec

ACCESSES: Final = ("read", "write")
#: Buffers a step may move real bytes through (``data = true``) are at most this big.
DATA_LIMIT: Final = 64 * SZ_1M
#: Frames per step are bounded so a typo cannot start an hour-long run.
MAX_FRAMES: Final = 10_000
# -- the description ---------------------------------------------------------------------


def _frame_from_file(reading: Reading) -> FrameFormat | None:
    return frame_of(reading.table)


@dataclass(frozen=True, slots=True)
class BufferSpec:
    """One buffer: how big, where its memory comes from, how devices may map it.

    ``frame`` is set when the size was given as a frame (``"1920x1080 nv12"``); its
    planes give raster and tiled patterns their rows.  A byte-sized buffer with a
    ``stride`` has rows of that many bytes.
    """

    name: str = field(metadata=key(Text()))
    size: int = field(metadata=key(BufferSize()))
    frame: FrameFormat | None = field(
        default=None, metadata=key(None, is_frame, name=None, derive=_frame_from_file)
    )
    stride: int | None = field(default=None, metadata=key(RowStride()))
    targets: tuple[str, ...] | None = field(
        default=None, metadata=key(TargetNames(), name="target")
    )
    policy: str = field(default="largest", metadata=key(Text(), one_of(POLICIES)))
    contiguous: bool = field(default=False, metadata=key(Boolean()))
    readonly: bool = field(default=False, metadata=key(AccessMode(), name="access"))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)
        if self.stride is not None and self.size % self.stride:
            raise ScenarioError(
                f"stride {self.stride} must be >= 1 and divide the size {self.size} into rows",
                key="stride",
            )

    @property
    def planes(self) -> tuple[Plane, ...]:
        """The buffer's planes; a byte buffer is one plane named ``data``."""
        if self.frame is not None:
            return self.frame.planes
        if self.stride is not None:
            return (Plane("data", 0, self.stride, self.size // self.stride, self.stride),)
        return (Plane("data", 0, self.size, 1, self.size),)

    @property
    def has_rows(self) -> bool:
        return self.frame is not None or self.stride is not None

    @property
    def reserve_len(self) -> int:
        """Bytes the buffer needs from a memory target: whole 4 KiB pages."""
        return align_up(self.size, SZ_4K)

    def phys_attr(self) -> PhysAttr:
        """The ``vcm_phys_alloc`` attributes the policy and ``contiguous`` ask for."""
        sizes = POLICIES[self.policy]
        attr = PhysAttr.blocks(*sizes) if sizes is not None else PhysAttr.NONE
        return attr | PhysAttr.CONTIGUOUS if self.contiguous else attr

    def describe(self) -> str:
        shape = self.frame.describe() if self.frame is not None else format_size(self.size)
        return f"{self.name} ({shape}, {self.policy})"


def _at_most_max_frames(frames: int) -> None:
    if frames > MAX_FRAMES:
        raise Invalid(f"frames {frames} must be in 1..{MAX_FRAMES}")


def _frames_of_file(reading: Reading) -> object:
    """A step's frames default to the file's top-level ``frames``."""
    return reading.context["frames"]


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One pipeline stage: ``device`` reads or writes ``buffer`` in ``pattern``.

    ``plane`` picks one plane of a frame buffer (``all``: every plane in order);
    ``tile`` is the macro-tile of the ``tiled`` pattern in bytes x rows; ``count`` and
    ``seed`` shape the ``random`` pattern (default: as many bursts as a linear pass);
    ``data`` also moves real bytes through the device once per frame.
    """

    device: str = field(metadata=key(Text()))
    buffer: str = field(metadata=key(Text()))
    access: str = field(metadata=key(Text(), one_of(ACCESSES)))
    pattern: str = field(default="linear", metadata=key(Text(), one_of(PATTERNS)))
    plane: str = field(default="all", metadata=key(Text()))
    frames: int = field(
        default=1,
        metadata=key(Integer(minimum=1), _at_most_max_frames, derive=_frames_of_file),
    )
    tile: tuple[int, int] = field(default=DEFAULT_TILE, metadata=key(Tile()))
    count: int | None = field(default=None, metadata=key(Integer(minimum=1)))
    seed: int = field(default=0, metadata=key(Integer()))
    data: bool = field(default=False, metadata=key(Boolean()))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)

    def describe(self) -> str:
        where = self.buffer if self.plane == "all" else f"{self.buffer}.{self.plane}"
        return f"{self.device} {self.access}s {where} ({self.pattern})"


@dataclass(frozen=True, slots=True)
class TlbOverride:
    """Replaces the TLB geometry of every SMMU of the platform (sweeps vary it)."""

    entries: int | None = field(default=None, metadata=key(Integer(minimum=1)))
    ways: int | None = field(default=None, metadata=key(Integer(minimum=1)))
    replacement: str | None = field(default=None, metadata=key(Text(), one_of(REPLACEMENTS)))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)

    @property
    def empty(self) -> bool:
        return self.entries is None and self.ways is None and self.replacement is None


def _is_platform(value: object) -> None:
    if not isinstance(value, PlatformSpec):
        raise Invalid(f"expected a PlatformSpec, got {value!r}")


def _burst(value: int) -> None:
    try:
        check_burst(value, "burst")
    except InvalidArgumentError as err:
        raise Invalid(str(err).removeprefix("burst: ")) from None


def _no_buffers_in_file(reading: Reading) -> tuple[BufferSpec, ...]:
    """A file without ``[[buffers]]`` has none (its steps use collections, or the
    scenario is refused for having neither)."""
    return ()


def _name_from_source(reading: Reading) -> str:
    source = reading.table.source
    return Path(source).stem if source.endswith(".toml") else "scenario"


def _platform_of_file(reading: Reading) -> PlatformSpec:
    """The platform ``platform = ...`` names: a file that exists (relative to the
    scenario's folder, ``.toml`` optional) wins over the packaged platform of that
    name (``default``, ``banked``); a devicetree is imported with the scenario's
    ``ram``.  The reader's caller may pass a platform instead (``--platform``) and a
    RAM size (``--ram``), which win."""
    given: PlatformSpec | None = reading.context.get("platform")
    if given is not None:
        return given
    ref = str(reading.value("platform_ref"))
    override = reading.context.get("ram")
    given_ram = override if override is not None else reading.value("ram")
    ram = given_ram if isinstance(given_ram, int | str) else None
    base_dir: Path | None = reading.context.get("base_dir")
    path = local_file(ref, base_dir) if base_dir is not None or ref != "default" else None
    if ram is not None and (path is None or not is_devicetree_path(str(path))):
        raise reading.table.error(
            "--ram" if override is not None else "ram",
            f"a RAM size applies to a devicetree platform (.dtb, .dts), and {ref!r} is not one",
        )
    if path is not None:
        return load_platform(path, ram=ram)
    if ref == "default":
        return load_default()
    packaged = {e.name: e for e in examples("platform")}
    if ref in packaged:
        return loads_platform(packaged[ref].text(), source=f"<{ref}>")
    looked = base_dir / ref if base_dir is not None and not Path(ref).is_absolute() else ref
    raise reading.table.error(
        "platform", f"platform file {ref!r} does not exist (looked at {looked})"
    )


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario, ready to run.  ``params`` records sweep overrides applied.

    Construction checks every cross reference against the platform, so a scenario
    built in Python is held to the same rules as a file.
    """

    name: str = field(metadata=key(Text(), derive=_name_from_source))
    platform: PlatformSpec = field(
        metadata=key(None, _is_platform, name=None, derive=_platform_of_file)
    )
    buffers: tuple[BufferSpec, ...] = field(
        metadata=key(Records(BufferSpec), derive=_no_buffers_in_file)
    )
    steps: tuple[StepSpec, ...] = field(metadata=key(Records(StepSpec)))
    description: str = field(default="", metadata=key(Text()))
    platform_ref: str = field(default="default", metadata=key(Text(), name="platform"))
    #: RAM for a devicetree platform whose memory banks have size 0 (the bootloader's).
    ram: int | None = field(default=None, metadata=key(Size()))
    burst: int = field(default=DEFAULT_BURST, metadata=key(Integer(minimum=1), _burst))
    tlb: TlbOverride = field(default=TlbOverride(), metadata=key(Record(TlbOverride)))
    collections: tuple[CollectionSpec, ...] = field(
        default=(), metadata=key(Records(CollectionSpec))
    )
    #: Network-like DMA API flows run after the pipeline (``[[traffic]]``).
    traffic: tuple[TrafficSpec, ...] = field(
        default=(), metadata=key(Records(TrafficSpec), omit_default=True)
    )
    #: The DMA API's IOTLB invalidation mode for this run (None: the platform's).
    invalidation: str | None = field(default=None, metadata=key(Text(), one_of(INVALIDATION_MODES)))
    source: str = "<code>"
    params: tuple[tuple[str, object], ...] = ()
    #: The file the scenario was read from (a packaged example's installed path), or "".
    file: str = ""

    def __post_init__(self) -> None:
        try:
            check_fields(self, ScenarioError)
            self._check_tlb()
            if not self.buffers and not self.collections:
                raise ScenarioError("a scenario needs at least one buffer", key="buffers")
            if not self.steps:
                raise ScenarioError("a scenario needs at least one step", key="steps")
            self._check_buffers()
            check_collections(self.collections, self.platform, self.buffers, self.steps)
            for index, step in enumerate(self.steps):
                try:
                    self._check_step(step)
                except ScenarioError as err:
                    raise err.within(f"steps[{index}]") from None
            for index, flow in enumerate(self.traffic):
                try:
                    self._check_flow(flow)
                except ScenarioError as err:
                    raise err.within(f"traffic[{index}]") from None
        except ScenarioError as err:
            raise err.within(source=self.source) from None

    # -- the rules that tie buffers, steps and the platform together -------------------------

    def _check_tlb(self) -> None:
        tlb = self.tlb
        if tlb.empty:
            return
        if not self.platform.smmus:
            raise ScenarioError("the platform has no SMMU whose TLB could be changed", key="tlb")
        for smmu in self.platform.smmus:
            entries = tlb.entries if tlb.entries is not None else smmu.tlb.entries
            ways = tlb.ways if tlb.ways is not None else smmu.tlb.ways
            if entries % ways:
                raise ScenarioError(
                    f"{ways} ways do not divide {entries} entries (SMMU {smmu.name!r}); "
                    "ways must divide entries",
                    key="tlb",
                )

    def _check_buffers(self) -> None:
        target_names = [t.name for t in self.platform.targets]
        seen: set[str] = set()
        for i, buf in enumerate(self.buffers):
            where = f"buffers[{i}]"
            if buf.name in seen:
                raise ScenarioError(f"buffer name {buf.name!r} is used twice", key=f"{where}.name")
            seen.add(buf.name)
            targets = buf.targets or ()
            for j, target in enumerate(targets):
                if target not in target_names:
                    raise ScenarioError(
                        f"unknown memory target {target!r}{suggest(target, target_names)}; "
                        f"the platform has: {', '.join(target_names)}",
                        key=f"{where}.target" + (f"[{j}]" if len(targets) > 1 else ""),
                    )

    def _check_step(self, step: StepSpec) -> None:
        """One step's references (keys relative to the step)."""
        devices = {d.name: d for d in self.platform.devices}
        if step.device == "cpu":
            raise ScenarioError(
                "the CPU cannot run address streams yet (it has no batch access path); "
                f"use one of the platform's devices: {', '.join(devices)}",
                key="device",
            )
        if step.device not in devices:
            raise ScenarioError(
                f"unknown device {step.device!r}{suggest(step.device, devices)}; "
                f"the platform has: {', '.join(devices) or 'none'}",
                key="device",
            )
        names = [b.name for b in self.buffers]
        collection = next((c for c in self.collections if c.name == step.buffer), None)
        if collection is not None:
            check_collection_step(step, collection)
            size = self.step_buffer(step.buffer).size
            if step.data and size > DATA_LIMIT:
                raise ScenarioError(
                    f"moving real data is limited to buffers of at most "
                    f"{format_size(DATA_LIMIT)}; collection {step.buffer!r}'s participants "
                    f"ask for {format_size(size)}",
                    key="data",
                )
            return
        names += [c.name for c in self.collections]
        if step.buffer not in names:
            raise ScenarioError(
                f"unknown buffer {step.buffer!r}{suggest(step.buffer, names)}; "
                f"buffers: {', '.join(names)}",
                key="buffer",
            )
        self._check_step_fits(step, self.buffer(step.buffer), devices[step.device].kind)

    def _check_flow(self, flow: TrafficSpec) -> None:
        """A flow's device exists, sits behind an SMMU (the DMA API's IOMMU ops) and is
        not driven by the pipeline (a device is driven either through a VCM of its own
        or through the DMA API)."""
        names = [d.name for d in self.platform.devices]
        if flow.device not in names:
            raise ScenarioError(
                f"unknown device {flow.device!r}{suggest(flow.device, names)}", key="device"
            )
        if self.platform.device(flow.device).kind != "smmu":
            raise ScenarioError(
                f"device {flow.device!r} is not behind an SMMU; traffic needs IOMMU DMA ops",
                key="device",
            )
        if flow.device in self.devices:
            raise ScenarioError(
                f"device {flow.device!r} also runs pipeline steps (through a VCM of its own); "
                "give the traffic another device",
                key="device",
            )

    @staticmethod
    def _check_step_fits(step: StepSpec, buf: BufferSpec, device_kind: str) -> None:
        """Whether the step can run over its buffer: planes, rows, data, contiguity."""
        planes = [p.name for p in buf.planes]
        if step.plane != "all" and step.plane not in planes:
            raise ScenarioError(
                f"buffer {buf.name!r} has no plane {step.plane!r}; planes: all, "
                + ", ".join(planes),
                key="plane",
            )
        if step.pattern in ("raster", "tiled") and not buf.has_rows:
            raise ScenarioError(
                f"pattern {step.pattern!r} needs rows, but buffer {buf.name!r} is a plain "
                "byte size; give it a frame size such as '1920x1080 nv12' or a stride",
                key="pattern",
            )
        if step.data and buf.size > DATA_LIMIT:
            raise ScenarioError(
                f"moving real data is limited to buffers of at most {format_size(DATA_LIMIT)}; "
                f"{buf.name!r} has {format_size(buf.size)}",
                key="data",
            )
        if device_kind == "physical" and not buf.contiguous:
            raise ScenarioError(
                f"{step.device!r} addresses memory physically, so buffer {buf.name!r} must "
                "be physically contiguous: set contiguous = true on it",
                key="device",
            )

    # -- lookups -------------------------------------------------------------------------------

    def buffer(self, name: str) -> BufferSpec:
        for buf in self.buffers:
            if buf.name == name:
                return buf
        known = ", ".join(b.name for b in self.buffers)
        raise ScenarioError(f"no buffer named {name!r} (buffers: {known})", source=self.source)

    def step_buffer(self, name: str) -> BufferSpec:
        """The buffer a step streams over: a plain buffer, or what a collection's
        participants ask for (its size estimated before it is allocated)."""
        spec = next((c for c in self.collections if c.name == name), None)
        if spec is None:
            return self.buffer(name)
        size, frame, stride = estimated_shape(spec)
        return BufferSpec(name, size, frame=frame, stride=stride)

    @property
    def frames(self) -> int:
        """Frames the pipeline runs: the longest step's."""
        return max(step.frames for step in self.steps)

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices the pipeline uses, in order of first use."""
        return tuple(dict.fromkeys(step.device for step in self.steps))

    def effective_platform(self) -> PlatformSpec:
        """The platform with the scenario's TLB override applied to every SMMU and
        its invalidation mode, if it sets one."""
        platform = self.platform
        if self.invalidation is not None:  # every domain, the devices' own modes too
            devices = tuple(dataclasses.replace(d, invalidation=None) for d in platform.devices)
            platform = dataclasses.replace(
                platform, invalidation=self.invalidation, devices=devices
            )
        if self.tlb.empty or not platform.smmus:
            return platform
        smmus = []
        for smmu in platform.smmus:
            tlb = dataclasses.replace(
                smmu.tlb,
                entries=self.tlb.entries if self.tlb.entries is not None else smmu.tlb.entries,
                ways=self.tlb.ways if self.tlb.ways is not None else smmu.tlb.ways,
                replacement=self.tlb.replacement or smmu.tlb.replacement,
            )
            smmus.append(dataclasses.replace(smmu, tlb=tlb))
        return dataclasses.replace(platform, smmus=tuple(smmus))

    def with_params(self, **params: object) -> Scenario:
        """A copy with sweep parameters applied (see :data:`SWEEP_KEYS` and
        :func:`~vcmm.workload.scenario_params.apply_params`)."""
        return apply_params(self, params)


# -- reading files --------------------------------------------------------------------------


def _top_frames(top: TomlTable) -> int:
    """The file's ``frames``: every step's default (not a field of the scenario)."""
    frames = top.checked_integer("frames", top.data.get("frames", 1))
    if frames < 1:
        raise top.error("frames", f"value {frames} is below the minimum 1")
    return frames


def loads_scenario(
    text: str,
    source: str = "<string>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    file: str = "",
    platform: PlatformSpec | None = None,
    ram: int | str | None = None,
) -> Scenario:
    """Parse scenario TOML; ``source`` names it in errors, ``base_dir`` anchors a
    relative ``platform`` path (the scenario file's folder), ``file`` records where it
    was read from; ``platform`` replaces the platform the file names and ``ram`` its
    ``ram`` key (the command line's ``--platform`` and ``--ram``)."""
    if not isinstance(text, str):
        raise ScenarioError(
            f"scenario text must be a str, got {type(text).__name__}", source=source
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"not valid TOML: {err}", source=source) from None
    shape = shape_of(Scenario)
    top = TomlTable(data, "", source, (*shape.allowed(), "frames"), ScenarioError)
    context = {
        "frames": _top_frames(top),
        "base_dir": Path(base_dir) if base_dir is not None else None,
        "platform": platform,
        "ram": ram,
    }
    scenario: Scenario = read_record(
        shape, top, context=context, given={"source": source, "file": file}
    )
    return scenario


def load_scenario(
    path: str | os.PathLike[str],
    *,
    platform: PlatformSpec | None = None,
    ram: int | str | None = None,
) -> Scenario:
    """Read a scenario file; a missing or unreadable file is a :class:`ScenarioError`.

    A file that exists wins: ``video_1080p`` is ``./video_1080p`` or
    ``./video_1080p.toml`` when either exists, else the packaged example of that name
    (see :func:`packaged_scenarios`).  ``platform`` and ``ram`` as
    :func:`loads_scenario`.
    """
    if not isinstance(path, str | os.PathLike):
        raise ScenarioError(f"scenario path must be a str or path, got {path!r}")
    name = os.fspath(path)
    file = local_file(name)
    if file is None and name in packaged_scenarios():
        return packaged_scenario(name, platform=platform, ram=ram)
    if file is None:
        file = Path(name)

    def packaged_hint() -> str:
        if file.suffix or os.sep in name:
            return ""
        names = list(packaged_scenarios())
        return f" (and no packaged scenario {name!r}{suggest(name, names)}: {', '.join(names)})"

    text = read_text_input(str(file), "scenario file", ScenarioError, hint=packaged_hint)
    return loads_scenario(
        text, source=str(file), base_dir=file.parent, file=str(file), platform=platform, ram=ram
    )


def packaged_scenario(
    name: str, *, platform: PlatformSpec | None = None, ram: int | str | None = None
) -> Scenario:
    """The packaged example ``name``, whatever files the current folder holds."""
    packaged = example(name, "scenario")
    return loads_scenario(
        packaged.text(), source=f"<{name}>", file=packaged.path, platform=platform, ram=ram
    )


def packaged_scenarios() -> dict[str, str]:
    """The example scenarios shipped in the package: name -> description."""
    return {item.name: item.description for item in examples("scenario")}
