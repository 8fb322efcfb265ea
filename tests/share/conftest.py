"""Fixtures of the sharing tests: a booted default platform, processes, an exporter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import vcmm
from vcmm.proc import Process, ProcessTable
from vcmm.share.exporter import VcmExporter
from vcmm.share.jobs import Engine


@dataclass
class Rig:
    system: vcmm.System
    table: ProcessTable
    exporter: VcmExporter
    engines: list[Engine] = field(default_factory=list)

    def spawn(self, name: str = "proc") -> Process:
        return self.table.spawn(name)

    def engine(self, name: str) -> Engine:
        engine = Engine(name)
        self.engines.append(engine)
        return engine


@pytest.fixture
def rig() -> Iterator[Rig]:
    system = vcmm.System.default()
    r = Rig(system, ProcessTable(system), VcmExporter(system))
    yield r
    for engine in r.engines:
        engine.close(5.0)
