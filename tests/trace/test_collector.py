"""Reading and replaying pause the cycle collector and give back the state they found."""

from __future__ import annotations

import gc

import pytest

from vcmm.errors import VcmmError
from vcmm.trace import parse_text, replay_text
from vcmm.trace.collector import collector_paused

from .lines import dma_map_line, map_line, trace

TEXT = trace(
    map_line(0x1000, 0x80000000, 4096), dma_map_line("0000:00:02.0", 0x1000, 4096, 0x80000000)
)


def test_the_collector_is_off_inside_and_back_on_after() -> None:
    assert gc.isenabled()
    with collector_paused():
        assert not gc.isenabled()
        with collector_paused():  # nested: the inner one finds it off and leaves it off
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_turned_off_by_the_caller_stays_off() -> None:
    gc.disable()
    try:
        parse_text(TEXT)
        replay_text(TEXT)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_failure_inside_gives_the_collector_back() -> None:
    with pytest.raises(VcmmError):  # the platform cannot be read: raised inside the pause
        replay_text(TEXT, platform="no-such-platform-file.toml")
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_reading_and_replaying_leave_it_on() -> None:
    assert len(parse_text(TEXT)) == 2
    assert replay_text(TEXT).events == 2
    assert gc.isenabled()
