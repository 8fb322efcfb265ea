"""Which engine runs the hardware's bulk paths: compiled kernels or plain Python.

The plain Python paths (:class:`~vcmm.hw.translate.Translator`'s per-access and batch
steps, the per-page DMA resolve) are the reference model.  The compiled engine runs
the same model over arrays with numba (:mod:`vcmm.hw.kernels`): a TLB over a whole
access stream, page-table walks for every distinct page of a batch done up front.  It
must give identical results, TLB contents and counters; property tests drive both.

``VCMM_ENGINE`` chooses, read once when first asked:

* ``auto`` (the default): numba when it can be imported, else Python, saying so once
  (a :class:`RuntimeWarning` and a log record on logger ``vcmm.hw.engine``); and even
  with numba, the bulk paths start on Python and go compiled only once
  :data:`AUTO_COMPILE_AFTER` seconds have passed since the first bulk access.
  Compiling the kernels takes about 13 s the first time (later runs load them from the
  disk cache in about half a second, plus numba's import), while a short run such as
  ``vcmm demo`` finishes on Python in under a second: a short run should not wait for
  a compiler, and a long run pays for it once;
* ``numba``: the compiled engine from the first access; an error if numba cannot be
  imported;
* ``python``: the reference paths only.

The engines give identical results, so the switch of ``auto`` changes only speed.
Tests and benchmarks switch engines in-process with :func:`use_engine`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import time
import warnings
from collections.abc import Iterator

from vcmm.errors import InvalidArgumentError

log = logging.getLogger("vcmm.hw.engine")

#: Names ``VCMM_ENGINE`` accepts.
ENGINE_CHOICES: tuple[str, ...] = ("auto", "numba", "python")
#: The environment variable that chooses the engine.
ENGINE_VARIABLE = "VCMM_ENGINE"

#: Seconds of a run ``auto`` keeps the bulk paths on Python before it goes compiled:
#: a run that ends sooner would spend more on loading (or compiling) the kernels than
#: they save it.
AUTO_COMPILE_AFTER = 2.0


class _Choice:
    """The engine in use and, under ``auto``, when the first bulk access came."""

    __slots__ = ("engine", "pending", "since")

    def __init__(self) -> None:
        self.engine: str | None = None
        #: Under ``auto`` with numba: the kernels are not used yet (see :func:`compiled`).
        self.pending = False
        self.since: float | None = None


_state = _Choice()


def numba_available() -> bool:
    """Whether numba can be imported here (without importing it)."""
    return importlib.util.find_spec("numba") is not None


def _resolve(choice: str) -> str:
    if choice not in ENGINE_CHOICES:
        raise InvalidArgumentError(
            f"{ENGINE_VARIABLE}={choice!r} is not one of {', '.join(ENGINE_CHOICES)}"
        )
    if choice == "python":
        return "python"
    if numba_available():
        return "numba"
    if choice == "numba":
        raise InvalidArgumentError(
            f"{ENGINE_VARIABLE}=numba, but numba cannot be imported; install it "
            "(pip install 'numba>=0.59') or choose auto or python"
        )
    message = (
        "vcmm: numba cannot be imported, so the hardware model runs on its plain Python "
        "paths (same results, slower); install numba>=0.59 for the compiled engine"
    )
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)
    return "python"


def _choose(choice: str) -> str:
    engine = _state.engine = _resolve(choice)
    _state.pending = choice == "auto" and engine == "numba"
    _state.since = None
    return engine


def current_engine() -> str:
    """The engine in use, ``"numba"`` or ``"python"`` (chosen on the first call; under
    ``auto`` the bulk paths may still be warming up on Python, see :func:`compiled`)."""
    engine = _state.engine
    if engine is None:
        engine = _choose(os.environ.get(ENGINE_VARIABLE, "auto").strip())
    return engine


def compiled() -> bool:
    """Whether a bulk call runs the compiled kernels.  Under ``auto`` the answer is no
    for the first :data:`AUTO_COMPILE_AFTER` seconds after the first bulk call, then
    yes for the rest of the run."""
    if (_state.engine or current_engine()) != "numba":
        return False
    if not _state.pending:
        return True
    now = time.monotonic()
    if _state.since is None:
        _state.since = now
    if now - _state.since < AUTO_COMPILE_AFTER:
        return False
    _state.pending = False
    log.info("vcmm: the run is past %.1f s; the compiled engine takes over", AUTO_COMPILE_AFTER)
    return True


@contextlib.contextmanager
def use_engine(choice: str) -> Iterator[str]:
    """Run a block with engine ``choice`` (``auto``, ``numba`` or ``python``), then
    restore the previous one; yields the engine chosen.  ``numba`` is compiled from
    the first access; ``auto`` warms up on Python as the default does."""
    previous = (_state.engine, _state.pending, _state.since)
    chosen = _choose(choice)
    try:
        yield chosen
    finally:
        _state.engine, _state.pending, _state.since = previous


def measured_engine() -> contextlib.AbstractContextManager[str]:
    """The engine a benchmark measures: ``VCMM_ENGINE`` when it names ``numba`` or
    ``python``, else numba from the first access (no ``auto`` warm-up, which would mix
    both engines into one figure) when it can be imported, else Python."""
    choice = os.environ.get(ENGINE_VARIABLE, "auto").strip()
    if choice == "auto":
        choice = "numba" if numba_available() else "python"
    return use_engine(choice)
