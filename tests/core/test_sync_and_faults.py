"""Cache maintenance (King, 000 L1341-1356) and the fault hook (000 L304-317).

The platform's devices do not snoop the CPU cache: a CPU write sits dirty in a line
until it is cleaned, and a line the CPU holds goes stale when a device writes memory.
"""

from __future__ import annotations

import logging

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, Access, DmaDirection, FaultKind
from vcmm.core import Attr, PhysAttr, VcmFault
from vcmm.errors import DeviceFaultError, InvalidArgumentError, StateError
from vcmm.hw.smmu import SmmuFault

OLD, NEW = b"0ld-bytes-in-dram", b"new-bytes-written"


def _shared_buffer(system: vcmm.System):
    """One allocation mapped for the codec (IOMMU) and for the kernel (VMM)."""
    dev = system.device("vcodec_a_mm1")
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    vmm = system.vcm_create_from_prebuilt(0)
    system.vcm_activate(system.vcm_assoc(vmm, system.cpu, 0))
    physmem = system.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE)
    system.memory.write(physmem.chunks[0][0], OLD)
    res_dev = system.vcm_reserve(vcm, SZ_4K, Attr.RW)
    res_cpu = system.vcm_reserve(vmm, SZ_4K, Attr.RW)
    system.vcm_back(res_dev, physmem)
    system.vcm_back(res_cpu, physmem)
    return dev, res_dev, res_cpu


def test_device_reads_stale_data_without_sync_for_device(system) -> None:
    dev, res_dev, res_cpu = _shared_buffer(system)
    system.cpu.write(res_cpu.dev_addr, NEW)  # write-back: the line is dirty, DRAM is old
    assert dev.read(res_dev.dev_addr, len(NEW)) == OLD
    assert system.vcm_sync_for_device(res_dev, DmaDirection.TO_DEVICE) is True
    assert dev.read(res_dev.dev_addr, len(NEW)) == NEW


def test_cpu_reads_stale_data_without_sync_for_cpu(system) -> None:
    dev, res_dev, res_cpu = _shared_buffer(system)
    assert system.cpu.read(res_cpu.dev_addr, len(OLD)) == OLD  # the line is now cached
    dev.write(res_dev.dev_addr, NEW)
    assert system.cpu.read(res_cpu.dev_addr, len(NEW)) == OLD  # stale line
    assert system.vcm_sync_for_cpu(res_dev, DmaDirection.FROM_DEVICE) is True
    assert system.cpu.read(res_cpu.dev_addr, len(NEW)) == NEW


def test_sync_for_device_from_device_drops_dirty_lines(system) -> None:
    """Handing a buffer to a device that will write it: a dirty CPU line must not be
    evicted over the device's data later, so it is invalidated, not cleaned."""
    _dev, res_dev, res_cpu = _shared_buffer(system)
    system.cpu.write(res_cpu.dev_addr, b"scratch")
    pa = res_dev.physmem.chunks[0][0]
    assert system.cpu.cache.is_dirty(pa)
    system.vcm_sync_for_device(res_dev, DmaDirection.FROM_DEVICE)
    assert not system.cpu.cache.contains(pa)
    assert system.vcm_sync_for_cpu(res_dev, DmaDirection.TO_DEVICE) is False  # nothing to do


def test_sync_is_skipped_when_every_device_snoops(system) -> None:
    dev, res_dev, res_cpu = _shared_buffer(system)
    dev.coherent = True
    system.cpu.write(res_cpu.dev_addr, NEW)
    before = system.snapshot()
    assert system.vcm_sync_for_device(res_dev, DmaDirection.TO_DEVICE) is False
    assert system.snapshot() == before  # no cache line was touched
    assert dev.read(res_dev.dev_addr, len(NEW)) == NEW  # the device snooped the line


def test_sync_argument_errors(system) -> None:
    _, res_dev, _ = _shared_buffer(system)
    other = system.vcm_reserve(res_dev.vcm, SZ_4K, Attr.RW)
    before = system.snapshot()
    with pytest.raises(StateError, match="not backed"):
        system.vcm_sync_for_device(other, DmaDirection.TO_DEVICE)
    with pytest.raises(InvalidArgumentError, match="NONE"):
        system.vcm_sync_for_cpu(res_dev, DmaDirection.NONE)
    with pytest.raises(InvalidArgumentError, match="not a DmaDirection"):
        system.vcm_sync_for_cpu(res_dev, 1)
    with pytest.raises(InvalidArgumentError, match="not a Reservation"):
        system.vcm_sync_for_cpu(res_dev.physmem, DmaDirection.TO_DEVICE)
    assert system.snapshot() == before


# -- faults ---------------------------------------------------------------------------------


def _device_vcm(system: vcmm.System):
    dev = system.device("vcodec_b_mm2")
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, dev, 0))
    return dev, vcm


def test_handler_backs_on_demand_and_the_access_completes(system) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, 2 * SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", 2 * SZ_1M, PhysAttr.NONE)
    frame = bytes(range(256)) * 16
    system.memory.write(physmem.chunks[1][0] + 0x100, frame)
    seen: list[tuple[VcmFault, object]] = []

    def back_on_demand(fault: VcmFault, data: object) -> int:
        seen.append((fault, data))
        assert fault.reservation is not None
        system.vcm_back(fault.reservation, data)  # type: ignore[arg-type]
        return 1

    system.vcm_hook(dev, back_on_demand, physmem)
    got = dev.read(res.dev_addr + SZ_1M + 0x100, len(frame))
    assert got == frame
    ((fault, data),) = seen  # one fault; the replay and the rest of the access hit
    assert data is physmem
    assert (fault.device, fault.va, fault.access) == (
        dev.name,
        res.dev_addr + SZ_1M + 0x100,
        Access.READ,
    )
    assert fault.kind is FaultKind.TRANSLATION and fault.vcm is vcm and fault.reservation is res
    # one fault type: the VCMM's record is the SMMU's, registers included (FAR = the VA)
    assert isinstance(fault, SmmuFault)
    assert fault.registers is not None and fault.registers.faulted
    assert fault.registers.far == res.dev_addr + SZ_1M + 0x100
    assert dev.ctx.stats().retries == 1
    assert res.physmem is physmem


def test_handler_on_demand_in_a_batch_sweep(system) -> None:
    import numpy as np

    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    physmem = system.vcm_phys_alloc("blocks", SZ_1M, PhysAttr.NONE)
    calls = []

    def handler(fault: VcmFault, data: object) -> int:
        calls.append(fault.va)
        system.vcm_back(fault.reservation, physmem)
        return 1

    system.vcm_hook(dev, handler)
    vas = np.arange(res.dev_addr, res.dev_addr + SZ_1M, 64, dtype=np.uint64)
    counts = dev.access_batch(vas, Access.WRITE)
    assert counts.transactions == SZ_1M // 64 and calls == [res.dev_addr]


def test_handler_returning_zero_terminates(system) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    system.vcm_hook(dev, lambda fault, data: 0)
    with pytest.raises(DeviceFaultError, match="asked to terminate") as err:
        dev.write(res.dev_addr, b"x")
    assert err.value.address == res.dev_addr and err.value.kind is FaultKind.TRANSLATION
    assert dev.ctx.stats().terminated == 1


def test_no_handler_warns_and_terminates(system, caplog) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    system.vcm_hook(dev, lambda fault, data: 1)
    system.vcm_hook(dev, None)  # unhook
    with caplog.at_level(logging.WARNING), pytest.raises(DeviceFaultError) as err:
        dev.read(res.dev_addr + 0x40, 4)
    message = str(err.value)
    assert dev.name in message and f"{res.dev_addr + 0x40:#x}" in message
    assert "translation" in message and err.value.device == dev.name
    assert any(
        r.levelno == logging.WARNING and "no fault handler" in r.getMessage()
        for r in caplog.records
    )


def test_permission_fault_reaches_the_handler_with_its_kind(system) -> None:
    dev, vcm = _device_vcm(system)
    res = system.vcm_reserve(vcm, SZ_4K, Attr.READ)
    system.vcm_back(res, system.vcm_phys_alloc("blocks", SZ_4K, PhysAttr.NONE))
    kinds = []
    system.vcm_hook(dev, lambda fault, data: kinds.append(fault.kind) or 0)
    with pytest.raises(DeviceFaultError):
        dev.write(res.dev_addr, b"no")
    assert kinds == [FaultKind.PERMISSION]


def test_hook_refuses_devices_without_iommu(system) -> None:
    before = system.snapshot()
    for dev in ("dsp", "cpu"):
        with pytest.raises(InvalidArgumentError, match="has no IOMMU"):
            system.vcm_hook(dev, lambda fault, data: 0)
    with pytest.raises(InvalidArgumentError, match="not callable"):
        system.vcm_hook("mdp", 42)
    assert system.snapshot() == before
