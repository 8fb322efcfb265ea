"""Scenario files: a platform, its buffers, and the devices' pipeline over them.

A scenario says *what happens* on a platform: which buffers exist (their size, the
memory target and block policy they are allocated with), and which device reads or
writes which buffer in which access pattern, frame after frame.  Running it (see
:mod:`vcmm.workload.runner`) sets the VCMM up for every device that touches a buffer
and drives the address streams through the real translation path.

The file is TOML (format: docs/CLI.md).  Like the platform loader, this module owns
the file's shape: unknown keys are errors with a suggestion, each value is checked
for its type and meaning, and cross references (devices, targets, buffers, planes)
are resolved against the platform.  Every error reads
``video.toml: steps[1].device: unknown device 'mdpp' (did you mean 'mdp'?) ...`` and
carries ``.source``, ``.key`` and ``.problem``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from vcmm.core.flags import PhysAttr
from vcmm.errors import InvalidArgumentError
from vcmm.platform import PlatformSpec, load_default, load_platform, parse_number
from vcmm.platform.schema import join_key
from vcmm.platform.toml_table import TomlTable, suggest
from vcmm.sizes import SZ_1M, SZ_4K, SZ_16M, SZ_64K, align_up, format_size
from vcmm.workload.examples import example, examples, local_file
from vcmm.workload.patterns import (
    DEFAULT_BURST,
    DEFAULT_TILE,
    PATTERNS,
    FrameFormat,
    Plane,
    check_burst,
)

#: Allocation policies and the block sizes each allows (``None``: every size, largest
#: first).  A single size makes every chunk, hence every page of the mapping, that
#: size: the clean experiment of the seed's 4K/64K/1M argument.
POLICIES: Final[dict[str, tuple[int, ...] | None]] = {
    "4k": (SZ_4K,),
    "64k": (SZ_64K,),
    "1m": (SZ_1M,),
    "16m": (SZ_16M,),
    "largest": None,
}
#: Policies in increasing block size, the x axis of every policy plot.
POLICY_ORDER: Final = ("4k", "64k", "1m", "16m", "largest")
ACCESSES: Final = ("read", "write")
#: Buffers a step may move real bytes through (``data = true``) are at most this big.
DATA_LIMIT: Final = 64 * SZ_1M
#: Frames per step are bounded so a typo cannot start an hour-long run.
MAX_FRAMES: Final = 10_000
#: The parameters a sweep may vary (``--grid key=v1,v2``).
SWEEP_KEYS: Final = ("policy", "tlb_entries", "ways", "replacement", "pattern", "frames", "burst")

_TOP_KEYS = ("name", "description", "platform", "frames", "burst", "tlb", "buffers", "steps")
_TLB_KEYS = ("entries", "ways", "replacement")
_BUFFER_KEYS = ("name", "size", "stride", "target", "policy", "contiguous", "access")
_STEP_KEYS = (
    "device",
    "buffer",
    "access",
    "pattern",
    "plane",
    "frames",
    "tile",
    "count",
    "seed",
    "data",
)


class ScenarioError(InvalidArgumentError):
    """A scenario breaks a rule; the message names the file, the key and the problem."""

    def __init__(self, problem: str, *, key: str = "", source: str = "") -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep key and source when the error crosses a process boundary (sweeps).
        return (_rebuild_error, (self.problem, self.key, self.source))


def _rebuild_error(problem: str, key: str, source: str) -> ScenarioError:
    return ScenarioError(problem, key=key, source=source)


class _Table(TomlTable):
    """One scenario table being read; its problems are :class:`ScenarioError`."""

    def error(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(problem, key=join_key(self.path, key), source=self.source)

    def has(self, key: str) -> bool:
        return key in self.data

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if value is None:
            raise self.error(key, f"missing required key {key!r}")
        return self.checked_string(key, value)

    def choice(self, key: str, choices: Collection[str], default: str | None = None) -> str:
        value = self.string(key, default)
        if value not in choices:
            raise self.error(
                key,
                f"{value!r} is not one of {', '.join(choices)}{suggest(value, choices)}",
            )
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return self.checked_boolean(key, self.data.get(key, default))

    def integer(self, key: str, default: int | None, *, minimum: int = 0) -> int:
        value = self.data.get(key, default)
        if value is None:
            raise self.error(key, f"missing required key {key!r}")
        value = self.checked_integer(key, value)
        if value < minimum:
            raise self.error(key, f"{value} is below the minimum {minimum}")
        return value

    def tables(self, key: str, allowed: Collection[str]) -> list[_Table]:
        value = self.data.get(key)
        if value is None:
            raise self.error(key, f"missing required array of tables [[{key}]]")
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty array of tables, got {value!r}")
        return [
            _Table(item, f"{join_key(self.path, key)}[{i}]", self.source, allowed)
            for i, item in enumerate(value)
        ]


# -- the description ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BufferSpec:
    """One buffer: how big, where its memory comes from, how devices may map it.

    ``frame`` is set when the size was given as a frame (``"1920x1080 nv12"``); its
    planes give raster and tiled patterns their rows.  A byte-sized buffer with a
    ``stride`` has rows of that many bytes.
    """

    name: str
    size: int
    frame: FrameFormat | None = None
    stride: int | None = None
    targets: tuple[str, ...] | None = None
    policy: str = "largest"
    contiguous: bool = False
    readonly: bool = False

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


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One pipeline stage: ``device`` reads or writes ``buffer`` in ``pattern``.

    ``plane`` picks one plane of a frame buffer (``all``: every plane in order);
    ``tile`` is the macro-tile of the ``tiled`` pattern in bytes x rows; ``count`` and
    ``seed`` shape the ``random`` pattern (default: as many bursts as a linear pass);
    ``data`` also moves real bytes through the device once per frame.
    """

    device: str
    buffer: str
    access: str
    pattern: str = "linear"
    plane: str = "all"
    frames: int = 1
    tile: tuple[int, int] = DEFAULT_TILE
    count: int | None = None
    seed: int = 0
    data: bool = False

    def describe(self) -> str:
        where = self.buffer if self.plane == "all" else f"{self.buffer}.{self.plane}"
        return f"{self.device} {self.access}s {where} ({self.pattern})"


@dataclass(frozen=True, slots=True)
class TlbOverride:
    """Replaces the TLB geometry of every SMMU of the platform (sweeps vary it)."""

    entries: int | None = None
    ways: int | None = None
    replacement: str | None = None

    @property
    def empty(self) -> bool:
        return self.entries is None and self.ways is None and self.replacement is None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A validated scenario, ready to run.  ``params`` records sweep overrides applied."""

    name: str
    platform: PlatformSpec
    buffers: tuple[BufferSpec, ...]
    steps: tuple[StepSpec, ...]
    description: str = ""
    platform_ref: str = "default"
    burst: int = DEFAULT_BURST
    tlb: TlbOverride = TlbOverride()
    source: str = "<code>"
    params: tuple[tuple[str, object], ...] = ()
    #: The file the scenario was read from (a packaged example's installed path), or "".
    file: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    def buffer(self, name: str) -> BufferSpec:
        for buf in self.buffers:
            if buf.name == name:
                return buf
        known = ", ".join(b.name for b in self.buffers)
        raise ScenarioError(f"no buffer named {name!r} (buffers: {known})", source=self.source)

    @property
    def frames(self) -> int:
        """Frames the pipeline runs: the longest step's."""
        return max(step.frames for step in self.steps)

    @property
    def devices(self) -> tuple[str, ...]:
        """Devices the pipeline uses, in order of first use."""
        return tuple(dict.fromkeys(step.device for step in self.steps))

    def effective_platform(self) -> PlatformSpec:
        """The platform with the scenario's TLB override applied to every SMMU."""
        if self.tlb.empty or not self.platform.smmus:
            return self.platform
        smmus = []
        for smmu in self.platform.smmus:
            tlb = dataclasses.replace(
                smmu.tlb,
                entries=self.tlb.entries if self.tlb.entries is not None else smmu.tlb.entries,
                ways=self.tlb.ways if self.tlb.ways is not None else smmu.tlb.ways,
                replacement=self.tlb.replacement or smmu.tlb.replacement,
            )
            smmus.append(dataclasses.replace(smmu, tlb=tlb))
        return dataclasses.replace(self.platform, smmus=tuple(smmus))

    def with_params(self, **params: object) -> Scenario:
        """A copy with sweep parameters applied (see :data:`SWEEP_KEYS`).

        ``policy`` sets every buffer's policy, ``pattern`` / ``frames`` every step's,
        ``tlb_entries`` / ``ways`` / ``replacement`` every SMMU's TLB, ``burst`` the burst.
        Errors name the parameter as ``--grid <key>``.
        """
        unknown = [k for k in params if k not in SWEEP_KEYS]
        if unknown:
            key = unknown[0]
            raise ScenarioError(
                f"unknown parameter {key!r}{suggest(key, SWEEP_KEYS)}; "
                f"allowed: {', '.join(SWEEP_KEYS)}",
                key=f"--grid {key}",
                source=self.source,
            )
        buffers, steps, tlb, burst = self.buffers, self.steps, self.tlb, self.burst
        try:
            if "policy" in params:
                policy = _param_choice("policy", params["policy"], tuple(POLICIES))
                buffers = tuple(dataclasses.replace(b, policy=policy) for b in buffers)
            if "pattern" in params:
                pattern = _param_choice("pattern", params["pattern"], PATTERNS)
                steps = tuple(dataclasses.replace(s, pattern=pattern) for s in steps)
            if "frames" in params:
                frames = _param_int("frames", params["frames"], 1)
                steps = tuple(dataclasses.replace(s, frames=frames) for s in steps)
            if "burst" in params:
                burst = _param_int("burst", params["burst"], 1)
            if "tlb_entries" in params:
                tlb = dataclasses.replace(
                    tlb, entries=_param_int("tlb_entries", params["tlb_entries"], 1)
                )
            if "ways" in params:
                tlb = dataclasses.replace(tlb, ways=_param_int("ways", params["ways"], 1))
            if "replacement" in params:
                choice = _param_choice(
                    "replacement", params["replacement"], ("lru", "fifo", "random")
                )
                tlb = dataclasses.replace(tlb, replacement=choice)
        except ScenarioError as err:
            raise ScenarioError(err.problem, key=err.key, source=self.source) from None
        merged = dict(self.params) | dict(params)
        try:
            return dataclasses.replace(
                self,
                buffers=buffers,
                steps=steps,
                tlb=tlb,
                burst=burst,
                params=tuple(merged.items()),
            )
        except ScenarioError as err:
            what = ", ".join(f"{k}={v}" for k, v in params.items())
            raise ScenarioError(
                f"{err.key + ': ' if err.key else ''}{err.problem}",
                key=f"--grid {what}",
                source=self.source,
            ) from None


def _param_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ScenarioError(
            f"{value!r} is not one of {', '.join(choices)}"
            + (suggest(value, choices) if isinstance(value, str) else ""),
            key=f"--grid {key}",
        )
    return value


def _param_int(key: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ScenarioError(f"{value!r} is not an integer >= {minimum}", key=f"--grid {key}")
    return value


# -- cross-checks (also run on objects built in Python) ------------------------------------


def _validate(sc: Scenario) -> None:
    """The rules that tie buffers, steps and the platform together."""

    def fail(key: str, problem: str) -> ScenarioError:
        return ScenarioError(problem, key=key, source=sc.source)

    if not isinstance(sc.platform, PlatformSpec):
        raise fail("platform", f"expected a PlatformSpec, got {sc.platform!r}")
    try:
        check_burst(sc.burst, "burst")
    except InvalidArgumentError as err:
        raise fail("burst", str(err).removeprefix("burst: ")) from None
    _validate_tlb(sc, fail)
    if not sc.buffers:
        raise fail("buffers", "a scenario needs at least one buffer")
    if not sc.steps:
        raise fail("steps", "a scenario needs at least one step")
    target_names = [t.name for t in sc.platform.targets]
    seen: set[str] = set()
    for i, buf in enumerate(sc.buffers):
        key = f"buffers[{i}]"
        if buf.name in seen:
            raise fail(f"{key}.name", f"buffer name {buf.name!r} is used twice")
        seen.add(buf.name)
        if buf.policy not in POLICIES:
            raise fail(f"{key}.policy", f"{buf.policy!r} is not one of {', '.join(POLICIES)}")
        if buf.size < 1:
            raise fail(f"{key}.size", f"size {buf.size} must be at least 1 byte")
        if buf.stride is not None and (buf.stride < 1 or buf.size % buf.stride):
            raise fail(
                f"{key}.stride",
                f"stride {buf.stride} must be >= 1 and divide the size {buf.size} into rows",
            )
        for j, target in enumerate(buf.targets or ()):
            if target not in target_names:
                raise fail(
                    f"{key}.target" + (f"[{j}]" if len(buf.targets or ()) > 1 else ""),
                    f"unknown memory target {target!r}{suggest(target, target_names)}; "
                    f"the platform has: {', '.join(target_names)}",
                )
    devices = {d.name: d for d in sc.platform.devices}
    for i, step in enumerate(sc.steps):
        key = f"steps[{i}]"
        if step.device == "cpu":
            raise fail(
                f"{key}.device",
                "the CPU cannot run address streams yet (it has no batch access path); "
                f"use one of the platform's devices: {', '.join(devices)}",
            )
        if step.device not in devices:
            raise fail(
                f"{key}.device",
                f"unknown device {step.device!r}{suggest(step.device, devices)}; "
                f"the platform has: {', '.join(devices) or 'none'}",
            )
        names = [b.name for b in sc.buffers]
        if step.buffer not in names:
            raise fail(
                f"{key}.buffer",
                f"unknown buffer {step.buffer!r}{suggest(step.buffer, names)}; "
                f"buffers: {', '.join(names)}",
            )
        buf = sc.buffer(step.buffer)
        if step.access not in ACCESSES:
            raise fail(f"{key}.access", f"{step.access!r} is not one of read, write")
        if step.pattern not in PATTERNS:
            raise fail(
                f"{key}.pattern",
                f"{step.pattern!r} is not one of {', '.join(PATTERNS)}"
                + suggest(step.pattern, PATTERNS),
            )
        planes = [p.name for p in buf.planes]
        if step.plane != "all" and step.plane not in planes:
            raise fail(
                f"{key}.plane",
                f"buffer {buf.name!r} has no plane {step.plane!r}; planes: all, "
                + ", ".join(planes),
            )
        if step.pattern in ("raster", "tiled") and not buf.has_rows:
            raise fail(
                f"{key}.pattern",
                f"pattern {step.pattern!r} needs rows, but buffer {buf.name!r} is a plain "
                "byte size; give it a frame size such as '1920x1080 nv12' or a stride",
            )
        if not 1 <= step.frames <= MAX_FRAMES:
            raise fail(f"{key}.frames", f"frames {step.frames} must be in 1..{MAX_FRAMES}")
        if step.tile[0] < 1 or step.tile[1] < 1:
            raise fail(f"{key}.tile", f"tile {step.tile} must be at least 1x1")
        if step.count is not None and step.count < 1:
            raise fail(f"{key}.count", f"count {step.count} must be >= 1")
        if step.data and buf.size > DATA_LIMIT:
            raise fail(
                f"{key}.data",
                f"moving real data is limited to buffers of at most {format_size(DATA_LIMIT)}; "
                f"{buf.name!r} has {format_size(buf.size)}",
            )
        if devices[step.device].kind == "physical" and not buf.contiguous:
            raise fail(
                f"{key}.device",
                f"{step.device!r} addresses memory physically, so buffer {buf.name!r} must "
                "be physically contiguous: set contiguous = true on it",
            )


def _validate_tlb(sc: Scenario, fail: Any) -> None:
    tlb = sc.tlb
    if tlb.empty:
        return
    if not sc.platform.smmus:
        raise fail("tlb", "the platform has no SMMU whose TLB could be changed")
    if tlb.replacement is not None and tlb.replacement not in ("lru", "fifo", "random"):
        raise fail("tlb.replacement", f"{tlb.replacement!r} is not one of lru, fifo, random")
    for smmu in sc.platform.smmus:
        entries = tlb.entries if tlb.entries is not None else smmu.tlb.entries
        ways = tlb.ways if tlb.ways is not None else smmu.tlb.ways
        if entries < 1 or ways < 1 or entries % ways:
            raise fail(
                "tlb",
                f"{ways} ways do not divide {entries} entries (SMMU {smmu.name!r}); "
                "ways must divide entries",
            )


# -- reading files --------------------------------------------------------------------------


def _size_of(table: _Table, key: str) -> tuple[int, FrameFormat | None]:
    value = table.data.get(key)
    if value is None:
        raise table.error(key, f"missing required key {key!r}")
    stride = table.data.get("stride")
    if isinstance(value, str) and "x" in value.lower() and not value.lower().startswith("0x"):
        if stride is not None:
            stride = table.checked_integer("stride", stride)
        try:
            frame = FrameFormat.parse(value, stride=stride)
        except InvalidArgumentError as err:
            raise table.error(key, str(err)) from None
        return frame.size, frame
    size = parse_number(value, "size", lambda problem: table.error(key, problem))
    return size, None


def _buffer(table: _Table) -> BufferSpec:
    name = table.string("name")
    size, frame = _size_of(table, "size")
    stride = None
    if frame is None and table.has("stride"):
        stride = table.integer("stride", None, minimum=1)
    targets: tuple[str, ...] | None = None
    if table.has("target"):
        raw = table.data["target"]
        if isinstance(raw, str):
            targets = (raw,)
        elif isinstance(raw, list) and raw and all(isinstance(t, str) for t in raw):
            targets = tuple(raw)
        else:
            raise table.error("target", f"expected a target name or a list of names, got {raw!r}")
    access = table.choice("access", ("rw", "ro"), "rw")
    return BufferSpec(
        name=name,
        size=size,
        frame=frame,
        stride=stride,
        targets=targets,
        policy=table.choice("policy", tuple(POLICIES), "largest"),
        contiguous=table.boolean("contiguous", False),
        readonly=access == "ro",
    )


def _tile(table: _Table) -> tuple[int, int]:
    raw = table.data.get("tile", f"{DEFAULT_TILE[0]}x{DEFAULT_TILE[1]}")
    parts = raw.lower().split("x") if isinstance(raw, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise table.error("tile", f"expected 'WIDTHxROWS' such as '64x32', got {raw!r}")
    width, rows = (int(p) for p in parts)
    if width < 1 or rows < 1:
        raise table.error("tile", f"tile {raw!r} must be at least 1x1")
    return width, rows


def _step(table: _Table, frames: int) -> StepSpec:
    return StepSpec(
        device=table.string("device"),
        buffer=table.string("buffer"),
        access=table.choice("access", ACCESSES),
        pattern=table.choice("pattern", PATTERNS, "linear"),
        plane=table.string("plane", "all"),
        frames=table.integer("frames", frames, minimum=1),
        tile=_tile(table),
        count=table.integer("count", None, minimum=1) if table.has("count") else None,
        seed=table.integer("seed", 0),
        data=table.boolean("data", False),
    )


def _platform(table: _Table, base_dir: Path | None) -> tuple[str, PlatformSpec]:
    """The platform ``platform = ...`` names: a file that exists (relative to the
    scenario's folder, ``.toml`` optional) wins over the packaged ``default``."""
    ref = table.string("platform", "default")
    path = local_file(ref, base_dir) if base_dir is not None or ref != "default" else None
    if path is not None:
        return ref, load_platform(path)
    if ref == "default":
        return ref, load_default()
    looked = base_dir / ref if base_dir is not None and not Path(ref).is_absolute() else ref
    raise table.error("platform", f"platform file {ref!r} does not exist (looked at {looked})")


def loads_scenario(
    text: str,
    source: str = "<string>",
    *,
    base_dir: str | os.PathLike[str] | None = None,
    file: str = "",
) -> Scenario:
    """Parse scenario TOML; ``source`` names it in errors, ``base_dir`` anchors a
    relative ``platform`` path (the scenario file's folder), ``file`` records where it
    was read from."""
    if not isinstance(text, str):
        raise ScenarioError(
            f"scenario text must be a str, got {type(text).__name__}", source=source
        )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"not valid TOML: {err}", source=source) from None
    top = _Table(data, "", source, _TOP_KEYS)
    ref, platform = _platform(top, Path(base_dir) if base_dir is not None else None)
    frames = top.integer("frames", 1, minimum=1)
    burst = top.integer("burst", DEFAULT_BURST, minimum=1)
    tlb = TlbOverride()
    if top.has("tlb"):
        t = _Table(top.data["tlb"], "tlb", source, _TLB_KEYS)
        tlb = TlbOverride(
            entries=t.integer("entries", None, minimum=1) if t.has("entries") else None,
            ways=t.integer("ways", None, minimum=1) if t.has("ways") else None,
            replacement=t.choice("replacement", ("lru", "fifo", "random"))
            if t.has("replacement")
            else None,
        )
    buffers = tuple(_buffer(t) for t in top.tables("buffers", _BUFFER_KEYS))
    steps = tuple(_step(t, frames) for t in top.tables("steps", _STEP_KEYS))
    return Scenario(
        name=top.string("name", Path(source).stem if source.endswith(".toml") else "scenario"),
        description=top.string("description", ""),
        platform=platform,
        platform_ref=ref,
        buffers=buffers,
        steps=steps,
        burst=burst,
        tlb=tlb,
        source=source,
        file=file,
    )


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read a scenario file; a missing or unreadable file is a :class:`ScenarioError`.

    A file that exists wins: ``video_1080p`` is ``./video_1080p`` or
    ``./video_1080p.toml`` when either exists, else the packaged example of that name
    (see :func:`packaged_scenarios`).
    """
    if not isinstance(path, str | os.PathLike):
        raise ScenarioError(f"scenario path must be a str or path, got {path!r}")
    name = os.fspath(path)
    file = local_file(name)
    if file is None and name in packaged_scenarios():
        return packaged_scenario(name)
    if file is None:
        file = Path(name)
    try:
        raw = file.read_bytes()
    except OSError as err:
        hint = ""
        if not file.suffix and os.sep not in name:
            names = list(packaged_scenarios())
            hint = f" (and no packaged scenario {name!r}{suggest(name, names)}: {', '.join(names)})"
        raise ScenarioError(
            f"cannot read scenario file: {err.strerror or err}{hint}", source=name
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ScenarioError(f"scenario file is not UTF-8: {err}", source=name) from None
    return loads_scenario(text, source=str(file), base_dir=file.parent, file=str(file))


def packaged_scenario(name: str) -> Scenario:
    """The packaged example ``name``, whatever files the current folder holds."""
    packaged = example(name, "scenario")
    return loads_scenario(packaged.text(), source=f"<{name}>", file=packaged.path)


def packaged_scenarios() -> dict[str, str]:
    """The example scenarios shipped in the package: name -> description."""
    return {item.name: item.description for item in examples("scenario")}


def describe_params(params: Mapping[str, object]) -> str:
    """``policy=1m tlb_entries=64`` for labels and file names."""
    return " ".join(f"{k}={v}" for k, v in params.items())
