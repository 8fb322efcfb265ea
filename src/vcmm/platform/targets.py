"""Memory targets: the seed's named physical pools (000 L247-253), as platform records.

A target is ``system`` RAM (a buddy allocator inside the kernel's linear map), a
carve-out of fixed-size ``blocks`` (000 L276-292), a ``contiguous`` carve-out, an
``onchip`` SRAM pool, or a ``cma`` area (a devicetree's reusable DMA pool).  A ``blocks`` target's file table names block sizes as keys
(``blocks = { 1M = 64, 4K = 1024 }``), which :class:`BlockPools` reads into pools laid
out end to end from the target's base.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from vcmm.platform.codecs import (
    PAGE_SIZE,
    Address,
    Codec,
    Integer,
    Size,
    Text,
    check_window,
    parse_number,
)
from vcmm.platform.errors import PlatformError
from vcmm.platform.fields import Invalid, check_fields, is_dt_name, key, one_of
from vcmm.platform.toml_table import AnyKey, Pairs, Reading, TomlTable
from vcmm.ranges import AddressRange
from vcmm.sizes import SEED_BLOCK_SIZES, format_size

TARGET_KINDS: Final = ("system", "blocks", "contiguous", "onchip", "cma")
#: Default largest buddy order of a system target: 4K << 10 = 4M, as Linux's MAX_ORDER-1.
DEFAULT_MAX_ORDER: Final = 10
#: Largest buddy order accepted (4K << 20 = 4G): beyond that a "block" is a whole bank.
MAX_ORDER_LIMIT: Final = 20

_SEED_SIZES: Final = ", ".join(format_size(s) for s in SEED_BLOCK_SIZES)


def _seed_block_size(value: object) -> None:
    if value not in SEED_BLOCK_SIZES:
        raise Invalid(f"block size {value!r} is not one of {_SEED_SIZES}")


@dataclass(frozen=True, slots=True)
class BlockPoolSpec:
    """``count`` blocks of ``block_size`` bytes from ``base``; blocks are never split."""

    block_size: int = field(metadata=key(Size(), _seed_block_size))
    count: int = field(metadata=key(Integer(minimum=1)))
    base: int = field(metadata=key(Address()))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if self.base % self.block_size:
            raise PlatformError(
                f"pool of {format_size(self.block_size)} blocks at {self.base:#x} is not "
                f"aligned to {format_size(self.block_size)}",
                key="base",
            )

    @property
    def size(self) -> int:
        return self.block_size * self.count

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.base, self.size)


def layout_block_pools(base: int, counts: dict[int, int]) -> tuple[BlockPoolSpec, ...]:
    """Lay pools out from ``base``, largest blocks first, end to end.

    Largest first means that when ``base`` is aligned to the largest block every later
    pool is aligned too; otherwise :class:`BlockPoolSpec` names the pool that is not.
    """
    pools: list[BlockPoolSpec] = []
    cursor = base
    for block_size in sorted(counts, reverse=True):
        try:
            pool = BlockPoolSpec(block_size, counts[block_size], cursor)
        except PlatformError as err:
            raise err.within(f"blocks.{format_size(block_size)}") from None
        pools.append(pool)
        cursor = pool.range.end
    return tuple(pools)


class BlockPools(Codec):
    """``blocks = { 1M = 64, 4K = 1024 }``: block size -> count, laid out from the
    target's ``base`` (:func:`layout_block_pools`)."""

    layout = "table"
    noun = "table"

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[BlockPoolSpec, ...]:
        blocks = table.table(key, AnyKey())
        counts: dict[int, int] = {}
        written: dict[int, str] = {}
        for size_key, raw in blocks.data.items():
            fail = functools.partial(blocks.error, size_key)
            block_size = parse_number(size_key, "block size", fail)
            if block_size not in SEED_BLOCK_SIZES:
                raise fail(f"block size {size_key!r} is not one of {_SEED_SIZES}")
            if block_size in counts:
                raise fail(f"block size {size_key!r} repeats {written[block_size]!r}")
            counts[block_size] = blocks.checked_integer(size_key, raw)
            written[block_size] = size_key
        return table.build(layout_block_pools, base=reading.value("base"), counts=counts)

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise Invalid(f"expected a tuple of BlockPoolSpec, got {value!r}")
        for index, pool in enumerate(value):
            if not isinstance(pool, BlockPoolSpec):
                raise Invalid(f"expected a BlockPoolSpec, got {pool!r}", f"[{index}]")

    def rows(self, value: tuple[BlockPoolSpec, ...]) -> list[Pairs]:
        return [[(format_size(p.block_size), str(p.count)) for p in value]]


def _size_forbidden(values: Mapping[str, object]) -> str | None:
    if values.get("kind") == "blocks":
        return "a 'blocks' target takes its size from its pools"
    return None


def _blocks_forbidden(values: Mapping[str, object]) -> str | None:
    kind = values.get("kind")
    if kind != "blocks":
        return f"only a target of kind 'blocks' has block pools, not kind {kind!r}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class TargetSpec:
    """A memory target: a named physical pool of one of four kinds.

    - ``system``: kernel-managed RAM handed out by a buddy allocator (orders 0 to
      ``max_order``); it lies inside the CPU's cacheable linear map.
    - ``blocks``: a carve-out of pools of fixed 4K/64K/1M/16M blocks (000 L276-292),
      ``blocks`` laid out from ``base`` largest first; ``size`` is their total.
    - ``contiguous``: a carve-out handing out physically contiguous runs.
    - ``onchip``: a pool over on-chip SRAM (the seed's "special" memory).
    - ``cma``: a devicetree ``reusable`` ``shared-dma-pool`` (Linux's Contiguous Memory
      Allocator area).  Booted as a contiguous carve-out outside the linear map:
      lending its free pages to the system allocator is not modelled yet.
    """

    name: str = field(metadata=key(Text(), is_dt_name))
    kind: str = field(metadata=key(Text(), one_of(TARGET_KINDS)))
    base: int = field(metadata=key(Address()))
    size: int = field(default=0, metadata=key(Size(), forbid=_size_forbidden))
    blocks: tuple[BlockPoolSpec, ...] = field(
        default=(), metadata=key(BlockPools(), forbid=_blocks_forbidden)
    )
    max_order: int | None = field(default=None, metadata=key(Integer()))

    def __post_init__(self) -> None:
        check_fields(self, PlatformError)
        if self.kind == "blocks":
            self._check_pools()
        else:
            self._check_window()
        if self.kind == "system":
            if self.max_order is None:
                object.__setattr__(self, "max_order", DEFAULT_MAX_ORDER)
            elif self.max_order > MAX_ORDER_LIMIT:
                raise PlatformError(
                    f"max_order {self.max_order} is above the limit {MAX_ORDER_LIMIT}",
                    key="max_order",
                )
        elif self.max_order is not None:
            raise PlatformError(
                f"only a target of kind 'system' has a max_order, not kind {self.kind!r}",
                key="max_order",
            )

    def _check_window(self) -> None:
        problem = _blocks_forbidden({"kind": self.kind}) if self.blocks else None
        if problem is not None:
            raise PlatformError(problem, key="blocks")
        if self.base % PAGE_SIZE:
            raise PlatformError(
                f"base {self.base:#x} is not {format_size(PAGE_SIZE)} aligned", key="base"
            )
        try:
            check_window(AddressRange(self.base, self.size))
        except Invalid as err:
            raise PlatformError(err.problem, key="size") from None

    def _check_pools(self) -> None:
        if not self.blocks:
            raise PlatformError("a target of kind 'blocks' needs at least one pool", key="blocks")
        for previous, pool in zip(self.blocks, self.blocks[1:], strict=False):
            if pool.block_size >= previous.block_size:
                raise PlatformError(
                    f"pools must be laid out largest block first with one pool per size; "
                    f"{format_size(pool.block_size)} follows {format_size(previous.block_size)}",
                    key=f"blocks.{format_size(pool.block_size)}",
                )
        cursor = self.base
        for pool in self.blocks:
            if pool.base != cursor:
                raise PlatformError(
                    f"pool base {pool.base:#x} should be {cursor:#x}: pools lie end to end "
                    f"from the target base {self.base:#x}",
                    key=f"blocks.{format_size(pool.block_size)}",
                )
            cursor = pool.range.end
        total = cursor - self.base
        if self.size == 0:
            object.__setattr__(self, "size", total)
        elif self.size != total:
            raise PlatformError(
                f"size {self.size:#x} differs from the pools' total {total:#x}", key="size"
            )

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.base, self.size)
