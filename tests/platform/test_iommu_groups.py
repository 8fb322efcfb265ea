"""Several devices on one SMMU context: an IOMMU group (masters whose stream IDs
match on an MMU-500, every master of the MediaTek M4U).  As in Linux, the group is
attached to one domain: one IOVA space, one table, one programmed context, which
stays programmed until the last member lets go."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from vcmm import SZ_1G, SZ_64K, Attr, DmaDirection, PhysAttr, System
from vcmm.dma import DmaApi
from vcmm.errors import BusyError

from .mixed_board import mixed_tree

MakeDtb = Callable[..., str]
#: (first member, second member) of each group of the mixed board
GROUPS = {
    "m4u": ("1400c000.ovl", "16020000.vcodec"),
    "mmu-500": ("aa00000.video", "aa10000.video-enc"),
}


@pytest.fixture
def system(make_dtb: MakeDtb) -> System:
    return System.from_file(make_dtb(mixed_tree()))


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_group_maps_one_buffer_and_unmaps_independently(system: System, group: str) -> None:
    first, second = GROUPS[group]
    ctx = system.device(first).ctx
    assert system.device(second).ctx is ctx
    api = DmaApi.of(system)
    assert api.domain(first) is api.domain(second)
    buf = system.vcm_phys_alloc(system.memory_roles.kernel, SZ_64K, PhysAttr.CONTIGUOUS)
    pa = buf.chunks[0][0]
    system.memory.write(pa, b"shared frame")
    a = api.map_page(first, pa, 0, SZ_64K, DmaDirection.TO_DEVICE)
    b = api.map_page(second, pa, 0, SZ_64K, DmaDirection.TO_DEVICE)
    assert a != b  # two mappings in one IOVA space: distinct IOVAs, one table
    for name in (first, second):
        for handle in (a, b):  # each member reaches both: they share the table
            assert system.device(name).read(handle, 12) == b"shared frame"
    api.unmap_page(first, a, SZ_64K, DmaDirection.TO_DEVICE)
    assert system.device(second).read(b, 12) == b"shared frame"
    # the member whose association programmed the context leaves; the other keeps it
    api.remove_device(first)
    assert ctx.is_active and ctx.ttbr0 == api.domain(second).vcm.table.root
    assert system.device(second).read(b, 12) == b"shared frame"
    api.unmap_page(second, b, SZ_64K, DmaDirection.TO_DEVICE)
    api.remove_device(second)
    assert not ctx.is_active


def test_a_dma_buf_attached_by_two_members_of_a_group(system: System) -> None:
    from vcmm.share import VcmExporter

    first, second = GROUPS["mmu-500"]
    frame = VcmExporter(system).allocate(SZ_64K)
    one = frame.attach(first)
    two = frame.attach(second)
    out, into = one.map(DmaDirection.FROM_DEVICE), two.map(DmaDirection.TO_DEVICE)
    system.device(first).write(out.dma_address, b"encoded")
    assert system.device(second).read(into.dma_address, 7) == b"encoded"
    one.unmap(out)
    one.detach()
    assert system.device(second).read(into.dma_address, 7) == b"encoded"


def test_seed_calls_share_a_context_between_members(system: System) -> None:
    first, second = GROUPS["mmu-500"]
    ctx = system.device(first).ctx
    vcm = system.vcm_create(0x1000_0000, SZ_1G)
    one, two = system.vcm_assoc(vcm, first, 0), system.vcm_assoc(vcm, second, 0)
    system.vcm_activate(one)
    system.vcm_activate(two)  # the same VCM on the same context: shared, not refused
    res = system.vcm_reserve(vcm, SZ_64K, Attr.READ | Attr.WRITE)
    system.vcm_back(res, system.vcm_phys_alloc(None, SZ_64K, PhysAttr.NONE))
    system.device(first).write(res.dev_addr, b"group")
    system.vcm_deactivate(one)
    assert ctx.is_active and system.device(second).read(res.dev_addr, 5) == b"group"
    other = system.vcm_create(0x1000_0000, SZ_1G)
    stranger = system.vcm_assoc(other, first, 0)
    before = system.snapshot()
    with pytest.raises(BusyError, match=r"already runs .*on the whole space"):
        system.vcm_activate(stranger)  # another VCM while a member runs this one
    assert system.snapshot() == before
    system.vcm_deactivate(two)
    assert not ctx.is_active
    system.vcm_activate(stranger)
    assert ctx.ttbr0 == other.table.root


def test_a_group_has_one_dev_node(system: System) -> None:
    from vcmm.proc import MAP_SHARED, O_RDWR, PROT_READ, PROT_WRITE, ProcessTable
    from vcmm.share.devnode import register_dev_nodes

    table = ProcessTable(system)
    nodes = register_dev_nodes(table)
    contexts = {d.ctx.name for d in system.devices.values() if hasattr(d, "ctx")}
    assert set(nodes) == {f"/dev/{name}" for name in contexts}  # each context once
    first, second = GROUPS["m4u"]
    node = nodes[f"/dev/{system.device(first).ctx.name}"]
    assert node.device.name == first  # the first member by name maps for the group
    proc = table.spawn("player")
    fd = proc.open(node.path, O_RDWR)
    proc.mmap(SZ_64K, PROT_READ | PROT_WRITE, MAP_SHARED, fd)
    (mapping,) = DmaApi.of(system).mappings(first)
    system.device(first).write(mapping.dma_addr, b"via the node")
    assert system.device(second).read(mapping.dma_addr, 12) == b"via the node"
