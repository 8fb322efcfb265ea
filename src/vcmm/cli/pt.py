"""``vcmm pt dump DEVICE``: a device's page tables, decoded from memory into ranges."""

from __future__ import annotations

import json

import click

from vcmm.cli.common import PlatformChoice, platform_options
from vcmm.cli.topology import system_for
from vcmm.report.pagetables import bank_view, device_tables, render_dump


@click.group("pt")
def pt_group() -> None:
    """Page-table tools."""


@pt_group.command("dump")
@click.argument("device")
@click.option(
    "--scenario",
    "-s",
    default=None,
    help="Dump the tables at the end of this scenario (default: the demo's triple mapping).",
)
@platform_options
@click.option("--json", "as_json", is_flag=True, help="Print the ranges as JSON.")
def dump_command(
    device: str, scenario: str | None, platform: PlatformChoice, as_json: bool
) -> None:
    """Decode DEVICE's translation tables into mapped ranges.

    DEVICE is a device behind an SMMU (its context's tables) or `cpu` (the kernel's
    table).  Consecutive entries of one page size and the same attributes that are
    contiguous in both address spaces are merged: `760 x 4K` is one line.  For a
    device behind an SMMU the dump ends with its SMMU's register base, its bank and
    the bank's fault registers (FSR, FAR, FSYNR0, decoded with the ARM SMMUv2 names).
    """
    system, _, _ = system_for(scenario, platform)
    dumps = device_tables(system, device)
    view = bank_view(system, device)
    if as_json:
        data = [
            {
                "table": d.label,
                "root": d.root,
                "table_bytes": d.table_bytes,
                "ranges": [
                    {
                        "va": r.va,
                        "pa": r.pa,
                        "size": r.size,
                        "page_size": r.page_size,
                        "count": r.count,
                        "attrs": r.attrs,
                    }
                    for r in d.ranges
                ],
                **({"registers": view.to_dict()} if view is not None else {}),
            }
            for d in dumps
        ]
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render_dump(device, dumps))
    if view is not None:
        click.echo(view.describe())


COMMANDS = [pt_group]
