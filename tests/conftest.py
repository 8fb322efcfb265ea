"""Fixtures for the whole suite.

No test asserts a duration: a machine shared by several test workers runs anything
slower now and then.  Tests that guard against a slow algorithm count its work
instead, which is the same on every machine (``count_calls`` below, or the
hardware model's own counters); the timings live in ``benchmarks/``.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _cache_bytecode_outside_the_tree() -> None:
    """Keep compiled test modules (asserts rewritten) in a per-user cache directory.

    With ``PYTHONDONTWRITEBYTECODE`` set, pytest rewrites and compiles every test
    module's asserts again on every run, in every xdist worker: about 6.5 s of a
    worker's 7 s of collection.  Compiled files in ``$XDG_CACHE_HOME/vcmm/pycache``
    (``~/.cache`` by default) rather than beside the sources leave the tree as clean as
    the setting keeps it, and collection takes about 2 s.  The interpreters the tests
    start (xdist workers, ``python -m vcmm`` under a terminal, Dask workers) get the
    same through their environment, so they stop compiling vcmm on every start.  A
    ``PYTHONPYCACHEPREFIX`` of one's own is left alone.
    """
    if not sys.dont_write_bytecode or sys.pycache_prefix:
        return
    home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    prefix = str(Path(home) / "vcmm" / "pycache")
    sys.pycache_prefix = prefix
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_cache_bytecode_outside_the_tree()

CallCounter = Callable[[Callable[[], object]], int]


def count_function_calls(fn: Callable[[], object]) -> int:
    """Python and builtin function calls made while ``fn()`` runs, ``fn`` included.

    The count depends only on the code and its input, so a test can compare the
    work of two input sizes: linear work grows with the size, quadratic work with
    its square.
    """
    profile = cProfile.Profile()
    profile.runcall(fn)
    return int(pstats.Stats(profile).total_calls)  # type: ignore[attr-defined]


@pytest.fixture
def count_calls() -> CallCounter:
    return count_function_calls


@pytest.fixture
def translator_steps(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Count every ``Translator._step`` call for the rest of the test (the reference
    engine's steps, one per page a batch or span visits; each call still runs), with
    a wrapper rather than a profiler: the same count without a hook on every other
    call.  The fixture is the count so far, as a function."""
    from vcmm.hw.translate import Translator

    steps = 0
    step = Translator._step

    def counted(self: Translator, va: int, access: Any) -> object:
        nonlocal steps
        steps += 1
        return step(self, va, access)

    monkeypatch.setattr(Translator, "_step", counted)
    return lambda: steps


@pytest.fixture(scope="session")
def dask_distributed() -> Any:
    """``dask.distributed``; its tests skip without it, but under CI (``CI=true``, where
    the test extra installs it) its absence fails them: they must run there."""
    try:
        import distributed
    except ImportError:
        if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
            pytest.fail("dask.distributed is not installed: under CI the Dask tests must run")
        pytest.skip("dask.distributed is not installed (pip install 'vcmm[dask]')")
    return distributed


@pytest.fixture(scope="session")
def dask_cluster(dask_distributed: Any) -> Iterator[Any]:
    """A Dask ``LocalCluster`` shared by the Dask tests of one test process, as the
    ``dask`` executor starts one: two one-thread worker processes on 127.0.0.1, no
    dashboard."""
    from vcmm.workload.dask_executor import local_cluster, stop_workers

    cluster = local_cluster(2)
    try:
        yield cluster
    finally:
        stop_workers(cluster)  # Dask's own close can outlast xdist's 5 s shutdown grace
        cluster.close()


#: The xdist group of every test using ``dask_cluster`` (see the hooks below).
DASK_GROUP = "dask-cluster"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Under xdist's default ``--dist load``, schedule with ``loadgroup`` instead: the
    same as ``load`` for every test but those of one ``xdist_group``, which go to one
    worker.  The Dask tests form one (below), so one worker starts the shared cluster
    (three processes, some seconds of CPU) rather than each of them."""
    if getattr(config.option, "dist", "no") == "load":
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get(DASK_GROUP):
        config.option.loadgroup = True  # a worker reads this to name the grouped tests


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Tell each xdist worker that the controller schedules by group: a worker takes
    its ``--dist`` from the command line, which does not say so."""
    node.workerinput[DASK_GROUP] = node.config.option.dist == "loadgroup"


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Put every test that uses ``dask_cluster`` in one xdist group (before xdist reads
    the groups to name the tests); without xdist there is no such mark."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        if "dask_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(DASK_GROUP))


# -- devicetrees built in the tests ----------------------------------------------------------

DtValue = object


def _prop_bytes(value: DtValue) -> bytes:
    """A property value: ``True`` empty, ``str`` a string, ``int`` one cell, a list of
    ints cells, a list of strs a string list, ``bytes`` as is."""
    if value is True:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode() + b"\0"
    if isinstance(value, int):
        return value.to_bytes(4, "big")
    assert isinstance(value, list)
    if all(isinstance(v, str) for v in value):
        return b"".join(v.encode() + b"\0" for v in value)
    return b"".join(int(v).to_bytes(4, "big") for v in value)


def build_dtb(tree: dict[str, DtValue]) -> bytes:
    """A devicetree blob from a nested dict (written with libfdt's sequential writer):
    dict values are child nodes, anything else a property (see :func:`_prop_bytes`)."""
    import libfdt

    sw = libfdt.FdtSw()
    sw.finish_reservemap()

    def node(name: str, body: dict[str, DtValue]) -> None:
        sw.begin_node(name)
        for key, value in body.items():
            if not isinstance(value, dict):
                sw.property(key, _prop_bytes(value))
        for key, value in body.items():
            if isinstance(value, dict):
                node(key, value)
        sw.end_node()

    node("", tree)
    fdt = sw.as_fdt()
    fdt.pack()
    return bytes(fdt.as_bytearray())


@pytest.fixture
def make_dtb(tmp_path: object) -> Callable[..., str]:
    """Write a devicetree built by :func:`build_dtb` to a file; returns its path."""
    from pathlib import Path

    def write(tree: dict[str, DtValue], name: str = "board.dtb") -> str:
        path = Path(str(tmp_path)) / name
        path.write_bytes(build_dtb(tree))
        return str(path)

    return write
