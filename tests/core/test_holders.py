"""``holder``: memory and associations a layer takes for itself say whose they are.

The label shows in the graph export, in ``vcmm graph``'s text and in the refusal to
reprogram a held context; a bad label is refused and changes nothing.
"""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_4K, SZ_16M, PhysAttr
from vcmm.errors import BusyError, InvalidArgumentError
from vcmm.report.graph import to_text


@pytest.mark.parametrize("holder", ["", 7, b"driver"])
def test_a_bad_holder_is_refused_and_changes_nothing(holder: object) -> None:
    system = vcmm.System.default()
    vcm = system.vcm_create(SZ_4K, SZ_16M)
    before = system.snapshot()
    with pytest.raises(InvalidArgumentError, match=r"holder .* must be a non-empty str"):
        system.vcm_phys_alloc("contig", SZ_4K, PhysAttr.NONE, holder=holder)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"vcm_assoc: holder"):
        system.vcm_assoc(vcm, "mdp", 0, holder=holder)  # type: ignore[arg-type]
    assert system.snapshot() == before


def test_holders_show_in_the_graph_and_in_refusals() -> None:
    system = vcmm.System.default()
    carve = system.vcm_phys_alloc("contig", SZ_16M, PhysAttr.CONTIGUOUS, holder="the ISP driver")
    plain = system.vcm_phys_alloc("contig", SZ_4K)
    nodes = {n["label"]: n for n in system.graph_data()["nodes"] if n["type"] == "physmem"}
    assert nodes[carve.name]["holder"] == "the ISP driver" and nodes[plain.name]["holder"] is None
    text = to_text(system.graph_data())
    assert f"{carve.name} 16M from contig, held by the ISP driver" in text
    assert f"{plain.name} 4K from contig:" in text
    held = system.vcm_assoc(system.vcm_create(SZ_4K, SZ_16M), "mdp", 0, holder="the ISP driver")
    system.vcm_activate(held)
    other = system.vcm_assoc(system.vcm_create(SZ_4K, SZ_16M), "mdp", 0)
    with pytest.raises(
        BusyError, match=rf"runs vcm\d+ \({held.name}\) on the whole space, held by the ISP driver$"
    ):
        system.vcm_activate(other)
    plain_assoc = other
    system.vcm_deactivate(held)
    system.vcm_activate(plain_assoc)
    third = system.vcm_assoc(system.vcm_create(SZ_4K, SZ_16M), "mdp", 0)
    with pytest.raises(
        BusyError, match=rf"\({plain_assoc.name}\) on the whole space; vcm_deactivate it first"
    ):
        system.vcm_activate(third)
