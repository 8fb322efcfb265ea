"""Which memory target serves which job of the kernel: the platform's answer, as data.

The layers above the core need memory for jobs that Linux wires up at boot: the page
allocator that hands out cacheable kernel RAM (for coherent devices' coherent buffers,
anonymous user memory, the DMA API's scratch page), the default heap of dma-buf
exporters, and the DMA API's non-cacheable coherent pool and premapped atomic pool
(carve-outs outside the linear map, as ARM32's CMA and atomic pool are).  Naming
targets in code (``"ebi"``, ``"contig"``) tied those layers to one platform, so the
platform chooses (``[dma]`` in a platform file, with defaults derived from its
targets; :mod:`vcmm.platform.dmamem`) and a booted system carries the choice as a
:class:`MemoryRoles` value (``system.memory_roles``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from vcmm.sizes import SZ_32M, SZ_256K, format_size

#: Default size of the DMA API's non-cacheable coherent pool (at most half its target).
DEFAULT_COHERENT_POOL_SIZE: Final = SZ_32M
#: Default size of the premapped atomic pool (ARM Linux's ``atomic_pool_size``).
DEFAULT_ATOMIC_POOL_SIZE: Final = SZ_256K


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """``size`` bytes carved out of target ``target`` (one contiguous chunk)."""

    target: str
    size: int

    def __str__(self) -> str:
        return f"{format_size(self.size)} of {self.target!r}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MemoryRoles:
    """The targets a system's kernel layers use (see the module notes).

    ``kernel``: cacheable kernel RAM (coherent devices' coherent buffers, the DMA
    API's write-back scratch page, anonymous user memory); ``exporter``: the default
    target of dma-buf exporters and ``/dev`` nodes; ``coherent_pool`` and
    ``atomic_pool``: the DMA API's non-cacheable carve-outs, ``None`` when the
    platform has none (non-coherent devices then get no coherent buffers).
    """

    kernel: str
    exporter: str
    coherent_pool: PoolChoice | None
    atomic_pool: PoolChoice | None
