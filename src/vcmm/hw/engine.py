"""Which engine runs the hardware's bulk paths: compiled kernels or plain Python.

The plain Python paths (:class:`~vcmm.hw.translate.Translator`'s per-access and batch
steps, the per-page DMA resolve) are the reference model.  The compiled engine runs
the same model over arrays with numba (:mod:`vcmm.hw.kernels`): a TLB over a whole
access stream, page-table walks for every distinct page of a batch done up front.  It
must give identical results, TLB contents and counters; property tests drive both.

``VCMM_ENGINE`` chooses, read once when first asked:

* ``auto`` (the default): numba when it can be imported, else Python, saying so once
  (a :class:`RuntimeWarning` and a log record on logger ``vcmm.hw.engine``);
* ``numba``: the compiled engine; an error if numba cannot be imported;
* ``python``: the reference paths only.

Tests and benchmarks switch engines in-process with :func:`use_engine`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator

from vcmm.errors import InvalidArgumentError

log = logging.getLogger("vcmm.hw.engine")

#: Names ``VCMM_ENGINE`` accepts.
ENGINE_CHOICES: tuple[str, ...] = ("auto", "numba", "python")
#: The environment variable that chooses the engine.
ENGINE_VARIABLE = "VCMM_ENGINE"

_state: dict[str, str | None] = {"engine": None}


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


def current_engine() -> str:
    """The engine in use, ``"numba"`` or ``"python"`` (chosen on the first call)."""
    engine = _state["engine"]
    if engine is None:
        engine = _state["engine"] = _resolve(os.environ.get(ENGINE_VARIABLE, "auto").strip())
    return engine


def compiled() -> bool:
    """Whether the bulk paths run the compiled kernels."""
    return current_engine() == "numba"


@contextlib.contextmanager
def use_engine(choice: str) -> Iterator[str]:
    """Run a block with engine ``choice`` (``auto``, ``numba`` or ``python``), then
    restore the previous one; yields the engine chosen."""
    previous = _state["engine"]
    chosen = _state["engine"] = _resolve(choice)
    try:
        yield chosen
    finally:
        _state["engine"] = previous
