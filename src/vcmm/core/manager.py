"""The Virtual Contiguous Memory Manager: the seed's calls over one mapping graph.

Every call validates its arguments completely before it changes anything, and the
few steps that can still fail part way (page-table memory running out, a mapping
conflict found late) are undone before the error leaves, so a failing call leaves
tables, TLBs, allocators and the graph exactly as they were.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Mapping as MappingABC
from typing import Any

from vcmm.attrs import DmaDirection, PageAttrs
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
from vcmm.core.mappers import IommuMapper, Mapper, OneToOneMapper, VmmMapper
from vcmm.core.objects import Association, PhysMem, Reservation, Vcm, VcmKind
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    StateError,
    VcmmError,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size

#: ``ext_vcm_id`` of the kernel's own address space for ``vcm_create_from_prebuilt``.
VMM_EXT_ID = 0
_SPLIT_BOUNDARY = 1 << 31


def _check_int(call: str, name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{call}: {name} {value!r} is not an integer")
    if value < minimum:
        raise InvalidArgumentError(f"{call}: {name} {value:#x} must be >= {minimum:#x}")
    return value


def _check_obj(call: str, name: str, value: object, kind: type) -> Any:
    if not isinstance(value, kind):
        raise InvalidArgumentError(
            f"{call}: {name} is a {type(value).__name__}, not a {kind.__name__}"
        )
    value._alive(call)  # type: ignore[attr-defined]
    return value


class Vcmm:
    """Owner of every VCM, reservation, association and physical allocation.

    Hardware is passed in already built (see :mod:`vcmm.system` for booting a
    platform): ``devices`` maps names to bus masters (SMMU devices with ``.ctx``,
    physically addressed devices with ``phys_to_bus``) and must include the CPU.
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
        page_table_factory: Callable[..., Any],
        range_allocator: Callable[..., Any],
    ) -> None:
        self.memory = memory
        self.cpu = cpu
        self._devices = dict(devices)
        self._targets = dict(targets)
        self.target_priority = tuple(target_priority)
        self.table_memory = table_memory
        self.iommu_format = iommu_format
        self._page_table = page_table_factory
        self._range_allocator = range_allocator
        self._kernel_areas = range_allocator(vmalloc, granule=SZ_4K)
        self.graph = MappingGraph(
            linear_map=tuple(
                Mapping(
                    KERNEL_SPACE, "kernel linear map", AddressRange(pa, size), va, _linear_attrs()
                )
                for va, pa, size in linear_map
            )
        )
        self.vcms: list[Vcm] = []
        self.physmems: list[PhysMem] = []
        self._ids = itertools.count(1)
        self._mappers: dict[int, Mapper] = {}
        self._one_to_one = OneToOneMapper()
        self._vmm = VmmMapper(cpu)

    # -- lookups -----------------------------------------------------------------------

    def device(self, name: str) -> Any:
        """A bus master by name (the CPU is ``"cpu"``)."""
        try:
            return self._devices[name]
        except KeyError:
            known = ", ".join(sorted(self._devices))
            raise NotFoundError(f"no device named {name!r} (known: {known})") from None

    @property
    def devices(self) -> dict[str, Any]:
        return dict(self._devices)

    def target(self, name: str) -> Any:
        try:
            return self._targets[name]
        except KeyError:
            known = ", ".join(sorted(self._targets))
            raise NotFoundError(f"no memory target named {name!r} (known: {known})") from None

    @property
    def targets(self) -> dict[str, Any]:
        return dict(self._targets)

    def _resolve_device(self, call: str, dev: object) -> Any:
        if isinstance(dev, str):
            return self.device(dev)
        if dev in self._devices.values():
            return dev
        raise InvalidArgumentError(
            f"{call}: {dev!r} is not a device of this system (pass a name or system.device(name))"
        )

    def mapper(self, vcm: Vcm) -> Mapper:
        if vcm.kind is VcmKind.VMM:
            return self._vmm
        if vcm.kind is VcmKind.ONE_TO_ONE:
            return self._one_to_one
        return self._mappers[vcm.id]

    # -- VCMs --------------------------------------------------------------------------

    def vcm_create(
        self,
        start_addr: int,
        len: int,
        *,
        kind: VcmKind | None = None,
        allocator: Any = None,
    ) -> Vcm:
        """Create a VCM of ``len`` bytes from ``start_addr`` (000 L137-165).

        A range that lies inside physical RAM makes a one-to-one VCM, as the seed
        describes; anything else an IOMMU VCM.  Pass ``kind`` where that inference
        would be wrong (an IOMMU space deliberately placed over RAM addresses).
        ``allocator`` is the custom-allocator hook the reviewers asked for (000 L4053):
        any object with ``alloc(size, align) -> addr``, ``alloc_at(addr, size)``,
        ``free(addr)`` and ``snapshot()`` that hands out addresses inside the VCM (the
        DMA API passes its IOVA allocator here).
        """
        call = "vcm_create"
        start = _check_int(call, "start_addr", start_addr)
        length = _check_int(call, "len", len, minimum=1)
        if start % SZ_4K or length % SZ_4K:
            raise AlignmentError(
                f"{call}: start_addr {start:#x} and len {length:#x} must be multiples of 4 KiB"
                " (the smallest page); the seed's vcm_create(SZ_1K, ...) breaks this rule"
            )
        window = AddressRange(start, length)
        if kind is None:
            kind = VcmKind.ONE_TO_ONE if self.memory.is_backed(start, length) else VcmKind.IOMMU
        if not isinstance(kind, VcmKind) or kind is VcmKind.VMM:
            raise InvalidArgumentError(
                f"{call}: kind {kind!r} must be VcmKind.IOMMU or VcmKind.ONE_TO_ONE"
                " (the VMM VCM comes from vcm_create_from_prebuilt)"
            )
        if kind is VcmKind.ONE_TO_ONE and not self.memory.is_backed(start, length):
            raise InvalidArgumentError(
                f"{call}: one-to-one VCM {window} is not inside physical memory"
            )
        if kind is VcmKind.IOMMU and window.end > 1 << 32:
            raise InvalidArgumentError(
                f"{call}: IOMMU VCM {window} goes beyond the 32-bit input of {self.iommu_format}"
            )
        if allocator is None:
            allocator = self._range_allocator(window, granule=SZ_4K)
        elif not all(hasattr(allocator, m) for m in ("alloc", "free", "snapshot")):
            raise InvalidArgumentError(
                f"{call}: allocator {allocator!r} lacks alloc/free/snapshot methods"
            )
        vcm = Vcm(next(self._ids), kind, start, length, allocator)
        if kind is VcmKind.IOMMU:
            vcm.table = self._page_table(self.iommu_format)
            self._mappers[vcm.id] = IommuMapper(vcm, vcm.table)
        self.vcms.append(vcm)
        return vcm

    def vcm_create_from_prebuilt(self, ext_vcm_id: int) -> Vcm:
        """A VCM for an address space someone else built; 0 is the kernel's VMM."""
        call = "vcm_create_from_prebuilt"
        ext = _check_int(call, "ext_vcm_id", ext_vcm_id)
        if ext != VMM_EXT_ID:
            raise NotFoundError(
                f"{call}: no prebuilt address space with ext_vcm_id {ext}"
                f" (only {VMM_EXT_ID}, the kernel's VMM)"
            )
        area = self._kernel_areas
        vcm = Vcm(next(self._ids), VcmKind.VMM, area.range.start, area.range.size, area)
        self.vcms.append(vcm)
        return vcm

    def vcm_free(self, vcm: Vcm) -> None:
        """Destroy a VCM; refused while it has reservations or associations."""
        call = "vcm_free"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        users = [r.name for r in vcm.reservations] + [a.name for a in vcm.associations]
        if users:
            raise BusyError(f"{call}: {vcm.name} still has {', '.join(users)}; release them first")
        if vcm.table is not None:
            vcm.table.destroy()
        self._mappers.pop(vcm.id, None)
        vcm.freed = True
        self.vcms.remove(vcm)

    # -- reservations ------------------------------------------------------------------

    def vcm_reserve(
        self, vcm: Vcm, len: int, attr: int = Attr.RW, *, align: int | None = None
    ) -> Reservation:
        """Reserve ``len`` contiguous bytes of ``vcm``, no memory behind them yet.

        IOMMU and VMM reservations are aligned to the largest page size not above
        ``len`` (so backing can use 1M/16M entries), falling back to smaller
        alignments when the VCM is too fragmented.  One-to-one reservations are placed
        when backed, at the physical address of the backing (a pass-through).
        """
        call = "vcm_reserve"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        length = _check_int(call, "len", len, minimum=1)
        attr = check_attr(attr)
        if length % SZ_4K:
            raise AlignmentError(f"{call}: len {length:#x} is not a multiple of 4 KiB")
        if length > vcm.len:
            raise InvalidArgumentError(
                f"{call}: len {format_size(length)} is larger than {vcm.name} ({format_size(vcm.len)})"
            )
        addr: int | None = None
        if vcm.kind is not VcmKind.ONE_TO_ONE:
            sizes = self._page_sizes(vcm)
            if align is not None:
                alignments = [_check_int(call, "align", align, minimum=SZ_4K)]
            else:
                alignments = [s for s in sizes if s <= length] or [SZ_4K]
            error: VcmmError | None = None
            for alignment in alignments:
                try:
                    addr = vcm.allocator.alloc(length, alignment)
                    break
                except OutOfMemoryError as exc:
                    error = exc
            if addr is None:
                raise OutOfMemoryError(
                    f"{call}: no free {format_size(length)} range in {vcm.name} {vcm.range}: {error}"
                )
        res = Reservation(next(self._ids), vcm, length, attr, addr)
        vcm.reservations.append(res)
        return res

    def _page_sizes(self, vcm: Vcm) -> list[int]:
        if vcm.kind is VcmKind.IOMMU:
            assert vcm.table is not None
            return sorted(vcm.table.sizes, reverse=True)
        return sorted(self.cpu.kernel_table.sizes, reverse=True)

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
        res.freed = True

    # -- associations ------------------------------------------------------------------

    def vcm_assoc(self, vcm: Vcm, dev: Any, attr: int = AssocAttr.NONE) -> Association:
        """Link a VCM with a device (many-to-many).  The kinds must match."""
        call = "vcm_assoc"
        vcm = _check_obj(call, "vcm", vcm, Vcm)
        device = self._resolve_device(call, dev)
        attr = check_assoc_attr(attr)
        path = _path_of(device, self.cpu)
        wanted = {VcmKind.IOMMU: "iommu", VcmKind.VMM: "cpu", VcmKind.ONE_TO_ONE: "physical"}[
            vcm.kind
        ]
        if path != wanted:
            raise InvalidArgumentError(
                f"{call}: {vcm.kind.value} {vcm.name} cannot be associated with {device.name},"
                f" which is a {path} bus master (needs a {wanted} one)"
            )
        if attr and vcm.kind is not VcmKind.IOMMU:
            raise InvalidArgumentError(
                f"{call}: SPLIT tables only exist on IOMMU contexts, not {device.name}"
            )
        if vcm.kind is VcmKind.IOMMU:
            smmu_fmt = device.ctx.smmu.fmt
            if smmu_fmt is not self.iommu_format:
                raise InvalidArgumentError(
                    f"{call}: {device.name}'s SMMU uses {smmu_fmt}, {vcm.name}'s table is {self.iommu_format}"
                )
            if attr & AssocAttr.USE_HIGH and vcm.start < _SPLIT_BOUNDARY:
                raise InvalidArgumentError(
                    f"{call}: USE_HIGH {vcm.name} {vcm.range} must lie at or above 0x80000000 (VA[31]=1)"
                )
            if attr & AssocAttr.USE_LOW and vcm.range.end > _SPLIT_BOUNDARY:
                raise InvalidArgumentError(
                    f"{call}: USE_LOW {vcm.name} {vcm.range} must lie below 0x80000000 (VA[31]=0)"
                )
        if vcm.kind is VcmKind.ONE_TO_ONE:
            try:
                device.phys_to_bus(vcm.start)
                device.phys_to_bus(vcm.range.last)
            except VcmmError as exc:
                raise InvalidArgumentError(
                    f"{call}: {device.name} cannot reach one-to-one {vcm.name} {vcm.range}: {exc}"
                ) from None
        for other in vcm.associations:
            if other.device is device:
                raise StateError(
                    f"{call}: {vcm.name} is already associated with {device.name} ({other.name})"
                )
        assoc = Association(next(self._ids), vcm, device, attr)
        vcm.associations.append(assoc)
        return assoc

    def vcm_deassoc(self, avcm: Association) -> None:
        call = "vcm_deassoc"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if avcm.active:
            raise BusyError(f"{call}: {avcm.name} is active; vcm_deactivate it first")
        avcm.vcm.associations.remove(avcm)
        avcm.freed = True

    def vcm_activate(self, avcm: Association) -> None:
        """Program the device with the VCM (a context switch on an IOMMU)."""
        call = "vcm_activate"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if avcm.active:
            raise StateError(f"{call}: {avcm.name} is already active")
        if avcm.vcm.kind is VcmKind.IOMMU:
            for other in self._associations_of(avcm.device):
                if other.active and (
                    other.half is None or avcm.half is None or other.half == avcm.half
                ):
                    raise BusyError(
                        f"{call}: {avcm.device.name} already runs {other.vcm.name} ({other.name});"
                        " deactivate it first"
                    )
        self.mapper(avcm.vcm).activate(avcm)
        avcm.active = True

    def vcm_deactivate(self, avcm: Association) -> None:
        call = "vcm_deactivate"
        avcm = _check_obj(call, "avcm", avcm, Association)
        if not avcm.active:
            raise StateError(f"{call}: {avcm.name} is not active")
        self.mapper(avcm.vcm).deactivate(avcm)
        avcm.active = False

    def _associations_of(self, device: Any) -> list[Association]:
        return [a for v in self.vcms for a in v.associations if a.device is device]

    # -- physical memory ---------------------------------------------------------------

    def vcm_phys_alloc(
        self, memtype: str | Sequence[str] | None, len: int, attr: object = PhysAttr.NONE
    ) -> PhysMem:
        """Allocate physical memory from a memory target (or a priority list of them).

        ``memtype`` names a target (``"blocks"``, ``"contig"``, ``"ebi"``, ``"smi"``),
        a list tried in order, or ``None`` for the platform's priority order.
        """
        call = "vcm_phys_alloc"
        length = _check_int(call, "len", len, minimum=1)
        pattr = check_phys_attr(attr)
        if memtype is None:
            names = list(self.target_priority)
        elif isinstance(memtype, str):
            names = [memtype]
        else:
            names = list(memtype)
        for name in names:
            self.target(name)
        failures = []
        for name in names:
            target = self._targets[name]
            try:
                chunks = target.allocate(
                    length,
                    block_sizes=pattr.block_sizes,
                    alignment=pattr.alignment,
                    contiguous=pattr.contiguous,
                )
            except OutOfMemoryError as exc:
                failures.append(f"{name}: {exc}")
                continue
            ranges = tuple(AddressRange(c.pa, c.size) for c in chunks)
            physmem = PhysMem(next(self._ids), name, length, pattr, ranges, target_chunks=chunks)
            self.physmems.append(physmem)
            return physmem
        raise OutOfMemoryError(
            f"{call}: {format_size(length)} with {pattr} failed: " + "; ".join(failures)
        )

    def vcm_phys_free(self, physmem: PhysMem) -> None:
        """Return an allocation to its target; refused while it backs a reservation."""
        call = "vcm_phys_free"
        physmem = _check_obj(call, "physmem", physmem, PhysMem)
        if physmem.backing:
            users = ", ".join(r.name for r in physmem.backing)
            raise BusyError(f"{call}: {physmem.name} still backs {users}; vcm_unback them first")
        self._targets[physmem.target].free(physmem.target_chunks)
        physmem.freed = True
        self.physmems.remove(physmem)

    # -- backing -----------------------------------------------------------------------

    def _pieces(
        self, res: Reservation, physmem: PhysMem, base: int
    ) -> list[tuple[int, AddressRange]]:
        """(VCM address, physical range) pieces mapping ``res`` onto ``physmem``."""
        pieces = []
        offset = 0
        for chunk in physmem.chunk_ranges:
            if offset >= res.len:
                break
            n = min(chunk.size, res.len - offset)
            pieces.append((base + offset, AddressRange(chunk.start, n)))
            offset += n
        return pieces

    def vcm_back(self, res: Reservation, physmem: PhysMem) -> None:
        """Map a reservation onto a physical allocation (its first ``res.len`` bytes).

        Each chunk is mapped with the largest page size at which both addresses are
        aligned.  The mapping graph refuses aliases that disagree on memory type, and
        marks every mapping of a chunk shareable once two address spaces map it.
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
            base = self._place_one_to_one(call, res, physmem)
        assert base is not None
        pieces = self._pieces(res, physmem, base)
        new = []
        for va, phys in pieces:
            shareable = self.graph.shareable_for(phys, [vcm.space])
            attrs = page_attrs_of(res.attr, shareable=shareable)
            mapping = Mapping(
                vcm.space, f"{res.name} ({vcm.kind.value} {vcm.name})", phys, va, attrs, res.id
            )
            self.graph.check(mapping)
            new.append(mapping)
        mapper = self.mapper(vcm)
        placed = vcm.kind is VcmKind.ONE_TO_ONE
        if placed:
            vcm.allocator.alloc_at(base, res.len)
        done: list[Mapping] = []
        mapper.update_start()
        try:
            for m in new:
                mapper.map(m.va, m.phys.start, m.phys.size, m.attrs)
                done.append(m)
            self._reshare([m.phys for m in new], extra=(res.id, new))
        except BaseException:
            for m in done:
                mapper.unmap(m.va, m.phys.size)
            if placed:
                vcm.allocator.free(base)
            mapper.update_done()
            raise
        mapper.update_done()
        self.graph.add(res.id, new)
        res.addr = base
        res.physmem = physmem
        physmem.backing.append(res)

    def _place_one_to_one(self, call: str, res: Reservation, physmem: PhysMem) -> int:
        ranges = physmem.chunk_ranges
        start = ranges[0].start
        expected = start
        for chunk in ranges:
            if chunk.start != expected:
                raise InvalidArgumentError(
                    f"{call}: one-to-one {res.vcm.name} needs physically contiguous backing;"
                    f" {physmem.name} has a gap at {expected:#x}"
                )
            expected = chunk.end
        span = AddressRange(start, res.len)
        if span not in res.vcm.range:
            raise InvalidArgumentError(
                f"{call}: {physmem.name} at {span} lies outside one-to-one {res.vcm.name} {res.vcm.range}"
            )
        for other in res.vcm.reservations:
            if other.range is not None and other.range.overlaps(span):
                raise StateError(
                    f"{call}: {span} is already used by {other.name} in {res.vcm.name}"
                )
        return start

    def _reshare(
        self, phys_ranges: list[AddressRange], extra: tuple[int, list[Mapping]] | None = None
    ) -> None:
        """Bring the shareable bit of every existing alias in line with the sharing rule."""
        for phys in phys_ranges:
            candidates = self.graph.overlapping(phys)
            spaces = {m.space for m in candidates}
            if extra is not None:
                spaces |= {m.space for m in extra[1] if m.phys.overlaps(phys)}
            want = self.graph.is_linear_mapped(phys) or len(spaces) >= 2
            for old in candidates:
                if old.res_id is None or old.attrs.shareable == want:
                    continue
                self._rewrite(old, old.attrs.with_(shareable=want))

    def _rewrite(self, old: Mapping, attrs: PageAttrs) -> None:
        res = self._reservation(old.res_id)
        mapper = self.mapper(res.vcm)
        mapper.update_start()
        mapper.set_attrs(old.va, old.phys.size, attrs)
        mapper.update_done()
        maps = self.graph._mappings[res.id]
        maps[maps.index(old)] = Mapping(old.space, old.owner, old.phys, old.va, attrs, old.res_id)

    def _reservation(self, res_id: int | None) -> Reservation:
        for vcm in self.vcms:
            for res in vcm.reservations:
                if res.id == res_id:
                    return res
        raise NotFoundError(f"no reservation with id {res_id}")

    def vcm_unback(self, res: Reservation) -> None:
        """Unmap a reservation from its physical memory and invalidate the TLBs."""
        call = "vcm_unback"
        res = _check_obj(call, "res", res, Reservation)
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed")
        vcm = res.vcm
        mapper = self.mapper(vcm)
        old = self.graph.of_reservation(res.id)
        mapper.update_start()
        for m in old:
            mapper.unmap(m.va, m.phys.size)
        mapper.update_done()
        self.graph.remove(res.id)
        self._reshare([m.phys for m in old])
        res.physmem.backing.remove(res)
        res.physmem = None
        if vcm.kind is VcmKind.ONE_TO_ONE and res.addr is not None:
            vcm.allocator.free(res.addr)
            res.addr = None

    # -- faults and cache maintenance ------------------------------------------------------

    def vcm_hook(self, dev: Any, handler: Callable[[Any, Any], int], data: Any = None) -> None:
        """Register a fault handler for a device behind an IOMMU (000 L311-317).

        ``handler(fault, data)`` returns 1 to retry the transaction (after fixing the
        mapping, e.g. backing on demand) or 0 to terminate it.
        """
        call = "vcm_hook"
        device = self._resolve_device(call, dev)
        if not callable(handler):
            raise InvalidArgumentError(f"{call}: handler {handler!r} is not callable")
        if _path_of(device, self.cpu) != "iommu":
            raise InvalidArgumentError(
                f"{call}: {device.name} has no IOMMU; its bad accesses are bus errors, not faults"
            )
        device.ctx.hook_interrupt(handler, data)

    def _sync(self, call: str, res: Reservation, direction: DmaDirection, for_cpu: bool) -> bool:
        res = _check_obj(call, "res", res, Reservation)
        if not isinstance(direction, DmaDirection):
            raise InvalidArgumentError(f"{call}: direction {direction!r} is not a DmaDirection")
        if res.physmem is None:
            raise StateError(f"{call}: {res.name} is not backed; there is nothing to sync")
        devices = [a.device for a in res.vcm.associations]
        if res.vcm.kind is VcmKind.VMM or (
            devices and all(getattr(d, "coherent", False) for d in devices)
        ):
            return False
        for m in self.graph.of_reservation(res.id):
            pa, size = m.phys.start, m.phys.size
            if for_cpu:
                if direction in (DmaDirection.FROM_DEVICE, DmaDirection.BIDIRECTIONAL):
                    self.cpu.cache.invalidate(pa, size)
            elif direction is DmaDirection.FROM_DEVICE:
                self.cpu.cache.invalidate(pa, size)
            else:
                self.cpu.cache.clean(pa, size)
        return True

    def vcm_sync_for_device(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer to its devices: clean (to device) or invalidate (from device)
        the CPU cache over its physical memory.  Returns False when skipped because
        every associated device is coherent (the reviewers' missing piece, L1341)."""
        return self._sync("vcm_sync_for_device", res, direction, for_cpu=False)

    def vcm_sync_for_cpu(self, res: Reservation, direction: DmaDirection) -> bool:
        """Hand a buffer back to the CPU: invalidate lines a device may have made stale."""
        return self._sync("vcm_sync_for_cpu", res, direction, for_cpu=True)

    # -- state -------------------------------------------------------------------------

    def snapshot(self) -> tuple[object, ...]:
        """Everything the manager owns, comparable: for all-or-nothing tests."""
        vcms = tuple(
            (
                v.id,
                v.kind,
                v.range,
                v.allocator.snapshot(),
                tuple(
                    (r.id, r.addr, r.len, r.physmem.id if r.physmem else None)
                    for r in v.reservations
                ),
                tuple((a.id, a.device.name, a.active) for a in v.associations),
                v.table.snapshot() if v.table is not None else None,
            )
            for v in self.vcms
        )
        phys = tuple((p.id, p.chunk_ranges, tuple(r.id for r in p.backing)) for p in self.physmems)
        targets = tuple((n, t.snapshot()) for n, t in sorted(self._targets.items()))
        return (vcms, phys, targets, self.graph.snapshot(), self._kernel_areas.snapshot())


def _linear_attrs() -> PageAttrs:
    """The kernel's linear map: cacheable write-back, shareable (SMP ARM)."""
    return PageAttrs(shareable=True)


def _path_of(device: Any, cpu: Any) -> str:
    """Translation path of a bus master: ``cpu``, ``iommu`` or ``physical``."""
    if device is cpu:
        return "cpu"
    if hasattr(device, "ctx"):
        return "iommu"
    return "physical"
