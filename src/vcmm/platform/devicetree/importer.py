"""A devicetree imported as a :class:`~vcmm.platform.schema.PlatformSpec`.

:func:`import_devicetree` reads the file, places the reserved memory, lays out the
physical map, finds the IOMMUs and masters and builds the platform, keeping a list of
what it skipped or adjusted and why (``notes``) and of what the user should know
(``warnings``: an IOMMU vcmm does not model).  :func:`load_devicetree` is the same
returning the platform alone, with the warnings issued as
:class:`DeviceTreeWarning`.  docs/PLATFORM.md ("Importing a devicetree") says what
maps to what.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from vcmm.platform.codecs import parse_number
from vcmm.platform.cpu import CpuSpec
from vcmm.platform.devicetree.blob import read_devicetree
from vcmm.platform.devicetree.layout import DEFAULT_CMA_SIZE, lay_out
from vcmm.platform.devicetree.masters import MasterImport, plain_name
from vcmm.platform.devicetree.memory import memory_banks, place_dynamic, reserved_regions
from vcmm.platform.devicetree.registers import place_registers
from vcmm.platform.devicetree.tree import DeviceTreeError, DtTree
from vcmm.platform.errors import PlatformError
from vcmm.platform.schema import PlatformSpec
from vcmm.sizes import SZ_4K


class DeviceTreeWarning(UserWarning):
    """Something in a devicetree vcmm imports only in part (an unknown IOMMU)."""


@dataclass(frozen=True, slots=True)
class DeviceTreeImport:
    """The platform a devicetree describes, with what the import left out and why."""

    spec: PlatformSpec
    notes: tuple[str, ...]
    warnings: tuple[str, ...]


def _size_argument(value: object, what: str, source: str, *, zero: bool) -> int | None:
    if value is None:
        return None
    size = parse_number(value, "size", lambda p: PlatformError(f"{what}: {p}", source=source))
    if size % SZ_4K or (size == 0 and not zero):
        raise PlatformError(
            f"{what}={value!r} must be a {'' if zero else 'positive '}multiple of 4K",
            source=source,
        )
    return size


def import_devicetree(
    path: str | os.PathLike[str],
    *,
    ram: int | str | None = None,
    cma: int | str = DEFAULT_CMA_SIZE,
) -> DeviceTreeImport:
    """Import the board in ``path`` (``.dtb``, or ``.dts`` through ``dtc``).

    ``ram`` sizes the memory banks a devicetree leaves at size 0 for the bootloader to
    fill in (an error names the node when it is needed and missing); ``cma`` is the
    default CMA area Linux makes when the devicetree declares none (0 for none).
    """
    source = os.fspath(path) if isinstance(path, str | os.PathLike) else repr(path)
    ram_size = _size_argument(ram, "ram", source, zero=False)
    cma_size = _size_argument(cma, "cma", source, zero=True) or 0
    tree = read_devicetree(path)
    return _import(tree, ram_size, cma_size)


def _import(tree: DtTree, ram: int | None, cma: int) -> DeviceTreeImport:
    notes: list[str] = []
    banks = memory_banks(tree, ram, notes)
    regions = place_dynamic(tree, banks, reserved_regions(tree, notes), notes)
    layout = lay_out(tree, banks, regions, cma_size=cma, notes=notes)
    kept = {r.name for r in layout.reserved}
    region_of = {r.node.path: r.name for r in regions if r.name in kept}
    pools = {r.node.path for r in regions if r.name in kept and r.is_pool}
    finder = MasterImport(tree, region_of, pools, notes)
    masters = finder.masters()
    devices = tuple(finder.device_spec(m) for m in masters)
    model = tree.string(tree.root, "model") or ""
    name = plain_name(Path(tree.source).name.rsplit(".", 1)[0]) or "devicetree"
    try:
        spec = PlatformSpec(
            name=name,
            description=f"{model} (imported from {Path(tree.source).name})".strip(),
            target_priority=layout.priority,
            memory=tuple(banks),
            targets=layout.targets,
            reserved=layout.reserved,
            page_tables=layout.page_tables,
            cpu=CpuSpec(linear_map=layout.linear_map),
            smmus=place_registers(tree, finder.smmu_specs(), banks, notes),
            devices=devices,
            dma=layout.dma,
            source=tree.source,
        )
    except DeviceTreeError:
        raise
    except PlatformError as err:
        raise DeviceTreeError(
            f"the imported platform breaks a rule: {err.problem} (at {err.key})",
            source=tree.source,
        ) from None
    return DeviceTreeImport(spec, tuple(notes), tuple(finder.warnings))


def load_devicetree(path: str | os.PathLike[str], *, ram: int | str | None = None) -> PlatformSpec:
    """The platform a ``.dtb`` or ``.dts`` describes (see :func:`import_devicetree`);
    an IOMMU vcmm does not model is a :class:`DeviceTreeWarning` and its masters
    are direct."""
    result = import_devicetree(path, ram=ram)
    for message in result.warnings:
        warnings.warn(message, DeviceTreeWarning, stacklevel=2)
    return result.spec


__all__ = [
    "DeviceTreeImport",
    "DeviceTreeWarning",
    "import_devicetree",
    "load_devicetree",
]
