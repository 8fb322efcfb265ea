"""Choosing the IOVA placement policy: platform file, DmaApi, per domain.

The issue's example is the witness throughout: map one page, then three pages, on a
32-bit device.  The seed policy answers 0xffffc000 for the second mapping (3 pages
aligned to 4, right under the first); mainline rounds 3 pages up to 4 and walks down
from the first node: (0xfffff - 4) & ~3 = frame 0xffff8, IOVA 0xffff8000.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

import vcmm
from vcmm import SZ_4K
from vcmm import DmaDirection as D
from vcmm.dma import DMA_MAPPING_ERROR, DmaApi
from vcmm.errors import InvalidArgumentError, OutOfAddressSpaceError
from vcmm.platform import load_default

DEV = "vcodec_a_mm1"
SECOND = {"seed": 0xFFFF_C000, "linux": 0xFFFF_8000}


def one_then_three(dma: DmaApi, pa: int, dev: str = DEV) -> tuple[int, int]:
    first = dma.map_page(dev, pa, 0, SZ_4K, D.TO_DEVICE)
    second = dma.map_page(dev, pa + SZ_4K, 0, 3 * SZ_4K, D.TO_DEVICE)
    return first, second


def boot(policy: str) -> vcmm.System:
    return vcmm.System(dataclasses.replace(load_default(), iova_policy=policy))


def test_the_default_is_the_seed_policy(system: vcmm.System, kbuf: Callable) -> None:
    dma = DmaApi(system)
    assert system.spec.iova_policy == "seed"
    assert one_then_three(dma, kbuf(4 * SZ_4K).pa) == (0xFFFF_F000, SECOND["seed"])
    assert dma.domain(DEV).iova_policy == "seed"  # type: ignore[union-attr]


@pytest.mark.parametrize("policy", ["seed", "linux"])
def test_the_platform_file_chooses_for_every_domain(policy: str) -> None:
    system = boot(policy)
    dma = DmaApi(system)
    pa = ram(system, 4)
    assert one_then_three(dma, pa) == (0xFFFF_F000, SECOND[policy])
    assert {d.iova_policy for d in dma.domains.values()} == {policy}
    # The device reaches the buffer through the IOVA the policy placed.
    system.memory.write(pa + SZ_4K, b"placed")
    assert system.device(DEV).read(SECOND[policy], 6) == b"placed"


def ram(system: vcmm.System, pages: int) -> int:
    physmem = system.vcm_phys_alloc("ebi", pages * SZ_4K, vcmm.PhysAttr.CONTIGUOUS)
    return physmem.chunk_ranges[0].start


def test_the_dma_api_overrides_the_platform_for_every_domain() -> None:
    system = boot("linux")
    dma = DmaApi(system, iova_policy="seed")
    assert one_then_three(dma, ram(system, 4))[1] == SECOND["seed"]
    assert {d.iova_policy for d in dma.domains.values()} == {"seed"}


def test_a_mapping_chooses_per_domain_and_the_others_keep_the_platforms() -> None:
    system = boot("seed")
    dma = DmaApi(system, iova_policy={"mdp": "linux"})
    policies = {name: d.iova_policy for name, d in dma.domains.items()}
    assert policies == {
        "vcodec_a_mm1": "seed",
        "vcodec_b_mm2": "seed",
        "vcodec_stream": "seed",
        "mdp": "linux",
    }
    pa = ram(system, 4)
    assert one_then_three(dma, pa, "mdp")[1] == SECOND["linux"]
    assert one_then_three(dma, pa, DEV)[1] == SECOND["seed"]


def test_a_shared_domain_is_named_by_its_domain_not_its_devices() -> None:
    spec = load_default()
    devices = tuple(
        dataclasses.replace(d, domain="codec") if d.name.startswith("vcodec") else d
        for d in spec.devices
    )
    system = vcmm.System(dataclasses.replace(spec, devices=devices))
    dma = DmaApi(system, iova_policy={"codec": "linux"})
    assert dma.domain("vcodec_b_mm2").iova_policy == "linux"  # type: ignore[union-attr]
    assert dma.domain("mdp").iova_policy == "seed"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("choice", "message"),
    [
        ("Linux", "'Linux' is not an IOVA placement policy"),
        (3, "must be a policy name or map domain names to policies"),
        ({"vcodec": "linux"}, "domain 'vcodec', which no IOMMU device is in"),
        ({"mdp": "fast"}, r"iova_policy\['mdp'\] 'fast' is not"),
    ],
)
def test_a_bad_choice_is_refused_before_anything_is_built(choice: Any, message: str) -> None:
    system = vcmm.System.default()
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match=message):
        DmaApi(system, iova_policy=choice)
    assert system.snapshot() == before


def test_the_platform_field_is_validated_and_round_trips() -> None:
    from vcmm.platform import loads_platform
    from vcmm.platform.loader import dumps_platform

    spec = dataclasses.replace(load_default(), iova_policy="linux")
    text = dumps_platform(spec)
    assert 'iova_policy = "linux"' in text
    assert dataclasses.replace(loads_platform(text), source=spec.source) == spec
    assert "iova_policy" not in dumps_platform(load_default())  # the default stays implicit
    with pytest.raises(InvalidArgumentError, match="iova_policy: 'mainline' is not one of"):
        loads_platform(text.replace('"linux"', '"mainline"'), "board.toml")


# -- failures ---------------------------------------------------------------------------


def _replace(tree: object, old: object, new: object) -> object:
    """``tree`` (nested tuples) with every element equal to ``old`` replaced by ``new``."""
    if tree == old:
        return new
    if isinstance(tree, tuple):
        return tuple(_replace(item, old, new) for item in tree)
    return tree


def test_exhaustion_under_linux_changes_only_what_the_kernel_changes(kbuf: Callable) -> None:
    """No room under the mask: map_page fails; the mainline allocator keeps its failure
    hint and its (empty) flush, and nothing else in the system moves."""
    system = boot("linux")
    dma = DmaApi(system)
    pa = ram(system, 2)
    dma.set_mask(DEV, 0x1FFF)  # frame 1 only: frame 0 is never an IOVA
    assert dma.map_page(DEV, pa, 0, SZ_4K, D.TO_DEVICE) == 0x1000
    iova = dma.domain(DEV).iova  # type: ignore[union-attr]
    before, iova_before = (system.snapshot(), dma.snapshot()), iova.snapshot()
    assert dma.map_page(DEV, pa + SZ_4K, 0, SZ_4K, D.TO_DEVICE) == DMA_MAPPING_ERROR
    assert isinstance(dma.last_error, OutOfAddressSpaceError)
    counters = dataclasses.replace(iova_before.counters, rcache_flushes=1)
    iova_after = dataclasses.replace(iova_before, max32_alloc_size=1, counters=counters)
    assert iova.snapshot() == iova_after
    assert (system.snapshot(), dma.snapshot()) == _replace(before, iova_before, iova_after)


@pytest.mark.parametrize("cached", [True, False], ids=["cache-hit", "tree"])
def test_a_mapping_failing_after_its_linux_iova_leaves_everything_as_before(
    cached: bool,
) -> None:
    """Table memory runs out after the IOVA was allocated (from the magazine or the
    tree): the allocation is undone exactly, magazines included."""
    system = boot("linux")
    dma = DmaApi(system)
    pa = ram(system, 8)
    if cached:  # a 3-page range in the order-2 magazine serves the 4-page request
        handle = dma.map_page(DEV, pa, 0, 3 * SZ_4K, D.TO_DEVICE)
        dma.unmap_page(DEV, handle, 3 * SZ_4K, D.TO_DEVICE)
        # the unmap kept its empty level-2 table (Linux's rule): give it back, so the
        # next mapping needs table memory again
        table = dma.domain(DEV).vcm.table  # type: ignore[union-attr]
        table.release_empty([pa for pa, _ in table.table_pages()])
    iova = dma.domain(DEV).iova  # type: ignore[union-attr]
    tm = system.table_memory
    for size in (4096, 1024, 256, 64):
        while True:
            try:
                tm.alloc(size)
            except vcmm.errors.OutOfMemoryError:
                break
    before = (system.snapshot(), dma.snapshot(), iova.snapshot())
    assert dma.map_page(DEV, pa + 4 * SZ_4K, 0, 4 * SZ_4K, D.TO_DEVICE) == DMA_MAPPING_ERROR
    assert "table memory" in str(dma.last_error)
    assert (system.snapshot(), dma.snapshot(), iova.snapshot()) == before
    assert iova.cached_count == (1 if cached else 0)
