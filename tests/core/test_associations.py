"""Associations: many-to-many links, activation, and split tables (000 L215-246).

With ``SPLIT`` one context runs two VCMs: transactions whose VA[31] is 1 walk the
``USE_HIGH`` VCM's table (TTBR1), the others the ``USE_LOW`` VCM's (TTBR0, TTBCR.N=1).
"""

from __future__ import annotations

import pytest

from vcmm import SZ_1M, SZ_16M
from vcmm.core import AssocAttr, Attr, PhysAttr, VcmKind
from vcmm.errors import BusyError, DeviceFaultError, InvalidArgumentError, StateError

HIGH = 0xC000_0000  # above RAM (0x8000_0000 + 1 GiB), so not a one-to-one window


def _backed(system, vcm, fill: bytes):
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    system.memory.write(physmem.chunks[0][0], fill)
    system.vcm_back(res, physmem)
    return res, physmem


def test_split_context_routes_on_va_bit_31(system, armv7) -> None:
    dev = system.device("vcodec_a_mm1")
    low = system.vcm_create(SZ_16M, 256 * SZ_1M)
    high = system.vcm_create(HIGH, 256 * SZ_1M)
    assert (low.kind, high.kind) == (VcmKind.IOMMU, VcmKind.IOMMU)
    res_low, _pm_low = _backed(system, low, b"LOW!")
    res_high, _pm_high = _backed(system, high, b"HIGH")
    a_low = system.vcm_assoc(low, dev, AssocAttr.SPLIT | AssocAttr.USE_LOW)
    a_high = system.vcm_assoc(high, dev, AssocAttr.SPLIT | AssocAttr.USE_HIGH)
    system.vcm_activate(a_low)
    system.vcm_activate(a_high)

    regs = dev.ctx.smmu.bank_registers(dev.ctx.bank)
    assert regs.enabled and regs.ttbcr & 0b111 == 1  # TTBCR.N = 1
    assert regs.ttbr1 == high.table.root
    # TTBR0 points at the low VCM's own full table: with TTBCR.N=1 the walker indexes
    # it by VA[30:20], which for VA < 2 GiB is the slot VA[31:20] names.
    assert regs.ttbr0 == low.table.root
    for va in (res_low.dev_addr, res_low.dev_addr + SZ_1M):
        assert va >> 31 == 0
        assert armv7.l1(regs.ttbr0, (va >> 20 & 0x7FF) << 20) == armv7.l1(low.table.root, va)

    assert res_high.dev_addr >> 31 == 1 and res_low.dev_addr >> 31 == 0
    assert dev.read(res_high.dev_addr, 4) == b"HIGH"
    assert dev.read(res_low.dev_addr, 4) == b"LOW!"
    # Backing while active reaches the live table through the update bracket.
    res2, _ = _backed(system, low, b"more")
    assert dev.read(res2.dev_addr, 4) == b"more"
    # A low VA with nothing behind it faults in the low table, not the high one.
    hole = SZ_16M + 200 * SZ_1M
    with pytest.raises(DeviceFaultError) as err:
        dev.read(hole, 4)
    assert err.value.address == hole

    # Deactivating one half leaves the other running and its half disabled.
    system.vcm_deactivate(a_high)
    assert dev.read(res_low.dev_addr, 4) == b"LOW!"
    with pytest.raises(DeviceFaultError):
        dev.read(res_high.dev_addr, 4)
    system.vcm_activate(a_high)
    assert dev.read(res_high.dev_addr, 4) == b"HIGH"


def test_one_vcm_low_half_of_one_context_and_whole_space_of_another(system) -> None:
    a, b = system.device("vcodec_a_mm1"), system.device("vcodec_b_mm2")
    vcm = system.vcm_create(SZ_16M, 256 * SZ_1M)
    res, _ = _backed(system, vcm, b"both")
    system.vcm_activate(system.vcm_assoc(vcm, a, AssocAttr.SPLIT | AssocAttr.USE_LOW))
    system.vcm_activate(system.vcm_assoc(vcm, b, 0))
    assert a.ctx.ttbr0 == vcm.table.root == b.ctx.ttbr0
    assert a.ctx.split and not b.ctx.split
    res2, _ = _backed(system, vcm, b"late")
    for dev in (a, b):
        assert dev.read(res.dev_addr, 4) == b"both"
        assert dev.read(res2.dev_addr, 4) == b"late"
    system.vcm_unback(res2)
    for dev in (a, b):
        with pytest.raises(DeviceFaultError):
            dev.read(res2.dev_addr, 4)


def test_a_split_low_association_costs_no_extra_table_memory(system) -> None:
    baseline = system.table_memory.used_bytes
    vcm = system.vcm_create(SZ_16M, 256 * SZ_1M)
    res, _ = _backed(system, vcm, b"x")
    with_table = system.table_memory.used_bytes
    used = {}
    for attr in (AssocAttr.SPLIT | AssocAttr.USE_LOW, AssocAttr.NONE):
        avcm = system.vcm_assoc(vcm, "vcodec_a_mm1", attr)
        system.vcm_activate(avcm)
        assert system.device("vcodec_a_mm1").read(res.dev_addr, 1) == b"x"
        used[attr] = system.table_memory.used_bytes
        system.vcm_deactivate(avcm)
        system.vcm_deassoc(avcm)
    # The same VCM table serves both shapes: no copy, no extra pages.
    assert used[AssocAttr.SPLIT | AssocAttr.USE_LOW] == used[AssocAttr.NONE] <= with_table
    system.vcm_unback(res)
    system.vcm_unreserve(res)
    system.vcm_free(vcm)
    assert system.table_memory.used_bytes == baseline


def test_split_rules(system) -> None:
    dev = system.device("vcodec_a_mm1")
    low = system.vcm_create(SZ_16M, 256 * SZ_1M)
    high = system.vcm_create(HIGH, 256 * SZ_1M)
    straddle = system.vcm_create(0x7000_0000, 512 * SZ_1M, kind=VcmKind.IOMMU)
    before = system.snapshot()
    for vcm, attr, rule in (
        (low, AssocAttr.SPLIT | AssocAttr.USE_HIGH, "at or above 0x80000000"),
        (straddle, AssocAttr.SPLIT | AssocAttr.USE_LOW, "below 0x80000000"),
        (low, AssocAttr.SPLIT, "exactly one of USE_HIGH or USE_LOW"),
        (low, AssocAttr.USE_LOW, "only make sense with SPLIT"),
        (low, 1 << 7, "not an AssocAttr"),
    ):
        with pytest.raises(InvalidArgumentError, match=rule):
            system.vcm_assoc(vcm, dev, attr)
        assert system.snapshot() == before
    whole = system.vcm_assoc(low, dev, 0)
    half = system.vcm_assoc(high, dev, AssocAttr.SPLIT | AssocAttr.USE_HIGH)
    system.vcm_activate(whole)
    before = system.snapshot()
    with pytest.raises(BusyError, match="already runs"):
        system.vcm_activate(half)
    assert system.snapshot() == before


def test_many_to_many_and_activation_counts(system) -> None:
    vmm = system.vcm_create_from_prebuilt(0)
    avcm = system.vcm_assoc(vmm, system.cpu, 0)
    assert vmm.activations == 0
    system.vcm_activate(avcm)
    assert vmm.activations == 1
    with pytest.raises(StateError, match="already active"):
        system.vcm_activate(avcm)
    # One VCM, two devices; one device, two VCMs (only one active on its context).
    vcm1 = system.vcm_create(SZ_16M, 64 * SZ_1M)
    vcm2 = system.vcm_create(SZ_16M, 64 * SZ_1M)
    res1, _ = _backed(system, vcm1, b"one")
    res2, _ = _backed(system, vcm2, b"two")
    a1 = system.vcm_assoc(vcm1, "vcodec_a_mm1", 0)
    b1 = system.vcm_assoc(vcm1, "mdp", 0)
    a2 = system.vcm_assoc(vcm2, "vcodec_a_mm1", 0)
    for x in (a1, b1):
        system.vcm_activate(x)
    assert vcm1.activations == 2
    assert system.device("mdp").read(res1.dev_addr, 3) == b"one"
    assert res1.dev_addr == res2.dev_addr  # two address spaces, same addresses
    dev = system.device("vcodec_a_mm1")
    assert dev.read(res1.dev_addr, 3) == b"one"
    system.vcm_deactivate(a1)
    # Parked: disabled, still bound (idle) until another context needs the bank.
    assert not dev.ctx.is_active and dev.ctx.is_bound
    assert not dev.ctx.smmu.bank_registers(dev.ctx.bank).enabled
    system.vcm_activate(a2)  # a context switch: the old translations must not leak
    assert dev.read(res2.dev_addr, 3) == b"two"


def test_one_to_one_reservations_sit_at_the_physical_address(system) -> None:
    """The DSP sees RAM at 0x4000_0000 where it is at 0x8000_0000 (000 L1352-1356)."""
    physmem = system.vcm_phys_alloc("contig", 4 * SZ_1M, PhysAttr.CONTIGUOUS)
    ((pa, size),) = physmem.chunks
    vcm = system.vcm_create(pa, size)
    assert vcm.kind is VcmKind.ONE_TO_ONE
    dsp, camera = system.device("dsp"), system.device("camera")
    system.vcm_activate(system.vcm_assoc(vcm, dsp, 0))
    res = system.vcm_reserve(vcm, 2 * SZ_1M, Attr.RW)
    with pytest.raises(StateError, match="no dev_addr until it is backed"):
        _ = res.dev_addr
    system.vcm_back(res, physmem)
    assert res.addr == pa and res.dev_addr == pa - 0x4000_0000
    dsp.write(res.dev_addr, b"dsp")
    assert system.memory.read(pa, 3) == b"dsp"
    # The camera addresses memory physically: its address for the same bytes is pa.
    system.vcm_activate(system.vcm_assoc(vcm, camera, 0))
    assert res.dev_addr_for(camera) == pa and res.dev_addr_for(dsp) == pa - 0x4000_0000
    with pytest.raises(StateError, match="different bus addresses"):
        _ = res.dev_addr
    assert camera.read(res.dev_addr_for(camera), 3) == b"dsp"
    system.vcm_unback(res)
    assert res.addr is None


def test_vcm_of_the_wrong_kind_is_refused(system) -> None:
    iommu = system.vcm_create(SZ_16M, SZ_16M)
    vmm = system.vcm_create_from_prebuilt(0)
    one = system.vcm_create(0xA800_0000, SZ_1M)
    before = system.snapshot()
    for vcm, dev, why in (
        (vmm, "vcodec_a_mm1", "needs a cpu one"),
        (iommu, "cpu", "needs an iommu one"),
        (iommu, "dsp", "needs an iommu one"),
        (one, "vcodec_a_mm1", "needs a physical one"),
        (vmm, "dsp", "needs a cpu one"),
    ):
        with pytest.raises(InvalidArgumentError, match=why):
            system.vcm_assoc(vcm, dev, 0)
    assert system.snapshot() == before
