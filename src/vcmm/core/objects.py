"""The seed's five objects (000 L98-110) as Python records owned by a :class:`Vcmm`.

They are plain records: all behaviour lives in the manager so that every change goes
through one place that keeps the tables, the allocators and the mapping graph in step.
Objects are compared by identity, like the C structs they stand for, and carry a
``freed`` flag so that a handle kept after ``vcm_free``/``vcm_unreserve``/... is refused
with a :class:`~vcmm.errors.StateError` instead of silently acting on stale state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vcmm.core.flags import AssocAttr, Attr, PhysAttr
from vcmm.errors import StateError
from vcmm.hw.bus import PhysicalDevice, SmmuDevice
from vcmm.hw.smmu.faults import SmmuFault
from vcmm.mm.chunk import Chunk
from vcmm.mm.interfaces import VcmAllocator
from vcmm.ranges import AddressRange
from vcmm.sizes import format_size

if TYPE_CHECKING:
    from vcmm.core.ownership import Pin
    from vcmm.hw.master import AnyMaster
    from vcmm.hw.pgtable import PageTable
    from vcmm.hw.smmu import SmmuContext


class VcmKind(enum.Enum):
    """How a VCM's addresses relate to physical memory (000 L160-178).

    ``IOMMU``: a device page table translates them; ``ONE_TO_ONE``: they are physical
    addresses (a device without an IOMMU); ``VMM``: they are kernel virtual addresses,
    translated by the CPU's own tables; ``USER``: they are user virtual addresses of one
    process, translated by the CPU's TTBR0 table of its ASID (a "prebuilt" address
    space, 000 L162-173, that the process model built and the VCMM now maps into).
    """

    IOMMU = "iommu"
    ONE_TO_ONE = "one-to-one"
    VMM = "vmm"
    USER = "user"


class Handle:
    """Common behaviour: a name for messages and a freed flag that guards reuse."""

    id: int
    freed: bool
    prefix = "obj"

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.id}"

    def check_alive(self, call: str) -> None:
        """Refuse a handle kept after it was freed (the seed's C would use freed memory)."""
        if self.freed:
            raise StateError(f"{call}: {self.name} was already freed; its handle is dead")


class ReservationList:
    """A VCM's reservations, oldest first: a sequence to its readers, with O(1) append
    and remove (a DMA domain's VCM holds thousands, and every unmap removes one)."""

    __slots__ = ("_items",)

    def __init__(self) -> None:
        self._items: dict[int, Reservation] = {}

    def append(self, res: Reservation) -> None:
        self._items[res.id] = res

    def remove(self, res: Reservation) -> None:
        if self._items.get(res.id) is not res:
            raise ValueError(f"{res!r} is not one of these reservations")
        del self._items[res.id]

    def __iter__(self) -> Iterator[Reservation]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, res: object) -> bool:
        return isinstance(res, Reservation) and self._items.get(res.id) is res

    def __getitem__(self, index: int) -> Reservation:
        return list(self._items.values())[index]

    def __repr__(self) -> str:
        return repr(list(self._items.values()))


@dataclass(eq=False, repr=False)
class Vcm(Handle):
    """A virtual contiguous memory region: the address space some devices see.

    An IOMMU VCM owns ``table``, a full-space device page table (in the format of the
    SMMUs it is associated with: 32-bit input for ARMv7 formats), which
    also serves as the TTBR0 half of a split context (TTBCR.N=1 indexes it by
    VA[30:20], the same slots for VA < 2 GiB).  ``allocator`` hands out reservation
    addresses.  A USER VCM names its process address space by ``ext_id`` (the ASID)
    and carries a ``label`` (e.g. ``pid3``): its address-space key in the mapping graph.
    ``own_allocator`` says the allocator is the core's own range allocator (so a
    reservation can be split or merged: it cuts and joins live ranges in place).
    """

    id: int
    kind: VcmKind
    start: int
    len: int
    allocator: VcmAllocator
    table: PageTable | None = None
    reservations: ReservationList = field(default_factory=ReservationList)
    associations: list[Association] = field(default_factory=list)
    freed: bool = False
    ext_id: int | None = None
    label: str | None = None
    own_allocator: bool = True
    #: An IOMMU VCM's table format is settled (given at creation, or its first
    #: association's SMMU's): see :mod:`vcmm.core.tableformat`.
    table_settled: bool = False
    prefix = "vcm"

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.start, self.len)

    @property
    def space(self) -> str:
        """Address-space key in the mapping graph (every VMM VCM shares the CPU's;
        a USER VCM is its process's space, named by its label)."""
        if self.kind is VcmKind.VMM:
            return "cpu"
        return self.label or self.name

    @property
    def activations(self) -> int:
        """Active associations: the reference count activation keeps (000 L244-246)."""
        return sum(1 for a in self.associations if a.active)

    def to_dev(self, addr: int, device: AnyMaster | None = None) -> int:
        """Translate a VCM address to the address a device issues.

        Only one-to-one VCMs differ: their addresses are physical, and a physically
        addressed device may see RAM through a dma-ranges window (000 L1352-1356).
        """
        if self.kind is not VcmKind.ONE_TO_ONE:
            return addr
        devices = [device] if device is not None else [a.device for a in self.associations]
        buses = {d.phys_to_bus(addr) for d in devices if isinstance(d, PhysicalDevice)}
        if not buses:
            return addr
        if len(buses) > 1:
            raise StateError(
                f"{self.name}: its associated devices see physical {addr:#x} at different bus "
                f"addresses {sorted(hex(b) for b in buses)}; use res.dev_addr_for(device)"
            )
        return buses.pop()

    def __repr__(self) -> str:
        return f"<Vcm {self.name} {self.kind.value} {self.range} {format_size(self.len)}>"


#: ``PhysMem.target`` of wrapped pages: they belong to no memory target.
EXTERNAL = "external"


@dataclass(eq=False, repr=False)
class PhysMem(Handle):
    """Physical memory a reservation can be backed with: one of three kinds.

    - an *allocation* from a memory target (``vcm_phys_alloc``);
    - a *view*: ``len`` bytes of an allocation (or wrap) from ``offset``, its
      ``parent``, which cannot be freed while the view lives (``vcm_phys_view``);
    - a *wrap*: pages no target hands out again while wrapped (pages of an allocation
      the caller names, which the wrap pins; carve-outs nobody else owns), described for
      a backing and never freed to a target (``vcm_phys_wrap``); ``owner`` says whose
      they are.

    ``holder`` names the layer that allocated memory for its own use (the DMA API's
    pools say so), so graphs and reports show whose a carve-out is.

    ``len`` is what was asked for; a target may round it up, so ``size`` (the sum of
    the pieces) can be larger.  ``chunk_ranges`` are the physical pieces in order: a
    backing lays them end to end.  ``chunk_keys[i]`` is the allocation chunk piece
    ``i`` lies in (the piece itself for allocations and wraps): what the graph export
    draws a mapping to.
    """

    id: int
    target: str
    len: int
    attr: PhysAttr
    chunk_ranges: tuple[AddressRange, ...]
    backing: list[Reservation] = field(default_factory=list)
    freed: bool = False
    #: What the memory target handed out, returned to it on free.
    target_chunks: tuple[Chunk, ...] = ()
    parent: PhysMem | None = None
    offset: int = 0
    owner: str | None = None
    holder: str | None = None
    views: list[PhysMem] = field(default_factory=list)
    chunk_keys: tuple[AddressRange, ...] = ()
    #: Holds on this memory (an exported dma-buf, a wrap of its pages): no free while any.
    pins: list[Pin] = field(default_factory=list)
    #: The pins a wrap made ``of`` other memory holds, released when the wrap is freed.
    holds: tuple[Pin, ...] = ()
    size: int = field(init=False, default=0)
    prefix = "physmem"

    def __post_init__(self) -> None:
        if not self.chunk_keys:
            self.chunk_keys = self.chunk_ranges
        self.size = sum(c.size for c in self.chunk_ranges)

    @property
    def name(self) -> str:
        return f"{self.kind if self.kind != 'allocation' else self.prefix}{self.id}"

    @property
    def kind(self) -> str:
        """``"allocation"``, ``"view"`` or ``"wrap"``."""
        if self.parent is not None:
            return "view"
        return "wrap" if self.owner is not None else "allocation"

    @property
    def chunks(self) -> list[tuple[int, int]]:
        """``(physical address, size)`` of each physically contiguous piece."""
        return [(c.start, c.size) for c in self.chunk_ranges]

    def __repr__(self) -> str:
        of = f" of {self.parent.name}+{self.offset:#x}" if self.parent is not None else ""
        return (
            f"<PhysMem {self.name} {self.target}{of} {format_size(self.size)} "
            f"in {len(self.chunk_ranges)} chunk(s)>"
        )


@dataclass(eq=False, repr=False)
class Reservation(Handle):
    """A contiguous range of a VCM, with or without physical memory behind it."""

    id: int
    vcm: Vcm
    len: int
    attr: Attr
    #: Start of the range in the VCM's own addresses (``None`` until placed: one-to-one
    #: reservations are placed when backed, at the physical address of their backing).
    addr: int | None
    physmem: PhysMem | None = None
    freed: bool = False
    #: Made or cut by ``vcm_split``: a block entry may reach into a neighbour.
    cut: bool = False
    prefix = "res"

    @property
    def dev_addr(self) -> int:
        """The address a device uses (000 L297-302): IOMMU virtual, kernel virtual, or
        physical seen through the device's bus offset for one-to-one VCMs."""
        if self.addr is None:
            raise StateError(
                f"{self.name} on one-to-one {self.vcm.name} has no dev_addr until it is "
                "backed (it sits at the physical address of its backing)"
            )
        return self.vcm.to_dev(self.addr)

    def dev_addr_for(self, device: AnyMaster) -> int:
        """The address ``device`` uses for this reservation (physically addressed
        devices may see memory at different bus addresses)."""
        if self.addr is None:
            raise StateError(f"{self.name} has no address until it is backed")
        return self.vcm.to_dev(self.addr, device)

    @property
    def range(self) -> AddressRange | None:
        return None if self.addr is None else AddressRange(self.addr, self.len)

    @property
    def backed(self) -> bool:
        return self.physmem is not None

    def __repr__(self) -> str:
        where = "unplaced" if self.addr is None else f"{self.addr:#x}"
        return f"<Reservation {self.name} {self.vcm.name} {where} {format_size(self.len)}>"


@dataclass(eq=False, repr=False)
class Association(Handle):
    """An AVCM: the link between a VCM and a device; programs the device when active.

    ``holder`` names the layer that made it for its own use and how to release it (the
    DMA API's domains say so), so a refusal to reprogram the context can say what to do.
    """

    id: int
    vcm: Vcm
    device: AnyMaster
    attr: AssocAttr
    active: bool = False
    freed: bool = False
    holder: str | None = None
    prefix = "avcm"

    @property
    def half(self) -> str | None:
        """``"high"``/``"low"`` for split associations, ``None`` otherwise."""
        if self.attr & AssocAttr.USE_HIGH:
            return "high"
        if self.attr & AssocAttr.USE_LOW:
            return "low"
        return None

    @property
    def context(self) -> SmmuContext | None:
        """The SMMU context the device issues through (None: it has no IOMMU)."""
        device = self.device
        return device.ctx if isinstance(device, SmmuDevice) else None

    def __repr__(self) -> str:
        state = "active" if self.active else "inactive"
        return f"<Association {self.name} {self.vcm.name}->{self.device.name} {state}>"


@dataclass(frozen=True, slots=True)
class VcmFault(SmmuFault):
    """What a ``vcm_hook`` handler receives as its first argument.

    The SMMU's fault record itself (a :class:`~vcmm.hw.smmu.SmmuFault`, so a handler
    written for ``smmu_hook_interrupt`` works here too) plus what only the VCMM knows:
    the VCM the faulting address belongs to and the reservation covering it, which is
    what a handler that backs memory on demand needs.
    """

    vcm: Vcm | None = None
    reservation: Reservation | None = None

    def describe(self) -> str:
        where = ""
        if self.reservation is not None:
            where = f" inside {self.reservation.name}"
        elif self.vcm is not None:
            where = f" inside {self.vcm.name} but outside every reservation"
        return (
            f"device {self.device!r}: {self.access.value} at {self.va:#x}{where} took a "
            f"{self.kind.value} fault (SMMU {self.smmu!r} context {self.context!r})"
        )
