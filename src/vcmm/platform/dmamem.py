"""The platform's ``[dma]`` table: which targets the kernel's DMA layers take memory from.

A platform file may say where the DMA API's pools are carved out, which target is the
kernel's cacheable RAM and which one dma-buf exporters allocate from by default::

    [dma]
    kernel_target = "ebi"
    exporter_target = "ebi"
    coherent_pool = { target = "contig", size = "32M" }
    atomic_pool = { target = "contig", size = "256K" }

Every key is optional; what is left out is derived from the targets, so a platform
without a ``[dma]`` table, or with targets named differently from the default
platform's, still gets a working DMA API and sharing layer:

- ``kernel_target``: the first ``system`` target in priority order (kernel RAM, in
  the linear map), else the first target;
- ``exporter_target``: the kernel target (a dma-buf "system heap");
- ``coherent_pool``: the first ``contiguous`` carve-out in priority order, 32 MiB or
  half of it if that is less; none when the platform has no such carve-out (a
  non-coherent device then gets no coherent buffers, and says why);
- ``atomic_pool``: the coherent pool's target, 256 KiB (ARM Linux's default) or what
  is left of the target if that is less.

A pool's ``size = 0`` asks for no pool.  :meth:`DmaMemorySpec.resolve` makes the
choice and checks it (targets exist, pools lie outside the cacheable linear map and fit
their target); the result is a :class:`~vcmm.mm.roles.MemoryRoles`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vcmm.mm.roles import (
    DEFAULT_ATOMIC_POOL_SIZE,
    DEFAULT_COHERENT_POOL_SIZE,
    MemoryRoles,
    PoolChoice,
)
from vcmm.platform.codecs import Record, Size, Text
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import Invalid, check_fields, key
from vcmm.sizes import SZ_4K, format_size

if TYPE_CHECKING:
    from vcmm.platform.targets import TargetSpec


def _target_name(value: str) -> None:
    if not value:
        raise Invalid(f"expected a target name, got {value!r}")


def _pool_size(size: int) -> None:
    if size % SZ_4K:
        raise Invalid(f"size {size:#x} must be 0 (no pool) or a positive multiple of 4K")


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolSpec:
    """A pool as declared: ``target`` and ``size``, each ``None`` for the default;
    ``size == 0`` means no pool."""

    target: str | None = field(default=None, metadata=key(Text(), _target_name))
    size: int | None = field(default=None, metadata=key(Size(), _pool_size))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)


@dataclass(frozen=True, slots=True, kw_only=True)
class DmaMemorySpec:
    """The ``[dma]`` table as declared (see the module notes for the defaults)."""

    kernel_target: str | None = field(default=None, metadata=key(Text(), _target_name))
    exporter_target: str | None = field(default=None, metadata=key(Text(), _target_name))
    coherent_pool: PoolSpec = field(
        default_factory=PoolSpec, metadata=key(Record(PoolSpec), omit_default=True)
    )
    atomic_pool: PoolSpec = field(
        default_factory=PoolSpec, metadata=key(Record(PoolSpec), omit_default=True)
    )

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)

    @property
    def declared(self) -> bool:
        """Whether anything differs from the defaults (a file needs a ``[dma]`` table)."""
        return self != DmaMemorySpec()

    def resolve(self, targets: Sequence[TargetSpec], priority: Sequence[str]) -> MemoryRoles:
        """The roles on a platform with ``targets`` tried in ``priority`` order; raises
        :class:`PlatformError` (keys under ``dma``) for a choice that cannot work."""
        by_name = {t.name: t for t in targets}
        ordered = [by_name[n] for n in priority if n in by_name]
        ordered += [t for t in targets if t.name not in priority]
        system = next((t.name for t in ordered if t.kind == "system"), ordered[0].name)
        kernel = _existing(self.kernel_target, by_name, "dma.kernel_target") or system
        exporter = _existing(self.exporter_target, by_name, "dma.exporter_target") or kernel
        carveout = next((t for t in ordered if t.kind == "contiguous"), None)
        coherent = _pool(
            self.coherent_pool,
            by_name,
            "dma.coherent_pool",
            carveout,
            lambda t: min(DEFAULT_COHERENT_POOL_SIZE, t.size // 2 // SZ_4K * SZ_4K),
        )
        used = coherent.size if coherent is not None else 0
        atomic = _pool(
            self.atomic_pool,
            by_name,
            "dma.atomic_pool",
            by_name[coherent.target] if coherent is not None else None,
            lambda t: min(DEFAULT_ATOMIC_POOL_SIZE, t.size - used),
        )
        if coherent and atomic and coherent.target == atomic.target:
            total = by_name[atomic.target].size
            if coherent.size + atomic.size > total:
                raise PlatformError(
                    f"the coherent pool ({format_size(coherent.size)}) and the atomic pool "
                    f"({format_size(atomic.size)}) do not both fit in target "
                    f"{atomic.target!r} ({format_size(total)})",
                    key="dma.atomic_pool.size",
                )
        return MemoryRoles(
            kernel=kernel, exporter=exporter, coherent_pool=coherent, atomic_pool=atomic
        )


def _existing(name: str | None, by_name: dict[str, TargetSpec], key: str) -> str | None:
    if name is not None and name not in by_name:
        raise PlatformError(
            f"target {name!r} does not exist (targets: {', '.join(by_name)})", key=key
        )
    return name


def _pool(
    spec: PoolSpec,
    by_name: dict[str, TargetSpec],
    key: str,
    default: TargetSpec | None,
    default_size: Callable[[TargetSpec], int],
) -> PoolChoice | None:
    """The pool ``spec`` asks for (``default`` target and ``default_size(target)``
    filling what it leaves out), checked against its target; ``None`` for no pool."""
    if spec.size == 0:
        return None
    named = _existing(spec.target, by_name, f"{key}.target")
    target = by_name[named] if named is not None else default
    if target is None:
        if spec.size is None:
            return None
        raise PlatformError(
            "no target given and the platform has no 'contiguous' carve-out to default to",
            key=f"{key}.target",
        )
    if target.kind == "system":
        raise PlatformError(
            f"target {target.name!r} is system RAM, in the CPU's cacheable linear map; a "
            "non-cacheable pool there would alias it with another memory type (use a "
            "carve-out: a 'contiguous', 'blocks' or 'onchip' target)",
            key=f"{key}.target",
        )
    size = spec.size if spec.size is not None else default_size(target)
    if size <= 0:
        return None
    largest = max((p.block_size for p in target.blocks), default=target.size)
    if size > largest:
        what = "its largest block" if target.kind == "blocks" else "the target"
        raise PlatformError(
            f"{format_size(size)} does not fit in target {target.name!r}: {what} is "
            f"{format_size(largest)}",
            key=f"{key}.size",
        )
    return PoolChoice(target.name, size)
