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
