"""Booting: a System is a Machine plus the VCMM plus front-end slots, and the
platform's per-device facts travel as DeviceRecords, not as attributes on hardware.

Expected values are the default platform file's (src/vcmm/platforms/default.toml:
smmu0 binds vcodec_b_mm2 to bank 1, vcodec_a_mm1 has a 64 KiB max segment).
"""

from __future__ import annotations

import dataclasses

import pytest

import vcmm
from vcmm import SZ_1M, SZ_16M
from vcmm.core import Attr
from vcmm.core.interfaces import DeviceRecord, DmaLimits, FrontEndSlots
from vcmm.core.manager import Vcmm
from vcmm.dma import DmaApi
from vcmm.errors import InvalidArgumentError, NotFoundError, StateError
from vcmm.hw import PhysicalDevice, SmmuDevice
from vcmm.hw.lock import MachineLock
from vcmm.hw.machine import Machine
from vcmm.hw.master import TranslationPath


@pytest.fixture
def system() -> vcmm.System:
    return vcmm.System.default()


def test_the_system_holds_a_machine_and_a_vcmm_rather_than_being_one(system) -> None:
    assert not isinstance(system, Vcmm)
    assert isinstance(system.machine, Machine) and isinstance(system.vcmm, Vcmm)
    assert system.machine.devices["cpu"] is system.cpu is system.vcmm.cpu
    assert system.lock is system.machine.lock is system.vcmm.lock
    assert sorted(system.machine.iommu_devices()) == [
        "mdp",
        "vcodec_a_mm1",
        "vcodec_b_mm2",
        "vcodec_stream",
    ]
    assert sorted(system.machine.physical_devices()) == ["camera", "dsp"]


def test_hardware_objects_carry_no_platform_attributes(system) -> None:
    for device in system.devices.values():
        assert not hasattr(device, "bank"), device.name
        assert not hasattr(device, "dma"), device.name


def test_device_records_give_the_platform_files_facts(system) -> None:
    b = system.device_record("vcodec_b_mm2")
    assert (b.path, b.smmu, b.context, b.bank) == (
        TranslationPath.IOMMU,
        "smmu0",
        "vcodec_b_mm2",
        1,
    )
    a = system.device_record("vcodec_a_mm1")
    assert a.dma == DmaLimits(0xFFFF_FFFF, 0xFFFF_FFFF, 64 * 1024, 0xFFFF_FFFF)
    dsp = system.device_record("dsp")
    assert (dsp.path, dsp.bank, dsp.smmu, dsp.coherent) == (
        TranslationPath.PHYSICAL,
        None,
        None,
        False,
    )
    assert system.device_record("cpu").path is TranslationPath.CPU
    assert system.device_records()[0].name == "cpu"
    with pytest.raises(NotFoundError, match="no device named 'gpu'"):
        system.device_record("gpu")


def test_each_master_states_its_translation_path(system) -> None:
    assert system.cpu.path is TranslationPath.CPU
    assert isinstance(system.device("mdp"), SmmuDevice)
    assert system.device("mdp").path is TranslationPath.IOMMU
    assert isinstance(system.device("camera"), PhysicalDevice)
    assert system.device("camera").path is TranslationPath.PHYSICAL


def test_activation_binds_the_bank_the_record_names(system) -> None:
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_reserve(vcm, SZ_1M, Attr.RW)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_b_mm2"))
    assert system.device("vcodec_b_mm2").ctx.bank == system.device_record("vcodec_b_mm2").bank == 1


def test_the_dma_api_lives_in_the_systems_front_end_slot(system) -> None:
    assert isinstance(system.front_ends, FrontEndSlots)
    assert system.front_ends.get(DmaApi) is None
    api = DmaApi.of(system)
    assert system.front_ends.get(DmaApi) is api is DmaApi.current(system)
    with pytest.raises(StateError, match="already holds"):
        system.front_ends.put(DmaApi.__new__(DmaApi))
    api.close()
    assert system.front_ends.get(DmaApi) is None and api.closed
    with pytest.raises(InvalidArgumentError, match=r"is not a booted vcmm\.System"):
        DmaApi.of(object())


def test_a_machine_refuses_devices_that_do_not_fit(system) -> None:
    m = system.machine
    fields = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
    with pytest.raises(InvalidArgumentError, match="must include the CPU"):
        Machine(**fields | {"devices": {"mdp": m.devices["mdp"]}})
    with pytest.raises(InvalidArgumentError, match="is listed as 'display'"):
        Machine(**fields | {"devices": {**m.devices, "display": m.devices["mdp"]}})
    with pytest.raises(InvalidArgumentError, match="not the machine lock"):
        Machine(**fields | {"lock": MachineLock("another")})


def test_device_records_are_checked(system) -> None:
    from vcmm.core.interfaces import records_by_name

    record = DeviceRecord(name="x", path=TranslationPath.PHYSICAL)
    with pytest.raises(InvalidArgumentError, match="two device records are named 'x'"):
        records_by_name([record, record])
    with pytest.raises(InvalidArgumentError, match="is not a DeviceRecord"):
        records_by_name(["x"])  # type: ignore[list-item]
