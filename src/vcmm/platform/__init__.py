"""Platform descriptions: what a simulated SoC is made of, read from TOML files.

``load_default()`` returns the shipped MSM-class platform; ``load_platform(path)`` and
``loads_platform(text)`` read others.  The result is a frozen :class:`PlatformSpec`;
building hardware from it is the job of the layers that own the hardware objects.
The file format is documented in docs/PLATFORM.md.
"""

from vcmm.platform.cpu import CacheSpec, CpuSpec, TlbSpec
from vcmm.platform.devices import SMMU_FORMATS, ContextSpec, DeviceSpec, DmaRange, DmaSpec, SmmuSpec
from vcmm.platform.errors import PlatformError
from vcmm.platform.loader import (
    DEFAULT_SOURCE,
    dumps_platform,
    load_default,
    load_platform,
    loads_platform,
    parse_number,
)
from vcmm.platform.schema import PlatformSpec
from vcmm.platform.targets import BlockPoolSpec, TargetSpec, layout_block_pools

__all__ = [
    "DEFAULT_SOURCE",
    "SMMU_FORMATS",
    "BlockPoolSpec",
    "CacheSpec",
    "ContextSpec",
    "CpuSpec",
    "DeviceSpec",
    "DmaRange",
    "DmaSpec",
    "PlatformError",
    "PlatformSpec",
    "SmmuSpec",
    "TargetSpec",
    "TlbSpec",
    "dumps_platform",
    "layout_block_pools",
    "load_default",
    "load_platform",
    "loads_platform",
    "parse_number",
]
