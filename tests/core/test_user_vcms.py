"""Process address spaces as VCMs (``vcm_create_from_prebuilt(asid)``): user mappings
are reservation edges of the mapping graph like any other, so the core keeps their
shareable bit in step with devices' and the kernel's.

Bits are read back from table memory with independent decoders (conftest): the ARMv7
short-descriptor S bit for the IOMMU alias, the VMSAv8-64 SH field [9:8] for the
process's alias (0b11 inner shareable, 0b00 non-shareable)."""

from __future__ import annotations

import pytest

import vcmm
from vcmm import SZ_1M, SZ_4K, SZ_16M, SZ_64K, Access
from vcmm.core import Attr, PhysAttr, VcmKind
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    StateError,
)

ASID = 9
USER_VA = 0x1000_0000
SH_INNER, SH_NON = 0b11, 0b00


def _process(system: vcmm.System, asid: int = ASID, label: str = "proc9") -> vcmm.Vcm:
    system.cpu.create_address_space(asid)
    return system.vcm_create_from_prebuilt(asid, label=label)


def _device(system: vcmm.System) -> vcmm.Vcm:
    vcm = system.vcm_create(SZ_16M, 64 * SZ_1M)
    system.vcm_activate(system.vcm_assoc(vcm, "vcodec_a_mm1", 0))
    return vcm


def test_a_user_vcm_maps_into_the_asid_table(system, armv8) -> None:
    user = _process(system)
    assert user.kind is VcmKind.USER and user.space == "proc9" and user.ext_id == ASID
    physmem = system.vcm_phys_alloc("ebi", 2 * SZ_4K, PhysAttr.CONTIGUOUS)
    pa = physmem.chunk_ranges[0].start
    res = system.vcm_reserve(user, 2 * SZ_4K, Attr.RW | Attr.USER, addr=USER_VA)
    assert res.dev_addr == USER_VA
    system.vcm_back(res, physmem)
    root = system.cpu.address_space(ASID).root
    leaf = armv8.leaf(root, USER_VA + SZ_4K)
    assert leaf is not None and leaf.level == 3 and leaf.pa == pa + SZ_4K
    # User read/write (AP=0b01), non-global, inner shareable: kernel RAM.
    assert leaf.ap == 0b01 and leaf.ng and leaf.sh == SH_INNER
    system.memory.write(pa + SZ_4K + 8, b"user")
    assert system.cpu.read(USER_VA + SZ_4K + 8, 4, asid=ASID, user=True) == b"user"
    (edge,) = system.graph.of_reservation(res.id)
    assert edge.space == "proc9" and edge.attrs.user and not edge.attrs.global_
    # The kernel's own table has nothing at that address.
    assert system.cpu.kernel_table.walk(USER_VA).pa is None


def test_prebuilt_misuse_changes_nothing(system) -> None:
    _process(system)
    before = system.snapshot()
    with pytest.raises(NotFoundError, match="ext_vcm_id 77"):
        system.vcm_create_from_prebuilt(77)
    with pytest.raises(BusyError, match="already has"):
        system.vcm_create_from_prebuilt(ASID)
    with pytest.raises(InvalidArgumentError, match="takes no window"):
        system.vcm_create_from_prebuilt(0, label="x")
    system.cpu.create_address_space(ASID + 1)
    with pytest.raises(InvalidArgumentError, match="window"):
        system.vcm_create_from_prebuilt(ASID + 1, window=vcmm.AddressRange(0, 1 << 49))
    assert system.snapshot()[0] == before[0]


def test_user_reservations_are_user_mappings_at_fixed_addresses(system) -> None:
    user = _process(system)
    first = system.vcm_reserve(user, SZ_64K, Attr.RW | Attr.USER, addr=USER_VA)
    before = system.snapshot()
    with pytest.raises(StateError, match="overlaps"):
        system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER, addr=USER_VA + SZ_4K)
    with pytest.raises(InvalidArgumentError, match="lacks USER"):
        system.vcm_reserve(user, SZ_4K, Attr.RW)
    with pytest.raises(AlignmentError):
        system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER, addr=USER_VA + 100)
    with pytest.raises(InvalidArgumentError, match="not inside"):
        system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER, addr=1 << 48)
    with pytest.raises(InvalidArgumentError, match="addr or align"):
        system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER, addr=0x2000_0000, align=SZ_4K)
    assert system.snapshot() == before
    placed = system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER)
    assert placed.addr not in first.range


def _shares(armv7, armv8, dev_root: int, dev_va: int, user_root: int, user_va: int) -> tuple:
    """(ARMv7 S bit of the device alias, VMSAv8 SH of the user alias)."""
    dev = armv7.leaf(dev_root, dev_va)
    usr = armv8.leaf(user_root, user_va)
    return (dev.shareable if dev.kind != "fault" else None, usr.sh if usr else None)


@pytest.mark.parametrize("user_first", [True, False], ids=["user-first", "device-first"])
def test_user_and_iommu_aliases_of_a_carve_out_chunk_share_and_unshare(
    system, armv7, armv8, user_first: bool
) -> None:
    """Carve-out memory (no linear map): shareable exactly while two spaces map it,
    whichever maps first and whichever goes first."""
    physmem = system.vcm_phys_alloc("contig", SZ_64K, PhysAttr.CONTIGUOUS)
    (chunk,) = physmem.chunk_ranges
    user, device = _process(system), _device(system)
    ures = system.vcm_reserve(user, SZ_64K, Attr.RW | Attr.USER, addr=USER_VA)
    dres = system.vcm_reserve(device, SZ_64K, Attr.RW)
    user_root = system.cpu.address_space(ASID).root
    first, second = (ures, dres) if user_first else (dres, ures)
    system.vcm_back(first, physmem)
    if user_first:
        assert armv8.leaf(user_root, USER_VA).sh == SH_NON
        assert not system.cpu.translate(USER_VA, asid=ASID, user=True).attrs.shareable
    else:
        assert not armv7.leaf(device.table.root, dres.dev_addr).shareable
    system.vcm_back(second, physmem)
    for offset in (0, SZ_4K, SZ_64K - SZ_4K):
        dev, usr = _shares(
            armv7, armv8, device.table.root, dres.dev_addr + offset, user_root, USER_VA + offset
        )
        assert (dev, usr) == (True, SH_INNER), hex(offset)
        assert armv8.leaf(user_root, USER_VA + offset).pa == chunk.start + offset
    # The CPU's TLB entry was invalidated with the rewrite: a fresh walk sees the bit.
    tr = system.cpu.translate(USER_VA, Access.READ, asid=ASID, user=True)
    assert tr.attrs.shareable and not tr.hit
    assert all(m.attrs.shareable for m in system.graph.aliases(chunk))
    assert {m.space for m in system.graph.aliases(chunk)} == {"proc9", device.space}
    # Data moves both ways through the two aliases (non-coherent device: sync).
    system.cpu.write(USER_VA + 100, b"from user", asid=ASID, user=True)
    system.vcm_sync_for_device(dres, vcmm.DmaDirection.TO_DEVICE)
    assert system.device("vcodec_a_mm1").read(dres.dev_addr + 100, 9) == b"from user"
    # One goes: the survivor loses the bit again.
    system.vcm_unback(second)
    survivor = ures if user_first else dres
    edges = system.graph.of_reservation(survivor.id)
    assert edges and not any(m.attrs.shareable for m in edges)
    if user_first:
        assert armv8.leaf(user_root, USER_VA + SZ_4K).sh == SH_NON
        assert not system.cpu.translate(USER_VA, asid=ASID, user=True).attrs.shareable
        assert armv7.leaf(device.table.root, dres.dev_addr).kind == "fault"
    else:
        assert not armv7.leaf(device.table.root, dres.dev_addr + SZ_4K).shareable
        assert armv8.leaf(user_root, USER_VA) is None


def test_a_process_sharing_one_page_of_a_device_section_splits_it(system, armv7, armv8) -> None:
    physmem = system.vcm_phys_alloc("contig", SZ_1M, PhysAttr.CONTIGUOUS)
    (chunk,) = physmem.chunk_ranges
    device = _device(system)
    dres = system.vcm_reserve(device, SZ_1M, Attr.RW)
    system.vcm_back(dres, physmem)
    assert armv7.leaf(device.table.root, dres.dev_addr).kind == "section"
    user = _process(system)
    view = system.vcm_phys_view(physmem, 5 * SZ_4K, SZ_4K)
    ures = system.vcm_reserve(user, SZ_4K, Attr.READ | Attr.USER, addr=USER_VA)
    system.vcm_back(ures, view)
    root = system.cpu.address_space(ASID).root
    assert armv8.leaf(root, USER_VA).sh == SH_INNER
    for page in range(256):
        leaf = armv7.leaf(device.table.root, dres.dev_addr + page * SZ_4K)
        assert leaf.pa == chunk.start + page * SZ_4K
        assert leaf.shareable == (page == 5), page
    system.vcm_unback(ures)
    assert not any(
        armv7.leaf(device.table.root, dres.dev_addr + p * SZ_4K).shareable for p in range(256)
    )


def test_freeing_a_user_vcm_leaves_the_cpu_address_space(system) -> None:
    user = _process(system)
    res = system.vcm_reserve(user, SZ_4K, Attr.RW | Attr.USER)
    before = system.snapshot()
    with pytest.raises(BusyError, match=res.name):
        system.vcm_free(user)
    assert system.snapshot() == before
    system.vcm_unreserve(res)
    system.vcm_free(user)
    assert system.cpu.address_space(ASID) is not None  # the process model owns it
    # A new VCM for the same ASID may now be made.
    again = system.vcm_create_from_prebuilt(ASID)
    assert again.space == f"asid{ASID}"
