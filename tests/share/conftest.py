"""Fixtures of the sharing tests: a booted default platform with its shared DMA API,
processes, an exporter."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

import vcmm
from vcmm.dma import DmaApi
from vcmm.proc import Process, ProcessTable
from vcmm.share.exporter import VcmExporter
from vcmm.share.jobs import Engine
from vcmm.share.state import dma_api


@dataclass
class Rig:
    system: vcmm.System
    table: ProcessTable
    exporter: VcmExporter
    #: The system's one DMA API, made up front (it takes its coherent and atomic pools
    #: out of a carve-out, so memory counters are read after it exists).
    api: DmaApi
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
    r = Rig(system, ProcessTable(system), VcmExporter(system), dma_api(system))
    yield r
    for engine in r.engines:
        engine.close(5.0)
