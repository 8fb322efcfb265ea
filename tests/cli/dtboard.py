"""A one-IOMMU board for the command-line tests (see tests/conftest.py build_dtb)."""

from __future__ import annotations

from typing import Any

BOARD: dict[str, Any] = {
    "#address-cells": 1,
    "#size-cells": 1,
    "model": "cli board",
    "memory@40000000": {"device_type": "memory", "reg": [0x4000_0000, 0x1000_0000]},
    "reserved-memory": {
        "#address-cells": 1,
        "#size-cells": 1,
        "ranges": True,
        "gone": {"reg": [0x4100_0000, 0x1000], "status": "disabled"},
    },
    "iommu@1000": {
        "compatible": "arm,mmu-401",
        "reg": [0x1000, 0x100],
        "#iommu-cells": 1,
        "#global-interrupts": 0,
        "phandle": 1,
    },
    "lcd@2000": {"reg": [0x2000, 0x100], "iommus": [1, 3], "status": "disabled"},
    "gpu@3000": {"reg": [0x3000, 0x100], "dma-coherent": True},
}
