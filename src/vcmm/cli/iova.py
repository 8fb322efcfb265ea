"""``vcmm iova CALLS...``: where each IOVA placement policy puts a sequence of mappings.

IOVA layouts differ between the 2015 allocator the seed used and mainline Linux (size
rounding, the magazine cache, the failure hint), and ``vcmm run`` scenarios map
through seed VCM calls, not the DMA API, so they never show IOVAs.  This command
replays ``map_page`` / ``unmap_page`` calls through the real DMA API on one device,
once per policy on a freshly booted system, and prints the handles side by side with
what each domain's range cache holds at the end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TypeAlias

import click

from vcmm.attrs import DmaDirection
from vcmm.core.flags import PhysAttr
from vcmm.dma import DmaApi
from vcmm.mm.iova import IovaDomain
from vcmm.mm.iova_linux import LinuxIovaDomain
from vcmm.mm.iova_policy import IOVA_POLICIES
from vcmm.platform import PlatformSpec, load_default, load_platform
from vcmm.sizes import format_size, parse_size
from vcmm.system import System

#: The issue's example: one page, then three.
DEFAULT_CALLS = ("4K", "12K")


@dataclass(frozen=True)
class Call:
    """``map SIZE`` or ``unmap #N`` (the N-th call, a map)."""

    size: int = 0
    unmap: int = 0

    def __str__(self) -> str:
        return f"unmap #{self.unmap}" if self.unmap else f"map {format_size(self.size)}"


#: What a domain's range cache holds after the calls: counts, and for the ``linux``
#: policy its hint and each order's magazine fill (JSON-ready).
CacheState: TypeAlias = dict[str, int | list[dict[str, int]]]


@dataclass
class Replay:
    """One policy's run: a handle (or ``None`` and why) per call, and the cache after."""

    policy: str
    handles: list[int | None] = field(default_factory=list)
    errors: list[str | None] = field(default_factory=list)
    cache: CacheState = field(default_factory=dict)


def parse_calls(tokens: tuple[str, ...]) -> list[Call]:
    """``4K``, ``0x3000``, ``2M+4K`` map that many bytes; ``unmap:N`` unmaps call N."""
    calls: list[Call] = []
    for index, token in enumerate(tokens or DEFAULT_CALLS, start=1):
        if token.lower().startswith("unmap:"):
            target = token.split(":", 1)[1]
            if not target.isdigit() or not 1 <= int(target) < index:
                raise click.BadParameter(
                    f"{token!r}: N in unmap:N must be the number of an earlier call (1..{index - 1})",
                    param_hint="CALLS",
                )
            if calls[int(target) - 1].unmap:
                raise click.BadParameter(
                    f"{token!r}: call {target} is an unmap", param_hint="CALLS"
                )
            calls.append(Call(unmap=int(target)))
            continue
        size = parse_size(token)
        if size == 0:
            raise click.BadParameter(
                f"{token!r}: a mapping needs at least one byte", param_hint="CALLS"
            )
        calls.append(Call(size=size))
    return calls


def replay(
    spec: PlatformSpec, device: str, policy: str, calls: list[Call], mask: int | None
) -> Replay:
    """Boot ``spec``, give only ``device`` DMA ops under ``policy`` and make the calls."""
    system = System(spec)
    dma = DmaApi(system, devices=[device], iova_policy=policy)
    domain = dma.domain(device)
    if domain is None:
        raise click.BadParameter(
            f"{device!r} is physically addressed (bus addresses, no IOVAs); choose a device "
            "behind an SMMU",
            param_hint="--device",
        )
    if mask is not None:
        dma.set_mask(device, mask)
    ram = next((t.name for t in spec.targets if t.kind == "system"), None)
    if ram is None:
        raise click.BadParameter(
            f"platform {spec.name!r} has no system RAM target to take buffers from",
            param_hint="--platform",
        )
    total = sum(c.size for c in calls)
    base = system.vcm_phys_alloc(ram, total, PhysAttr.CONTIGUOUS).chunk_ranges[0].start
    out, offset = Replay(policy), 0
    for call in calls:
        if call.unmap:
            handle = out.handles[call.unmap - 1]
            if handle is not None:
                dma.unmap_page(
                    device, handle, calls[call.unmap - 1].size, DmaDirection.BIDIRECTIONAL
                )
            out.handles.append(handle)
            out.errors.append(None if handle is not None else "nothing was mapped")
            continue
        handle = dma.map_page(device, base + offset, 0, call.size, DmaDirection.BIDIRECTIONAL)
        offset += call.size
        failed = dma.mapping_error(device, handle)
        out.handles.append(None if failed else handle)
        out.errors.append(str(dma.last_error) if failed else None)
    out.cache = _cache_state(domain.iova)
    return out


def _cache_state(iova: IovaDomain | LinuxIovaDomain) -> CacheState:
    counters = iova.counters
    state: CacheState = {
        "cached": iova.cached_count,
        "allocs": counters.allocs,
        "frees": counters.frees,
        "rcache_hits": counters.rcache_hits,
        "rcache_misses": counters.rcache_misses,
        "rcache_flushes": counters.rcache_flushes,
    }
    if isinstance(iova, LinuxIovaDomain):
        state["max32_alloc_size"] = iova.max32_alloc_size
        state["magazines"] = [
            {"order": order, "loaded": len(b.loaded), "prev": len(b.prev), "depot": len(b.depot)}
            for order, b in enumerate(iova.rcache_state())
        ]
    return state


def render(spec: PlatformSpec, device: str, calls: list[Call], runs: list[Replay]) -> str:
    lines = [
        f"IOVA placement on platform {spec.name}, device {device} "
        f"(platform iova_policy = {spec.iova_policy!r})",
        "",
        (f"{'#':>3}  {'call':<12}" + "".join(f"  {r.policy:<12}" for r in runs)).rstrip(),
    ]
    for i, call in enumerate(calls):
        cells = "".join(f"  {_handle(r.handles[i]):<12}" for r in runs)
        lines.append(f"{i + 1:>3}  {call!s:<12}{cells}".rstrip())
    for r in runs:
        for i, error in enumerate(r.errors):
            if error is not None and not calls[i].unmap:
                lines.append(f"  {r.policy}, call {i + 1}: {error}")
    lines += ["", "range cache after the calls:"]
    for r in runs:
        c = r.cache
        text = (
            f"  {r.policy:<6} {c['cached']} cached range(s); {c['allocs']} allocs, {c['frees']} "
            f"frees, {c['rcache_hits']} hits, {c['rcache_misses']} misses, "
            f"{c['rcache_flushes']} flushes"
        )
        magazines = c.get("magazines")
        if isinstance(magazines, list):  # the linux policy's
            used = [m for m in magazines if m["loaded"] or m["prev"] or m["depot"]]
            mags = ", ".join(
                f"order {m['order']}: {m['loaded']} loaded, {m['prev']} prev, {m['depot']} depot"
                for m in used
            )
            text += f"; max32_alloc_size {c['max32_alloc_size']:#x}" + (f"; {mags}" if mags else "")
        lines.append(text)
    return "\n".join(lines)


def _handle(handle: int | None) -> str:
    return "failed" if handle is None else f"{handle:#x}"


@click.command("iova")
@click.argument("calls", nargs=-1)
@click.option(
    "--platform",
    "platform_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Platform file: TOML, .dtb or .dts (default: the embedded platform).",
)
@click.option("--ram", default=None,
              help="RAM size for a devicetree bank of size 0 (with --platform).")  # fmt: skip
@click.option("--device", "-d", default="vcodec_a_mm1", show_default=True,
              help="A device behind an SMMU.")  # fmt: skip
@click.option("--policy", "-p", "policies", multiple=True, type=click.Choice(IOVA_POLICIES),
              help="Policy to replay (repeatable; default: both).")  # fmt: skip
@click.option("--mask", default=None, help="DMA mask for the device, e.g. 0xffffff.")
@click.option("--json", "as_json", is_flag=True, help="Print the handles as JSON.")
def iova_command(
    calls: tuple[str, ...],
    platform_file: str | None,
    ram: str | None,
    device: str,
    policies: tuple[str, ...],
    mask: str | None,
    as_json: bool,
) -> None:
    """Replay map_page/unmap_page CALLS under each IOVA placement policy.

    A CALL is a size to map (`4K`, `12K`, `0x3000`, `1M+4K`) or `unmap:N`, which
    unmaps the mapping made by call N.  Without CALLS: `4K 12K`, where mainline Linux
    (0xffff8000) and the seed (0xffffc000) already disagree.
    """
    if ram is not None and not platform_file:
        raise click.BadParameter("--ram needs --platform FILE", param_hint="--ram")
    spec = load_platform(platform_file, ram=ram) if platform_file else load_default()
    parsed = parse_calls(calls)
    try:
        mask_value = None if mask is None else int(mask, 0)
    except ValueError:
        raise click.BadParameter(f"{mask!r} is not an integer", param_hint="--mask") from None
    runs = [replay(spec, device, p, parsed, mask_value) for p in (policies or IOVA_POLICIES)]
    if as_json:
        data = {
            "platform": spec.name,
            "device": device,
            "platform_iova_policy": spec.iova_policy,
            "calls": [
                {"call": str(c)} | {r.policy: r.handles[i] for r in runs}
                for i, c in enumerate(parsed)
            ],
            "errors": {r.policy: r.errors for r in runs},
            "cache": {r.policy: r.cache for r in runs},
        }
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render(spec, device, parsed, runs))


COMMANDS = [iova_command]
