"""Running a scenario: real VCMM set-up, real translations, counters read back.

For each buffer the runner allocates physical memory with ``vcm_phys_alloc`` (the
buffer's memory target and block policy); for each device that touches a buffer it
builds what the seed's walk-through builds: an IOMMU VCM per SMMU context (associated
and activated), or a one-to-one VCM for a physically addressed device, then a
reservation backed by the buffer's allocation.  The pipeline's address streams go
through :meth:`BusMaster.access_batch`, which translates every burst through the
context's share of the SMMU's global TLB, walks the page tables in simulated memory on
a miss and counts exactly what a per-burst loop would.  Steps with ``data = true``
also move real bytes (a write fills the buffer with a frame-specific pattern, a read
checks it arrived).

Nothing is estimated: every number in a :class:`ScenarioResult` is read from the
hardware's own counters (``ctx.stats()``, ``device.counters()``) or from the page
tables (``table_pages()``, ``mappings()``).
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from vcmm.attrs import Access
from vcmm.core import Attr, PhysMem, Reservation, Vcm, VcmKind
from vcmm.core.export import page_histogram
from vcmm.errors import DeviceFaultError, InvalidArgumentError, VcmmError
from vcmm.hw.bus import BusMaster, SmmuDevice
from vcmm.hw.smmu import SmmuContext
from vcmm.hw.tlb import TLBStats
from vcmm.share.collection import BufferCollection
from vcmm.sizes import format_size
from vcmm.system import System
from vcmm.workload.banks import BankTurns, SmmuResult, smmu_results
from vcmm.workload.buffer_collections import (
    CollectionResult,
    collection_result,
    negotiate,
    stream_shape,
)
from vcmm.workload.patterns import U64Array, cover, linear, random_bursts, raster, tiled
from vcmm.workload.scenario import BufferSpec, Scenario, ScenarioError, StepSpec
from vcmm.workload.traffic import (
    InvalidationResult,
    TrafficResult,
    invalidation_results,
    run_traffic,
)

#: The IOVA window of the IOMMU VCM the runner creates per SMMU context: above the
#: first 256 MiB and below 4 GiB (ARMv7 short descriptors translate 32-bit inputs).
IOVA_BASE = 0x1000_0000
IOVA_SIZE = 0xC000_0000
#: TLB counters reported per frame and per context, in this order.
TLB_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TLBStats))

Progress = Callable[[int], None]


def tlb_dict(stats: TLBStats) -> dict[str, int]:
    return {name: int(value) for name, value in dataclasses.asdict(stats).items()}


def _delta(after: TLBStats, before: TLBStats) -> dict[str, int]:
    old = tlb_dict(before)
    return {name: value - old[name] for name, value in tlb_dict(after).items()}


def _bus_master(system: System, name: str) -> BusMaster:
    """Scenario device ``name``: a bus master of the system (the scenario names no CPU)."""
    dev = system.device(name)
    if not isinstance(dev, BusMaster):
        raise InvalidArgumentError(f"scenario device {name!r} is the CPU, not a bus master")
    return dev


def _context(device: object) -> SmmuContext | None:
    """The SMMU context translating ``device``'s addresses (``None``: it has none)."""
    return device.ctx if isinstance(device, SmmuDevice) else None


# -- results ---------------------------------------------------------------------------------


@dataclass
class FrameResult:
    """One frame of one step.  TLB fields are ``None`` for physically addressed devices."""

    frame: int
    bursts: int
    lookups: int | None = None
    hits: int | None = None
    misses: int | None = None
    walks: int | None = None
    walk_reads: int | None = None
    evictions: int | None = None


#: The TLB counters a frame reports (every one of the TLB's but its size).
_FRAME_TLB_FIELDS = tuple(f.name for f in fields(FrameResult) if f.name in TLB_FIELDS)


@dataclass
class StepResult:
    index: int
    device: str
    context: str | None
    buffer: str
    access: str
    pattern: str
    plane: str
    bursts_per_frame: int
    frames: list[FrameResult] = field(default_factory=list)
    #: Message of the fault that terminated the step, if one did.
    fault: str | None = None
    #: ``ok``/``mismatch in frame N``/``nothing written yet`` for ``data = true`` reads,
    #: ``written`` for data writes, ``None`` without data.
    data_check: str | None = None

    @property
    def misses_per_frame(self) -> list[int | None]:
        return [f.misses for f in self.frames]


@dataclass
class ContextResult:
    """Counters of one SMMU context over the run, and the page tables it walks."""

    name: str
    smmu: str
    bank: int | None
    devices: list[str]
    tlb_entries: int
    tlb_ways: int
    tlb_replacement: str
    tlb: dict[str, int]
    faults: int
    retries: int
    terminated: int
    bytes_read: int
    bytes_written: int
    table_bytes: int
    table_pages: int
    #: Times the context lost its idle bank to another context (a bank switch).
    bank_evictions: int = 0

    @property
    def miss_rate(self) -> float:
        return self.tlb["misses"] / self.tlb["lookups"] if self.tlb["lookups"] else 0.0


@dataclass
class DeviceResult:
    name: str
    kind: str
    context: str | None
    bytes_read: int
    bytes_written: int
    transactions: int
    faults: int

    @property
    def bytes_moved(self) -> int:
        return self.bytes_read + self.bytes_written


@dataclass
class MappingResult:
    """How one device sees a buffer: the VCM, the device address, the page sizes."""

    device: str
    vcm: str
    kind: str
    dev_addr: int
    length: int
    #: Page size -> number of leaf entries mapping the buffer (empty for one-to-one).
    pages: dict[int, int]


@dataclass
class BufferResult:
    name: str
    size: int
    allocated: int
    target: str
    policy: str
    contiguous: bool
    physmem: str
    #: Chunk size -> count of the physical allocation.
    chunks: dict[int, int]
    mappings: list[MappingResult] = field(default_factory=list)


@dataclass
class ScenarioResult:
    scenario: str
    source: str
    platform: str
    params: dict[str, object]
    burst: int
    buffers: list[BufferResult]
    steps: list[StepResult]
    devices: list[DeviceResult]
    contexts: list[ContextResult]
    elapsed: float = 0.0
    #: The scenario file that ran ("" for a scenario built in Python).
    file: str = ""
    #: People's names of the objects the run made, by object name: each buffer's
    #: allocation and reservations are the buffer's name, each VCM names its context
    #: or buffer (for graphs, which would otherwise say only ``physmem1``, ``res8``).
    labels: dict[str, str] = field(default_factory=dict)
    #: The buffer collections negotiated: folded constraints, choice, reasons.
    collections: list[CollectionResult] = field(default_factory=list)
    #: The ``[[traffic]]`` flows, and every DMA domain's IOTLB invalidation counters.
    traffic: list[TrafficResult] = field(default_factory=list)
    invalidation: list[InvalidationResult] = field(default_factory=list)
    #: The booted system in its end state (for graphs and page-table dumps); not
    #: serialised and dropped before a result crosses a process boundary.
    system: System | None = field(default=None, repr=False, compare=False)
    #: Each SMMU the run used: banks, bank switches and their TLB cost, fault registers.
    smmus: list[SmmuResult] = field(default_factory=list)

    def totals(self) -> dict[str, int | float]:
        """Sums over every context and device: what the sweep tabulates."""
        out: dict[str, int | float] = {name: 0 for name in TLB_FIELDS}
        for ctx in self.contexts:
            for name in TLB_FIELDS:
                out[name] = int(out[name]) + ctx.tlb[name]
        out["faults"] = sum(d.faults for d in self.devices)
        out["bytes_moved"] = sum(d.bytes_moved for d in self.devices)
        out["table_bytes"] = sum(c.table_bytes for c in self.contexts)
        lookups = int(out["lookups"])
        out["miss_rate"] = int(out["misses"]) / lookups if lookups else 0.0
        return out

    def context(self, name: str) -> ContextResult:
        for ctx in self.contexts:
            if ctx.name == name:
                return ctx
        raise ScenarioError(f"the run has no context {name!r}", source=self.source)

    def device(self, name: str) -> DeviceResult:
        for dev in self.devices:
            if dev.name == name:
                return dev
        raise ScenarioError(f"the run has no device {name!r}", source=self.source)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (numbers, strings, lists, dicts)."""

        def plain(obj: Any) -> Any:
            if isinstance(obj, list):
                return [plain(o) for o in obj]
            if isinstance(obj, dict):
                return {str(k): plain(v) for k, v in obj.items()}
            if dataclasses.is_dataclass(obj):
                return {k: plain(v) for k, v in vars(obj).items() if k != "system"}
            return obj

        data = plain(self)
        data["totals"] = self.totals()
        for ctx, raw in zip(self.contexts, data["contexts"], strict=True):
            raw["miss_rate"] = ctx.miss_rate
        for buf, raw in zip(self.buffers, data["buffers"], strict=True):
            raw["chunks"] = {format_size(k): v for k, v in buf.chunks.items()}
            for m, rawm in zip(buf.mappings, raw["mappings"], strict=True):
                rawm["pages"] = {format_size(k): v for k, v in m.pages.items()}
        for col, raw in zip(self.collections, data["collections"], strict=True):
            raw["chunks"] = {format_size(k): v for k, v in col.chunks.items()}
        return data


# -- streams ---------------------------------------------------------------------------------


def step_stream(buf: BufferSpec, step: StepSpec, burst: int, frame: int = 0) -> U64Array:
    """Burst offsets (from the buffer's start) one frame of ``step`` issues."""
    planes = (
        buf.planes if step.plane == "all" else tuple(p for p in buf.planes if p.name == step.plane)
    )
    if step.pattern == "linear":
        if step.plane == "all":
            return linear(buf.size, burst=burst)
        return cover([p.offset for p in planes], [p.extent for p in planes], burst)
    if step.pattern == "raster":
        return np.concatenate([raster(p, burst=burst) for p in planes])
    if step.pattern == "tiled":
        tw, th = step.tile
        return np.concatenate([tiled(p, tw, th, burst=burst) for p in planes])
    lo = min(p.offset for p in planes)
    hi = max(p.end for p in planes)
    count = step.count or len(cover([lo], [hi - lo], burst))
    return random_bursts(hi - lo, count, seed=step.seed * 1_000_003 + frame, burst=burst, start=lo)


def _content(buffer: str, frame: int, size: int) -> np.ndarray:
    """The bytes a data-moving write puts in ``buffer`` in ``frame``: distinct per frame."""
    rng = np.random.default_rng([zlib.crc32(buffer.encode()), frame])
    return rng.integers(0, 256, size=size, dtype=np.uint8)


def default_targets(scenario: Scenario, buf: BufferSpec) -> list[str]:
    """Memory targets tried for a buffer that names none: the platform's priority order,
    less contiguous carve-outs for non-contiguous buffers (a carve-out hands out one
    run whatever the block policy says, which would quietly void the policy)."""
    platform = scenario.platform
    order = list(platform.target_priority) or [t.name for t in platform.targets]
    if buf.contiguous:
        return order
    kinds = {t.name: t.kind for t in platform.targets}
    return [name for name in order if kinds[name] != "contiguous"] or order


# -- the runner ------------------------------------------------------------------------------


class ScenarioRunner:
    """Sets a scenario up on a fresh :class:`System` and runs its pipeline.

    Use :func:`run_scenario` unless you need the steps apart (``setup`` then ``run``).
    """

    def __init__(self, scenario: Scenario) -> None:
        if not isinstance(scenario, Scenario):
            raise ScenarioError(f"ScenarioRunner needs a Scenario, got {type(scenario).__name__}")
        self.scenario = scenario
        self.system = System(scenario.effective_platform())
        self.physmems: dict[str, PhysMem] = {}
        self.context_vcms: dict[tuple[str, str], Vcm] = {}
        self.direct_vcms: dict[str, Vcm] = {}
        self.reservations: dict[tuple[str, str], Reservation] = {}
        self.labels: dict[str, str] = {}
        #: Negotiated buffer collections, and the buffer each one's steps stream over.
        self.collections: dict[str, BufferCollection] = {}
        self._shapes: dict[str, BufferSpec] = {}
        #: Devices whose contexts outnumber their SMMU's banks take turns on them.
        self.turns = BankTurns(self.system, scenario)
        self._ready = False

    @property
    def work_units(self) -> int:
        """Step-frames the run executes (the progress bar's length)."""
        return sum(step.frames for step in self.scenario.steps) + len(self.scenario.traffic)

    def _fail(self, key: str, problem: str) -> ScenarioError:
        return ScenarioError(problem, key=key, source=self.scenario.source)

    def setup(self) -> None:
        """Allocate every buffer and map it for every device that touches it."""
        if self._ready:
            return
        sc, system = self.scenario, self.system
        for i, buf in enumerate(sc.buffers):
            targets = list(buf.targets) if buf.targets else default_targets(sc, buf)
            try:
                self.physmems[buf.name] = system.vcm_phys_alloc(
                    targets, buf.reserve_len, buf.phys_attr()
                )
                self.labels[self.physmems[buf.name].name] = buf.name
            except VcmmError as err:
                raise self._fail(
                    f"buffers[{i}]",
                    f"cannot allocate {format_size(buf.reserve_len)} for buffer {buf.name!r} "
                    f"with policy {buf.policy!r} from {', '.join(targets)}: {err}",
                ) from None
        negotiated = {c.name for c in sc.collections}
        for i, step in enumerate(sc.steps):
            if step.buffer in negotiated:
                continue
            try:
                self._map(step)
            except VcmmError as err:
                raise self._fail(
                    f"steps[{i}]", f"cannot map {step.buffer!r} for {step.device!r}: {err}"
                ) from None
        for i, spec in enumerate(sc.collections):
            collection = negotiate(system, spec, f"collections[{i}]", sc.source)
            self.collections[spec.name] = collection
            for index in range(len(collection.buffers)):
                self.labels[collection.allocation(index).name] = f"{spec.name}[{index}]"
            size, frame, stride = stream_shape(collection)
            self._shapes[spec.name] = BufferSpec(spec.name, size, frame=frame, stride=stride)
        self._ready = True

    def buffer(self, name: str) -> BufferSpec:
        """The buffer a step streams over: a plain one, or a collection's image."""
        return self._shapes.get(name) or self.scenario.buffer(name)

    def base(self, step: StepSpec, frame: int) -> int:
        """The device address of the buffer ``step`` uses in ``frame`` (a collection's
        buffers take turns, frame by frame)."""
        collection = self.collections.get(step.buffer)
        if collection is None:
            return self.dev_addr(step.device, step.buffer)
        addresses = collection.members[step.device].dma_addresses
        return addresses[frame % len(addresses)]

    def _map(self, step: StepSpec) -> None:
        system = self.system
        spec = system.spec.device(step.device)
        dev = system.device(step.device)
        buf = self.scenario.buffer(step.buffer)
        physmem = self.physmems[buf.name]
        if (step.device, buf.name) in self.reservations:
            return
        attr = Attr.READ if buf.readonly else Attr.RW
        if spec.kind == "smmu":
            key = (str(spec.smmu), str(spec.context))
            vcm = self.context_vcms.get(key)
            if vcm is None:
                vcm = system.vcm_create(IOVA_BASE, IOVA_SIZE, kind=VcmKind.IOMMU)
                self.context_vcms[key] = vcm
                self.labels[vcm.name] = f"{spec.context}'s IOVA space"
            if not any(a.device is dev for a in vcm.associations):
                assoc = system.vcm_assoc(vcm, dev)
                if self.turns.defers(dev):
                    self.turns.hold(step.device, assoc)
                else:
                    system.vcm_activate(assoc)
            res = next(
                (r for (d, b), r in self.reservations.items() if b == buf.name and r.vcm is vcm),
                None,
            )
            if res is None:
                res = system.vcm_reserve(vcm, physmem.size, attr)
                system.vcm_back(res, physmem)
        else:
            vcm = self.direct_vcms.get(buf.name)
            if vcm is None:
                start = physmem.chunks[0][0]
                vcm = system.vcm_create(start, physmem.size, kind=VcmKind.ONE_TO_ONE)
                self.direct_vcms[buf.name] = vcm
                self.labels[vcm.name] = f"{buf.name}'s window"
                res = system.vcm_reserve(vcm, physmem.size, attr)
                system.vcm_back(res, physmem)
            else:
                res = vcm.reservations[0]
            if not any(a.device is dev for a in vcm.associations):
                system.vcm_activate(system.vcm_assoc(vcm, dev))
        self.reservations[(step.device, buf.name)] = res
        self.labels[res.name] = buf.name

    def dev_addr(self, device: str, buffer: str) -> int:
        """The address ``device`` uses for the start of ``buffer``."""
        res = self.reservations[(device, buffer)]
        return res.dev_addr_for(self.system.device(device))

    def run(self, progress: Progress | None = None) -> ScenarioResult:
        """Set up (if not yet) and run every frame of every step, in pipeline order:
        frame 0 of each step in file order, then frame 1, and so on."""
        started = time.perf_counter()
        self.setup()
        sc, system = self.scenario, self.system
        results: list[StepResult] = []
        cached: dict[int, U64Array] = {}
        written: dict[str, np.ndarray] = {}
        for i, step in enumerate(sc.steps):
            ctx = _context(system.device(step.device))
            buf = self.buffer(step.buffer)
            first = step_stream(buf, step, sc.burst, 0)
            cached[i] = first
            results.append(
                StepResult(
                    index=i,
                    device=step.device,
                    context=ctx.name if ctx is not None else None,
                    buffer=step.buffer,
                    access=step.access,
                    pattern=step.pattern,
                    plane=step.plane,
                    bursts_per_frame=int(first.size),
                )
            )
        for frame in range(sc.frames):
            for i, step in enumerate(sc.steps):
                result = results[i]
                if frame >= step.frames:
                    continue
                if result.fault is not None:
                    if progress:
                        progress(1)
                    continue
                self._run_frame(step, result, frame, cached, written)
                if progress:
                    progress(1)
        flows = self._run_traffic()
        if progress and flows:
            progress(len(flows))
        return self._collect(results, time.perf_counter() - started, flows)

    def _run_traffic(self) -> list[TrafficResult]:
        """The scenario's DMA API flows, after the pipeline (see :mod:`.traffic`)."""
        if not self.scenario.traffic:
            return []
        try:
            return run_traffic(self.system, self.scenario.traffic)
        except VcmmError as err:
            raise self._fail("traffic", f"the traffic could not run: {err}") from None

    def _run_frame(
        self,
        step: StepSpec,
        result: StepResult,
        frame: int,
        cached: dict[int, U64Array],
        written: dict[str, np.ndarray],
    ) -> None:
        sc, system = self.scenario, self.system
        dev = _bus_master(system, step.device)
        ctx = _context(dev)
        buf = self.buffer(step.buffer)
        offsets = cached[result.index]
        if step.pattern == "random" and frame:
            offsets = step_stream(buf, step, sc.burst, frame)
        base = self.base(step, frame)
        access = Access.WRITE if step.access == "write" else Access.READ
        with self.turns.turn(step.device):
            before = ctx.stats().tlb if ctx is not None else None
            try:
                dev.access_batch(offsets + np.uint64(base), access, sc.burst)
            except DeviceFaultError as err:
                result.fault = f"frame {frame}: {err}"
            counts: dict[str, int] = {}
            if ctx is not None and before is not None:
                delta = _delta(ctx.stats().tlb, before)
                counts = {name: delta[name] for name in _FRAME_TLB_FIELDS}
            result.frames.append(FrameResult(frame=frame, bursts=int(offsets.size), **counts))
            if step.data and result.fault is None:
                self._move_data(step, result, frame, base, written)

    def _move_data(
        self,
        step: StepSpec,
        result: StepResult,
        frame: int,
        base: int,
        written: dict[str, np.ndarray],
    ) -> None:
        dev = _bus_master(self.system, step.device)
        buf = self.buffer(step.buffer)
        try:
            if step.access == "write":
                content = _content(buf.name, frame, buf.size)
                dev.write(base, content)
                written[buf.name] = content
                result.data_check = "written"
                return
            got = dev.read_array(base, buf.size)
        except DeviceFaultError as err:
            result.fault = f"frame {frame} (data): {err}"
            return
        expected = written.get(buf.name)
        if expected is None:
            result.data_check = result.data_check or "nothing written yet"
        elif not np.array_equal(got, expected):
            result.data_check = f"mismatch in frame {frame}"
        elif result.data_check is None or result.data_check == "nothing written yet":
            result.data_check = "ok"

    # -- collecting -----------------------------------------------------------------------

    def _collect(
        self, steps: list[StepResult], elapsed: float, flows: list[TrafficResult]
    ) -> ScenarioResult:
        sc, system = self.scenario, self.system
        devices: list[DeviceResult] = []
        contexts: dict[str, ContextResult] = {}
        for name in sc.devices:
            dev = _bus_master(system, name)
            spec = system.spec.device(name)
            ctx = _context(dev)
            counters = dev.counters()
            devices.append(
                DeviceResult(
                    name=name,
                    kind=spec.kind,
                    context=ctx.name if ctx is not None else None,
                    bytes_read=counters["bytes_read"],
                    bytes_written=counters["bytes_written"],
                    transactions=counters["transactions"],
                    faults=counters["faults"],
                )
            )
            if ctx is None:
                continue
            if ctx.name in contexts:
                contexts[ctx.name].devices.append(name)
                continue
            stats = ctx.stats()
            tables = [t for t in (ctx.low_table, ctx.high_table) if t is not None]
            pages = [page for t in tables for page in t.table_pages()]
            tlb_spec = system.spec.smmu(ctx.smmu.name).tlb
            contexts[ctx.name] = ContextResult(
                name=ctx.name,
                smmu=ctx.smmu.name,
                bank=ctx.bank,
                devices=[name],
                tlb_entries=tlb_spec.entries,
                tlb_ways=tlb_spec.ways,
                tlb_replacement=tlb_spec.replacement,
                tlb=tlb_dict(stats.tlb),
                faults=stats.faults,
                retries=stats.retries,
                terminated=stats.terminated,
                bytes_read=stats.bytes_read,
                bytes_written=stats.bytes_written,
                table_bytes=sum(size for _, size in pages),
                table_pages=len(pages),
                bank_evictions=stats.evictions,
            )
        buffers = [self._buffer_result(buf) for buf in sc.buffers]
        return ScenarioResult(
            scenario=sc.name,
            source=sc.source,
            platform=system.spec.name,
            params=dict(sc.params),
            burst=sc.burst,
            buffers=buffers,
            steps=steps,
            devices=devices,
            contexts=list(contexts.values()),
            elapsed=elapsed,
            file=sc.file,
            labels=dict(self.labels),
            collections=[collection_result(c) for c in self.collections.values()],
            traffic=flows,
            invalidation=invalidation_results(system),
            system=system,
            smmus=smmu_results(system, self.turns),
        )

    def _buffer_result(self, buf: BufferSpec) -> BufferResult:
        physmem = self.physmems[buf.name]
        chunks = Counter(size for _, size in physmem.chunks)
        result = BufferResult(
            name=buf.name,
            size=buf.size,
            allocated=physmem.size,
            target=physmem.target,
            policy=buf.policy,
            contiguous=buf.contiguous,
            physmem=physmem.name,
            chunks=dict(sorted(chunks.items(), reverse=True)),
        )
        for (device, name), res in self.reservations.items():
            if name != buf.name:
                continue
            result.mappings.append(
                MappingResult(
                    device=device,
                    vcm=res.vcm.name,
                    kind=res.vcm.kind.value,
                    dev_addr=self.dev_addr(device, name),
                    length=res.len,
                    pages=page_histogram(self.system.vcmm, res),
                )
            )
        return result


def run_scenario(scenario: Scenario, progress: Progress | None = None) -> ScenarioResult:
    """Boot the scenario's platform, set everything up and run the pipeline."""
    return ScenarioRunner(scenario).run(progress)
