"""The seed's calls and the DMA API (with dma-buf on top) on one system.

A device is driven either through a VCM of its own (the seed's calls: Linux's
explicit, unmanaged domain) or through the DMA API's domain (Linux's default domain).
Creating the DMA API programs no device; a device's domain takes its context at the
first mapping made for it.  So a context used through the seed's calls does not stop
dma-buf from serving other devices (it used to: "BusyError: cannot set up the
system's DMA API"), and each side refuses the other's device with an error that says
what to do.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_2M, SZ_4K, SZ_16M, Attr, PhysAttr
from vcmm.attrs import DmaDirection
from vcmm.core.objects import Association, Reservation
from vcmm.errors import BusyError
from vcmm.share import VcmExporter, dma_api

D = DmaDirection


def seed_stage_one(system: vcmm.System) -> tuple[Association, Reservation]:
    """README stage 1: vcodec_a_mm1 writes through a VCM of its own."""
    dev = system.device("vcodec_a_mm1")
    vcm = system.vcm_create(SZ_4K, SZ_16M)
    avcm = system.vcm_assoc(vcm, dev, 0)
    system.vcm_activate(avcm)
    res = system.vcm_reserve(vcm, SZ_2M, Attr.READ | Attr.WRITE)
    system.vcm_back(res, system.vcm_phys_alloc("blocks", SZ_2M, PhysAttr.NONE))
    dev.write(res.dev_addr, b"frame data")
    return avcm, res


def test_dma_buf_serves_other_devices_while_one_runs_a_seed_vcm() -> None:
    system = vcmm.System.default()
    _avcm, res = seed_stage_one(system)
    frame = VcmExporter(system).allocate(SZ_4K)
    codec = frame.attach("vcodec_b_mm2").map(D.BIDIRECTIONAL)
    shown = frame.attach("mdp").map(D.TO_DEVICE)
    system.device("vcodec_b_mm2").write(codec.dma_address, b"decoded")
    api = dma_api(system)
    api.sync_sg_for_cpu("vcodec_b_mm2", codec.table, len(codec.table), D.BIDIRECTIONAL)
    assert system.device("mdp").read(shown.dma_address, 7) == b"decoded"
    # The seed's device still runs its own VCM, untouched.
    assert system.device("vcodec_a_mm1").read(res.dev_addr, 10) == b"frame data"
    assert api.domain("vcodec_a_mm1") is not None  # it has DMA ops, just no context yet


def test_the_dma_api_refuses_the_seed_vcms_device_saying_what_to_do() -> None:
    system = vcmm.System.default()
    avcm, res = seed_stage_one(system)
    frame = VcmExporter(system).allocate(SZ_4K)
    att = frame.attach("vcodec_a_mm1")
    before = (system.snapshot(), frame.snapshot(), dma_api(system).snapshot())
    with pytest.raises(BusyError) as info:
        att.map(D.TO_DEVICE)
    message = str(info.value)
    assert f"vcm_deactivate({avcm.name}) first" in message
    assert "either through a VCM of its own or through the DMA API" in message
    assert (system.snapshot(), frame.snapshot(), dma_api(system).snapshot()) == before
    # Once the seed's VCM lets go of the context, the DMA API takes it.
    system.vcm_deactivate(avcm)
    sg = att.map(D.TO_DEVICE)
    assert system.device("vcodec_a_mm1").ctx.translate(sg.dma_address) == (
        frame.priv.physmem.chunk_ranges[0].start
    )
    att.unmap(sg)
    assert res.backed


def test_the_seed_calls_refuse_a_dma_api_device_saying_how_to_release_it() -> None:
    system = vcmm.System.default()
    api = dma_api(system)
    page = system.vcm_phys_alloc("ebi", SZ_4K).chunk_ranges[0].start
    handle = api.map_page("mdp", page, 0, SZ_4K, D.TO_DEVICE)
    vcm = system.vcm_create(SZ_4K, SZ_16M)
    avcm = system.vcm_assoc(vcm, "mdp", 0)
    before = system.snapshot()
    with pytest.raises(BusyError, match=r"held by the DMA API \(domain 'mdp'\)") as info:
        system.vcm_activate(avcm)
    assert "DmaApi.remove_device('mdp')" in str(info.value)
    assert system.snapshot() == before
    api.unmap_page("mdp", handle, SZ_4K, D.TO_DEVICE)
    api.remove_device("mdp")
    system.vcm_activate(avcm)  # the context is free for the seed's calls now
    assert system.device("mdp").ctx.ttbr0 == vcm.table.root
