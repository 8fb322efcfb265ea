"""Platforms imported from Linux devicetrees (``.dtb``, or ``.dts`` through ``dtc``).

``load_devicetree(path, ram=None)`` returns the :class:`~vcmm.platform.PlatformSpec`
a board's devicetree describes; ``import_devicetree`` also says what it skipped and
why.  The mapping (IOMMU compatible table, names, memory, buses) is documented in
docs/PLATFORM.md, "Importing a devicetree".
"""

from vcmm.platform.devicetree.blob import (
    DEVICETREE_SUFFIXES,
    is_devicetree_path,
    parse_blob,
    read_devicetree,
)
from vcmm.platform.devicetree.importer import (
    DeviceTreeImport,
    DeviceTreeWarning,
    import_devicetree,
    load_devicetree,
)
from vcmm.platform.devicetree.iommu import IOMMU_MODELS, IommuModel, describe_stream
from vcmm.platform.devicetree.tree import DeviceTreeError, DtNode, DtTree

__all__ = [
    "DEVICETREE_SUFFIXES",
    "IOMMU_MODELS",
    "DeviceTreeError",
    "DeviceTreeImport",
    "DeviceTreeWarning",
    "DtNode",
    "DtTree",
    "IommuModel",
    "describe_stream",
    "import_devicetree",
    "is_devicetree_path",
    "load_devicetree",
    "parse_blob",
    "read_devicetree",
]
