"""The platform description: frozen values saying what a simulated SoC is made of.

A platform is pure data: memory regions, the CPU's cache/TLB and linear map, the window
page-table pages come from, the memory targets (the seed's named physical pools, tried
in priority order, 000 L247-253), the SMMUs with their context banks (the seed's tree
smmu0{ctx0,ctx1,ctx2}, smmu1{ctx3}, 000 L534-560), and the devices that master the bus.
Building hardware objects from it happens elsewhere; keeping the description separate
lets a file be checked, printed and diffed without simulating anything.

Every record declares its fields once (:mod:`vcmm.platform.fields`: file key, codec,
rules, file default), and that declaration drives reading a file, checking a record
built in code and writing it back.  The parts live in :mod:`~vcmm.platform.cpu`,
:mod:`~vcmm.platform.targets`, :mod:`~vcmm.platform.devices` and
:mod:`~vcmm.platform.dmamem`; this module holds the whole platform and the rules that
tie its parts together.  Errors are :class:`PlatformError` carrying the key
(``smmus[0].tlb.ways``) that is wrong; the reader prefixes the file and the
enclosing path, so a message always says where to look and what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from vcmm.errors import NotFoundError
from vcmm.hw.memory import MemoryRegion
from vcmm.mm.iova_policy import DEFAULT_IOVA_POLICY, IOVA_POLICIES
from vcmm.mm.roles import MemoryRoles
from vcmm.platform.codecs import FlatWindow, Record, Records, Strings, Text, Window
from vcmm.platform.cpu import CpuSpec
from vcmm.platform.cpu import TlbSpec as TlbSpec
from vcmm.platform.devices import CPU_NAME, ContextSpec, DeviceSpec, SmmuSpec
from vcmm.platform.dmamem import DmaMemorySpec
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import check_fields, declare, is_dt_name, is_name, key, one_of
from vcmm.platform.reserved import ReservedSpec
from vcmm.platform.targets import TargetSpec
from vcmm.ranges import AddressRange
from vcmm.tlbcost import DEFAULT_INVALIDATION, INVALIDATION_MODES

REGION_KINDS: Final = ("ram", "sram")

# A memory region is the hardware's own value (it feeds PhysicalMemory as is); its
# file keys are declared here, where the file format lives.
declare(
    MemoryRegion,
    {
        "name": key(Text(), is_dt_name),
        "range": key(FlatWindow()),
        "kind": key(Text(), one_of(REGION_KINDS)),
    },
)


@dataclass(frozen=True, slots=True, kw_only=True)
class PlatformSpec:
    """A whole SoC. Construction checks every cross-reference and every window.

    ``memory`` uses :class:`vcmm.hw.memory.MemoryRegion` directly (kind ``ram`` or
    ``sram``), so the description feeds ``PhysicalMemory`` as is.  ``target_priority``
    is the fallback order of memory targets; empty means every target in order.  The
    targets come before the CPU because a file's default linear map is derived from
    them.
    """

    name: str = field(metadata=key(Text(), is_name))
    description: str = field(default="", metadata=key(Text()))
    target_priority: tuple[str, ...] = field(default=(), metadata=key(Strings()))
    #: How the kernel's DMA API places IOVAs in every IOMMU domain (docs/DMA.md).
    iova_policy: str = field(
        default=DEFAULT_IOVA_POLICY,
        metadata=key(Text(), one_of(IOVA_POLICIES), omit_default=True),
    )
    #: How every IOMMU domain of the DMA API invalidates the IOTLB after an unmap:
    #: "strict" or "lazy" (Linux's iommu.strict=0; docs/DMA.md).
    invalidation: str = field(
        default=DEFAULT_INVALIDATION,
        metadata=key(Text(), one_of(INVALIDATION_MODES), omit_default=True),
    )
    memory: tuple[MemoryRegion, ...] = field(metadata=key(Records(MemoryRegion)))
    targets: tuple[TargetSpec, ...] = field(metadata=key(Records(TargetSpec)))
    reserved: tuple[ReservedSpec, ...] = field(
        default=(), metadata=key(Records(ReservedSpec), omit_default=True)
    )
    page_tables: AddressRange = field(metadata=key(Window()))
    cpu: CpuSpec = field(default=CpuSpec(), metadata=key(Record(CpuSpec)))
    smmus: tuple[SmmuSpec, ...] = field(default=(), metadata=key(Records(SmmuSpec)))
    devices: tuple[DeviceSpec, ...] = field(default=(), metadata=key(Records(DeviceSpec)))
    dma: DmaMemorySpec = field(
        default_factory=DmaMemorySpec, metadata=key(Record(DmaMemorySpec), omit_default=True)
    )
    source: str = "<code>"

    def __post_init__(self) -> None:
        if not isinstance(self.source, str):
            raise PlatformError(f"source {self.source!r} is not a string", key="source")
        try:
            self._validate()
        except PlatformError as err:
            raise err.within(source=self.source) from None

    # Each step below is one family of rules; they run in dependency order.
    def _validate(self) -> None:
        check_fields(self, PlatformError)
        self._validate_memory()
        self._validate_windows()
        self._validate_priority()
        self._validate_reserved()
        self.memory_roles()
        self._validate_smmus()
        self._validate_devices()
        self._validate_device_links()

    def _validate_memory(self) -> None:
        if not self.memory:
            raise PlatformError("the platform has no memory regions", key="memory")
        for index, region in enumerate(self.memory):
            try:
                check_fields(region, PlatformError)
            except PlatformError as err:
                raise err.within(f"memory[{index}]") from None
        _check_unique([r.name for r in self.memory], "memory", "name", "memory region")
        _check_disjoint(
            [(f"memory[{i}]", f"region {r.name!r}", r.range) for i, r in enumerate(self.memory)]
        )

    def _region_holding(self, window: AddressRange, kind: str, key: str, what: str) -> None:
        if any(r.kind == kind and window in r.range for r in self.memory):
            return
        regions = ", ".join(f"{r.name} {r.range}" for r in self.memory if r.kind == kind)
        raise PlatformError(
            f"{what} {window} is not inside one {kind!r} memory region "
            f"(those are: {regions or 'none'})",
            key=key,
        )

    def _validate_windows(self) -> None:
        _check_unique([t.name for t in self.targets], "targets", "name", "memory target")
        for index, target in enumerate(self.targets):
            kind = "sram" if target.kind == "onchip" else "ram"
            what = f"{target.kind} target {target.name!r}"
            self._region_holding(target.range, kind, f"targets[{index}]", what)
        self._region_holding(self.page_tables, "ram", "page_tables", "page-table window")
        for index, window in enumerate(self.cpu.linear_map):
            key = f"cpu.linear_map[{index}]"
            self._region_holding(window, "ram", key, "linear-map window")
        # Physical windows handed to distinct owners must not share a byte.
        owned = [
            (f"targets[{i}]", f"target {t.name!r}", t.range) for i, t in enumerate(self.targets)
        ]
        owned.append(("page_tables", "the page-table window", self.page_tables))
        _check_disjoint(owned)
        # The cacheable linear map covers system RAM and nothing carved out of it.
        carveouts = [
            entry
            for entry, owner in zip(owned, [*self.targets, None], strict=True)
            if owner is None or owner.kind != "system"
        ]
        for index, window in enumerate(self.cpu.linear_map):
            for key, what, other in carveouts:
                if window.overlaps(other):
                    raise PlatformError(
                        f"linear-map window {window} overlaps {what} {other} ({key}): carve-outs "
                        "must stay outside the kernel's cacheable map",
                        key=f"cpu.linear_map[{index}]",
                    )
        for index, target in enumerate(self.targets):
            if target.kind == "system" and not any(
                target.range in window for window in self.cpu.linear_map
            ):
                raise PlatformError(
                    f"system target {target.name!r} {target.range} is not inside the CPU's "
                    "linear map; kernel-managed RAM must be mapped by the kernel",
                    key=f"targets[{index}]",
                )

    def _validate_reserved(self) -> None:
        """Reserved RAM is nobody's to allocate, and no-map RAM nobody's to map: the
        rules ``reserved-memory`` gives the kernel (docs/PLATFORM.md)."""
        _check_unique([r.name for r in self.reserved], "reserved", "name", "reserved region")
        _check_disjoint(
            [
                (f"reserved[{i}]", f"reserved region {r.name!r}", r.range)
                for i, r in enumerate(self.reserved)
            ]
        )
        by_name = {t.name: t for t in self.targets}
        for index, region in enumerate(self.reserved):
            where = f"reserved[{index}]"
            self._region_holding(region.range, "ram", where, f"reserved region {region.name!r}")
            for i, target in enumerate(self.targets):
                if target.kind == "system" and target.range.overlaps(region.range):
                    raise PlatformError(
                        f"reserved region {region.name!r} {region.range} overlaps system target "
                        f"{target.name!r} {target.range} (targets[{i}]): reserved RAM is not "
                        "the page allocator's",
                        key=where,
                    )
            if region.range.overlaps(self.page_tables):
                raise PlatformError(
                    f"reserved region {region.name!r} {region.range} overlaps the page-table "
                    f"window {self.page_tables}",
                    key=where,
                )
            if region.no_map:
                for i, window in enumerate(self.cpu.linear_map):
                    if window.overlaps(region.range):
                        raise PlatformError(
                            f"no-map region {region.name!r} {region.range} overlaps linear-map "
                            f"window {window} (cpu.linear_map[{i}]): no-map RAM has no kernel "
                            "mapping",
                            key=where,
                        )
            if region.target is not None:
                self._check_pool_target(region, by_name, where)

    @staticmethod
    def _check_pool_target(
        region: ReservedSpec, by_name: dict[str, TargetSpec], where: str
    ) -> None:
        target = by_name.get(region.target or "")
        if target is None:
            raise PlatformError(
                f"target {region.target!r} does not exist (targets: {', '.join(by_name)})",
                key=f"{where}.target",
            )
        kind = "cma" if region.reusable else "contiguous"
        if target.kind != kind or target.range not in region.range:
            raise PlatformError(
                f"target {target.name!r} ({target.kind}, {target.range}) must be a {kind!r} "
                f"target inside reserved region {region.name!r} {region.range}",
                key=f"{where}.target",
            )

    def _validate_domain_modes(self) -> None:
        """Devices sharing a DMA domain agree on its invalidation mode (when they say)."""
        said: dict[str, tuple[int, str]] = {}
        for index, device in enumerate(self.devices):
            if device.invalidation is None:
                continue
            domain = device.domain or device.name
            first = said.setdefault(domain, (index, device.invalidation))
            if first[1] != device.invalidation:
                other = self.devices[first[0]].name
                raise PlatformError(
                    f"device {device.name!r} asks {device.invalidation!r} invalidation for "
                    f"domain {domain!r}, which {other!r} (devices[{first[0]}]) gives "
                    f"{first[1]!r}; devices of one domain share its mode",
                    key=f"devices[{index}].invalidation",
                )

    def _validate_device_links(self) -> None:
        """What a device names beyond its SMMU: reserved regions, ``iommu-map`` SMMUs."""
        self._validate_domain_modes()
        regions = {r.name for r in self.reserved}
        smmus = {s.name for s in self.smmus}
        for index, device in enumerate(self.devices):
            for i, name in enumerate(device.memory_regions):
                if name not in regions:
                    raise PlatformError(
                        f"device {device.name!r} names reserved region {name!r}, which does "
                        f"not exist (reserved: {', '.join(sorted(regions)) or 'none'})",
                        key=f"devices[{index}].memory_regions[{i}]",
                    )
            for i, entry in enumerate(device.iommu_map):
                if entry.smmu not in smmus:
                    raise PlatformError(
                        f"device {device.name!r} maps requester IDs to SMMU {entry.smmu!r}, "
                        f"which does not exist (SMMUs: {', '.join(smmus) or 'none'})",
                        key=f"devices[{index}].iommu_map[{i}].smmu",
                    )

    def _validate_priority(self) -> None:
        names = [t.name for t in self.targets]
        seen: set[str] = set()
        for index, name in enumerate(self.target_priority):
            key = f"target_priority[{index}]"
            if name not in names:
                raise PlatformError(
                    f"target {name!r} does not exist (targets: {', '.join(names)})", key=key
                )
            if name in seen:
                raise PlatformError(f"target {name!r} is listed twice", key=key)
            seen.add(name)
        if not self.target_priority:
            object.__setattr__(self, "target_priority", tuple(names))

    def _validate_smmus(self) -> None:
        _check_unique([s.name for s in self.smmus], "smmus", "name", "SMMU")
        windows = [
            (f"smmus[{i}].base", f"SMMU {s.name!r} register window", s.register_window(i))
            for i, s in enumerate(self.smmus)
        ]
        _check_disjoint(windows)
        for where, what, window in windows:
            for region in self.memory:
                if window.overlaps(region.range):
                    raise PlatformError(
                        f"{what} {window} overlaps memory region {region.name!r} "
                        f"{region.range}; registers are not memory (set base)",
                        key=where,
                    )
        contexts = [
            (f"smmus[{i}].contexts[{j}]", ctx)
            for i, smmu in enumerate(self.smmus)
            for j, ctx in enumerate(smmu.contexts)
        ]
        for attr in ("name", "tree_name"):
            seen: dict[str, str] = {}
            for where, ctx in contexts:
                value = ctx.name if attr == "name" else ctx.tree_name
                if value in seen:
                    raise PlatformError(
                        f"context {attr} {value!r} is already used by {seen[value]}",
                        key=f"{where}.{attr}",
                    )
                seen[value] = where

    def _validate_devices(self) -> None:
        _check_unique([d.name for d in self.devices], "devices", "name", "device")
        users: dict[tuple[str, str], int] = {}
        domain_format: dict[str, tuple[str, int]] = {}
        for index, device in enumerate(self.devices):
            key = f"devices[{index}]"
            if device.name == CPU_NAME:
                raise PlatformError(
                    f"device name {CPU_NAME!r} is reserved for the implicit CPU", key=f"{key}.name"
                )
            if device.kind != "smmu":
                continue
            assert device.smmu is not None and device.context is not None
            smmu = self._find_smmu(device, key)
            if all(ctx.name != device.context for ctx in smmu.contexts):
                owner = [s.name for s in self.smmus for c in s.contexts if c.name == device.context]
                where = f"it belongs to SMMU {owner[0]!r}" if owner else "no SMMU has it"
                raise PlatformError(
                    f"context {device.context!r} is not a context of SMMU {smmu.name!r}; {where}",
                    key=f"{key}.context",
                )
            slot = (smmu.name, device.context)
            if slot in users:
                other = self.devices[users[slot]]
                if device.domain is None or device.domain != other.domain:
                    raise PlatformError(
                        f"device {device.name!r} uses context {device.context!r} already used "
                        f"by devices[{users[slot]}] {other.name!r}; devices share a context only "
                        f"when they share a domain (domains: {device.domain!r}, "
                        f"{other.domain!r})",
                        key=f"{key}.context",
                    )
            users.setdefault(slot, index)
            if device.domain is not None:
                first = domain_format.setdefault(device.domain, (smmu.format, index))
                if first[0] != smmu.format:
                    raise PlatformError(
                        f"domain {device.domain!r} spans page-table formats: {smmu.format!r} "
                        f"here, {first[0]!r} for devices[{first[1]}]; one domain is one table",
                        key=f"{key}.domain",
                    )

    def _find_smmu(self, device: DeviceSpec, key: str) -> SmmuSpec:
        for smmu in self.smmus:
            if smmu.name == device.smmu:
                return smmu
        names = ", ".join(s.name for s in self.smmus) or "none"
        raise PlatformError(
            f"device {device.name!r} names SMMU {device.smmu!r}, which does not exist "
            f"(SMMUs: {names})",
            key=f"{key}.smmu",
        )

    # -- lookups -------------------------------------------------------------------------------

    def memory_roles(self) -> MemoryRoles:
        """Which targets the kernel's DMA layers use: the ``[dma]`` table with its
        defaults filled in from the targets (:mod:`vcmm.platform.dmamem`)."""
        return self.dma.resolve(self.targets, self.target_priority)

    def reserved_region(self, name: str) -> ReservedSpec:
        return _lookup(self.reserved, name, "reserved region")

    def region(self, name: str) -> MemoryRegion:
        return _lookup(self.memory, name, "memory region")

    def target(self, name: str) -> TargetSpec:
        return _lookup(self.targets, name, "memory target")

    def smmu(self, name: str) -> SmmuSpec:
        return _lookup(self.smmus, name, "SMMU")

    def register_base(self, name: str) -> int:
        """Where SMMU ``name``'s registers sit: its ``base``, else the default layout."""
        smmu = self.smmu(name)
        return smmu.register_window(self.smmus.index(smmu)).start

    def device(self, name: str) -> DeviceSpec:
        return _lookup(self.devices, name, "device")

    def context(self, name: str) -> tuple[SmmuSpec, ContextSpec]:
        """Find a context by name across all SMMUs (the seed's smmu_get_ctx_instance)."""
        for smmu in self.smmus:
            for ctx in smmu.contexts:
                if ctx.name == name:
                    return smmu, ctx
        raise NotFoundError(f"platform {self.name!r} has no SMMU context named {name!r}")


_Named = TypeVar("_Named", MemoryRegion, TargetSpec, SmmuSpec, DeviceSpec, ReservedSpec)


def _lookup(items: Iterable[_Named], name: str, what: str) -> _Named:
    names = []
    for item in items:
        if item.name == name:
            return item
        names.append(item.name)
    raise NotFoundError(f"no {what} named {name!r} (have: {', '.join(names) or 'none'})")


def _check_unique(names: list[str], table: str, attr: str, what: str) -> None:
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise PlatformError(
                f"{what} name {name!r} is already used by {table}[{seen[name]}]",
                key=f"{table}[{index}].{attr}",
            )
        seen[name] = index


def _check_disjoint(windows: list[tuple[str, str, AddressRange]]) -> None:
    """Raise for the first pair of overlapping windows, naming both."""
    for index, (where, what, window) in enumerate(windows):
        for other_key, other_what, other in windows[:index]:
            if window.overlaps(other):
                raise PlatformError(
                    f"{what} {window} overlaps {other_what} {other} ({other_key})", key=where
                )
