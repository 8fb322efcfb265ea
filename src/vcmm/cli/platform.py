"""``vcmm platform import`` and ``vcmm platform show``: boards from Linux devicetrees.

``import`` turns a ``.dtb`` (or a ``.dts``, with ``dtc`` installed) into a platform
TOML file that loads back equal; ``show`` prints what a platform file (devicetree or
TOML) holds: RAM, each IOMMU with its format and context banks, each master with its
stream IDs, reserved memory, coherent masters, bus offsets, and what an import
skipped and why.  Both take ``--json``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import click

from vcmm.platform import PlatformSpec, dumps_platform, load_platform
from vcmm.platform.devices import DeviceSpec
from vcmm.platform.devicetree import (
    IOMMU_MODELS,
    describe_stream,
    import_devicetree,
    is_devicetree_path,
)
from vcmm.sizes import format_size

_RAM_HELP = "RAM size for a memory bank the devicetree leaves at size 0 (e.g. 4G)."


def _read(path: str, ram: str | None) -> tuple[PlatformSpec, tuple[str, ...], tuple[str, ...]]:
    if is_devicetree_path(path):
        result = import_devicetree(path, ram=ram)
        return result.spec, result.notes, result.warnings
    return load_platform(path, ram=ram), (), ()


def _warn(warnings: tuple[str, ...]) -> None:
    for message in warnings:
        click.echo(f"vcmm: warning: {message}", err=True)


def describe(
    spec: PlatformSpec, notes: tuple[str, ...], warnings: tuple[str, ...]
) -> dict[str, Any]:
    """What ``show --json`` prints: the platform as its user reads it."""
    models = {s.name: IOMMU_MODELS.get(s.model) for s in spec.smmus}
    return {
        "platform": spec.name,
        "description": spec.description,
        "source": spec.source,
        "ram": [{"name": r.name, "base": r.range.start, "size": r.range.size} for r in spec.memory],
        "iommus": [
            {
                "name": s.name,
                "node": s.node,
                "model": s.model,
                "format": s.format,
                "context_banks": s.context_banks,
                "register_base": spec.register_base(s.name),
                "contexts": [c.name for c in s.contexts],
                "coherent_walk": s.coherent,
                "disabled": s.disabled,
            }
            for s in spec.smmus
        ],
        "masters": [_master(d, models) for d in spec.devices],
        "reserved": [
            {
                "name": r.name,
                "node": r.node,
                "base": r.range.start,
                "size": r.range.size,
                "no_map": r.no_map,
                "reusable": r.reusable,
                "dynamic": r.dynamic,
                "target": r.target,
            }
            for r in spec.reserved
        ],
        "targets": [
            {"name": t.name, "kind": t.kind, "base": t.base, "size": t.size} for t in spec.targets
        ],
        "page_tables": {"base": spec.page_tables.start, "size": spec.page_tables.size},
        "skipped": list(notes),
        "warnings": list(warnings),
    }


def _master(device: DeviceSpec, models: dict[str, Any]) -> dict[str, Any]:
    model = models.get(device.smmu or "")
    return {
        "name": device.name,
        "node": device.node,
        "kind": device.kind,
        "smmu": device.smmu,
        "context": device.context,
        "domain": device.domain,
        "streams": [describe_stream(model, s) if model else f"{s.id:#x}" for s in device.streams],
        "coherent": device.coherent,
        "disabled": device.disabled,
        "dma_mask": device.dma.mask,
        "bus_offsets": [{"bus": r.bus, "phys": r.phys, "size": r.size} for r in device.dma_ranges],
        "iommu_map": [
            {"rid_base": m.rid_base, "smmu": m.smmu, "sid_base": m.sid_base, "length": m.length}
            for m in device.iommu_map
        ],
        "memory_regions": list(device.memory_regions),
    }


def render(data: dict[str, Any]) -> str:
    """The text ``show`` prints (one section per kind of thing)."""
    lines = [f"platform {data['platform']}: {data['description']}", "", "RAM:"]
    lines += [f"  {r['name']:<24} {r['base']:#014x}  {format_size(r['size'])}" for r in data["ram"]]
    lines += ["", "IOMMUs:"]
    for s in data["iommus"]:
        flags = " (disabled)" * s["disabled"] + " (coherent walk)" * s["coherent_walk"]
        lines.append(
            f"  {s['name']:<24} {s['model'] or '-':<22} {s['format']:<7} "
            f"{s['context_banks']} context banks, {len(s['contexts'])} in use, "
            f"registers at {s['register_base']:#x}{flags}"
        )
    lines += ["", "Masters:"]
    for m in data["masters"]:
        where = f"{m['smmu']} {m['context']}" if m["kind"] == "smmu" else "direct"
        streams = f" streams {', '.join(m['streams'])}" if m["streams"] else ""
        flags = " coherent" * m["coherent"] + " DISABLED" * m["disabled"]
        lines.append(f"  {m['name']:<40} {where}{streams}{flags}")
        lines += [
            f"      dma-ranges: bus {o['bus']:#x} -> phys {o['phys']:#x} ({format_size(o['size'])})"
            for o in m["bus_offsets"]
        ]
        lines += [
            f"      iommu-map: RID {e['rid_base']:#x}+{e['length']} -> {e['smmu']} "
            f"stream {e['sid_base']:#x}"
            for e in m["iommu_map"]
        ]
    lines += _reserved_lines(data)
    if data["skipped"]:
        lines += ["", "Skipped or adjusted:", *(f"  {n}" for n in data["skipped"])]
    return "\n".join(lines)


def _reserved_lines(data: dict[str, Any]) -> list[str]:
    lines = ["", "Reserved memory:"]
    for r in data["reserved"]:
        how = ["no-map"] * r["no_map"] + ["reusable"] * r["reusable"] + ["placed"] * r["dynamic"]
        target = f" -> target {r['target']}" if r["target"] else ""
        lines.append(
            f"  {r['name']:<28} {r['base']:#014x}  {format_size(r['size']):<8} "
            f"{' '.join(how)}{target}"
        )
    lines += ["", "Targets:"]
    lines += [
        f"  {t['name']:<28} {t['kind']:<10} {t['base']:#014x}  {format_size(t['size'])}"
        for t in data["targets"]
    ]
    pt = data["page_tables"]
    lines.append(f"  {'(page tables)':<28} {'':<10} {pt['base']:#014x}  {format_size(pt['size'])}")
    return lines


@click.group("platform")
def platform_group() -> None:
    """Platform files: import Linux devicetrees, show what a platform holds."""


@platform_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the platform TOML.")  # fmt: skip
@click.option("--ram", default=None, help=_RAM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON.")
def import_command(file: str, output: str, ram: str | None, as_json: bool) -> None:
    """Import the devicetree FILE (.dtb, or .dts with dtc installed) as platform TOML."""
    if not is_devicetree_path(file):
        raise click.BadParameter(f"{file!r} is not a .dtb or .dts file", param_hint="FILE")
    result = import_devicetree(file, ram=ram)
    _warn(result.warnings)
    text = dumps_platform(result.spec)
    with open(output, "w", encoding="utf-8") as handle:
        handle.write(text)
    spec = result.spec
    if as_json:
        data = describe(spec, result.notes, result.warnings) | {"output": os.fspath(output)}
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(
        f"wrote {output}: {len(spec.devices)} masters, {len(spec.smmus)} IOMMUs, "
        f"{len(spec.reserved)} reserved regions, {len(spec.targets)} targets"
    )
    for note in result.notes:
        click.echo(f"  skipped or adjusted: {note}")


@platform_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--ram", default=None, help=_RAM_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print it as JSON.")
def show_command(file: str, ram: str | None, as_json: bool) -> None:
    """Show what the platform FILE (devicetree or TOML) holds, and what was skipped."""
    spec, notes, warnings = _read(file, ram)
    _warn(warnings)
    data = describe(spec, notes, warnings)
    click.echo(json.dumps(data, indent=2) if as_json else render(data))


COMMANDS = [platform_group]
