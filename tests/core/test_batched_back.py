"""``vcm_back``'s batched table write against the per-piece path it replaced (issue 12).

The batched path writes a reservation's runs with one ``PageTable.map_many`` call
(and unbacks without decoding the leaves it removes); the per-piece path (one
``PageTable.map`` per run and a reporting unmap, what ``vcm_back`` and ``vcm_unback``
did before) is kept here as the oracle.  The same random backings through both must leave the same
table bytes, mapping graph and system snapshots, and raise the same errors, an
injected table-memory failure at the n-th table allocation of the call included
(which must also leave the system exactly as before the call, tables kept empty by
earlier unmaps and all).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from unittest import mock

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.attrs import PageAttrs
from vcmm.core import Attr, PhysAttr
from vcmm.core.mappers import IommuMapper, PageRun, UserMapper, VmmMapper, merge_runs
from vcmm.errors import OutOfMemoryError
from vcmm.inject import AllocSite, fail_nth

CARVE = 8 * SZ_1M
#: Window sizes in pages: small pages, a pair, large pages (64K) and a section (1M).
WINDOW_PAGES = [1, 2, 16, 32, 256]


def _map_each(
    self: IommuMapper | UserMapper | VmmMapper, runs: Sequence[tuple[PageAttrs, PageRun]]
) -> None:
    """The per-piece path: one table call per run."""
    for attrs, run in runs:
        self.map(run, attrs)


def _map_pages_each(
    self: IommuMapper | UserMapper | VmmMapper, vas: np.ndarray, pas: np.ndarray, attrs: PageAttrs
) -> None:
    """The per-piece path for pages given as arrays: one table call per run of pages
    that continue each other (the runs a backing made of them before)."""
    page = min(self.page_sizes)
    pages = [PageRun(va, pa, page, page) for va, pa in zip(vas.tolist(), pas.tolist(), strict=True)]
    for run in merge_runs(pages):
        self.map(run, attrs)


_UNMAP = IommuMapper.unmap  # every table mapper's


def _unmap_reporting(self: IommuMapper, va: int, size: int, *, runs: bool = True) -> list[PageRun]:
    """The unmap as it was before quiet unmaps: the removed leaves always decoded."""
    removed = _UNMAP(self, va, size, runs=True)
    return removed if runs else []


@contextlib.contextmanager
def _path(batched: bool) -> Iterator[None]:
    if batched:
        yield
        return
    with contextlib.ExitStack() as stack:
        for mapper in (IommuMapper, UserMapper, VmmMapper):  # every table mapper
            stack.enter_context(mock.patch.object(mapper, "map_many", _map_each))
            stack.enter_context(mock.patch.object(mapper, "map_pages", _map_pages_each))
            stack.enter_context(mock.patch.object(mapper, "unmap", _unmap_reporting))
        yield


def _windows(sizes: list[int], order: list[int]) -> list[tuple[int, int]]:
    """Windows of ``sizes`` pages at offsets aligned to their size, laid in ``order``."""
    placed, offset = [], 0
    for pages in sizes:
        size = pages * SZ_4K
        offset = -(-offset // size) * size
        if offset + size > CARVE:
            break
        placed.append((offset, size))
        offset += size
    return [placed[i] for i in order if i < len(placed)]


def _normal(exc: Exception) -> tuple[str, str]:
    """An error with the table call's name left out (``map`` or ``map_many``)."""
    return type(exc).__name__, re.sub(r"\bmap_(many|pages)( piece \d+)?\b", "map", str(exc))


def _run(
    batched: bool, windows: list[tuple[int, int]], kind: str, alias: bool, fail_at: int | None
) -> list[object]:
    """One scenario on a fresh system; what every step left behind."""
    system = vcmm.System.default()
    seen: list[object] = []
    with _path(batched):
        carve = system.vcm_phys_alloc("contig", CARVE, PhysAttr.CONTIGUOUS)
        view = system.vcm_phys_view(carve, windows=windows)
        size = sum(s for _, s in windows)
        if alias:  # a kernel alias of everything: the backing rewrites it shareable
            vmm = system.vcm_create_from_prebuilt(0)
            system.vcm_back(system.vcm_reserve(vmm, CARVE, Attr.RW | Attr.NONCACHED), carve)
        if kind == "device":
            vcm = system.vcm_create(0x4000_0000, 64 * SZ_1M)
            system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
        else:
            vcm = system.vcm_create_from_prebuilt(0)
        res = system.vcm_reserve(vcm, size, Attr.RW | Attr.NONCACHED)
        # a map/unmap pair first: its tables are kept, empty, under the backing
        system.vcm_back(res, view)
        system.vcm_unback(res)
        before = system.snapshot()
        injector = fail_nth(fail_at, sites={AllocSite.TABLE}) if fail_at else None
        try:
            with injector or contextlib.nullcontext():
                system.vcm_back(res, view)
        except OutOfMemoryError as exc:
            seen.append(_normal(exc))
            assert system.snapshot() == before  # undone exactly
        seen += [system.snapshot(), system.memory.digest(), system.graph.snapshot()]
        if res.physmem is not None:
            system.vcm_unback(res)
            seen += [system.snapshot(), system.graph.snapshot()]
    return seen


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.sampled_from(WINDOW_PAGES), min_size=1, max_size=20),
    data=st.data(),
    kind=st.sampled_from(["device", "kernel"]),
    alias=st.booleans(),
    fail_at=st.none() | st.integers(1, 4),
)
def test_batched_and_per_piece_backings_agree(
    sizes: list[int], data: st.DataObject, kind: str, alias: bool, fail_at: int | None
) -> None:
    order = data.draw(st.permutations(range(len(sizes))))
    windows = _windows(sizes, order)
    batched = _run(True, windows, kind, alias, fail_at)
    assert batched == _run(False, windows, kind, alias, fail_at)


def test_a_backing_of_scattered_pages_is_one_table_call(system: vcmm.System) -> None:
    """16 separate pages reach the table in one ``map_pages`` call (as two arrays), not
    16 ``map``s."""
    carve = system.vcm_phys_alloc("contig", 32 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(carve, windows=[((i ^ 1) * SZ_4K, SZ_4K) for i in range(16)])
    vcm = system.vcm_create(0x4000_0000, 16 * SZ_1M)
    res = system.vcm_reserve(vcm, 16 * SZ_4K, Attr.RW)
    table = type(vcm.table)
    with (
        mock.patch.object(table, "map", autospec=True, side_effect=table.map) as one,
        mock.patch.object(table, "map_many", autospec=True, side_effect=table.map_many) as many,
        mock.patch.object(table, "map_pages", autospec=True, side_effect=table.map_pages) as pages,
    ):
        system.vcm_back(res, view)
    assert (one.call_count, many.call_count, pages.call_count) == (0, 0, 1)
    vas, pas = pages.call_args.args[1:3]
    assert [(va - res.dev_addr) // SZ_4K for va in vas.tolist()] == list(range(16))
    start = carve.chunk_ranges[0].start
    assert pas.tolist() == [start + (i ^ 1) * SZ_4K for i in range(16)]


def test_an_unback_keeps_its_tables_until_the_vcm_is_freed(system: vcmm.System) -> None:
    """Linux's io-pgtable keeps a table its last unmap emptied: backing the same
    reservation again allocates no table memory; freeing the VCM gives it all back."""
    tm = system.table_memory
    carve = system.vcm_phys_alloc("contig", 16 * SZ_4K, PhysAttr.CONTIGUOUS)
    view = system.vcm_phys_view(carve, windows=[((i ^ 1) * SZ_4K, SZ_4K) for i in range(16)])
    empty = tm.used_bytes
    vcm = system.vcm_create(0x4000_0000, 16 * SZ_1M)
    res = system.vcm_reserve(vcm, 16 * SZ_4K, Attr.RW)
    with_root = tm.used_bytes
    system.vcm_back(res, view)
    backed = tm.used_bytes
    assert backed > with_root  # a level-2 table for the pages
    system.vcm_unback(res)
    assert tm.used_bytes == backed  # kept, empty
    system.vcm_back(res, view)
    assert tm.used_bytes == backed  # reused, nothing allocated
    system.vcm_unback(res)
    system.vcm_unreserve(res)
    system.vcm_free(vcm)
    assert tm.used_bytes == empty
