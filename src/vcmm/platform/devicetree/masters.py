"""Bus masters and IOMMUs of a devicetree, as platform records.

A node is a master when it says it does DMA: it has ``iommus`` or a PCIe
``iommu-map``, its ``memory-region`` names a DMA pool, or it is ``dma-coherent``
(IOMMUs and plain buses aside: an IOMMU's ``dma-coherent`` is about its own table
walks).  Every master is imported, ``status = "disabled"`` ones too (marked), under
its Linux name with its node path kept.  A master behind an IOMMU vcmm models is an
``smmu`` device on its group's context; the rest address memory physically, through
the bus offsets of ``dma-ranges``.  Both get the DMA mask Linux's of_dma_configure
leaves before a driver raises it: 32 bits, narrowed to what the buses reach.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vcmm.platform.devices import (
    DMA_BIT_MASK_32,
    ContextSpec,
    DeviceSpec,
    DmaRange,
    DmaSpec,
    IommuMapSpec,
    SmmuSpec,
    StreamSpec,
)
from vcmm.platform.devicetree.address import BusWindow, dma_coherent, dma_windows
from vcmm.platform.devicetree.iommu import (
    IommuGroups,
    IommuModel,
    context_irqs,
    model_of,
    parse_iommus,
    stream_of,
)
from vcmm.platform.devicetree.naming import linux_name
from vcmm.platform.devicetree.tree import DtNode, DtTree

_NAME_OK = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def plain_name(name: str) -> str:
    """``name`` with the characters an SMMU or context name may not hold (they become
    /dev node names) replaced by ``_``."""
    return "".join(c if c in _NAME_OK else "_" for c in name)


@dataclass
class Iommu:
    """A modelled IOMMU being imported: its node, name, model and groups so far."""

    node: DtNode
    name: str
    compatible: str
    model: IommuModel
    groups: IommuGroups
    members: dict[int, list[str]] = field(default_factory=dict)


@dataclass
class Master:
    node: DtNode
    name: str
    iommu: Iommu | None = None
    group: int = 0
    streams: tuple[StreamSpec, ...] = ()


class MasterImport:
    """Finds masters and IOMMUs in one tree; ``notes`` and ``warnings`` collect what
    was skipped and why."""

    def __init__(
        self, tree: DtTree, regions: dict[str, str], pools: set[str], notes: list[str]
    ) -> None:
        self.tree = tree
        #: reserved-memory node path -> imported region name; the paths of DMA pools.
        self.regions = regions
        self.pools = pools
        self.notes = notes
        self.warnings: list[str] = []
        self.iommus: dict[str, Iommu] = {}
        self._unknown: set[str] = set()

    # -- discovery ---------------------------------------------------------------------------

    def is_master(self, node: DtNode) -> bool:
        tree = self.tree
        if node.parent is None or node.has("#iommu-cells"):
            return False
        if node.has("iommus") or node.has("iommu-map"):
            return True
        if node.has("memory-region") and any(
            path in self.pools for path in self._region_paths(node)
        ):
            return True
        return node.has("dma-coherent") and "simple-bus" not in tree.strings(node, "compatible")

    def _region_paths(self, node: DtNode) -> list[str]:
        return [
            self.tree.phandle(node, "memory-region", value).path
            for value in self.tree.cells(node, "memory-region")
        ]

    def iommu(self, node: DtNode) -> Iommu | None:
        """The modelled IOMMU at ``node`` (made on first use), or ``None`` with a
        warning for one vcmm does not model."""
        if node.path in self.iommus:
            return self.iommus[node.path]
        found = model_of(self.tree, node)
        if found is None:
            if node.path not in self._unknown:
                self._unknown.add(node.path)
                names = ", ".join(self.tree.strings(node, "compatible")) or "none"
                self.warnings.append(
                    f"{self.tree.source}: {node.path}: compatible: IOMMU ({names}) is not one "
                    "vcmm models; its masters are imported as direct (physical) masters"
                )
            return None
        compatible, model = found
        iommu = Iommu(node, plain_name(linux_name(self.tree, node)), compatible, model,
                      IommuGroups(model))  # fmt: skip
        self.iommus[node.path] = iommu
        return iommu

    def masters(self) -> list[Master]:
        """Every master in devicetree order, placed in its IOMMU group."""
        out: list[Master] = []
        names: set[str] = set()
        for node in self.tree.root.walk():
            if node.has("#iommu-cells") and model_of(self.tree, node) is not None:
                self.iommu(node)
            if not self.is_master(node):
                continue
            name = linux_name(self.tree, node)
            if name in names:
                self.notes.append(f"{node.path}: Linux name {name!r} is taken; named {name}.1")
                name += ".1"
            names.add(name)
            master = Master(node, name)
            if node.has("iommus"):
                self._place(master)
            out.append(master)
        return out

    def _place(self, master: Master) -> None:
        tree, node = self.tree, master.node
        specifiers = parse_iommus(tree, node)
        first = specifiers[0][0] if specifiers else None
        if first is None:
            return
        others = sorted({n.path for n, _ in specifiers if n is not first})
        if others:
            self.notes.append(
                f"{node.path}: iommus entries on {', '.join(others)} ignored: vcmm puts a "
                f"device behind one IOMMU ({first.path})"
            )
        iommu = self.iommu(first)
        if iommu is None:
            return
        streams = tuple(
            stream_of(tree, node, first, iommu.model, args) for n, args in specifiers if n is first
        )
        master.iommu, master.streams = iommu, streams
        master.group = iommu.groups.place(tree, node, streams)
        iommu.members.setdefault(master.group, []).append(master.name)

    # -- records -----------------------------------------------------------------------------

    def smmu_specs(self) -> tuple[SmmuSpec, ...]:
        specs, numbered = [], 0
        for iommu in self.iommus.values():
            groups = max(iommu.groups.count, 1)
            banks = groups
            if iommu.model.banks_from_irqs:
                banks = max(banks, context_irqs(self.tree, iommu.node))
            contexts = []
            for group in range(iommu.groups.count):
                contexts.append(ContextSpec(f"{iommu.name}.cb{group}", group, f"ctx{numbered}"))
                numbered += 1
            specs.append(
                SmmuSpec(
                    name=iommu.name,
                    format=iommu.model.format,
                    context_banks=banks,
                    contexts=tuple(contexts),
                    model=iommu.compatible,
                    node=iommu.node.path,
                    coherent=iommu.node.has("dma-coherent"),
                    disabled=not self.tree.available(iommu.node),
                )
            )
        return tuple(specs)

    def device_spec(self, master: Master) -> DeviceSpec:
        tree, node = self.tree, master.node
        windows = dma_windows(tree, node)
        common = {
            "name": master.name,
            "coherent": dma_coherent(node),
            "dma": DmaSpec(mask=_mask(windows), coherent_mask=_mask(windows)),
            "node": node.path,
            "disabled": not tree.available(node),
            "iommu_map": self._iommu_map(node),
            "iommu_map_mask": tree.u32(node, "iommu-map-mask") if node.has("iommu-map-mask")
            else None,
            "memory_regions": self._memory_regions(node),
        }  # fmt: skip
        if master.iommu is None:
            ranges = tuple(DmaRange(w.bus, w.cpu, w.size) for w in windows or ())
            return DeviceSpec(kind="physical", dma_ranges=ranges, **common)  # type: ignore[arg-type]
        iommu = master.iommu
        context = f"{iommu.name}.cb{master.group}"
        shared = len(iommu.members.get(master.group, ())) > 1
        return DeviceSpec(
            kind="smmu",
            smmu=iommu.name,
            context=context,
            domain=context if shared else None,
            streams=master.streams,
            **common,  # type: ignore[arg-type]
        )

    def _iommu_map(self, node: DtNode) -> tuple[IommuMapSpec, ...]:
        if not node.has("iommu-map"):
            return ()
        out = []
        for rid, phandle, sid, length in self.tree.tuples(node, "iommu-map", (1, 1, 1, 1)):
            target = self.tree.phandle(node, "iommu-map", phandle)
            iommu = self.iommu(target)
            if iommu is None:
                continue
            out.append(IommuMapSpec(rid_base=rid, smmu=iommu.name, sid_base=sid, length=length))
        return tuple(out)

    def _memory_regions(self, node: DtNode) -> tuple[str, ...]:
        if not node.has("memory-region"):
            return ()
        names = []
        for path in self._region_paths(node):
            if path in self.regions:
                names.append(self.regions[path])
            else:
                self.notes.append(f"{node.path}: memory-region {path} was not reserved; dropped")
        return tuple(names)


def _mask(windows: list[BusWindow] | None) -> int:
    """The 32-bit default narrowed to the highest bus address the windows reach."""
    if not windows:
        return DMA_BIT_MASK_32
    end = max(w.bus + w.size for w in windows) - 1
    return DMA_BIT_MASK_32 & ((1 << end.bit_length()) - 1)
