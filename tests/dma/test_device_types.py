"""The DMA API serves only this system's DMA masters, and says which path each takes.

``DeviceEntry.device`` is typed (an SMMU master or a physically addressed one); these
tests hold the runtime to the same contract: a foreign object, another system's
device or the CPU is refused before anything changes, and a direct device has no
IOMMU side to hand to a domain.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

import vcmm
from vcmm.core.flags import Attr
from vcmm.dma import DmaApi
from vcmm.dma.backend import map_direct
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.hw.bus import PhysicalDevice, SmmuDevice
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K


def test_attach_refuses_what_is_not_a_device_of_this_system(
    system: vcmm.System, dma: DmaApi, state: Callable
) -> None:
    dma.remove_device("mdp")
    other = vcmm.System.default().device("mdp")
    before = state()
    for dev in (object(), other, system.cpu):
        with pytest.raises(InvalidArgumentError, match=r"not a device of this system|CPU"):
            dma.attach_device(dev)
        assert state() == before
    dma.attach_device(system.device("mdp"))  # the system's own object is taken


def test_entries_narrow_to_the_path_their_ops_take(system: vcmm.System, dma: DmaApi) -> None:
    iommu = dma.domain("mdp")
    assert iommu is not None
    assert isinstance(system.device("mdp"), SmmuDevice)
    assert isinstance(system.device("dsp"), PhysicalDevice) and dma.domain("dsp") is None
    # map_direct is the direct path only: an SMMU master is refused before any VCM exists
    vcms = list(system.vcms)
    with pytest.raises(StateError, match="behind an IOMMU"):
        map_direct(
            system, system.device("mdp"), AddressRange(0, SZ_4K), Attr.RW, (1 << 32) - 1, "t"
        )
    assert system.vcms == vcms
