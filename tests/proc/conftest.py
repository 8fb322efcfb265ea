"""Fixtures for the process-model tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm.proc import ProcessTable


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


@pytest.fixture
def table(system: vcmm.System) -> ProcessTable:
    return ProcessTable(system)


@pytest.fixture
def state(system: vcmm.System, table: ProcessTable) -> Callable[[], tuple[object, ...]]:
    """System state plus every process's descriptors and mappings."""

    def snap() -> tuple[object, ...]:
        procs = tuple(
            (
                p.pid,
                tuple(sorted((fd, d.id, d.refs) for fd, d in p.fds.items())),
                tuple((v.start, v.length, int(v.prot), v.pgoff) for v in p.vmas),
            )
            for p in table.processes
        )
        return (system.snapshot(), procs)

    return snap
