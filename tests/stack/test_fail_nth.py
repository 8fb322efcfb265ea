"""Fault injection over every compound operation (issue 10, as iommufd's fail_nth tests).

For each operation the n-th internal allocation (physical block, page-table page,
IOVA, VCM address range) is failed for n = 1, 2, ... until the operation succeeds;
after every failure the whole stack (system, DMA API, processes, dma-bufs, /dev
nodes) must be exactly as before.  Each test also checks that the successful run
made the allocations the operation is known to need, so the loop really went
through them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from vcmm import SZ_1M, SZ_2M, SZ_4K, SZ_16M, SZ_64K, DmaDirection
from vcmm.core import Attr, PhysAttr
from vcmm.dma import ScatterList
from vcmm.inject import AllocSite
from vcmm.proc import MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE

RW = PROT_READ | PROT_WRITE
PHYS, TABLE, IOVA, ADDRESS = AllocSite.PHYS, AllocSite.TABLE, AllocSite.IOVA, AllocSite.ADDRESS


@dataclass
class World:
    stack: Any
    things: dict[str, Any]

    def state(self) -> tuple[object, ...]:
        extra = tuple(
            (k, v.snapshot()) for k, v in sorted(self.things.items()) if hasattr(v, "snapshot")
        )
        return (self.stack.state(), extra)


def run(
    each_failure: Callable[..., Any],
    booted: Callable[..., Any],
    prepare: Callable[[Any], dict[str, Any]],
    op: Callable[[World], object],
    **boot_options: Any,
) -> Any:
    def setup() -> World:
        stack = booted(**boot_options)
        return World(stack, prepare(stack))

    return each_failure(setup, op, World.state)


# -- the VCMM core ---------------------------------------------------------------------------


def _multi_chunk(stack: Any) -> dict[str, Any]:
    s = stack.system
    vcm = s.vcm_create(SZ_16M, 64 * SZ_1M)
    s.vcm_activate(s.vcm_assoc(vcm, "vcodec_stream", 0))
    physmem = s.vcm_phys_alloc("blocks", SZ_1M + SZ_64K + SZ_4K, PhysAttr.NONE)
    assert len(physmem.chunk_ranges) == 3
    # The kernel maps it too: the device's backing rewrites those edges shareable.
    kernel = s.vcm_reserve(s.vcm_create_from_prebuilt(0), physmem.size, Attr.RW)
    s.vcm_back(kernel, physmem)
    res = s.vcm_reserve(vcm, physmem.size, Attr.RW)
    return {"res": res, "physmem": physmem}


def test_multi_chunk_back(each_failure, booted) -> None:
    def op(w: World) -> None:
        w.stack.system.vcm_back(w.things["res"], w.things["physmem"])

    done = run(each_failure, booted, _multi_chunk, op)
    assert done.sites() == {TABLE}  # second-level tables for the 64K and 4K pages


def _sections(stack: Any) -> dict[str, Any]:
    s = stack.system
    vcm = s.vcm_create(SZ_16M, 64 * SZ_1M)
    s.vcm_activate(s.vcm_assoc(vcm, "vcodec_stream", 0))
    physmem = s.vcm_phys_alloc("contig", SZ_2M, PhysAttr.CONTIGUOUS | PhysAttr.align(SZ_1M))
    res = s.vcm_reserve(vcm, SZ_2M, Attr.RW)
    s.vcm_back(res, physmem)
    return {"res": res, "physmem": physmem}


def test_block_split_on_partial_unback(each_failure, booted) -> None:
    """Cut a reservation inside its first section and unback the rest: the section is
    split into pages first (a second-level table), then the rest unmapped."""

    def op(w: World) -> None:
        s, res, physmem = w.stack.system, w.things["res"], w.things["physmem"]
        cut = SZ_1M // 2
        view = s.vcm_phys_view(physmem, cut, res.len - cut)
        rest = s.vcm_split(res, cut, view)
        try:
            s.vcm_unback(rest)
        except BaseException:
            s.vcm_merge(res, rest)
            s.vcm_phys_free(view)
            raise

    done = run(each_failure, booted, _sections, op)
    assert done.sites() == {TABLE}


def test_block_split_on_partial_munmap(each_failure, booted) -> None:
    """munmap of the middle of a mapping the process maps with a 2 MiB block."""

    def prepare(stack: Any) -> dict[str, Any]:
        s = stack.system
        proc = stack.table.spawn("player")
        block = s.vcm_phys_alloc("contig", SZ_2M, PhysAttr.CONTIGUOUS | PhysAttr.align(SZ_2M))
        buf = stack.exporter.export(block, owned=True)
        fd = buf.install_fd(proc, O_RDWR)
        va = proc.mmap(SZ_2M, RW, MAP_SHARED, fd, addr=0x4000_0000)
        walk = stack.system.cpu.address_space(proc.asid).walk(va)
        assert walk.page_size == SZ_2M  # one block to split
        return {"proc": proc, "va": va}

    def op(w: World) -> None:
        w.things["proc"].munmap(w.things["va"] + SZ_1M, SZ_64K)

    done = run(each_failure, booted, prepare, op)
    assert TABLE in done.sites()


# -- the DMA API -------------------------------------------------------------------------------


def _scattered(stack: Any) -> dict[str, Any]:
    s = stack.system
    pages = [s.vcm_phys_alloc("ebi", 2 * SZ_4K, PhysAttr.CONTIGUOUS) for _ in range(64)]
    # Every other page: no two entries are physically adjacent.
    sgl = ScatterList(
        [(p.chunk_ranges[0].start + 100 * (i % 3), SZ_4K - 200) for i, p in enumerate(pages)]
    )
    return {"sgl": sgl}


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_map_sg_of_64_entries(each_failure, booted, policy: str) -> None:
    def op(w: World) -> None:
        api = w.stack.api
        if api.map_sg("vcodec_a_mm1", w.things["sgl"], 64, DmaDirection.TO_DEVICE) == 0:
            raise api.last_error  # type: ignore[misc]

    # Both IOVA policies count their allocation as an injection point.
    done = run(each_failure, booted, _scattered, op, iova_policy=policy)
    assert done.sites() == {IOVA, TABLE}


@pytest.mark.parametrize(
    ("device", "coherent", "atomic", "sites"),
    [
        ("vcodec_a_mm1", (), False, {PHYS, ADDRESS, TABLE, IOVA}),  # coherent pool, NC alias
        ("vcodec_a_mm1", (), True, {ADDRESS, IOVA, TABLE}),  # atomic pool
        ("mdp", ("mdp",), False, {PHYS, ADDRESS, TABLE, IOVA}),  # kernel RAM, cached alias
        ("dsp", (), False, {PHYS, ADDRESS}),  # direct: a contiguous block at its bus address
    ],
    ids=["pool", "atomic", "coherent device", "direct device"],
)
def test_alloc_coherent(each_failure, booted, device, coherent, atomic, sites) -> None:
    def op(w: World) -> None:
        w.stack.api.alloc_coherent(device, 5 * SZ_4K + 100, atomic=atomic)

    done = run(each_failure, booted, lambda stack: {}, op, coherent=coherent)
    assert done.sites() == sites


# -- sharing and processes ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "target", "sites"),
    [
        ("vcodec_b_mm2", "ebi", {IOVA, TABLE}),
        ("mdp", "contig", {ADDRESS, IOVA, TABLE}),  # a carve-out is pinned in the kernel
        ("dsp", "ebi", {ADDRESS}),
    ],
)
def test_dma_buf_attach_and_map(each_failure, booted, device, target, sites) -> None:
    def prepare(stack: Any) -> dict[str, Any]:
        buf = stack.exporter.allocate(3 * SZ_64K, target=target, contiguous=device == "dsp")
        return {"buf": buf}

    def op(w: World) -> None:
        att = w.things["buf"].attach(device)
        try:
            att.map(DmaDirection.BIDIRECTIONAL)
        except BaseException:
            att.detach()
            raise

    done = run(each_failure, booted, prepare, op)
    assert done.sites() == sites


def test_dev_node_mmap(each_failure, booted) -> None:
    """The first mmap of /dev/vcodec_b_mm2: a buffer is allocated, exported, attached
    and mapped for the device, then mapped into the process."""

    def prepare(stack: Any) -> dict[str, Any]:
        proc = stack.table.spawn("player")
        return {"proc": proc, "fd": proc.open("/dev/vcodec_b_mm2", O_RDWR)}

    def op(w: World) -> None:
        w.things["proc"].mmap(5 * SZ_4K, RW, MAP_SHARED, w.things["fd"])

    done = run(each_failure, booted, prepare, op)
    assert done.sites() == {PHYS, IOVA, TABLE, ADDRESS}


@pytest.mark.parametrize("kind", ["anonymous", "dma-buf"])
def test_process_mmap(each_failure, booted, kind) -> None:
    def prepare(stack: Any) -> dict[str, Any]:
        proc = stack.table.spawn("player")
        things = {"proc": proc}
        if kind == "dma-buf":
            buf = stack.exporter.allocate(SZ_64K + SZ_4K, target="contig")
            things["fd"] = buf.install_fd(proc, O_RDWR)
        return things

    def op(w: World) -> None:
        proc = w.things["proc"]
        if kind == "anonymous":
            proc.mmap(SZ_64K + SZ_4K, RW, MAP_PRIVATE | MAP_ANONYMOUS)
        else:
            proc.mmap(SZ_64K + SZ_4K, RW, MAP_SHARED, w.things["fd"])

    done = run(each_failure, booted, prepare, op)
    expected = {ADDRESS, TABLE} | ({PHYS} if kind == "anonymous" else set())
    assert done.sites() == expected
