"""Strict and lazy IOTLB invalidation of the DMA API's domains: the window, IOVA reuse,
the counters, the cost model and bad input."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest

import vcmm
from vcmm import DmaDirection as D
from vcmm.dma import DmaApi, ReportKind
from vcmm.dma.flushqueue import FQ_SIZE, FQ_TIMEOUT_NS
from vcmm.errors import DmaApiError, InvalidArgumentError
from vcmm.platform import PlatformError, dumps_platform, load_default, loads_platform
from vcmm.platform.devices import InvalidationSpec
from vcmm.sizes import SZ_4K, SZ_64K
from vcmm.tlbcost import InvalidationCost
from vcmm.undo import Transaction

DEV = "vcodec_a_mm1"


@pytest.fixture
def lazy(system: vcmm.System) -> Iterator[DmaApi]:
    api = DmaApi(system, debug="raise", invalidation="lazy")
    yield api
    assert api.checker is not None
    left = api.checker.take()
    assert not left, "unexpected DMA-API reports:\n" + "\n".join(map(str, left))


def _page(system: vcmm.System, size: int = SZ_4K) -> int:
    physmem = system.vcm_phys_alloc("ebi", size, vcmm.PhysAttr.CONTIGUOUS)
    return int(physmem.chunk_ranges[0].start)


def test_strict_is_the_default_and_a_platform_or_the_api_chooses_lazy(system: vcmm.System) -> None:
    with _open(system) as dma:
        assert dma.domain(DEV).invalidation.mode == "strict"
    spec = dataclasses.replace(load_default(), invalidation="lazy")
    with _open(vcmm.System(spec)) as dma:
        assert {d.invalidation.mode for d in dma.domains.values()} == {"lazy"}
    with _open(vcmm.System(spec), invalidation={DEV: "strict"}) as dma:
        assert dma.domain(DEV).invalidation.mode == "strict"
        assert dma.domain("mdp").invalidation.mode == "lazy"


class _open:
    """A DmaApi closed at the end of the block."""

    def __init__(self, system: vcmm.System, **kwargs: object) -> None:
        self.api = DmaApi(system, **kwargs)  # type: ignore[arg-type]

    def __enter__(self) -> DmaApi:
        return self.api

    def __exit__(self, *exc: object) -> None:
        self.api.close()


def test_lazy_leaves_a_window_the_checker_reports_where_strict_faults(
    system: vcmm.System,
) -> None:
    """The same access after unmap: strict mode faults (the report says why), lazy mode
    goes through the translation the IOTLB kept, and the checker names the device, the
    IOVA and the unmap's call site."""
    dev = system.device(DEV)
    pa = _page(system)
    dma = DmaApi(system, debug="raise")
    handle = dma.map_page(DEV, pa, 0, SZ_4K, D.BIDIRECTIONAL)
    dev.read(handle, 8)  # the IOTLB now holds the translation
    dma.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    with pytest.raises(DmaApiError, match="after the mapping there was unmapped"):
        dev.read(handle, 8)
    assert dma.checker is not None
    (report,) = dma.checker.take()
    assert report.kind is ReportKind.DEVICE_ACCESS_AFTER_UNMAP
    dma.close()

    lazy = DmaApi(system, debug="raise", invalidation="lazy")
    handle = lazy.map_page(DEV, pa, 0, SZ_4K, D.BIDIRECTIONAL)
    dev.read(handle, 8)
    lazy.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    counters = dev.counters()
    with pytest.raises(DmaApiError, match="stale IOTLB entry"):
        dev.read(handle, 8)
    assert dev.counters() == counters  # refused before anything moved
    assert lazy.checker is not None
    with lazy.checker.warning():
        assert len(dev.read(handle, 8)) == 8  # warn mode: the hardware lets it through
    reports = lazy.checker.take()
    assert [r.kind for r in reports] == [ReportKind.DEVICE_ACCESS_STALE_IOTLB] * 2
    stale = reports[0]
    assert stale.device == DEV and stale.dma_addr == handle
    assert stale.unmapped_by is not None and stale.unmapped_by.call == "unmap_page"
    # after the flush the window is closed: the same access faults
    lazy.advance(FQ_TIMEOUT_NS)
    with pytest.raises(DmaApiError, match="after the mapping there was unmapped"):
        dev.read(handle, 8)
    assert [r.kind for r in lazy.checker.take()] == [ReportKind.DEVICE_ACCESS_AFTER_UNMAP]
    lazy.close()


def test_a_batch_through_a_stale_entry_is_reported(system: vcmm.System, lazy: DmaApi) -> None:
    import numpy as np

    from vcmm.attrs import Access

    dev = system.device(DEV)
    handle = lazy.map_page(DEV, _page(system), 0, SZ_4K, D.BIDIRECTIONAL)
    bursts = np.arange(handle, handle + SZ_4K, 64, dtype=np.uint64)
    dev.access_batch(bursts, Access.READ)
    lazy.unmap_page(DEV, handle, SZ_4K, D.BIDIRECTIONAL)
    with pytest.raises(DmaApiError, match="stale IOTLB entry"):
        dev.access_batch(bursts, Access.WRITE)
    assert lazy.checker is not None
    (report,) = lazy.checker.take()
    assert report.kind is ReportKind.DEVICE_ACCESS_STALE_IOTLB and report.dma_addr == handle


def test_a_queued_iova_is_not_reused_before_the_flush(system: vcmm.System, lazy: DmaApi) -> None:
    pa = _page(system)
    first = lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE)
    lazy.unmap_page(DEV, first, SZ_4K, D.TO_DEVICE)
    second = lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE)
    assert second != first  # the first one waits for the invalidation
    domain = lazy.domain(DEV)
    assert domain is not None and domain.iova.find(first) is not None
    lazy.unmap_page(DEV, second, SZ_4K, D.TO_DEVICE)
    assert lazy.flush_queues() == 2
    assert domain.iova.find(first) is None and domain.iova.find(second) is None
    assert lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE) in (first, second)  # free again
    lazy.unmap_page(DEV, lazy.mappings(DEV)[0].dma_addr, SZ_4K, D.TO_DEVICE)


def test_lazy_counters_ring_full_and_timeout(system: vcmm.System, lazy: DmaApi) -> None:
    pa = _page(system)
    for _ in range(FQ_SIZE - 1):
        lazy.unmap_page(DEV, lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE), SZ_4K, D.TO_DEVICE)
    stats = lazy.invalidation_stats()[DEV]
    assert (stats.held, stats.peak_held, stats.commands, stats.syncs) == (255, 255, 0, 0)
    lazy.unmap_page(DEV, lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE), SZ_4K, D.TO_DEVICE)
    stats = lazy.invalidation_stats()[DEV]
    assert stats.flushes == {"ring_full": 1, "timeout": 0, "explicit": 0}
    assert (stats.held, stats.commands, stats.syncs, stats.unmaps) == (1, 1, 1, 256)
    lazy.advance(FQ_TIMEOUT_NS)
    stats = lazy.invalidation_stats()[DEV]
    assert stats.flushes["timeout"] == 1 and stats.held == 0 and stats.commands == 2


def test_strict_charges_a_command_per_page_or_block_on_every_context(
    make_system: Callable[..., vcmm.System],
) -> None:
    """io-pgtable reports each leaf it removes; a 64K large page is one leaf (16 slots);
    a domain on two contexts is invalidated on both."""
    system = make_system(domains={"vcodec_a_mm1": "vcodec", "vcodec_b_mm2": "vcodec"})
    with _open(system) as dma:
        pa = _page(system, SZ_64K)
        handle = dma.map_page(DEV, pa, 0, 4 * SZ_4K, D.TO_DEVICE)
        dma.unmap_page(DEV, handle, 4 * SZ_4K, D.TO_DEVICE)
        stats = dma.invalidation_stats()["vcodec"]
        assert (stats.commands, stats.syncs, stats.unmaps) == (2 * 4, 2, 1)
        physmem = system.vcm_phys_alloc("contig", SZ_64K, vcmm.PhysAttr.CONTIGUOUS)
        big = physmem.chunk_ranges[0].start
        assert big % SZ_64K == 0
        handle = dma.map_page(DEV, big, 0, SZ_64K, D.TO_DEVICE)
        dma.unmap_page(DEV, handle, SZ_64K, D.TO_DEVICE)
        stats = dma.invalidation_stats()["vcodec"]
        assert (stats.commands, stats.syncs) == (8 + 2 * 1, 2 + 2)


def test_the_cost_model_turns_commands_and_syncs_into_time() -> None:
    cost = InvalidationCost(command_cycles=10, sync_cycles=100, clock_hz=500_000_000)
    assert cost.cycles(3, 1) == 130 and cost.nanoseconds(3, 1) == pytest.approx(260.0)
    spec = load_default()
    table = InvalidationSpec(command_cycles=10, sync_cycles=100, clock_hz=500_000_000)
    assert table.cost() == cost
    smmus = tuple(dataclasses.replace(s, invalidation=table) for s in spec.smmus)
    system = vcmm.System(dataclasses.replace(spec, smmus=smmus))
    with _open(system) as dma:
        handle = dma.map_page(DEV, _page(system, 2 * SZ_4K), 0, 2 * SZ_4K, D.TO_DEVICE)
        dma.unmap_page(DEV, handle, 2 * SZ_4K, D.TO_DEVICE)
        stats = dma.invalidation_stats()[DEV]
        assert stats.cycles == 2 * 10 + 100 and stats.time_ns == pytest.approx(240.0)


def test_the_platform_file_carries_the_mode_and_the_cost() -> None:
    text = dumps_platform(load_default())
    text = text.replace('name = "msm-default"', 'name = "msm-default"\ninvalidation = "lazy"', 1)
    text = text.replace(
        'name = "smmu0"',
        'name = "smmu0"\ninvalidation = { command_cycles = 8, sync_cycles = 90, clock_hz = 1000 }',
        1,
    )
    spec = loads_platform(text)
    assert spec.invalidation == "lazy"
    assert spec.smmu("smmu0").invalidation.cost() == InvalidationCost(
        command_cycles=8, sync_cycles=90, clock_hz=1000
    )
    assert loads_platform(dumps_platform(spec)) == spec
    bad = text.replace("sync_cycles = 90", "sync_cycles = -5")
    with pytest.raises(PlatformError, match=r"smmus\[0\]\.invalidation\.sync_cycles"):
        loads_platform(bad)
    with pytest.raises(PlatformError, match="invalidation"):
        loads_platform(text.replace('invalidation = "lazy"', 'invalidation = "eager"'))


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("eager", "invalidation 'eager' is not one of strict, lazy"),
        ({DEV: "sometimes"}, "invalidation\\[.vcodec_a_mm1.\\] 'sometimes' is not one of"),
        ({"nic": "lazy"}, "domain 'nic', which no IOMMU device is in"),
        (3, "must be a policy name or map domain names"),
    ],
)
def test_bad_modes_are_refused_and_change_nothing(
    system: vcmm.System, choice: object, message: str
) -> None:
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match=message):
        DmaApi(system, invalidation=choice)  # type: ignore[arg-type]
    assert system.snapshot() == before and DmaApi.current(system) is None


@pytest.mark.parametrize(
    "kwargs",
    [{"command_cycles": -1}, {"sync_cycles": -600}, {"clock_hz": 0}, {"command_cycles": 1.5}],
)
def test_negative_costs_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidArgumentError, match=next(iter(kwargs))):
        InvalidationCost(**kwargs)  # type: ignore[arg-type]


def test_a_bad_advance_changes_nothing(system: vcmm.System, lazy: DmaApi) -> None:
    handle = lazy.map_page(DEV, _page(system), 0, SZ_4K, D.TO_DEVICE)
    lazy.unmap_page(DEV, handle, SZ_4K, D.TO_DEVICE)
    before = (system.snapshot(), lazy.snapshot(), lazy.clock.now)
    with pytest.raises(InvalidArgumentError, match="must be >= 0"):
        lazy.advance(-1)
    assert (system.snapshot(), lazy.snapshot(), lazy.clock.now) == before


class _LaterStepFailed(Exception):
    """A later step of a compound operation failed."""


def test_an_undo_is_strict_and_uncounted_even_in_lazy_mode(
    system: vcmm.System, lazy: DmaApi
) -> None:
    """A compound operation taking back the mapping it just made: the IOVA is reusable
    at once, so no translation of it may stay cached, and nothing is counted."""
    dev = system.device(DEV)
    pa = _page(system)
    keep = lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE)  # the domain is programmed
    before = lazy.invalidation_stats()[DEV]
    made: list[int] = []
    with pytest.raises(_LaterStepFailed), Transaction("compound operation") as txn:
        handle = lazy.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE)
        made.append(handle)
        txn.on_undo(lazy.unmap_page, DEV, handle, SZ_4K, D.TO_DEVICE)
        dev.read(handle, 8)
        raise _LaterStepFailed
    (handle,) = made
    assert lazy.invalidation_stats()[DEV] == before
    domain = lazy.domain(DEV)
    assert domain is not None and domain.iova.find(handle) is None  # free at once
    with pytest.raises(DmaApiError, match="after the mapping there was unmapped"):
        dev.read(handle, 8)  # faults: the entry went
    assert lazy.checker is not None
    assert [r.kind for r in lazy.checker.take()] == [ReportKind.DEVICE_ACCESS_AFTER_UNMAP]
    lazy.unmap_page(DEV, keep, SZ_4K, D.TO_DEVICE)


def test_a_device_entry_chooses_its_domains_mode() -> None:
    text = dumps_platform(load_default())
    lazy_mdp = text.replace(
        'name = "mdp"\nkind = "smmu"', 'name = "mdp"\nkind = "smmu"\ninvalidation = "lazy"'
    )
    assert lazy_mdp != text
    spec = loads_platform(lazy_mdp)
    with _open(vcmm.System(spec)) as dma:
        assert dma.domain("mdp").invalidation.mode == "lazy"  # type: ignore[union-attr]
        assert dma.domain(DEV).invalidation.mode == "strict"  # type: ignore[union-attr]
    with _open(vcmm.System(spec), invalidation="strict") as dma:  # the API overrides all
        assert dma.domain("mdp").invalidation.mode == "strict"  # type: ignore[union-attr]
    with _open(vcmm.System(spec), invalidation={DEV: "lazy"}) as dma:  # adds to it
        modes = {n: d.invalidation.mode for n, d in dma.domains.items()}
        assert modes["mdp"] == modes[DEV] == "lazy" and modes["vcodec_stream"] == "strict"
    dsp = text.replace(
        'name = "dsp"\nkind = "physical"', 'name = "dsp"\nkind = "physical"\ninvalidation = "lazy"'
    )
    with pytest.raises(PlatformError, match="has no invalidation"):
        loads_platform(dsp)
    shared = load_default()
    devices = tuple(
        dataclasses.replace(d, domain="vcodec", invalidation="lazy" if i == 0 else "strict")
        if d.name in ("vcodec_a_mm1", "vcodec_b_mm2")
        else d
        for i, d in enumerate(shared.devices)
    )
    with pytest.raises(PlatformError, match="devices of one domain share its mode"):
        dataclasses.replace(shared, devices=devices)


@pytest.mark.parametrize("pages", [1, 3, 4, 5, 17, 20])
def test_leaves_are_counted_as_the_table_decodes_them(system: vcmm.System, pages: int) -> None:
    """count_leaves (point walks, then one range walk) against the table's own decode,
    over mappings of 4K pages and 64K large pages."""
    from vcmm.dma.invalidation import count_leaves

    with _open(system) as dma:
        physmem = system.vcm_phys_alloc("contig", SZ_64K * 2, vcmm.PhysAttr.CONTIGUOUS)
        base = physmem.chunk_ranges[0].start
        size = pages * SZ_4K
        handle = dma.map_page(DEV, base, 0, size, D.TO_DEVICE)
        domain = dma.domain(DEV)
        assert domain is not None
        table = domain.vcm.table
        expected = [m for m in table.mappings() if handle <= m.va < handle + size]
        assert any(m.size == SZ_64K for m in expected) == (pages >= 16)
        assert count_leaves(table, handle, size) == len(expected)
        assert count_leaves(table, handle + size, SZ_64K) == 0  # nothing mapped there
        dma.unmap_page(DEV, handle, size, D.TO_DEVICE)
