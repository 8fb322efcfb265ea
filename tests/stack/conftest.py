"""Fixtures for tests across every layer at once: a booted system with its DMA API,
processes, an exporter and /dev nodes; the state of all of them as one value; and
the fail-nth loop.

``Stack.state()`` is what "nothing changed" means for a compound operation: the
system (memory, tables, TLBs, caches, allocators, mapping graph), the DMA API's
records and pools, every process's descriptors and mappings, every dma-buf
(references, attachments, sessions, fences) and every /dev node's buffers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import vcmm
from vcmm.dma import DmaApi
from vcmm.errors import VcmmError
from vcmm.inject import AllocSite, fail_nth
from vcmm.platform import load_default
from vcmm.proc import ProcessTable
from vcmm.share import VcmExporter, register_dev_nodes, set_dma_api


@dataclass
class Stack:
    system: vcmm.System
    api: DmaApi
    table: ProcessTable
    exporter: VcmExporter
    nodes: dict[str, Any]

    def state(self) -> tuple[object, ...]:
        procs = tuple(
            (
                p.pid,
                tuple(sorted((fd, d.id, d.refs) for fd, d in p.fds.items())),
                tuple((v.start, v.length, int(v.prot), v.pgoff) for v in p.vmas),
            )
            for p in self.table.processes
        )
        exporters = [
            self.exporter,
            *{id(n.exporter): n.exporter for n in self.nodes.values()}.values(),
        ]
        bufs = tuple(b.snapshot() for e in exporters for b in e.exported)
        nodes = tuple((path, node.buffers()) for path, node in sorted(self.nodes.items()))
        return (self.system.snapshot(), self.api.snapshot(), procs, bufs, nodes)


#: The context the DMA API leaves to seed calls (VCMs of the core's own).
CORE_DEVICE = "vcodec_stream"


def boot(coherent: Iterable[str] = (), **api_options: Any) -> Stack:
    """The default platform (``coherent`` devices made coherent), its shared DMA API
    (serving every device but the CPU and :data:`CORE_DEVICE`), a process table with
    the /dev nodes registered, and an exporter."""
    spec = load_default()
    wanted = set(coherent)
    devices = tuple(
        dataclasses.replace(d, coherent=d.coherent or d.name in wanted) for d in spec.devices
    )
    system = vcmm.System(dataclasses.replace(spec, devices=devices))
    served = [n for n in system.devices if n not in ("cpu", CORE_DEVICE)]
    api = set_dma_api(DmaApi(system, **{"devices": served, **api_options}))
    table = ProcessTable(system)
    nodes = register_dev_nodes(table)
    return Stack(system, api, table, VcmExporter(system), nodes)


@pytest.fixture
def stack() -> Stack:
    return boot()


def _chain(exc: BaseException | None) -> str:
    """Every message of an exception and the ones it was raised from."""
    seen: list[str] = []
    while exc is not None and len(seen) < 10:
        seen.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return " <- ".join(seen)


@dataclass
class FailNthRun:
    """What :func:`fail_each` saw: the allocations the successful run made (each was
    failed once on the way there) and how many runs failed."""

    allocations: list[tuple[AllocSite, str]]
    failures: int

    def sites(self) -> set[AllocSite]:
        return {site for site, _ in self.allocations}


def fail_each(
    setup: Callable[[], Any],
    op: Callable[[Any], object],
    state: Callable[[Any], object],
    *,
    limit: int = 200,
) -> FailNthRun:
    """Linux's fail_nth loop: run ``op(world)`` with the n-th allocation failing, for
    n = 1, 2, ... until it succeeds without the injection firing.

    Every failure must be the injected one (not a follow-on error of a broken undo)
    and leave ``state(world)`` exactly as before, so the same world serves the next
    n.  When a caller's fallback absorbs the failure and the operation succeeds
    anyway, the loop goes on from a fresh ``setup()``.
    """
    world = setup()
    failures = 0
    for n in range(1, limit):
        before = state(world)
        with fail_nth(n) as injector:
            try:
                op(world)
            except VcmmError as exc:
                assert injector.fired, f"n={n}: failed without an injected failure: {exc}"
                assert "fault injection" in _chain(exc), f"n={n}: {_chain(exc)}"
                after = state(world)
                assert after == before, f"n={n}: failing {injector.failed} changed the state"
                failures += 1
                continue
        if not injector.fired:
            assert state(world) != before, "the operation did nothing"
            return FailNthRun(list(injector.seen), failures)
        world = setup()
    raise AssertionError(f"the operation did not succeed within {limit} allocations")


@pytest.fixture
def each_failure() -> Callable[..., FailNthRun]:
    """:func:`fail_each`, for the test modules (conftest is not importable)."""
    return fail_each


@pytest.fixture
def booted() -> Callable[..., Stack]:
    """:func:`boot`, for tests that need another platform variant or a fresh stack."""
    return boot


# -- independent decoders of the table bytes ---------------------------------------------------
#
# Written from the ARM Architecture Reference Manual, not from vcmm's format tables:
# they read descriptors straight from physical memory and list every leaf.


@dataclass(frozen=True)
class Leaf:
    """One translation: ``size`` bytes at ``va`` to ``pa`` with decoded attributes.
    ``memtype`` is "so", "dev", "nc", "wt", "wb-nwa" or "wb-wa"."""

    va: int
    size: int
    pa: int
    write: bool
    user: bool
    memtype: str
    shareable: bool
    ns: bool
    global_: bool


# ARMv7 (ARM ARM B3.8.2, TEX remap off): (TEX, C, B) -> memory type.
_TEXCB = {
    (0b000, 0, 0): "so",
    (0b000, 0, 1): "dev",
    (0b000, 1, 0): "wt",
    (0b000, 1, 1): "wb-nwa",
    (0b001, 0, 0): "nc",
    (0b001, 1, 1): "wb-wa",
    (0b010, 0, 0): "dev",
}
_CACHE_POLICY = ("nc", "wb-wa", "wt", "wb-nwa")  # TEX=1xx: inner policy in C:B
# AP[2:0] with SCTLR.AFE=0 (B3.7.1) -> (privileged write, user access).
_V7_AP = {0b001: (True, False), 0b011: (True, True), 0b101: (False, False), 0b111: (False, True)}


def _v7_leaf(
    va: int, size: int, pa: int, d: int, ns: int, tex: int, ap: int, s: int, ng: int
) -> Leaf:
    memtype = _TEXCB.get((tex, d >> 3 & 1, d >> 2 & 1))
    if memtype is None:
        memtype = _CACHE_POLICY[(d >> 3 & 1) << 1 | (d >> 2 & 1)] if tex & 0b100 else "so"
    write, user = _V7_AP[ap]
    return Leaf(va, size, pa, write, user, memtype, bool(s), bool(ns), not ng)


def short_descriptor_leaves(memory: Any, root: int) -> list[Leaf]:
    """Every leaf of a 16 KiB ARMv7 short-descriptor first-level table (TTBCR.N=0)."""
    words = memory.read_words(root, 4096, 4)
    leaves: list[Leaf] = []
    for i in np.flatnonzero(words).tolist():
        d = int(words[i])
        va = i << 20
        kind = d & 0b11
        if kind == 0b01:  # page table: [31:10] base, NS bit 3
            ns = d >> 3 & 1
            l2 = memory.read_words(d & 0xFFFF_FC00, 256, 4)
            for j in np.flatnonzero(l2).tolist():
                p = int(l2[j])
                pva = va | j << 12
                ap = (p >> 9 & 1) << 2 | (p >> 4 & 3)
                if p & 0b10:  # small page
                    leaves.append(
                        _v7_leaf(
                            pva,
                            1 << 12,
                            p & 0xFFFF_F000,
                            p,
                            ns,
                            p >> 6 & 7,
                            ap,
                            p >> 10 & 1,
                            p >> 11 & 1,
                        )
                    )
                elif p & 0b11 == 0b01 and j % 16 == 0:  # large page: 16 copies, the first
                    leaves.append(
                        _v7_leaf(
                            pva,
                            1 << 16,
                            p & 0xFFFF_0000,
                            p,
                            ns,
                            p >> 12 & 7,
                            ap,
                            p >> 10 & 1,
                            p >> 11 & 1,
                        )
                    )
        elif kind & 0b10:  # section, or supersection (bit 18), 16 copies
            ap = (d >> 15 & 1) << 2 | (d >> 10 & 3)
            common = (d >> 19 & 1, d >> 12 & 7, ap, d >> 16 & 1, d >> 17 & 1)
            if not d >> 18 & 1:
                leaves.append(_v7_leaf(va, 1 << 20, d & 0xFFF0_0000, d, *common))
            elif i % 16 == 0:  # supersection: 16 copies, the first
                leaves.append(_v7_leaf(va, 1 << 24, d & 0xFF00_0000, d, *common))
    return leaves


def _mair_memtype(attr: int) -> str:
    """A MAIR attribute byte (D8.5.5): 0000dd00 Device, else outer:inner nibbles, inner
    0100 non-cacheable, 10RW write-through, 11RW write-back (W: write-allocate)."""
    if attr >> 4 == 0:
        return "so" if attr == 0 else "dev"
    inner = attr & 0xF
    if inner == 0b0100:
        return "nc"
    if inner >> 2 == 0b10:
        return "wt"
    return "wb-wa" if inner & 0b0001 else "wb-nwa"


# AP[2:1] (D8.4.1) -> (EL1 write, EL0 access).
_V8_AP = {0b00: (True, False), 0b01: (True, True), 0b10: (False, False), 0b11: (False, True)}
_OA = ((1 << 48) - 1) & ~0xFFF


def long_descriptor_leaves(memory: Any, root: int, mair: int) -> list[Leaf]:
    """Every leaf of a VMSAv8-64 4 KiB-granule, 48-bit table (four levels)."""
    leaves: list[Leaf] = []

    def walk(table: int, level: int, base: int) -> None:
        shift = 39 - 9 * level
        words = memory.read_words(table, 512, 8)
        for i in np.flatnonzero(words).tolist():
            d = int(words[i])
            if not d & 1:
                continue
            va = base | i << shift
            if d & 0b10 and level < 3:
                walk(d & _OA, level + 1, va)
                continue
            if level == 0 or (level == 3 and not d & 0b10):
                continue  # reserved encodings
            size = 1 << shift
            write, user = _V8_AP[d >> 6 & 3]
            leaves.append(
                Leaf(
                    va,
                    size,
                    d & _OA & ~(size - 1),
                    write,
                    user,
                    _mair_memtype(mair >> 8 * (d >> 2 & 7) & 0xFF),
                    d >> 8 & 3 in (0b10, 0b11),
                    bool(d >> 5 & 1),
                    not d >> 11 & 1,
                )
            )

    walk(root, 0, 0)
    return leaves


@pytest.fixture
def decoders() -> tuple[Callable[..., list[Leaf]], Callable[..., list[Leaf]]]:
    """(short_descriptor_leaves, long_descriptor_leaves), for the test modules."""
    return short_descriptor_leaves, long_descriptor_leaves
