"""``vcm_back`` of separate pages through ``PageTable.map_pages`` (issue 12).

A backing whose pieces are all separate smallest pages reaches the table as two
arrays.  The oracle is the per-piece path (one ``PageTable.map`` per run of pages,
what ``vcm_back`` did before): the same random scatter of pages through both must
leave the same table bytes, system and graph snapshots, and an injected table-memory
failure at the n-th table allocation of the call (the batch spans several
second-level tables, so the failure lands in the middle of it) must raise the same
error and leave every byte, table page and record as it was before the call.
"""

from __future__ import annotations

import contextlib
import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import vcmm
from vcmm import SZ_1M, SZ_4K
from vcmm.attrs import PageAttrs
from vcmm.core import Attr, PhysAttr
from vcmm.core.mappers import IommuMapper, PageRun, merge_runs
from vcmm.errors import InvalidArgumentError, OutOfMemoryError
from vcmm.inject import AllocSite, fail_nth

PAGES = 600  # three 1 MiB second-level tables of ARMv7 short descriptors


def _map_pages_each(self: IommuMapper, vas: np.ndarray, pas: np.ndarray, attrs: PageAttrs) -> None:
    page = min(self.page_sizes)
    runs = [PageRun(va, pa, page, page) for va, pa in zip(vas.tolist(), pas.tolist(), strict=True)]
    for run in merge_runs(runs):
        self.map(run, attrs)


def _run(batched: bool, order: list[int], fail_at: int | None) -> list[object]:
    system = vcmm.System.default()
    seen: list[object] = []
    patch = mock.patch.object(IommuMapper, "map_pages", _map_pages_each)
    with contextlib.nullcontext() if batched else patch:
        carve = system.vcm_phys_alloc("contig", PAGES * SZ_4K, PhysAttr.CONTIGUOUS)
        view = system.vcm_phys_view(carve, windows=[(i * SZ_4K, SZ_4K) for i in order])
        vcm = system.vcm_create(0x4000_0000 + SZ_1M // 2, 4 * SZ_1M)
        system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
        res = system.vcm_reserve(vcm, PAGES * SZ_4K, Attr.RW | Attr.NONCACHED)
        before = (system.snapshot(), system.memory.digest(), system.graph.snapshot())
        injector = fail_nth(fail_at, sites={AllocSite.TABLE}) if fail_at else None
        try:
            with injector or contextlib.nullcontext():
                system.vcm_back(res, view)
        except OutOfMemoryError as exc:
            # the table call names itself (map_pages, or map page by page)
            seen.append((type(exc).__name__, re.sub(r"\bmap_pages\b", "map", str(exc))))
            after = (system.snapshot(), system.memory.digest(), system.graph.snapshot())
            assert after == before  # undone exactly: bytes, table pages, records
            assert res.physmem is None
        seen += [system.snapshot(), system.memory.digest(), system.graph.snapshot()]
        if res.physmem is not None:
            system.vcm_unback(res)
            seen += [system.snapshot(), system.graph.snapshot()]
    return seen


@settings(max_examples=15, deadline=None)
@given(data=st.data(), fail_at=st.none() | st.integers(1, 3))
def test_pages_as_arrays_and_page_by_page_agree(data: st.DataObject, fail_at: int | None) -> None:
    # a shuffle, or runs of pages that continue each other (joined by the per-run path)
    shuffled = data.draw(st.booleans())
    order = data.draw(st.permutations(range(PAGES))) if shuffled else [i ^ 1 for i in range(PAGES)]
    batched = _run(True, order, fail_at)
    assert batched == _run(False, order, fail_at)
    if fail_at is not None:
        assert isinstance(batched[0], tuple) and batched[0][0] == "OutOfMemoryError"


def test_map_pages_refuses_arrays_that_are_not_addresses(system: vcmm.System) -> None:
    vcm = system.vcm_create(0x4000_0000, 16 * SZ_1M)
    table = vcm.table
    assert table is not None
    before = system.memory.digest()
    attrs = PageAttrs()
    with pytest.raises(InvalidArgumentError, match="one-dimensional"):
        table.map_pages(np.zeros((2, 2), dtype=np.uint64), np.zeros(4, dtype=np.uint64), attrs)
    with pytest.raises(InvalidArgumentError, match="non-negative"):
        table.map_pages(np.array([-4096]), np.array([0]), attrs)
    with pytest.raises(InvalidArgumentError, match="2 vas but 1 pas"):
        table.map_pages(np.array([0, 4096]), np.array([0]), attrs)
    assert system.memory.digest() == before
