"""A flattened devicetree unflattened: nodes, properties, phandles and cells.

The blob reader (:mod:`~vcmm.platform.devicetree.blob`) builds one :class:`DtTree`;
the importer reads it through the helpers here, which decode properties the way the
devicetree specification says (big-endian 32-bit cells, ``#address-cells`` and
``#size-cells`` of the parent, NUL-separated string lists) and raise a
:class:`DeviceTreeError` naming the node and the property for anything malformed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from vcmm.platform.errors import PlatformError

#: Defaults the devicetree specification gives a bus without ``#address-cells`` /
#: ``#size-cells``.
DEFAULT_ADDRESS_CELLS: Final = 2
DEFAULT_SIZE_CELLS: Final = 1


class DeviceTreeError(PlatformError):
    """A devicetree breaks a rule vcmm needs: names the file, the node and the property.

    The message reads ``board.dtb: /soc@0/iommu@15000000: #iommu-cells: ...``.
    """

    def __init__(self, problem: str, *, key: str = "", source: str = "") -> None:
        super().__init__(problem, key=key, source=source)

    @classmethod
    def at(cls, source: str, node: str, prop: str, problem: str) -> DeviceTreeError:
        """The error for ``problem`` at property ``prop`` of the node at path ``node``."""
        return cls(problem, key=f"{node}: {prop}" if prop else node, source=source)


@dataclass(eq=False)
class DtNode:
    """One node: its full name (``iommu@15000000``), path, properties and children."""

    name: str
    path: str
    props: dict[str, bytes]
    parent: DtNode | None = None
    children: list[DtNode] = field(default_factory=list)

    @property
    def base_name(self) -> str:
        """The name without its unit address (``iommu``): what ``%pOFn`` prints."""
        return self.name.split("@", 1)[0]

    @property
    def unit_address(self) -> str:
        return self.name.split("@", 1)[1] if "@" in self.name else ""

    def has(self, prop: str) -> bool:
        return prop in self.props

    def walk(self) -> Iterator[DtNode]:
        """This node and every node below it, in blob order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def ancestors(self) -> Iterator[DtNode]:
        node = self.parent
        while node is not None:
            yield node
            node = node.parent


class DtTree:
    """The whole tree, with its phandles resolved and errors worded for its file."""

    def __init__(self, root: DtNode, source: str) -> None:
        self.root = root
        self.source = source
        self.by_phandle: dict[int, DtNode] = {}
        for node in root.walk():
            for prop in ("phandle", "linux,phandle"):
                if prop in node.props:
                    self.by_phandle[self.u32(node, prop)] = node

    def error(self, node: DtNode, prop: str, problem: str) -> DeviceTreeError:
        return DeviceTreeError.at(self.source, node.path, prop, problem)

    def find(self, path: str) -> DtNode | None:
        node = self.root
        for part in filter(None, path.split("/")):
            match = [c for c in node.children if c.name == part]
            match = match or [c for c in node.children if c.base_name == part]
            if not match:
                return None
            node = match[0]
        return node

    # -- property decoding -------------------------------------------------------------------

    def cells(self, node: DtNode, prop: str) -> list[int]:
        """The property as big-endian 32-bit cells."""
        raw = node.props[prop]
        if len(raw) % 4:
            raise self.error(node, prop, f"length {len(raw)} is not a multiple of 4 (cells)")
        return [int.from_bytes(raw[i : i + 4], "big") for i in range(0, len(raw), 4)]

    def u32(self, node: DtNode, prop: str, default: int | None = None) -> int:
        if prop not in node.props:
            if default is None:
                raise self.error(node, prop, "missing required property")
            return default
        values = self.cells(node, prop)
        if len(values) != 1:
            raise self.error(node, prop, f"expected one cell, got {len(values)}")
        return values[0]

    def strings(self, node: DtNode, prop: str) -> list[str]:
        """A string list (``compatible``): NUL-terminated strings, decoded as ASCII."""
        raw = node.props.get(prop)
        if raw is None:
            return []
        if not raw.endswith(b"\0"):
            raise self.error(node, prop, "string list is not NUL-terminated")
        try:
            return raw[:-1].decode("ascii").split("\0")
        except UnicodeDecodeError:
            raise self.error(node, prop, "string list is not ASCII") from None

    def string(self, node: DtNode, prop: str) -> str | None:
        values = self.strings(node, prop)
        return values[0] if values else None

    def available(self, node: DtNode) -> bool:
        """``status`` absent, ``"okay"`` or ``"ok"`` (Linux's of_device_is_available)."""
        status = self.string(node, "status")
        return status in (None, "okay", "ok")

    def phandle(self, node: DtNode, prop: str, value: int) -> DtNode:
        """The node phandle ``value`` (read from ``prop`` of ``node``) refers to."""
        target = self.by_phandle.get(value)
        if target is None:
            raise self.error(node, prop, f"phandle {value:#x} refers to no node (dangling)")
        return target

    # -- addresses ---------------------------------------------------------------------------

    def address_cells(self, bus: DtNode | None) -> int:
        """``#address-cells`` a bus gives its children's addresses."""
        if bus is None:
            return DEFAULT_ADDRESS_CELLS
        return self.u32(bus, "#address-cells", DEFAULT_ADDRESS_CELLS)

    def size_cells(self, bus: DtNode | None) -> int:
        if bus is None:
            return DEFAULT_SIZE_CELLS
        return self.u32(bus, "#size-cells", DEFAULT_SIZE_CELLS)

    def tuples(self, node: DtNode, prop: str, widths: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Split ``prop`` into entries of numbers ``widths[i]`` cells wide each."""
        values = self.cells(node, prop)
        step = sum(widths)
        if step == 0 or len(values) % step:
            raise self.error(
                node,
                prop,
                f"{len(values)} cells do not split into entries of {step} "
                f"({' + '.join(str(w) for w in widths)}) cells",
            )
        out = []
        for start in range(0, len(values), step):
            entry, at = [], start
            for width in widths:
                entry.append(join_cells(values[at : at + width]))
                at += width
            out.append(tuple(entry))
        return out

    def reg(self, node: DtNode) -> list[tuple[int, int]]:
        """``reg`` as (address, size) pairs in the parent bus's address space."""
        if "reg" not in node.props:
            return []
        widths = (self.address_cells(node.parent), self.size_cells(node.parent))
        return [(entry[0], entry[1]) for entry in self.tuples(node, "reg", widths)]


def join_cells(cells: list[int]) -> int:
    """Cells most significant first, as one number (a PCI address keeps its 3 cells'
    ``phys.hi`` in the top bits: callers that want the address mask it off)."""
    value = 0
    for cell in cells:
        value = value << 32 | cell
    return value
