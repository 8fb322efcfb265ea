"""The Virtual Contiguous Memory Manager: the seed's calls over one mapping graph.

Every call validates its arguments completely before it changes anything; the few
steps that can still fail part way (table memory running out while mapping) are
recorded in an undo log and rolled back before the error leaves.  So a failing call
leaves memory, tables, TLBs, allocators and the graph exactly as they were, and
raises a :class:`~vcmm.errors.VcmmError` subclass naming the values and the rule
(the seed's calls return 0 and leave the caller guessing).

====================================  =====================================================
call                                  refused (besides bad arguments and freed handles) when
====================================  =====================================================
``vcm_create(start, len)``            not 4 KiB aligned; IOMMU window beyond the input of
                                      its table format (32 bits, 48 for VMSAv8-64);
                                      one-to-one window not all physical memory
``vcm_create_from_prebuilt(id)``      id names no address space (0: the kernel's VMM;
                                      an ASID: a process's, which has one VCM at most)
``vcm_free(vcm)``                     it still has reservations or associations
``vcm_reserve(vcm, len, attr)``       len not a 4 KiB multiple or larger than the VCM;
                                      no free range (``OutOfAddressSpaceError``); a
                                      fixed ``addr`` taken (``StateError``)
``vcm_unreserve(res)``                it is backed
``vcm_split(res, offset, physmem)``   offset not inside; the VCM's allocator is not
                                      the core's; physmem not the rest of the backing
``vcm_merge(left, right)``            not neighbours of one VCM with one attr and
                                      continuing backings
``vcm_assoc(vcm, dev, attr)``         kind of VCM and bus master differ; split rules;
                                      the SMMU walks another format than the settled
                                      table's (:mod:`vcmm.core.tableformat`)
``vcm_deassoc(avcm)``                 it is active
``vcm_activate(avcm)``                the context already runs another VCM (same half);
                                      the same VCM on it is shared (an IOMMU group)
``vcm_phys_alloc(memtype, len, a)``   unknown target; no target can serve it
``vcm_phys_free(physmem)``            it backs a reservation; views of it live; it is
                                      pinned (an exported dma-buf, a wrap of its pages)
``vcm_phys_view(physmem, off, len)``  not whole pages inside it
``vcm_phys_wrap(ranges, owner=, of=)``  not whole pages of physical memory; pages of the
                                      page-table window, free in a target, or of a live
                                      allocation ``of`` does not name
                                      (``OwnershipError``)
``vcm_phys_owners(ranges)``           pages of the page-table window or free in a target
``vcm_phys_unpin(pin)``               the pin was already released
``vcm_back(res, physmem)``            already backed; physmem too small; an alias with
                                      another memory type (``AttributeConflictError``);
                                      one-to-one backing discontiguous or outside the VCM
``vcm_unback(res)``                   it is not backed
``vcm_hook(dev, handler, data)``      the device has no IOMMU
``vcm_sync_for_device/cpu(res, d)``   it is not backed; direction NONE
====================================  =====================================================

The backing machinery (plans, sharing rewrites, the undo log) is in
:mod:`vcmm.core.backing`, the hardware side in :mod:`vcmm.core.mappers`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as MappingABC
from typing import Any

from vcmm.attrs import DmaDirection, PageAttrs
from vcmm.checks import check_int
from vcmm.core import backing, export, ownership, physical, sharing, tableformat
from vcmm.core.cmareclaim import CmaReclaimer
from vcmm.core.flags import (
    AssocAttr,
    Attr,
    PhysAttr,
    check_assoc_attr,
    check_attr,
    check_phys_attr,
    page_attrs_of,
)
from vcmm.core.graph import KERNEL_SPACE, Mapping, MappingGraph
from vcmm.core.mappers import (
    ContextBrackets,
    IommuMapper,
    Mapper,
    OneToOneMapper,
    UserMapper,
    VmmMapper,
    check_bank_free,
    program_context,
    release_context,
)
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmFault, VcmKind
from vcmm.core.ownership import OwnerMap, Pin, pinned_message
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
    UnsupportedSizeError,
    VcmmError,
)
from vcmm.hw.cachesync import dma_sync
from vcmm.hw.cpu import LINEAR_MAP_ATTRS
from vcmm.hw.lock import MachineLock, check_lock
from vcmm.hw.pgtable import ARMV7S
from vcmm.mm.cma import CmaArea
from vcmm.ranges import AddressRange, union
from vcmm.sizes import SZ_4K, format_size, is_power_of_two

#: ``ext_vcm_id`` of the kernel's own address space for ``vcm_create_from_prebuilt``.
VMM_EXT_ID = 0
#: TTBCR.N=1 splits a 32-bit space here: VA[31]=1 walks TTBR1 (the high VCM).
SPLIT_BOUNDARY = 1 << 31
#: ``handler(fault, data) -> 1 (replay the transaction) or 0 (terminate it)``.
FaultHandler = Callable[[VcmFault, Any], int]


def _check_obj(call: str, name: str, value: object, kind: type) -> Any:
    if not isinstance(value, kind):
        raise InvalidArgumentError(
            f"{call}: {name} is a {type(value).__name__}, not a {kind.__name__}"
        )
    value._alive(call)  # type: ignore[attr-defined]
    return value


def _check_holder(call: str, holder: object) -> None:
    if holder is not None and (not isinstance(holder, str) or not holder):
        raise InvalidArgumentError(f"{call}: holder {holder!r} must be a non-empty str or None")


def _by_name(table: dict[str, Any], name: str, what: str) -> Any:
    """``table[name]``, or a NotFoundError that lists the names there are."""
    try:
        return table[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(table))
        raise NotFoundError(f"no {what} named {name!r} (known: {known})") from None


def _machine_locked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a public VCMM call under the machine lock (``self.lock``), so it is atomic
    against device jobs and other threads; re-entrant, so the calls it makes (device
    accesses, a fault handler backing a page) do not block on it."""

    @functools.wraps(fn)
    def call(self: Vcmm, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return fn(self, *args, **kwargs)

    return call


class Vcmm:
    """Owner of every VCM, reservation, association and physical allocation.

    Hardware is passed in already built (see :mod:`vcmm.system` for booting a
    platform): ``devices`` maps names to bus masters (SMMU devices with ``.ctx``,
    physically addressed devices with ``phys_to_bus``) and must include the CPU;
    ``targets`` maps memory-target names to :class:`~vcmm.mm.target.MemoryTarget`
    objects; ``linear_map`` lists the CPU's ``(kernel_va, pa, size)`` windows, which the
    mapping graph treats as permanent cacheable aliases; ``page_table_factory(fmt)``
    builds device page tables and ``range_allocator(window,
    granule=...)`` address-space allocators (with ``split``/``join`` of live ranges,
    as :class:`~vcmm.mm.genalloc.RangeAllocator`); ``lock`` is the machine lock the
    hardware holds (:mod:`vcmm.hw.lock`), which every public call takes too.
    """

    def __init__(
        self,
        *,
        memory: Any,
        cpu: Any,
        devices: MappingABC[str, Any],
        targets: MappingABC[str, Any],
        target_priority: Sequence[str],
        table_memory: Any,
        iommu_format: Any,
        vmalloc: AddressRange,
        linear_map: Iterable[tuple[int, int, int]],
        page_table_factory: Callable[[Any], Any],
        range_allocator: Callable[..., Any],
        lock: MachineLock | None = None,
    ) -> None:
        #: The machine lock (the system's); a private one for a Vcmm built alone.
        self.lock = check_lock("Vcmm", lock)
        self.memory = memory
        self.cpu = cpu
        self._devices = dict(devices)
        self._targets = dict(targets)
        self.target_priority = tuple(target_priority)
        self.table_memory = table_memory
        #: The table format of IOMMU VCMs created without one (:mod:`.tableformat`).
        self.iommu_format = iommu_format
        #: Every format the system's SMMUs walk, in device order.
        self.iommu_formats = tableformat.system_formats(self._devices.values())
        self._page_table = page_table_factory
        self._range_allocator = range_allocator
        self._kernel_areas = range_allocator(vmalloc, granule=SZ_4K)
        self.graph = MappingGraph(
            linear_map=tuple(
                Mapping(
                    KERNEL_SPACE,
                    "the kernel linear map",
                    AddressRange(pa, size),
                    va,
                    _linear_attrs(),
                )
                for va, pa, size in linear_map
            )
        )
        self.vcms: list[Vcm] = []
        self._physmems: dict[int, PhysMem] = {}
        #: Who owns each physical page (table window, free lists, live allocations).
        self._owners = OwnerMap(table_memory.window, self._targets)
        self._cma = CmaReclaimer(self._targets, self._owners, memory, cpu.cache)
        self._res_by_id: dict[int, Reservation] = {}
        self._ids = itertools.count(1)
        self._mappers: dict[int, IommuMapper | UserMapper] = {}
        self._brackets = ContextBrackets()
        self._one_to_one = OneToOneMapper()
        self._vmm = VmmMapper(cpu)
        self._hooks: dict[str, tuple[FaultHandler, Any]] = {}

    # -- lookups -----------------------------------------------------------------------

    def device(self, name: str) -> Any:
        """A bus master by name (the CPU is ``"cpu"``)."""
        return _by_name(self._devices, name, "device")

    @property
    def devices(self) -> dict[str, Any]:
        return dict(self._devices)

    def target(self, name: str) -> Any:
        """A memory target by name (``"ebi"``, ``"blocks"``, ``"contig"``, ``"smi"``)."""
        return _by_name(self._targets, name, "memory target")

    @property
    def targets(self) -> dict[str, Any]:
        return dict(self._targets)

    @property
    @_machine_locked
    def associations(self) -> list[Association]:
        """Every live association, in creation order of their VCMs."""
        return [a for v in self.vcms for a in v.associations]

    @property
    @_machine_locked
    def reservations(self) -> list[Reservation]:
        """Every live reservation, VCM by VCM."""
        return [r for v in self.vcms for r in v.reservations]

    @property
    @_machine_locked
    def physmems(self) -> list[PhysMem]:
        """Every live physical allocation from a memory target, oldest first."""
        return [p for p in self._physmems.values() if p.parent is None and p.owner is None]

    @property
    @_machine_locked
    def phys_views(self) -> list[PhysMem]:
        """Every live view (``vcm_phys_view``) and wrap (``vcm_phys_wrap``), oldest
        first: memory described for backing, not taken from a target."""
        return [p for p in self._physmems.values() if p.parent is not None or p.owner]

    @property
    def kernel_areas(self) -> Any:
        """The allocator of kernel virtual areas (the vmalloc window) VMM VCMs share."""
        return self._kernel_areas

    def _resolve_device(self, call: str, dev: object) -> Any:
        if isinstance(dev, str):
            return self.device(dev)
        if any(dev is d for d in self._devices.values()):
            return dev
        raise InvalidArgumentError(
            f"{call}: {dev!r} is not a device of this system (pass a name or system.device(name))"
        )

    def mapper(self, vcm: Vcm) -> Mapper:
        """The hardware side of ``vcm``."""
        if vcm.kind is VcmKind.VMM:
            return self._vmm
        if vcm.kind is VcmKind.ONE_TO_ONE:
            return self._one_to_one
        return self._mappers[vcm.id]

    def _reservation(self, res_id: int) -> Reservation:
        return self._res_by_id[res_id]

    # -- VCMs --------------------------------------------------------------------------

    @_machine_locked
    def vcm_create(
        self,
        start_addr: int,
        len: int,
        *,
        kind: VcmKind | None = None,
        allocator: Any = None,
        fmt: Any = None,
    ) -> Vcm:
        """Create a VCM of ``len`` bytes from ``start_addr`` (000 L137-178).

        A window that lies entirely in physical memory makes a one-to-one VCM, as the
        seed describes ("users pass the start_addr and len of the physical region");
        anything else an IOMMU VCM, which gets its own device page table now.  Pass
        ``kind`` where that inference is wrong (an IOMMU space deliberately placed at
        RAM addresses).  ``allocator`` is the custom-allocator hook the reviewers asked
        for (000 L4053): any object with ``alloc(size, align) -> addr``,
        ``free(addr)`` and ``snapshot()`` (plus ``alloc_at(addr, size)`` for one-to-one
        VCMs) handing out addresses inside the VCM; a DMA API can put its IOVA
        allocator here behind a two-line adapter.  What it returns is checked.
        ``fmt`` (an extension) fixes an IOMMU VCM's table format on a system whose
        SMMUs walk several; without it the first association settles the format
        (:mod:`vcmm.core.tableformat`).
        """
        call = "vcm_create"
        start = check_int(call, "start_addr", start_addr)
        length = check_int(call, "len", len, minimum=1)
        if start % SZ_4K or length % SZ_4K:
            raise AlignmentError(
                f"{call}: start_addr {start:#x} and len {length:#x} must be multiples of 4 KiB"
                " (the smallest page); the seed's vcm_create(SZ_1K, ...) breaks this rule"
            )
        window = AddressRange(start, length)
        in_ram = self.memory.is_backed(start, length)
        if kind is None:
            kind = VcmKind.ONE_TO_ONE if in_ram else VcmKind.IOMMU
        if not isinstance(kind, VcmKind) or kind is VcmKind.VMM:
            raise InvalidArgumentError(
                f"{call}: kind {kind!r} must be VcmKind.IOMMU or VcmKind.ONE_TO_ONE"
                " (the VMM VCM comes from vcm_create_from_prebuilt)"
            )
        if kind is VcmKind.ONE_TO_ONE and not in_ram:
            raise InvalidArgumentError(
                f"{call}: one-to-one VCM {window} is not entirely physical memory; its "
                "addresses are physical"
            )
        if kind is not VcmKind.IOMMU and fmt is not None:
            raise InvalidArgumentError(f"{call}: fmt is for IOMMU VCMs; {kind.value} has no table")
        table_fmt = None
        if kind is VcmKind.IOMMU:
            table_fmt = tableformat.creation_format(
                call, window, fmt, self.iommu_format, self.iommu_formats
            )
        needed: tuple[str, ...] = ("alloc", "free", "snapshot")
        if kind is VcmKind.ONE_TO_ONE:
            needed += ("alloc_at",)
        own = allocator is None
        if allocator is None:
            allocator = self._range_allocator(window, granule=SZ_4K)
        elif not all(callable(getattr(allocator, m, None)) for m in needed):
            raise InvalidArgumentError(
                f"{call}: allocator {allocator!r} lacks one of the methods {', '.join(needed)}"
            )
        table = self._page_table(table_fmt) if table_fmt is not None else None
        vcm = Vcm(next(self._ids), kind, start, length, allocator, table=table, own_allocator=own)
        vcm.table_settled = fmt is not None
        if table is not None:
            self._mappers[vcm.id] = IommuMapper(vcm, self._brackets)
        self.vcms.append(vcm)
        return vcm

    @_machine_locked
    def vcm_create_from_prebuilt(
        self,
        ext_vcm_id: int,
        *,
        label: str | None = None,
        window: AddressRange | None = None,
    ) -> Vcm:
        """A VCM for an address space someone else built (000 L162-173).

        ``0`` is the kernel's VMM: reservations are kernel virtual areas (the vmalloc
        window) and backings map into the CPU's kernel table; every VMM VCM shares that
        one address space.  Any other id is the ASID of a process address space the CPU
        already has (``cpu.create_address_space``): reservations are user virtual
        ranges inside ``window`` (default: all of the user half but page 0), placed
        where the caller asks (``vcm_reserve(..., addr=)``: ``mmap`` at a chosen
        address) or by the VCM's allocator, and backings become user, non-global
        entries of that ASID's TTBR0 table.  ``label`` names the address space in the
        mapping graph (default ``asid<N>``).  One VCM per process address space.
        """
        call = "vcm_create_from_prebuilt"
        ext = check_int(call, "ext_vcm_id", ext_vcm_id)
        if label is not None and (not isinstance(label, str) or not label):
            raise InvalidArgumentError(f"{call}: label {label!r} must be a non-empty string")
        if ext == VMM_EXT_ID:
            if window is not None or label is not None:
                raise InvalidArgumentError(
                    f"{call}: the kernel's VMM (ext_vcm_id 0) takes no window or label; it "
                    "is the vmalloc area of the address space named 'cpu'"
                )
            area = self._kernel_areas
            vcm = Vcm(next(self._ids), VcmKind.VMM, area.range.start, area.range.size, area)
            self.vcms.append(vcm)
            return vcm
        try:
            table = self.cpu.address_space(ext)
        except VcmmError:
            raise NotFoundError(
                f"{call}: no prebuilt address space with ext_vcm_id {ext}: it is neither "
                f"{VMM_EXT_ID} (the kernel's VMM) nor the ASID of a process address space "
                "(cpu.create_address_space)"
            ) from None
        for other in self.vcms:
            if other.kind is VcmKind.USER and other.ext_id == ext:
                raise BusyError(
                    f"{call}: ASID {ext} already has {other.name}; two VCMs would hand out "
                    "the same user addresses"
                )
        limit = table.geometry.va_limit
        if window is None:
            window = AddressRange(SZ_4K, limit - SZ_4K)
        if (
            not isinstance(window, AddressRange)
            or window.size == 0
            or not window.is_aligned(SZ_4K)
            or window.end > limit
        ):
            raise InvalidArgumentError(
                f"{call}: window {window!r} must be a non-empty, 4 KiB aligned AddressRange "
                f"below the user limit {limit:#x}"
            )
        allocator = self._range_allocator(window, granule=SZ_4K)
        vcm = Vcm(
            next(self._ids),
            VcmKind.USER,
            window.start,
            window.size,
            allocator,
            ext_id=ext,
            label=label or f"asid{ext}",
        )
        self._mappers[vcm.id] = UserMapper(self.cpu, ext)
        self.vcms.append(vcm)
        return vcm

    @_machine_locked
    def vcm_free(self, vcm: Vcm) -> None:
        """Destroy a VCM and its tables; refused while it has reservations or associations."""
        call = "vcm_free"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        users = [r.name for r in vcm.reservations] + [a.name for a in vcm.associations]
        if users:
            raise BusyError(
                f"{call}: {vcm.name} still has {', '.join(users)}; unreserve and deassociate first"
            )
        self._mappers.pop(vcm.id, None)
        if vcm.table is not None:
            vcm.table.destroy()
            vcm.table = None
        vcm.freed = True
        self.vcms.remove(vcm)

    # -- reservations ------------------------------------------------------------------

    @_machine_locked
    def vcm_reserve(
        self,
        vcm: Vcm,
        len: int,
        attr: int = Attr.RW,
        *,
        align: int | None = None,
        addr: int | None = None,
    ) -> Reservation:
        """Reserve ``len`` contiguous bytes of ``vcm``, no memory behind them yet.

        IOMMU, VMM and user reservations are aligned to the largest page size not above
        ``len`` (so a backing can use 1M/16M entries), falling back to smaller
        alignments when the VCM is too fragmented; ``align`` demands one alignment;
        ``addr`` places the reservation exactly there (refused with ``StateError`` if
        taken; an allocator that places everything itself refuses it).  One-to-one
        reservations are placed when backed, at the physical address of the backing
        (the seed's pass-through).  User reservations must grant USER access.
        """
        call = "vcm_reserve"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        length = check_int(call, "len", len, minimum=1)
        attr = check_attr(attr)
        if length % SZ_4K:
            raise AlignmentError(f"{call}: len {length:#x} is not a multiple of 4 KiB")
        if length > vcm.len:
            raise InvalidArgumentError(
                f"{call}: len {format_size(length)} is larger than {vcm.name} "
                f"({format_size(vcm.len)})"
            )
        if vcm.kind is VcmKind.VMM and attr & Attr.USER:
            raise InvalidArgumentError(
                f"{call}: attr {attr!r} asks for USER access in the kernel's VMM VCM "
                f"{vcm.name}; kernel mappings are kernel-only"
            )
        if vcm.kind is VcmKind.USER and not attr & Attr.USER:
            raise InvalidArgumentError(
                f"{call}: attr {attr!r} lacks USER in process address space {vcm.name} "
                f"({vcm.space}); user mappings are what it holds"
            )
        if addr is not None:
            addr = check_int(call, "addr", addr)
            if align is not None:
                raise InvalidArgumentError(f"{call}: give addr or align, not both")
            if vcm.kind is VcmKind.ONE_TO_ONE:
                raise InvalidArgumentError(
                    f"{call}: one-to-one {vcm.name} places reservations at the physical "
                    "address of their backing"
                )
            if addr % SZ_4K:
                raise AlignmentError(f"{call}: addr {addr:#x} is not a multiple of 4 KiB")
            if AddressRange(addr, length) not in vcm.range:
                raise InvalidArgumentError(
                    f"{call}: [{addr:#x}, +{format_size(length)}) is not inside {vcm.name} "
                    f"{vcm.range}"
                )
        if align is not None:
            align = check_int(call, "align", align, minimum=SZ_4K)
            if not is_power_of_two(align):
                raise AlignmentError(f"{call}: align {align:#x} is not a power of two")
            if vcm.kind is VcmKind.ONE_TO_ONE:
                raise InvalidArgumentError(
                    f"{call}: one-to-one {vcm.name} places reservations at the physical "
                    "address of their backing; align the physical allocation instead"
                )
        if addr is not None:
            vcm.allocator.alloc_at(addr, length)
        elif vcm.kind is not VcmKind.ONE_TO_ONE:
            addr = self._place(call, vcm, length, align)
        res = Reservation(next(self._ids), vcm, length, attr, addr)
        vcm.reservations.append(res)
        self._res_by_id[res.id] = res
        return res

    def _place(self, call: str, vcm: Vcm, length: int, align: int | None) -> int:
        if align is not None:
            alignments = [align]
        else:
            alignments = _alignments(self.mapper(vcm).page_sizes, length)
        errors = []
        for alignment in alignments:
            try:
                addr = vcm.allocator.alloc(length, alignment)
            except OutOfMemoryError as exc:
                errors.append(str(exc))
                continue
            if AddressRange(addr, length) not in vcm.range or addr % alignment:
                vcm.allocator.free(addr)
                raise InvalidArgumentError(
                    f"{call}: {vcm.name}'s allocator returned {addr:#x}, which is not a "
                    f"{format_size(alignment)}-aligned {format_size(length)} range inside "
                    f"{vcm.range}"
                )
            return int(addr)
        raise OutOfAddressSpaceError(
            f"{call}: no free {format_size(length)} range in {vcm.name} {vcm.range} "
            f"(tried alignments {', '.join(format_size(a) for a in alignments)}): {errors[-1]}"
        )

    @_machine_locked
    def vcm_unreserve(self, res: Reservation) -> None:
        """Release a reservation; refused while it is backed."""
        call = "vcm_unreserve"
        res = _check_obj(call, "res", res, Reservation)
        if res.physmem is not None:
            raise BusyError(
                f"{call}: {res.name} is backed by {res.physmem.name}; vcm_unback it first"
            )
        if res.addr is not None:
            res.vcm.allocator.free(res.addr)
        res.vcm.reservations.remove(res)
        del self._res_by_id[res.id]
        res.freed = True

    # -- associations ------------------------------------------------------------------

    @_machine_locked
    def vcm_assoc(
        self, vcm: Vcm, dev: Any, attr: int = AssocAttr.NONE, *, holder: str | None = None
    ) -> Association:
        """Link a VCM with a device; many-to-many, inactive until :meth:`vcm_activate`.

        The kinds must match: IOMMU VCMs go with devices behind an SMMU, one-to-one
        VCMs with physically addressed devices that can reach the whole region, the
        VMM VCM with the CPU.  ``SPLIT | USE_HIGH`` makes the VCM the TTBR1 half of the
        device's context (VA[31]=1, so the VCM must lie at or above 2 GiB) and
        ``SPLIT | USE_LOW`` the TTBR0 half (below 2 GiB).  The VCM's one table serves
        both: with TTBCR.N=1 the SMMU indexes TTBR0 by VA[30:20], which for VA < 2 GiB
        is the same slot of the full table.  ``holder`` (an extension) names a layer
        that associates a device for its own use and how to release it.
        """
        call = "vcm_assoc"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        device = self._resolve_device(call, dev)
        attr = check_assoc_attr(attr)
        _check_holder(call, holder)
        path = _path_of(device, self.cpu)
        wanted = {
            VcmKind.IOMMU: "iommu",
            VcmKind.VMM: "cpu",
            VcmKind.USER: "cpu",
            VcmKind.ONE_TO_ONE: "physical",
        }[vcm.kind]
        if path != wanted:
            raise InvalidArgumentError(
                f"{call}: {vcm.kind.value} {vcm.name} cannot be associated with {device.name},"
                f" which is a{'n' if path == 'iommu' else ''} {path} bus master"
                f" (a {vcm.kind.value} VCM needs a{'n' if wanted == 'iommu' else ''} {wanted} one)"
            )
        if attr and vcm.kind is not VcmKind.IOMMU:
            raise InvalidArgumentError(
                f"{call}: {attr!r}: split tables only exist on IOMMU contexts, not on {device.name}"
            )
        retable = None
        if vcm.kind is VcmKind.IOMMU:
            self._check_iommu_assoc(call, vcm, device, attr)
            retable = tableformat.assoc_format(call, vcm, device, vcm.table_settled)
        if vcm.kind is VcmKind.ONE_TO_ONE:
            self._check_reach(call, vcm, device)
        for other in vcm.associations:
            if other.device is device:
                raise StateError(
                    f"{call}: {vcm.name} is already associated with {device.name} ({other.name})"
                )
        if retable is not None:
            self._rebuild_table(vcm, retable)
        if vcm.kind is VcmKind.IOMMU:
            vcm.table_settled = True
        assoc = Association(next(self._ids), vcm, device, attr, holder=holder)
        vcm.associations.append(assoc)
        return assoc

    def _rebuild_table(self, vcm: Vcm, fmt: Any) -> None:
        """Give an empty, unsettled VCM a table in ``fmt`` (its first association's
        SMMU walks that): the new table first, so running out of table memory leaves
        the old one in place."""
        table = self._page_table(fmt)
        assert vcm.table is not None
        vcm.table.destroy()
        vcm.table = table
        self._mappers[vcm.id] = IommuMapper(vcm, self._brackets)

    def _check_iommu_assoc(self, call: str, vcm: Vcm, device: Any, attr: AssocAttr) -> None:
        smmu = device.ctx.smmu
        if attr & AssocAttr.SPLIT and smmu.fmt is not ARMV7S:
            raise InvalidArgumentError(
                f"{call}: SPLIT is ARMv7 TTBCR.N=1; {device.name}'s SMMU walks {smmu.fmt.name}"
            )
        if attr & AssocAttr.USE_HIGH and vcm.start < SPLIT_BOUNDARY:
            raise InvalidArgumentError(
                f"{call}: USE_HIGH {vcm.name} {vcm.range} must lie at or above 0x80000000: "
                "only VA[31]=1 transactions reach the high table"
            )
        if attr & AssocAttr.USE_LOW and vcm.range.end > SPLIT_BOUNDARY:
            raise InvalidArgumentError(
                f"{call}: USE_LOW {vcm.name} {vcm.range} must lie below 0x80000000: "
                "VA[31]=1 transactions never reach the low table"
            )

    @staticmethod
    def _check_reach(call: str, vcm: Vcm, device: Any) -> None:
        """A one-to-one device must reach the whole region through one bus window."""
        try:
            first = device.phys_to_bus(vcm.start)
            last = device.phys_to_bus(vcm.range.last)
        except VcmmError as exc:
            raise InvalidArgumentError(
                f"{call}: {device.name} cannot reach one-to-one {vcm.name} {vcm.range}: {exc}"
            ) from None
        if last - first != vcm.len - 1:
            raise InvalidArgumentError(
                f"{call}: {device.name} sees one-to-one {vcm.name} {vcm.range} through "
                "more than one dma-ranges window; its bus addresses would not be contiguous"
            )

    @_machine_locked
    def vcm_deassoc(self, avcm: Association) -> None:
        """Remove an association; refused while it is active."""
        call = "vcm_deassoc"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if avcm.active:
            raise BusyError(f"{call}: {avcm.name} is active; vcm_deactivate it first")
        avcm.vcm.associations.remove(avcm)
        avcm.freed = True

    @_machine_locked
    def vcm_activate(self, avcm: Association) -> None:
        """Program the device with the VCM (000 L241-246).

        IOMMU: bind the device's context to its bank, point TTBR0 (or, split, TTBR0 or
        TTBR1) at the VCM's table and enable it: a context switch, so the bank's TLB
        entries are invalidated.  A split context takes a low and a high VCM, activated
        in either order.  Devices on one context (an IOMMU group: masters whose stream
        IDs match) share it: activating the VCM the context already runs, on the same
        half, for a second device changes no register, as Linux attaches a group to
        one domain.  VMM and one-to-one: mappings are live already; activation is
        counted (:attr:`Vcm.activations`).
        """
        call = "vcm_activate"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if avcm.active:
            raise StateError(f"{call}: {avcm.name} is already active")
        if avcm.vcm.kind is VcmKind.IOMMU:
            self._activate_iommu(call, avcm)
        avcm.active = True

    def _activate_iommu(self, call: str, avcm: Association) -> None:
        device = avcm.device
        ctx = device.ctx
        running = [a for a in self.associations if a.active and _ctx_of(a) is ctx]
        if any(a.vcm is avcm.vcm and a.half == avcm.half for a in running):
            return  # an IOMMU group: the context runs this VCM for another member already
        for other in running:
            if other.half is None or avcm.half is None or other.half == avcm.half:
                what = "the whole space" if other.half is None else f"the {other.half} half"
                how = f", held by {other.holder}" if other.holder else "; vcm_deactivate it first"
                raise BusyError(
                    f"{call}: {device.name}'s context {ctx.name!r} already runs {other.vcm.name}"
                    f" ({other.name}) on {what}{how}"
                )
        if ctx.is_active and not running:
            raise BusyError(
                f"{call}: {device.name}'s context {ctx.name!r} is active outside the VCMM"
            )
        if ctx.in_update:
            raise StateError(f"{call}: context {ctx.name!r} is inside an update bracket")
        bank = getattr(device, "bank", None)
        check_bank_free(ctx, bank)
        vcm = avcm.vcm
        if avcm.half is None:
            program_context(ctx, bank, vcm.table, None, split=False)
            return
        partner = running[0].vcm if running else None
        if avcm.half == "low":
            low, high = vcm.table, partner.table if partner else None
        else:
            low, high = (partner.table if partner else None), vcm.table
        program_context(ctx, bank, low, high, split=True)

    @_machine_locked
    def vcm_deactivate(self, avcm: Association) -> None:
        """Stop the device using the VCM: disable and unbind its context (IOMMU), or
        drop the activation count (VMM, one-to-one).  A split context keeps its other
        half running, a context shared by a group keeps running while another member's
        association of the same VCM is active."""
        call = "vcm_deactivate"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if not avcm.active:
            raise StateError(f"{call}: {avcm.name} is not active")
        if avcm.vcm.kind is VcmKind.IOMMU:
            ctx = avcm.device.ctx
            if ctx.in_update:
                raise StateError(f"{call}: context {ctx.name!r} is inside an update bracket")
            others = [a for a in self.associations if a.active and a is not avcm]
            on_ctx = [a for a in others if _ctx_of(a) is ctx]
            other = next(iter(on_ctx), None)
            if any(a.vcm is avcm.vcm and a.half == avcm.half for a in on_ctx):
                pass  # another member of the group still runs the VCM on the context
            elif other is None:
                release_context(ctx)
            elif other.half == "low":
                ctx.set_tables(other.vcm.table, None, split=True)
            else:
                ctx.set_tables(None, other.vcm.table, split=True)
        avcm.active = False

    # -- physical memory ---------------------------------------------------------------

    @_machine_locked
    def vcm_phys_alloc(
        self,
        memtype: str | Sequence[str] | None,
        len: int,
        attr: object = PhysAttr.NONE,
        *,
        holder: str | None = None,
    ) -> PhysMem:
        """Allocate physical memory from a memory target (000 L255-292).

        ``memtype`` names a target (``"blocks"``: 16M/1M/64K/4K pools, largest block
        first, never split; ``"contig"``: a contiguous carve-out; ``"ebi"``: kernel RAM
        from the buddy allocator, in the CPU's linear map; ``"smi"``: on-chip SRAM), a
        list tried in order, or ``None`` for the platform's priority order.  ``attr``
        (:class:`PhysAttr`) asks for alignment, block sizes and/or one contiguous chunk;
        its block sizes also cap the page size backings use.  ``holder`` (an extension)
        names a layer allocating for its own use (reports and graphs show it).
        """
        call = "vcm_phys_alloc"
        length = check_int(call, "len", len, minimum=1)
        pattr = check_phys_attr(attr)
        _check_holder(call, holder)
        if memtype is None:
            names = list(self.target_priority)
        elif isinstance(memtype, str):
            names = [memtype]
        elif (
            isinstance(memtype, list | tuple)
            and memtype
            and all(isinstance(n, str) for n in memtype)
        ):
            names = list(memtype)
        else:
            raise InvalidArgumentError(
                f"{call}: memtype {memtype!r} must be a target name, a list of them, or None"
            )
        if dups := sorted({n for n in names if names.count(n) > 1}):
            raise InvalidArgumentError(f"{call}: memtype lists {dups} more than once")
        for name in names:
            self.target(name)
        failures: list[tuple[str, VcmmError]] = []
        for name in names:
            target = self._targets[name]
            try:
                chunks = target.allocate(
                    length,
                    block_sizes=pattr.block_sizes,
                    alignment=pattr.alignment,
                    contiguous=pattr.contiguous,
                )
            except (OutOfMemoryError, UnsupportedSizeError) as exc:
                try:  # a CMA area takes back pages it lent (vcmm.core.cmareclaim)
                    if not isinstance(exc, OutOfMemoryError) or not isinstance(target, CmaArea):
                        raise
                    chunks = self._cma.allocate(target, length, pattr)
                except (OutOfMemoryError, UnsupportedSizeError) as why:
                    failures.append((name, why))
                    continue
            ranges = tuple(AddressRange(c.pa, c.size) for c in chunks)
            physmem = PhysMem(
                next(self._ids), name, length, pattr, ranges, target_chunks=chunks, holder=holder
            )
            self._physmems[physmem.id] = physmem
            self._owners.add(physmem)
            return physmem
        cls = (
            UnsupportedSizeError
            if all(isinstance(e, UnsupportedSizeError) for _, e in failures)
            else OutOfMemoryError
        )
        raise cls(
            f"{call}: no target in {names} can allocate {format_size(length)} with "
            f"{_describe_phys_attr(pattr)}: " + "; ".join(f"{n}: {e}" for n, e in failures)
        )

    @_machine_locked
    def vcm_phys_free(self, physmem: PhysMem) -> None:
        """Return an allocation to its target; refused while it backs a reservation, a
        view of it lives or something pins it (an exported dma-buf, a wrap of its pages).
        Freeing a view or a wrap only forgets it (its pages belong to its parent, or to
        whoever wrapped them) and gives back the pins a wrap held."""
        call = "vcm_phys_free"
        physmem = _check_obj(call, "physmem", physmem, PhysMem)
        if physmem.backing:
            users = ", ".join(r.name for r in physmem.backing)
            raise BusyError(f"{call}: {physmem.name} still backs {users}; vcm_unback them first")
        if physmem.views:
            views = ", ".join(v.name for v in physmem.views)
            raise BusyError(
                f"{call}: {physmem.name} still has the view(s) {views}; a view pins the "
                "memory it shows, vcm_phys_free them first"
            )
        if physmem.pins:
            raise BusyError(pinned_message(call, physmem))
        if physmem.parent is not None:
            physmem.parent.views.remove(physmem)
        elif physmem.owner is None:
            self._targets[physmem.target].free(physmem.target_chunks)
            self._owners.remove(physmem)
        for pin in physmem.holds:
            ownership.release(pin)
        physmem.freed = True
        del self._physmems[physmem.id]

    @_machine_locked
    def vcm_phys_view(
        self,
        physmem: PhysMem,
        offset: int | None = None,
        len: int | None = None,
        *,
        windows: Sequence[tuple[int, int]] | None = None,
    ) -> PhysMem:
        """A view of bytes ``[offset, offset+len)`` of ``physmem`` (its pieces laid end
        to end), or of several ``windows`` ``(offset, len)`` laid end to end.

        Backing a reservation with the view maps exactly those pages; the mapping graph
        finds the aliases of every byte whatever chunk it lies in.  The view pins the
        allocation (``vcm_phys_free`` of it is refused while the view lives); a view of
        a view is a view of the same allocation.  Free it with ``vcm_phys_free``.
        """
        call = "vcm_phys_view"
        physmem = _check_obj(call, "physmem", physmem, PhysMem)
        if windows is None:
            if offset is None or len is None:
                raise InvalidArgumentError(f"{call}: give offset and len, or windows")
            windows = [(offset, len)]
        elif offset is not None or len is not None:
            raise InvalidArgumentError(f"{call}: give offset and len, or windows, not both")
        checked = physical.check_windows(call, physmem, windows)
        view = physical.make_view(next(self._ids), physmem, checked)
        assert view.parent is not None
        view.parent.views.append(view)
        self._physmems[view.id] = view
        return view

    @_machine_locked
    def vcm_phys_wrap(
        self,
        ranges: Sequence[AddressRange],
        *,
        owner: str,
        of: PhysMem | Sequence[PhysMem] = (),
    ) -> PhysMem:
        """Describe pages as one piece of memory (``ranges``, whole pages, laid end to
        end; repeats allowed) so a reservation can be backed with them.

        Who may wrap what (:mod:`vcmm.core.ownership`, docs/DESIGN.md "Ownership"):
        pages of a live allocation only when ``of`` names it (or a view or wrap of it),
        and the wrap then pins what ``of`` names until it is freed; RAM no target or
        table allocator owns freely; free and page-table pages never
        (:class:`~vcmm.errors.OwnershipError` naming the owner).  ``owner`` says whose
        the wrap is.  ``vcm_phys_free`` of a wrap forgets it and gives back its pins.
        """
        call = "vcm_phys_wrap"
        held = ownership.check_of(call, of)
        wrap = physical.make_wrap(
            lambda: next(self._ids),
            self.memory,
            ranges,
            owner,
            check=lambda pieces: self._owners.check_wrap(call, pieces, held),
        )
        wrap.holds = tuple(ownership.pin(p, f"{wrap.name} ({owner})", wrap) for p in held)
        self._physmems[wrap.id] = wrap
        return wrap

    @_machine_locked
    def vcm_phys_owners(self, ranges: Sequence[AddressRange]) -> tuple[PhysMem, ...]:
        """The live allocations holding any page of ``ranges`` (first seen first), as
        the kernel finds the owner of a page it is handed (``dma_map_page``, a driver's
        mmap hook); ``OwnershipError`` for pages free in a target or page-table pages."""
        call = "vcm_phys_owners"
        pieces = physical.check_page_ranges(call, self.memory, ranges)
        return self._owners.owners(call, pieces)

    @_machine_locked
    def vcm_phys_pin(self, physmem: PhysMem, *, holder: str) -> Pin:
        """Keep ``physmem`` from being freed until :meth:`vcm_phys_unpin`; ``holder``
        is named in the refusal (an exporter pins what it shares)."""
        call = "vcm_phys_pin"
        physmem = _check_obj(call, "physmem", physmem, PhysMem)
        if not isinstance(holder, str) or not holder:
            raise InvalidArgumentError(f"{call}: holder {holder!r} must be a non-empty string")
        return ownership.pin(physmem, holder)

    @_machine_locked
    def vcm_phys_unpin(self, pin: Pin) -> None:
        """Give back a pin :meth:`vcm_phys_pin` made."""
        ownership.unpin("vcm_phys_unpin", pin)

    # -- backing -----------------------------------------------------------------------

    @_machine_locked
    def vcm_back(self, res: Reservation, physmem: PhysMem) -> None:
        """Map a reservation onto physical memory (the first ``res.len`` bytes of an
        allocation, a view or a wrap).

        The pieces are laid end to end from the reservation's start; each is mapped
        with the largest page size at which both its VA and PA are aligned (capped by
        the allocation's block sizes).  The mapping graph refuses an alias that
        disagrees on memory type or cache policy (``AttributeConflictError`` naming
        both mappings) and, for every page this backing makes mapped by two address
        spaces, rewrites every existing mapping of it shareable (tables rewritten,
        blocks split where only part of one changes, TLB entries invalidated), whatever
        made those mappings: a device's, the kernel's or a process's.  If the VCM is
        live, its contexts see the change through the SMMU update bracket.  A
        one-to-one reservation is placed at the physical address of its backing, which
        must be contiguous and inside the VCM.
        """
        call = "vcm_back"
        res = _check_obj(call, "res", res, Reservation)
        physmem = _check_obj(call, "physmem", physmem, PhysMem)
        vcm = res.vcm
        if res.physmem is not None:
            raise StateError(f"{call}: {res.name} is already backed by {res.physmem.name}")
        if physmem.size < res.len:
            raise InvalidArgumentError(
                f"{call}: {physmem.name} has {format_size(physmem.size)}, less than"
                f" {res.name}'s {format_size(res.len)}"
            )
        base = res.addr
        if vcm.kind is VcmKind.ONE_TO_ONE:
            base = backing.one_to_one_base(call, res, physmem)
        assert base is not None
        new, rewrites = sharing.plan_back(
            self.graph,
            call,
            backing.pieces(res.len, physmem, base),
            space=vcm.space,
            res_id=res.id,
            owner=f"{res.name} ({vcm.kind.value} {vcm.name})",
            attrs=(
                page_attrs_of(res.attr, shareable=False, global_=vcm.kind is not VcmKind.USER),
                page_attrs_of(res.attr, shareable=True, global_=vcm.kind is not VcmKind.USER),
            ),
        )
        mapper = self.mapper(vcm)
        changed = [mapper, *backing.rewritten_mappers(rewrites, self._reservation, self.mapper)]
        undo = backing.UndoLog()
        try:
            if vcm.kind is VcmKind.ONE_TO_ONE:
                vcm.allocator.alloc_at(base, res.len)
                undo.placed(vcm.allocator, base)
            with backing.updating_all(changed):
                for attrs, run in backing.page_runs(mapper, new, backing.page_cap(physmem)):
                    mapper.map(run, attrs)
                    undo.mapped(mapper, run)
                backing.apply_rewrites(self.graph, rewrites, self._reservation, self.mapper, undo)
        except VcmmError as exc:
            undo.roll_back()
            why = backing.explained(exc, f"{call}: backing {res.name} with {physmem.name}")
            if why is exc:
                raise
            raise why from exc
        except BaseException:
            undo.roll_back()
            raise
        self.graph.add(res.id, new)
        for old, parts in rewrites:
            self.graph.replace(old, parts)
        res.addr = base
        res.physmem = physmem
        physmem.backing.append(res)

    @_machine_locked
    def vcm_unback(self, res: Reservation) -> None:
        """Unmap a reservation from its physical memory and invalidate the TLBs.

        Pages left mapped by a single address space lose the shareable bit on every
        remaining alias (unless the memory is kernel RAM).  A one-to-one reservation
        becomes unplaced.
        """
        call = "vcm_unback"
        res = _check_obj(call, "res", res, Reservation)
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed; there is nothing to unback")
        vcm = res.vcm
        physmem = res.physmem
        old = self.graph.of_reservation(res.id)
        rewrites = sharing.plan_unback(self.graph, res.id, old)
        mapper = self.mapper(vcm)
        changed = [mapper, *backing.rewritten_mappers(rewrites, self._reservation, self.mapper)]
        undo = backing.UndoLog()
        try:
            # One bracket over every table that changes: the TLBs are invalidated only
            # once the unmap and the alias rewrites (which may split blocks and run out
            # of table memory) all succeeded.
            with backing.updating_all(changed):
                for va, size, attrs in backing.va_groups(old) if mapper.page_sizes else ():
                    if res.cut:  # a block may be shared with a neighbour: split it
                        for edge in (va, va + size):  # first, so undo restores it
                            backing.split_leaf(mapper, edge, _constant(attrs), undo)
                    undo.unmapped(mapper, mapper.unmap(va, size), attrs)
                backing.apply_rewrites(self.graph, rewrites, self._reservation, self.mapper, undo)
        except VcmmError as exc:
            undo.roll_back()
            why = backing.explained(exc, f"{call}: unbacking {res.name}")
            if why is exc:
                raise
            raise why from exc
        except BaseException:
            undo.roll_back()
            raise
        self.graph.remove(res.id)
        for before, parts in rewrites:
            self.graph.replace(before, parts)
        physmem.backing.remove(res)
        res.physmem = None
        if vcm.kind is VcmKind.ONE_TO_ONE and res.addr is not None:
            vcm.allocator.free(res.addr)
            res.addr = None

    # -- splitting and merging reservations ----------------------------------------------

    def _check_resplit(self, call: str, vcm: Vcm) -> None:
        if not vcm.own_allocator:
            raise InvalidArgumentError(
                f"{call}: {vcm.name} places reservations with its own allocator "
                f"({vcm.allocator!r}), which cannot be asked to split or join a range"
            )

    def _rest_matches(
        self, call: str, physmem: PhysMem, offset: int, length: int, other: PhysMem
    ) -> None:
        """Refuse unless ``other``'s first ``length`` bytes are ``physmem``'s bytes
        ``[offset, offset+length)`` (the same physical pages, in the same order)."""
        if other.size < length:
            raise InvalidArgumentError(
                f"{call}: {other.name} has {format_size(other.size)}, less than the "
                f"{format_size(length)} it must back"
            )
        mine = physical.joined([p for p, _ in physical.window(physmem, offset, length)])
        theirs = physical.joined([p for p, _ in physical.window(other, 0, length)])
        if mine != theirs:
            raise InvalidArgumentError(
                f"{call}: {other.name} is not the same memory as bytes [{offset:#x}, "
                f"+{format_size(length)}) of {physmem.name} (make it with vcm_phys_view)"
            )

    @_machine_locked
    def vcm_split(
        self, res: Reservation, offset: int, physmem: PhysMem | None = None
    ) -> Reservation:
        """Cut a reservation in two at ``offset`` (whole pages, inside it): ``res``
        keeps the first ``offset`` bytes, the returned reservation has the rest.

        Nothing is unmapped or remapped: every page-table entry stays where it is and
        the mapping graph hands the mappings of the second part to the new reservation
        (so a partial ``munmap`` can then unback just the part that goes).  A backed
        reservation's second part must be given ``physmem``, the same memory as the
        backing from ``offset`` on (a view of it: ``vcm_phys_view``); ``res`` keeps its
        backing, of which it now uses the first ``offset`` bytes.  Not for VCMs whose
        addresses a custom allocator places (it cannot split a range).  Atomic: the
        allocator cuts the live range in place, so once the arguments pass nothing can
        fail (a free and two fixed allocations could lose the range half way).
        """
        call = "vcm_split"
        res = _check_obj(call, "res", res, Reservation)
        offset = check_int(call, "offset", offset, minimum=1)
        vcm = res.vcm
        if offset % SZ_4K or offset >= res.len:
            raise InvalidArgumentError(
                f"{call}: offset {offset:#x} must be a multiple of 4 KiB strictly inside "
                f"{res.name} ({format_size(res.len)})"
            )
        self._check_resplit(call, vcm)
        if res.physmem is None:
            if physmem is not None:
                raise InvalidArgumentError(
                    f"{call}: {res.name} is not backed; its second part takes no physmem"
                )
        else:
            if physmem is None:
                raise InvalidArgumentError(
                    f"{call}: {res.name} is backed by {res.physmem.name}; its second part "
                    "needs the rest of that memory (vcm_phys_view of it from the offset)"
                )
            physmem = _check_obj(call, "physmem", physmem, PhysMem)
            self._rest_matches(call, res.physmem, offset, res.len - offset, physmem)
        rest = Reservation(
            next(self._ids), vcm, res.len - offset, res.attr, None, physmem, cut=True
        )
        if res.addr is not None:
            vcm.allocator.split(res.addr, offset)  # in place: nothing freed, cannot fail
            rest.addr = res.addr + offset
            owner = f"{rest.name} ({vcm.kind.value} {vcm.name})"
            self.graph.split_reservation(res.id, rest.addr, rest.id, owner)
        res.len = offset
        res.cut = True
        vcm.reservations.append(rest)
        self._res_by_id[rest.id] = rest
        if physmem is not None:
            physmem.backing.append(rest)
        return rest

    @_machine_locked
    def vcm_merge(self, left: Reservation, right: Reservation) -> None:
        """Join ``right`` onto the end of ``left`` (the inverse of :meth:`vcm_split`):
        neighbours in one VCM (or two unplaced reservations of a one-to-one VCM) with
        one ``attr``, both unbacked, or backed so that ``left``'s backing continues with
        ``right``'s memory.  ``right`` is released; page-table entries stay as they
        are."""
        call = "vcm_merge"
        left = _check_obj(call, "left", left, Reservation)
        right = _check_obj(call, "right", right, Reservation)
        vcm = left.vcm
        if right.vcm is not vcm or right is left:
            raise InvalidArgumentError(
                f"{call}: {left.name} and {right.name} must be two reservations of one VCM"
            )
        if left.attr != right.attr:
            raise InvalidArgumentError(
                f"{call}: {left.name} ({left.attr!r}) and {right.name} ({right.attr!r}) "
                "map with different attributes"
            )
        unplaced = left.addr is None and right.addr is None  # one-to-one, unbacked
        if not unplaced and (
            left.addr is None or right.addr is None or left.addr + left.len != right.addr
        ):
            raise InvalidArgumentError(
                f"{call}: {right.name} does not start where {left.name} ends"
            )
        self._check_resplit(call, vcm)
        if (left.physmem is None) != (right.physmem is None):
            raise StateError(f"{call}: one of {left.name} and {right.name} is backed, not both")
        if left.physmem is not None and right.physmem is not None:
            left_mem = left.physmem
            if left_mem.size < left.len + right.len:
                raise InvalidArgumentError(
                    f"{call}: {left_mem.name} ({format_size(left_mem.size)}) cannot back "
                    f"{left.name} and {right.name} together"
                )
            self._rest_matches(call, left_mem, left.len, right.len, right.physmem)
            right.physmem.backing.remove(right)
            right.physmem = None
        total = left.len + right.len
        if left.addr is not None and right.addr is not None:
            vcm.allocator.join(left.addr, right.addr)
        self.graph.join_reservations(
            left.id, right.id, f"{left.name} ({vcm.kind.value} {vcm.name})"
        )
        left.len = total
        vcm.reservations.remove(right)
        del self._res_by_id[right.id]
        right.freed = True

    # -- faults ------------------------------------------------------------------------

    @_machine_locked
    def vcm_hook(self, dev: Any, handler: FaultHandler | None, data: Any = None) -> None:
        """Register a fault handler for a device behind an IOMMU (000 L304-317).

        On a translation or permission fault the VCMM calls ``handler(fault, data)``:
        ``fault`` is a :class:`~vcmm.core.objects.VcmFault` (device, va, access, kind,
        level, SMMU/context/bank, and the VCM and reservation the address falls in),
        ``data`` what was passed here.  Returning 1 replays the transaction: a handler
        that calls :meth:`vcm_back` on ``fault.reservation`` and returns 1 backs memory
        on demand and the access completes.  Returning 0 terminates it: the device's
        access raises :class:`~vcmm.errors.DeviceFaultError`.  With no handler the
        SMMU logs a warning and terminates.  Exceptions a handler raises propagate to
        the access.  ``handler=None`` removes the hook.
        """
        call = "vcm_hook"
        device = self._resolve_device(call, dev)
        if _path_of(device, self.cpu) != "iommu":
            raise InvalidArgumentError(
                f"{call}: {device.name} has no IOMMU; its bad accesses are bus errors, not "
                "translation faults a handler could fix"
            )
        if handler is None:
            device.ctx.hook_interrupt(None)
            self._hooks.pop(device.name, None)
            return
        if not callable(handler):
            raise InvalidArgumentError(f"{call}: handler {handler!r} is not callable")

        def on_fault(fault: Any, _unused: Any) -> int:
            return handler(self._vcm_fault(device, fault), data)

        device.ctx.hook_interrupt(on_fault, None)
        self._hooks[device.name] = (handler, data)

    def _vcm_fault(self, device: Any, fault: Any) -> VcmFault:
        vcm = res = None
        for a in self.associations:
            if not a.active or _ctx_of(a) is not device.ctx:
                continue
            if a.half is not None and (fault.va >= SPLIT_BOUNDARY) != (a.half == "high"):
                continue
            if fault.va in a.vcm.range:
                vcm = a.vcm
        if vcm is not None:
            res = next(
                (r for r in vcm.reservations if r.range is not None and fault.va in r.range),
                None,
            )
        return VcmFault(
            device=fault.device or device.name,
            va=fault.va,
            access=fault.access,
            kind=fault.kind,
            level=fault.level,
            smmu=fault.smmu,
            context=fault.context,
            bank=fault.bank,
            vcm=vcm,
            reservation=res,
        )

    # -- cache maintenance ---------------------------------------------------------------

    def _sync(self, call: str, res: Reservation, direction: object, for_cpu: bool) -> bool:
        res = _check_obj(call, "res", res, Reservation)
        if not isinstance(direction, DmaDirection):
            raise InvalidArgumentError(f"{call}: direction {direction!r} is not a DmaDirection")
        if direction is DmaDirection.NONE:
            raise InvalidArgumentError(
                f"{call}: direction NONE names no transfer; use TO_DEVICE, FROM_DEVICE or "
                "BIDIRECTIONAL"
            )
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed; there is nothing to sync")
        devices = [a.device for a in res.vcm.associations if a.device is not self.cpu]
        if all(getattr(d, "coherent", False) for d in devices):
            return False
        ranges = union([m.phys for m in self.graph.of_reservation(res.id)])
        return dma_sync(self.cpu.cache, ranges, direction, for_cpu=for_cpu)

    @_machine_locked
    def vcm_sync_for_device(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer to its devices (the DMA API's ``sync_for_device``).

        TO_DEVICE and BIDIRECTIONAL clean the CPU cache over the reservation's physical
        memory, so a non-coherent device reads what the CPU wrote; FROM_DEVICE
        invalidates it, so no dirty line can later overwrite what the device writes.
        Skipped (returns False) when every device associated with the reservation's
        VCM snoops the CPU cache, or when none is (a VMM reservation is the CPU's own
        view: sync the device's reservation of the buffer); True when maintenance ran.
        """
        return self._sync("vcm_sync_for_device", res, direction, for_cpu=False)

    @_machine_locked
    def vcm_sync_for_cpu(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer back to the CPU (the DMA API's ``sync_for_cpu``).

        FROM_DEVICE and BIDIRECTIONAL invalidate the CPU cache over the reservation's
        physical memory, so the CPU does not read lines that went stale while the device
        wrote; TO_DEVICE needs nothing.  Skipped (False) as for
        :meth:`vcm_sync_for_device`.
        """
        return self._sync("vcm_sync_for_cpu", res, direction, for_cpu=True)

    # -- the graph as data ---------------------------------------------------------------

    @_machine_locked
    def graph_data(self) -> dict[str, Any]:
        """The mapping graph as plain data: ``{"nodes": [...], "edges": [...]}``.

        Nodes: devices, VCMs, reservations, physical allocations, memory targets,
        chunks and the linear map; edges: associations (with ``active``),
        reservations of VCMs, backings, chunks of allocations and every mapping (with
        VA, memory type, shareability).  Only str/int/bool/None values, so
        ``json.dumps`` takes it as is.  See :mod:`vcmm.core.export`.
        """
        return export.graph_data(self)

    def to_networkx(self) -> Any:
        """:meth:`graph_data` as a ``networkx.MultiDiGraph``."""
        return export.to_networkx(self.graph_data())

    # -- state -------------------------------------------------------------------------

    @_machine_locked
    def snapshot(self) -> tuple[object, ...]:
        """Everything the manager owns, comparable: for all-or-nothing tests."""
        vcms = tuple(
            (
                v.id,
                v.kind,
                v.range,
                v.allocator.snapshot(),
                tuple(
                    (r.id, r.addr, r.len, int(r.attr), r.physmem.id if r.physmem else None)
                    for r in v.reservations
                ),
                tuple((a.id, a.device.name, int(a.attr), a.active) for a in v.associations),
                v.table.snapshot() if v.table is not None else None,
            )
            for v in self.vcms
        )
        phys = tuple(
            (
                p.id,
                p.target,
                p.len,
                p.chunk_ranges,
                tuple(r.id for r in p.backing),
                p.parent.id if p.parent is not None else None,
                tuple(v.id for v in p.views),
                tuple(pin.holder for pin in p.pins),
            )
            for p in self._physmems.values()
        )
        targets = tuple((n, t.snapshot()) for n, t in sorted(self._targets.items()))
        return (
            vcms,
            phys,
            targets,
            self.graph.snapshot(),
            self._kernel_areas.snapshot(),
            tuple(sorted(self._hooks)),
        )


def _constant(attrs: PageAttrs) -> Callable[[int], PageAttrs]:
    """``attrs`` whatever the address (the attributes of one block entry)."""
    return lambda _va: attrs


@functools.lru_cache(maxsize=256)
def _alignments(sizes: tuple[int, ...], length: int) -> list[int]:
    """Alignments to try for a reservation: page sizes not above ``length``, largest
    first (so a backing can use the largest pages), or 4 KiB."""
    return [s for s in sorted(sizes, reverse=True) if s <= length] or [SZ_4K]


def _linear_attrs() -> PageAttrs:
    """The kernel's linear map as the CPU writes it: cacheable write-back, shareable
    (SMP ARM), non-secure (the one definition, so the graph compares with what the
    table holds)."""
    return LINEAR_MAP_ATTRS


def _ctx_of(assoc: Association) -> Any:
    return getattr(assoc.device, "ctx", None)


def _path_of(device: Any, cpu: Any) -> str:
    """Translation path of a bus master: ``cpu``, ``iommu`` or ``physical``."""
    if device is cpu:
        return "cpu"
    if hasattr(device, "ctx"):
        return "iommu"
    return "physical"


def _describe_phys_attr(attr: PhysAttr) -> str:
    parts = [f"alignment {format_size(attr.alignment)}"]
    if attr.block_sizes:
        parts.append("blocks " + "/".join(format_size(s) for s in attr.block_sizes))
    if attr.contiguous:
        parts.append("contiguous")
    return ", ".join(parts)
