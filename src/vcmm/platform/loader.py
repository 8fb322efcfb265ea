"""Read platform files (TOML) into :class:`~vcmm.platform.schema.PlatformSpec`.

The loader owns the file's shape: which keys exist where (a misspelt key is an error
with a suggestion, never silently ignored), which are required, their types, and the
size notation (``"2M+4K"``, ``"64K"``, ``"0x1000"`` or plain integers).  The rules about
what the values mean (overlaps, references, alignment) live in the schema classes; the
loader re-raises their errors with the file name and the full key path, so every
message reads ``board.toml: smmus[0].tlb.ways: ways 5 does not divide entries 64``.

:func:`dumps_platform` writes a description back in the same format; loading its output
gives an equal description, which is how the default file and the docs are checked.
"""

from __future__ import annotations

import enum
import functools
import json
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterator, Mapping
from importlib import resources
from typing import Any, Final, TypeVar

from vcmm.errors import InvalidArgumentError
from vcmm.hw.memory import MemoryRegion
from vcmm.mm.iova_policy import DEFAULT_IOVA_POLICY
from vcmm.platform.dmamem import DmaMemorySpec, PoolSpec
from vcmm.platform.errors import PlatformError, join_key
from vcmm.platform.schema import (
    ADDRESS_LIMIT,
    CacheSpec,
    ContextSpec,
    CpuSpec,
    DeviceSpec,
    DmaRange,
    DmaSpec,
    PlatformSpec,
    SmmuSpec,
    TargetSpec,
    TlbSpec,
    layout_block_pools,
)
from vcmm.platform.toml_table import TomlTable, type_name
from vcmm.ranges import AddressRange
from vcmm.sizes import SEED_BLOCK_SIZES, format_size, parse_size

#: Where the default platform lives inside the ``vcmm`` package.
DEFAULT_RESOURCE: Final = "platforms/default.toml"
#: The ``source`` of the default platform.
DEFAULT_SOURCE: Final = "<default>"

_T = TypeVar("_T")


class _Required(enum.Enum):
    REQUIRED = 0


REQUIRED: Final = _Required.REQUIRED

# The keys each table may hold; anything else is reported as unknown.
_TOP_KEYS = (
    "name",
    "description",
    "target_priority",
    "iova_policy",
    "memory",
    "cpu",
    "page_tables",
    "targets",
    "smmus",
    "devices",
    "dma",
)
_REGION_KEYS = ("name", "kind", "base", "size")
_WINDOW_KEYS = ("base", "size")
_CPU_KEYS = ("cache", "tlb", "linear_map", "linear_map_va", "vmalloc", "prefetch_seed")
_CACHE_KEYS = ("size", "ways", "line")
_TLB_KEYS = ("entries", "ways", "replacement")
_TARGET_KEYS = ("name", "kind", "base", "size", "blocks", "max_order")
_SMMU_KEYS = ("name", "format", "context_banks", "tlb", "contexts")
_CONTEXT_KEYS = ("name", "bank", "tree_name")
_DEVICE_KEYS = ("name", "kind", "smmu", "context", "domain", "coherent", "dma_ranges", "dma")
_DMA_KEYS = ("mask", "coherent_mask", "max_segment_size", "segment_boundary_mask")
_RANGE_KEYS = ("bus", "phys", "size")
_DMA_MEMORY_KEYS = ("kernel_target", "exporter_target", "coherent_pool", "atomic_pool")
_POOL_KEYS = ("target", "size")


class _Table(TomlTable):
    """One platform table being read; its problems are :class:`PlatformError`."""

    def error(self, key: str, problem: str) -> PlatformError:
        return PlatformError(problem, key=join_key(self.path, key), source=self.source)

    def _raw(self, key: str, default: object) -> object:
        if key in self.data:
            return self.data[key]
        if default is REQUIRED:
            raise self.error(key, f"missing required key {key!r}")
        return default

    def string(self, key: str, default: str | _Required = REQUIRED) -> str:
        return self.checked_string(key, self._raw(key, default))

    def optional_string(self, key: str) -> str | None:
        return None if key not in self.data else self.string(key)

    def boolean(self, key: str, default: bool | _Required = REQUIRED) -> bool:
        return self.checked_boolean(key, self._raw(key, default))

    def integer(self, key: str, default: int | _Required = REQUIRED) -> int:
        return self.checked_integer(key, self._raw(key, default))

    def optional_integer(self, key: str) -> int | None:
        return None if key not in self.data else self.integer(key)

    def size(self, key: str, default: int | _Required = REQUIRED) -> int:
        return self._number(key, default, "size")

    def address(self, key: str, default: int | _Required = REQUIRED) -> int:
        return self._number(key, default, "address")

    def _number(self, key: str, default: int | _Required, what: str) -> int:
        value = self._raw(key, default)
        return parse_number(value, what, lambda problem: self.error(key, problem))

    def table(self, key: str, allowed: Collection[str]) -> _Table:
        """A sub-table; missing means empty, so its keys take their defaults."""
        return _Table(self.data.get(key, {}), self.child(key), self.source, allowed)

    def tables(self, key: str, allowed: Collection[str], *, required: bool = False) -> list[_Table]:
        """An array of tables (``[[memory]]`` or an inline ``[{...}, {...}]``)."""
        value = self._raw(key, REQUIRED if required else [])
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of tables, got {type_name(value)} {value!r}")
        return [
            _Table(item, f"{self.child(key)}[{index}]", self.source, allowed)
            for index, item in enumerate(value)
        ]

    def strings(self, key: str) -> list[str]:
        value = self._raw(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of strings, got {type_name(value)} {value!r}")
        for index, item in enumerate(value):
            self.checked_string(f"{key}[{index}]", item)
        return value

    def build(self, factory: Callable[..., _T], /, **kwargs: Any) -> _T:
        """Construct a schema value; its validation errors get this table's path."""
        try:
            return factory(**kwargs)
        except PlatformError as err:
            raise err.within(self.path, self.source) from None


#: An underscore between two digits ("0x8000_0000"); SZ_1M keeps its underscore.
_DIGIT_SEPARATOR = re.compile(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])")


def parse_number(
    value: object,
    what: str,
    fail: Callable[[str], Exception] | None = None,
) -> int:
    """Parse a size or address written as an integer or a string ("2M+4K", "0x8000_0000").

    Underscores between digits are accepted in strings as TOML accepts them in integers.
    """

    def problem(text: str) -> Exception:
        return fail(text) if fail else InvalidArgumentError(text)

    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem(f"expected an {what} (integer or string), got {type_name(value)} {value!r}")
    try:
        number = parse_size(_DIGIT_SEPARATOR.sub("", value) if isinstance(value, str) else value)
    except InvalidArgumentError as err:
        raise problem(f"bad {what} {value!r}: {err}") from None
    if number >= ADDRESS_LIMIT:
        raise problem(f"{what} {value!r} does not fit in 64 bits")
    return number


# -- the tables ------------------------------------------------------------------------------


def _window(table: _Table) -> AddressRange:
    base, size = table.address("base"), table.size("size")
    return table.build(AddressRange, start=base, size=size)


def _region(table: _Table) -> MemoryRegion:
    window = _window(table)
    return table.build(
        MemoryRegion, name=table.string("name"), range=window, kind=table.string("kind", "ram")
    )


def _tlb(table: _Table) -> TlbSpec:
    defaults = TlbSpec()
    return table.build(
        TlbSpec,
        entries=table.integer("entries", defaults.entries),
        ways=table.integer("ways", defaults.ways),
        replacement=table.string("replacement", defaults.replacement),
    )


def _cpu(table: _Table, targets: tuple[TargetSpec, ...]) -> CpuSpec:
    cache_table = table.table("cache", _CACHE_KEYS)
    default_cache = CacheSpec()
    cache = cache_table.build(
        CacheSpec,
        size=cache_table.size("size", default_cache.size),
        ways=cache_table.integer("ways", default_cache.ways),
        line=cache_table.size("line", default_cache.line),
    )
    defaults = CpuSpec()
    if "linear_map" in table.data:
        linear_map = tuple(_window(t) for t in table.tables("linear_map", _WINDOW_KEYS))
    else:
        # Kernel-managed RAM is exactly what the kernel maps: the system targets.
        linear_map = tuple(t.range for t in targets if t.kind == "system")
    vmalloc = _window(table.table("vmalloc", _WINDOW_KEYS)) if "vmalloc" in table.data else None
    return table.build(
        CpuSpec,
        cache=cache,
        tlb=_tlb(table.table("tlb", _TLB_KEYS)),
        linear_map=linear_map,
        linear_map_va=table.address("linear_map_va", defaults.linear_map_va),
        vmalloc=vmalloc or defaults.vmalloc,
        prefetch_seed=table.optional_integer("prefetch_seed"),
    )


def _target(table: _Table) -> TargetSpec:
    name, kind, base = table.string("name"), table.string("kind"), table.address("base")
    if kind == "blocks":
        if "size" in table.data:
            raise table.error("size", "a 'blocks' target takes its size from its pools")
        blocks = table.table("blocks", _AnyKey())
        counts: dict[int, int] = {}
        written: dict[int, str] = {}
        for key in blocks.data:
            block_size = parse_number(key, "block size", functools.partial(blocks.error, key))
            if block_size not in SEED_BLOCK_SIZES:
                raise blocks.error(
                    key,
                    f"block size {key!r} is not one of "
                    f"{', '.join(format_size(s) for s in SEED_BLOCK_SIZES)}",
                )
            if block_size in counts:
                raise blocks.error(key, f"block size {key!r} repeats {written[block_size]!r}")
            counts[block_size], written[block_size] = blocks.integer(key), key
        pools = table.build(layout_block_pools, base=base, counts=counts)
        return table.build(TargetSpec, name=name, kind=kind, base=base, blocks=pools)
    if "blocks" in table.data:
        raise table.error(
            "blocks", f"only a target of kind 'blocks' has block pools, not kind {kind!r}"
        )
    return table.build(
        TargetSpec,
        name=name,
        kind=kind,
        base=base,
        size=table.size("size"),
        max_order=table.optional_integer("max_order"),
    )


class _AnyKey(Collection[str]):
    """Every key is allowed in a ``blocks`` table: its keys are sizes, checked one by one."""

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _smmu(table: _Table, next_tree_index: int) -> SmmuSpec:
    contexts = tuple(
        ctx.build(
            ContextSpec,
            name=ctx.string("name"),
            bank=ctx.integer("bank"),
            tree_name=ctx.string("tree_name", f"ctx{next_tree_index + index}"),
        )
        for index, ctx in enumerate(table.tables("contexts", _CONTEXT_KEYS))
    )
    return table.build(
        SmmuSpec,
        name=table.string("name"),
        format=table.string("format", "armv7s"),
        context_banks=table.integer("context_banks"),
        tlb=_tlb(table.table("tlb", _TLB_KEYS)),
        contexts=contexts,
    )


def _device(table: _Table) -> DeviceSpec:
    dma_table = table.table("dma", _DMA_KEYS)
    defaults = DmaSpec()
    mask = dma_table.address("mask", defaults.mask)
    dma = dma_table.build(
        DmaSpec,
        mask=mask,
        coherent_mask=dma_table.address("coherent_mask", mask),
        max_segment_size=dma_table.size("max_segment_size", defaults.max_segment_size),
        segment_boundary_mask=dma_table.address(
            "segment_boundary_mask", defaults.segment_boundary_mask
        ),
    )
    ranges = tuple(
        entry.build(
            DmaRange,
            bus=entry.address("bus"),
            phys=entry.address("phys"),
            size=entry.size("size"),
        )
        for entry in table.tables("dma_ranges", _RANGE_KEYS)
    )
    return table.build(
        DeviceSpec,
        name=table.string("name"),
        kind=table.string("kind"),
        smmu=table.optional_string("smmu"),
        context=table.optional_string("context"),
        domain=table.optional_string("domain"),
        coherent=table.boolean("coherent", False),
        dma_ranges=ranges,
        dma=dma,
    )


def _pool(table: _Table) -> PoolSpec:
    size = table.size("size") if "size" in table.data else None
    return table.build(PoolSpec, target=table.optional_string("target"), size=size)


def _dma_memory(table: _Table) -> DmaMemorySpec:
    return table.build(
        DmaMemorySpec,
        kernel_target=table.optional_string("kernel_target"),
        exporter_target=table.optional_string("exporter_target"),
        coherent_pool=_pool(table.table("coherent_pool", _POOL_KEYS)),
        atomic_pool=_pool(table.table("atomic_pool", _POOL_KEYS)),
    )


def _platform(data: dict[str, Any], source: str) -> PlatformSpec:
    top = _Table(data, "", source, _TOP_KEYS)
    memory = tuple(_region(t) for t in top.tables("memory", _REGION_KEYS, required=True))
    targets = tuple(_target(t) for t in top.tables("targets", _TARGET_KEYS, required=True))
    if "page_tables" not in data:
        raise top.error("page_tables", "missing required table 'page_tables'")
    page_tables = _window(top.table("page_tables", _WINDOW_KEYS))
    cpu = _cpu(top.table("cpu", _CPU_KEYS), targets)
    smmus: list[SmmuSpec] = []
    tree_index = 0
    for table in top.tables("smmus", _SMMU_KEYS):
        smmus.append(_smmu(table, tree_index))
        tree_index += len(smmus[-1].contexts)
    devices = tuple(_device(t) for t in top.tables("devices", _DEVICE_KEYS))
    dma = _dma_memory(top.table("dma", _DMA_MEMORY_KEYS))
    return top.build(
        PlatformSpec,
        name=top.string("name"),
        description=top.string("description", ""),
        memory=memory,
        cpu=cpu,
        page_tables=page_tables,
        targets=targets,
        target_priority=tuple(top.strings("target_priority")),
        smmus=tuple(smmus),
        devices=devices,
        iova_policy=top.string("iova_policy", DEFAULT_IOVA_POLICY),
        dma=dma,
        source=source,
    )


# -- public entry points -------------------------------------------------------------------


def loads_platform(text: str, source: str = "<string>") -> PlatformSpec:
    """Parse platform TOML ``text``; ``source`` names it in error messages."""
    if not isinstance(text, str):
        raise PlatformError(
            f"platform text must be a str, got {type(text).__name__}", source=source
        )
    if not isinstance(source, str):
        raise PlatformError(f"source must be a str, got {source!r}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PlatformError(f"not valid TOML: {err}", source=source) from None
    return _platform(data, source)


def load_platform(path: str | os.PathLike[str]) -> PlatformSpec:
    """Read a platform file; a missing or unreadable file is a :class:`PlatformError`."""
    if not isinstance(path, str | os.PathLike):
        raise PlatformError(f"platform path must be a str or path, got {path!r}")
    name = os.fspath(path)
    try:
        with open(name, "rb") as handle:
            raw = handle.read()
    except OSError as err:
        raise PlatformError(
            f"cannot read platform file: {err.strerror or err}", source=name
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PlatformError(f"platform file is not UTF-8: {err}", source=name) from None
    return loads_platform(text, source=name)


@functools.cache
def load_default() -> PlatformSpec:
    """The platform shipped inside the package (an MSM-class SoC, see docs/PLATFORM.md)."""
    text = resources.files("vcmm").joinpath(DEFAULT_RESOURCE).read_text(encoding="utf-8")
    return loads_platform(text, source=DEFAULT_SOURCE)


# -- writing ---------------------------------------------------------------------------------


def _hex(value: int) -> str:
    """``0x8000_0000``: grouped by 16 bits; values >= 2^63 as strings (TOML ints are 64-bit)."""
    digits = f"{value:x}"
    groups: list[str] = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    text = "0x" + "_".join(groups)
    return json.dumps(text) if value >= 1 << 63 else text


def _size(value: int) -> str:
    return json.dumps(format_size(value))


def _str(value: str) -> str:
    return json.dumps(value)


def _inline(pairs: Mapping[str, str]) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in pairs.items()) + " }"


def _window_pairs(window: AddressRange) -> dict[str, str]:
    return {"base": _hex(window.start), "size": _size(window.size)}


def dumps_platform(spec: PlatformSpec) -> str:
    """Write ``spec`` as platform TOML that :func:`loads_platform` reads back equal."""
    if not isinstance(spec, PlatformSpec):
        raise InvalidArgumentError(f"dumps_platform needs a PlatformSpec, got {spec!r}")
    out = [
        f"name = {_str(spec.name)}",
        f"description = {_str(spec.description)}",
        f"target_priority = [{', '.join(_str(n) for n in spec.target_priority)}]",
    ]
    if spec.iova_policy != DEFAULT_IOVA_POLICY:
        out.append(f"iova_policy = {_str(spec.iova_policy)}")
    for region in spec.memory:
        out += ["", "[[memory]]", f"name = {_str(region.name)}", f"kind = {_str(region.kind)}"]
        out += [f"{k} = {v}" for k, v in _window_pairs(region.range).items()]
    cpu = spec.cpu
    out += ["", "[cpu]"]
    windows = ", ".join(_inline(_window_pairs(w)) for w in cpu.linear_map)
    out += [f"linear_map = [{windows}]", f"linear_map_va = {_hex(cpu.linear_map_va)}"]
    out.append(f"vmalloc = {_inline(_window_pairs(cpu.vmalloc))}")
    if cpu.prefetch_seed is not None:
        out.append(f"prefetch_seed = {cpu.prefetch_seed}")
    c, t = cpu.cache, cpu.tlb
    out.append(
        f"cache = {_inline({'size': _size(c.size), 'ways': str(c.ways), 'line': str(c.line)})}"
    )
    out.append(f"tlb = {_tlb_inline(t)}")
    out += ["", "[page_tables]"]
    out += [f"{k} = {v}" for k, v in _window_pairs(spec.page_tables).items()]
    for target in spec.targets:
        out += ["", "[[targets]]", f"name = {_str(target.name)}", f"kind = {_str(target.kind)}"]
        out.append(f"base = {_hex(target.base)}")
        if target.kind == "blocks":
            counts = {format_size(p.block_size): str(p.count) for p in target.blocks}
            out.append(f"blocks = {_inline(counts)}")
        else:
            out.append(f"size = {_size(target.size)}")
        if target.max_order is not None:
            out.append(f"max_order = {target.max_order}")
    for smmu in spec.smmus:
        out += ["", "[[smmus]]", f"name = {_str(smmu.name)}", f"format = {_str(smmu.format)}"]
        out += [f"context_banks = {smmu.context_banks}", f"tlb = {_tlb_inline(smmu.tlb)}"]
        out.append("contexts = [")
        for ctx in smmu.contexts:
            pairs = {"name": _str(ctx.name), "bank": str(ctx.bank)}
            out.append(f"    {_inline(pairs | {'tree_name': _str(ctx.tree_name)})},")
        out.append("]")
    for device in spec.devices:
        out += ["", "[[devices]]", f"name = {_str(device.name)}", f"kind = {_str(device.kind)}"]
        for key in ("smmu", "context", "domain"):
            value = getattr(device, key)
            if value is not None:
                out.append(f"{key} = {_str(value)}")
        out.append(f"coherent = {'true' if device.coherent else 'false'}")
        if device.dma_ranges:
            entries = (
                _inline({"bus": _hex(r.bus), "phys": _hex(r.phys), "size": _size(r.size)})
                for r in device.dma_ranges
            )
            out.append(f"dma_ranges = [{', '.join(entries)}]")
        d = device.dma
        dma = {
            "mask": _hex(d.mask),
            "coherent_mask": _hex(d.coherent_mask),
            "max_segment_size": _size(d.max_segment_size),
            "segment_boundary_mask": _hex(d.segment_boundary_mask),
        }
        out.append(f"dma = {_inline(dma)}")
    return "\n".join(out + _dma_memory_lines(spec.dma)) + "\n"


def _dma_memory_lines(dma: DmaMemorySpec) -> list[str]:
    """The ``[dma]`` table, with only what was declared (the rest stays derived)."""
    if not dma.declared:
        return []
    out = ["", "[dma]"]
    for key, name in (
        ("kernel_target", dma.kernel_target),
        ("exporter_target", dma.exporter_target),
    ):
        if name is not None:
            out.append(f"{key} = {_str(name)}")
    for key, pool in (("coherent_pool", dma.coherent_pool), ("atomic_pool", dma.atomic_pool)):
        pairs = {} if pool.target is None else {"target": _str(pool.target)}
        if pool.size is not None:
            pairs["size"] = _size(pool.size) if pool.size else "0"
        if pairs:
            out.append(f"{key} = {_inline(pairs)}")
    return out


def _tlb_inline(tlb: TlbSpec) -> str:
    return _inline(
        {"entries": str(tlb.entries), "ways": str(tlb.ways), "replacement": _str(tlb.replacement)}
    )
