"""Progress appears on a terminal once work has run for a while, never elsewhere."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from vcmm.cli.progress import progress


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def test_quick_work_draws_nothing_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VCMM_PROGRESS_DELAY", "30")
    console, out = _terminal()
    with progress(3, "running quick", console=console) as update:
        update(3)
    assert out.getvalue() == ""


def test_work_past_the_delay_shows_a_bar_however_few_units_it_has(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two slow frames: the old rule (at least 8 units) showed nothing for them."""
    monkeypatch.setenv("VCMM_PROGRESS_DELAY", "0")
    console, out = _terminal()
    with progress(2, "running slow", console=console) as update:
        for _ in range(500):  # wait (bounded) until the bar has been drawn
            if "running slow" in out.getvalue():
                break
            time.sleep(0.01)
        update(1)
    assert "running slow" in out.getvalue() and "0/2" in out.getvalue()


def test_nothing_is_drawn_off_a_terminal_or_when_switched_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VCMM_PROGRESS_DELAY", "0")
    piped = io.StringIO()
    with progress(2, "x", console=Console(file=piped, force_terminal=False)) as update:
        update(2)
    console, out = _terminal()
    with progress(2, "x", show=False, console=console) as update:
        update(2)
    assert piped.getvalue() == "" and out.getvalue() == ""
