"""Address spaces: VCMs and the reservations in them (the seed's vcm_create ...
vcm_unreserve, and vcm_split/vcm_merge for partial munmap).

A VCM is a window of addresses with an allocator that places reservations in it and,
for an IOMMU VCM, a device page table made now (so its table pages exist before any
device runs it).  A reservation is a placed range with no memory behind it yet; one
of a one-to-one VCM is placed only when backed, at its backing's physical address.
Splitting and merging cut and glue the allocator's live range in place and hand the
mapping graph's edges over, so neither can fail half way.  The methods run under the
machine lock the facade (:class:`vcmm.core.manager.Vcmm`) takes.
"""

from __future__ import annotations

import functools
from typing import cast

from vcmm.checks import check_int
from vcmm.core import physical, tableformat
from vcmm.core.flags import Attr, check_attr
from vcmm.core.mappers import IommuMapper, UserMapper
from vcmm.core.objects import PhysMem, Reservation, Vcm, VcmKind
from vcmm.core.state import CoreState, check_handle
from vcmm.errors import (
    AlignmentError,
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfAddressSpaceError,
    OutOfMemoryError,
    StateError,
    VcmmError,
)
from vcmm.hw.pgtable import PageTableFormat
from vcmm.mm.interfaces import FixedPlacement, SplittingAllocator, VcmAllocator
from vcmm.ranges import AddressRange, join_adjacent
from vcmm.sizes import SZ_4K, format_size, is_power_of_two

#: ``ext_vcm_id`` of the kernel's own address space for ``vcm_create_from_prebuilt``.
VMM_EXT_ID = 0


@functools.lru_cache(maxsize=256)
def _alignments(sizes: tuple[int, ...], length: int) -> list[int]:
    """Alignments to try for a reservation: page sizes not above ``length``, largest
    first (so a backing can use the largest pages), or 4 KiB."""
    return [s for s in sorted(sizes, reverse=True) if s <= length] or [SZ_4K]


def fixed_placement(call: str, vcm: Vcm) -> FixedPlacement:
    """``vcm``'s allocator as one that places at a given address, or the refusal of an
    allocator that places everything itself (the core's own always can)."""
    allocator = vcm.allocator
    if vcm.own_allocator or isinstance(allocator, FixedPlacement):
        return cast(FixedPlacement, allocator)
    raise InvalidArgumentError(
        f"{call}: {vcm.name}'s allocator {allocator!r} places every range itself (it has "
        "no alloc_at); a reservation there cannot be put at a given addr"
    )


class AddressSpaces:
    """The VCMs and reservations of one VCMM."""

    def __init__(self, state: CoreState) -> None:
        self.state = state

    # -- VCMs --------------------------------------------------------------------------

    def vcm_create(
        self,
        start_addr: int,
        len: int,
        *,
        kind: VcmKind | None = None,
        allocator: VcmAllocator | None = None,
        fmt: PageTableFormat | None = None,
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
        in_ram = self.state.memory.is_backed(start, length)
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
                call, window, fmt, self.state.iommu_format, self.state.iommu_formats
            )
        fixed = kind is VcmKind.ONE_TO_ONE
        own = allocator is None
        if allocator is None:
            allocator = self.state.range_allocator(window, granule=SZ_4K)
        elif not isinstance(allocator, FixedPlacement if fixed else VcmAllocator):
            needed = ("alloc", "free", "snapshot") + (("alloc_at",) if fixed else ())
            raise InvalidArgumentError(
                f"{call}: allocator {allocator!r} lacks one of the methods {', '.join(needed)}"
            )
        table = self.state.page_table(table_fmt) if table_fmt is not None else None
        vcm = Vcm(
            self.state.new_id(), kind, start, length, allocator, table=table, own_allocator=own
        )
        vcm.table_settled = fmt is not None
        if table is not None:
            self.state.mappers[vcm.id] = IommuMapper(vcm, self.state.brackets)
        self.state.vcms.append(vcm)
        return vcm

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
            area = self.state.kernel_areas
            vcm = Vcm(self.state.new_id(), VcmKind.VMM, area.range.start, area.range.size, area)
            self.state.vcms.append(vcm)
            return vcm
        try:
            table = self.state.cpu.address_space(ext)
        except VcmmError:
            raise NotFoundError(
                f"{call}: no prebuilt address space with ext_vcm_id {ext}: it is neither "
                f"{VMM_EXT_ID} (the kernel's VMM) nor the ASID of a process address space "
                "(cpu.create_address_space)"
            ) from None
        for other in self.state.vcms:
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
        allocator = self.state.range_allocator(window, granule=SZ_4K)
        vcm = Vcm(
            self.state.new_id(),
            VcmKind.USER,
            window.start,
            window.size,
            allocator,
            ext_id=ext,
            label=label or f"asid{ext}",
        )
        self.state.mappers[vcm.id] = UserMapper(self.state.cpu, ext)
        self.state.vcms.append(vcm)
        return vcm

    def vcm_free(self, vcm: Vcm) -> None:
        """Destroy a VCM and its tables; refused while it has reservations or associations."""
        call = "vcm_free"
        vcm = check_handle(call, "vcm", vcm, Vcm)
        users = [r.name for r in vcm.reservations] + [a.name for a in vcm.associations]
        if users:
            raise BusyError(
                f"{call}: {vcm.name} still has {', '.join(users)}; unreserve and deassociate first"
            )
        self.state.mappers.pop(vcm.id, None)
        if vcm.table is not None:
            vcm.table.destroy()
            vcm.table = None
        vcm.freed = True
        self.state.vcms.remove(vcm)

    # -- reservations ------------------------------------------------------------------

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
        vcm = check_handle(call, "vcm", vcm, Vcm)
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
            fixed_placement(call, vcm).alloc_at(addr, length)
        elif vcm.kind is not VcmKind.ONE_TO_ONE:
            addr = self._place(call, vcm, length, align)
        res = Reservation(self.state.new_id(), vcm, length, attr, addr)
        vcm.reservations.append(res)
        self.state.res_by_id[res.id] = res
        return res

    def _place(self, call: str, vcm: Vcm, length: int, align: int | None) -> int:
        if align is not None:
            alignments = [align]
        else:
            alignments = _alignments(self.state.mapper(vcm).page_sizes, length)
        errors = []
        for alignment in alignments:
            try:
                addr = vcm.allocator.alloc(length, alignment)
            except OutOfMemoryError as exc:
                errors.append(str(exc))
                continue
            window_end = vcm.start + vcm.len
            if (
                type(addr) is int
                and vcm.start <= addr <= window_end - length
                and not addr % alignment
            ):
                return addr  # the common answer, checked without building ranges
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

    def vcm_unreserve(self, res: Reservation) -> None:
        """Release a reservation; refused while it is backed."""
        call = "vcm_unreserve"
        res = check_handle(call, "res", res, Reservation)
        if res.physmem is not None:
            raise BusyError(
                f"{call}: {res.name} is backed by {res.physmem.name}; vcm_unback it first"
            )
        if res.addr is not None:
            res.vcm.allocator.free(res.addr)
        res.vcm.reservations.remove(res)
        del self.state.res_by_id[res.id]
        res.freed = True

    # -- splitting and merging reservations ----------------------------------------------

    @staticmethod
    def _splitting(vcm: Vcm) -> SplittingAllocator:
        """The core's own allocator of ``vcm`` (``_check_resplit`` made sure of it)."""
        assert vcm.own_allocator
        return cast(SplittingAllocator, vcm.allocator)

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
        mine = join_adjacent([p for p, _ in physical.window(physmem, offset, length)])
        theirs = join_adjacent([p for p, _ in physical.window(other, 0, length)])
        if mine != theirs:
            raise InvalidArgumentError(
                f"{call}: {other.name} is not the same memory as bytes [{offset:#x}, "
                f"+{format_size(length)}) of {physmem.name} (make it with vcm_phys_view)"
            )

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
        res = check_handle(call, "res", res, Reservation)
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
            physmem = check_handle(call, "physmem", physmem, PhysMem)
            self._rest_matches(call, res.physmem, offset, res.len - offset, physmem)
        rest = Reservation(
            self.state.new_id(), vcm, res.len - offset, res.attr, None, physmem, cut=True
        )
        if res.addr is not None:
            self._splitting(vcm).split(res.addr, offset)  # in place: nothing freed, cannot fail
            rest.addr = res.addr + offset
            owner = f"{rest.name} ({vcm.kind.value} {vcm.name})"
            self.state.graph.split_reservation(res.id, rest.addr, rest.id, owner)
        res.len = offset
        res.cut = True
        vcm.reservations.append(rest)
        self.state.res_by_id[rest.id] = rest
        if physmem is not None:
            physmem.backing.append(rest)
        return rest

    def vcm_merge(self, left: Reservation, right: Reservation) -> None:
        """Join ``right`` onto the end of ``left`` (the inverse of :meth:`vcm_split`):
        neighbours in one VCM (or two unplaced reservations of a one-to-one VCM) with
        one ``attr``, both unbacked, or backed so that ``left``'s backing continues with
        ``right``'s memory.  ``right`` is released; page-table entries stay as they
        are."""
        call = "vcm_merge"
        left = check_handle(call, "left", left, Reservation)
        right = check_handle(call, "right", right, Reservation)
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
            self._splitting(vcm).join(left.addr, right.addr)
        self.state.graph.join_reservations(
            left.id, right.id, f"{left.name} ({vcm.kind.value} {vcm.name})"
        )
        left.len = total
        vcm.reservations.remove(right)
        del self.state.res_by_id[right.id]
        right.freed = True
