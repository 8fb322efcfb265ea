"""The systems the commands show: a scenario's end state, or the seed's triple mapping.

``vcmm demo`` walks the seed's triple mapping and prints it; ``vcmm graph`` and ``vcmm
pt dump`` show the same system when given no scenario, and a scenario's end state
otherwise.  The walk-through lives here so that no command imports another's.
"""

from __future__ import annotations

from dataclasses import dataclass

from vcmm.cli.common import PlatformChoice, load_for_cli, run_with_progress
from vcmm.core import Attr, PhysAttr
from vcmm.core.export import page_histogram
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import SZ_2M, SZ_4K, SZ_16M
from vcmm.system import System

#: The seed's triple-mapping size: two 1M sections and one 4K page on the IOMMU.
TRIPLE_SIZE = SZ_2M + SZ_4K


@dataclass
class TripleMapping:
    """What the walk-through built and what the three bus masters saw."""

    system: System
    phys_addr: int
    iommu_addr: int
    dsp_addr: int
    cpu_addr: int
    iommu_pages: dict[int, int]
    dsp_ok: bool
    cpu_ok: bool
    length: int


def triple_mapping(system: System | None = None) -> TripleMapping:
    """The seed's walk-through (000 L321-427): one 2M+4K contiguous allocation backing
    an IOMMU VCM (vcodec_a_mm1), a one-to-one VCM (dsp) and the VMM VCM (cpu)."""
    system = system or System.default()
    dev_iommu = system.device("vcodec_a_mm1")
    dev_dsp = system.device("dsp")
    physmem = system.vcm_phys_alloc("contig", TRIPLE_SIZE, PhysAttr.CONTIGUOUS)
    ((phys_addr, phys_size),) = physmem.chunks
    # The seed writes vcm_create(SZ_1K, SZ_16M); 1K breaks its own 4K rule.
    vcm_iommu = system.vcm_create(SZ_4K, SZ_16M)
    vcm_onetoone = system.vcm_create(phys_addr, phys_size)
    vcm_vmm = system.vcm_create_from_prebuilt(0)
    for vcm, dev in ((vcm_iommu, dev_iommu), (vcm_onetoone, dev_dsp), (vcm_vmm, system.cpu)):
        system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    attr = Attr.READ | Attr.WRITE
    reservations = [
        system.vcm_reserve(v, TRIPLE_SIZE, attr) for v in (vcm_iommu, vcm_onetoone, vcm_vmm)
    ]
    for res in reservations:
        system.vcm_back(res, physmem)
    res_iommu, res_dsp, res_vmm = reservations
    payload = (b"VCMM" * (TRIPLE_SIZE // 4))[:TRIPLE_SIZE]
    dev_iommu.write(res_iommu.dev_addr, payload)
    dsp_addr = res_dsp.dev_addr_for(dev_dsp)
    dsp_ok = dev_dsp.read(dsp_addr, TRIPLE_SIZE) == payload
    cpu_ok = system.cpu.read(res_vmm.dev_addr, TRIPLE_SIZE) == payload
    return TripleMapping(
        system=system,
        phys_addr=phys_addr,
        iommu_addr=res_iommu.dev_addr,
        dsp_addr=dsp_addr,
        cpu_addr=res_vmm.dev_addr,
        iommu_pages=page_histogram(system.vcmm, res_iommu),
        dsp_ok=dsp_ok,
        cpu_ok=cpu_ok,
        length=TRIPLE_SIZE,
    )


def system_for(
    scenario: str | None, platform: PlatformChoice | None = None
) -> tuple[System, str, dict[str, str]]:
    """The end state of ``scenario`` (with the buffers' names for its objects, on
    ``--platform`` when given); without one, the ``--platform`` board as booted, or
    the demo's triple mapping on the default platform."""
    platform = platform or PlatformChoice()
    if scenario is None:
        spec = platform.load()
        if spec is not None:
            return System(spec), spec.name, {}
        if platform.ram is not None:
            raise InvalidArgumentError(
                "--ram applies to a devicetree: give --platform FILE or a scenario"
            )
        return triple_mapping().system, "demo", {}
    sc = load_for_cli(scenario, platform)
    result = run_with_progress(sc)
    assert result.system is not None
    return result.system, sc.name, result.labels
