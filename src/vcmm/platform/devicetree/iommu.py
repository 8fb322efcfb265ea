"""IOMMUs in a devicetree: which model and table format, which masters, which groups.

An IOMMU's ``compatible`` selects its model from :data:`IOMMU_MODELS` (the first of
its strings the table knows, as a driver match prefers earlier strings).  Each master's
``iommus`` specifiers (``#iommu-cells`` cells after the phandle) become its stream IDs.
Masters whose stream IDs match share an IOMMU group, and so one context bank and one
domain, as Linux's arm-smmu decides it (a new SMR entry entirely covered by an earlier
one reuses it and its group; a partial overlap is a conflict).  The MediaTek M4U puts
all its masters in one group: one page table for the whole multimedia subsystem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from vcmm.platform.devices import StreamSpec
from vcmm.platform.devicetree.tree import DtNode, DtTree


@dataclass(frozen=True, slots=True)
class IommuModel:
    """What vcmm builds for an IOMMU compatible string.

    ``format`` is the page-table format Linux programs it with, ``cells`` the
    ``#iommu-cells`` counts its binding allows, ``grouping`` how masters form groups
    (``smr``: matching stream IDs; ``one``: every master in one group; ``device``:
    a group per master, identical stream IDs aside), ``banks_from_irqs`` whether its
    context interrupts count its context banks (arm,smmu bindings).
    """

    model: str
    format: str
    cells: tuple[int, ...]
    grouping: str
    banks_from_irqs: bool = False
    id_bits: int = 16


#: The documented compatible table (docs/PLATFORM.md, "Importing a devicetree").
IOMMU_MODELS: Final[dict[str, IommuModel]] = {
    "arm,mmu-500": IommuModel("MMU-500 (SMMUv2)", "vmsav8", (1, 2), "smr", True),
    "arm,smmu-v2": IommuModel("SMMUv2", "vmsav8", (1, 2), "smr", True),
    "qcom,smmu-v2": IommuModel("Qualcomm SMMUv2", "vmsav8", (1, 2), "smr", True),
    "qcom,adreno-smmu": IommuModel("Adreno SMMU (SMMUv2)", "vmsav8", (1, 2), "smr", True),
    "arm,mmu-401": IommuModel("MMU-401 (SMMUv1)", "lpae", (1, 2), "smr", True),
    "arm,mmu-400": IommuModel("MMU-400 (SMMUv1)", "lpae", (1, 2), "smr", True),
    "arm,smmu-v1": IommuModel("SMMUv1", "lpae", (1, 2), "smr", True),
    "arm,smmu-v3": IommuModel("SMMUv3", "vmsav8", (1,), "device", id_bits=32),
    "mediatek,mt8173-m4u": IommuModel("MediaTek M4U", "armv7s", (1,), "one", id_bits=10),
}

#: An M4U specifier is ``larb << 5 | port`` (MTK_M4U_ID).
M4U_PORT_BITS: Final = 5


def model_of(tree: DtTree, node: DtNode) -> tuple[str, IommuModel] | None:
    """The compatible string that selects ``node``'s model, and the model; ``None`` for
    an IOMMU vcmm does not model."""
    for compatible in tree.strings(node, "compatible"):
        if compatible in IOMMU_MODELS:
            return compatible, IOMMU_MODELS[compatible]
    return None


def describe_stream(model: IommuModel, stream: StreamSpec) -> str:
    """A stream ID as its binding reads it: ``larb 1 port 5`` on the M4U, else
    ``0x1c10`` (with ``/mask``)."""
    if model.grouping == "one":
        larb, port = stream.id >> M4U_PORT_BITS, stream.id & ((1 << M4U_PORT_BITS) - 1)
        return f"larb {larb} port {port}"
    return f"{stream.id:#x}" + (f"/{stream.mask:#x}" if stream.mask else "")


@dataclass
class IommuGroups:
    """The groups of one IOMMU's masters, built master by master in devicetree order."""

    model: IommuModel
    entries: list[tuple[StreamSpec, int]] = field(default_factory=list)
    count: int = 0

    def place(self, tree: DtTree, master: DtNode, streams: tuple[StreamSpec, ...]) -> int:
        """The group of a master with ``streams`` (a new one when nothing matches)."""
        if self.model.grouping == "one":
            self.count = 1
            return 0
        group: int | None = None
        new: list[StreamSpec] = []
        for stream in streams:
            found = self._group_of(tree, master, stream)
            if found is None:
                new.append(stream)
                continue
            if group is not None and found != group:
                raise tree.error(
                    master,
                    "iommus",
                    f"stream IDs fall in two IOMMU groups ({group} and {found}); Linux "
                    "refuses such a master",
                )
            group = found
        if group is None:
            group, self.count = self.count, self.count + 1
        self.entries += [(stream, group) for stream in new]
        return group

    def _group_of(self, tree: DtTree, master: DtNode, stream: StreamSpec) -> int | None:
        for entry, group in self.entries:
            if self.model.grouping == "device":
                if entry.id == stream.id:
                    return group
            elif entry.covers(stream):
                return group
            elif entry.matches(stream):
                raise tree.error(
                    master,
                    "iommus",
                    f"stream {stream.id:#x} mask {stream.mask:#x} partly overlaps the stream "
                    f"match entry {entry.id:#x} mask {entry.mask:#x} of another master "
                    "(a stream-match conflict)",
                )
        return None


def parse_iommus(tree: DtTree, master: DtNode) -> list[tuple[DtNode, tuple[int, ...]]]:
    """``master``'s ``iommus`` as (IOMMU node, specifier cells) pairs."""
    values = tree.cells(master, "iommus")
    out = []
    at = 0
    while at < len(values):
        iommu = tree.phandle(master, "iommus", values[at])
        if not iommu.has("#iommu-cells"):
            raise tree.error(iommu, "#iommu-cells", "missing on a node named by iommus")
        cells = tree.u32(iommu, "#iommu-cells")
        args = tuple(values[at + 1 : at + 1 + cells])
        if len(args) != cells:
            raise tree.error(
                master,
                "iommus",
                f"specifier for {iommu.path} has {len(args)} cells but its #iommu-cells is {cells}",
            )
        out.append((iommu, args))
        at += 1 + cells
    return out


def stream_of(
    tree: DtTree, master: DtNode, iommu: DtNode, model: IommuModel, args: tuple[int, ...]
) -> StreamSpec:
    """One specifier as a stream: ID and mask (the SMMU's ``stream-match-mask`` when
    the specifier has no mask cell), checked against the model's ID width."""
    if len(args) not in model.cells:
        allowed = " or ".join(str(c) for c in model.cells)
        raise tree.error(
            iommu, "#iommu-cells", f"is {len(args)}; the {model.model} binding takes {allowed}"
        )
    sid = args[0]
    mask = args[1] if len(args) > 1 else tree.u32(iommu, "stream-match-mask", 0)
    limit = 1 << model.id_bits
    if sid >= limit or mask >= limit:
        raise tree.error(
            master,
            "iommus",
            f"stream ID {sid:#x} or mask {mask:#x} is wider than the {model.model}'s "
            f"{model.id_bits} bits",
        )
    return StreamSpec(sid, mask)


def context_irqs(tree: DtTree, iommu: DtNode) -> int:
    """The number of context interrupts: every interrupt after ``#global-interrupts``."""
    total = count_interrupts(tree, iommu)
    return total - tree.u32(iommu, "#global-interrupts", 1)


def count_interrupts(tree: DtTree, node: DtNode) -> int:
    """How many interrupts ``node`` lists (``interrupts-extended`` or ``interrupts``
    read with its interrupt parent's ``#interrupt-cells``)."""
    if node.has("interrupts-extended"):
        values, count, at = tree.cells(node, "interrupts-extended"), 0, 0
        while at < len(values):
            parent = tree.phandle(node, "interrupts-extended", values[at])
            at += 1 + tree.u32(parent, "#interrupt-cells")
            count += 1
        return count
    if not node.has("interrupts"):
        return 0
    parent = interrupt_parent(tree, node)
    width = tree.u32(parent, "#interrupt-cells")
    values = tree.cells(node, "interrupts")
    if width == 0 or len(values) % width:
        raise tree.error(
            node,
            "interrupts",
            f"{len(values)} cells are not a multiple of #interrupt-cells {width}",
        )
    return len(values) // width


def interrupt_parent(tree: DtTree, node: DtNode) -> DtNode:
    current: DtNode | None = node
    while current is not None:
        if current.has("interrupt-parent"):
            return tree.phandle(current, "interrupt-parent", tree.u32(current, "interrupt-parent"))
        current = current.parent
    raise tree.error(node, "interrupts", "no interrupt-parent on the node or above it")
