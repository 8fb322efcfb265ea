"""Who owns each byte of physical memory, and what keeps an allocation alive.

A device reaches only memory mapped for it, so *what may be mapped* is the first
isolation rule.  Every byte of RAM has exactly one owner at a time:

- the **page-table allocator**: its whole window (``page_tables`` of the platform).
  Table pages are the hardware's; a device that maps one can rewrite its own
  translations and reach anything, so nothing ever wraps or DMA-maps them;
- a **memory target's free list**: bytes inside a target's regions that no live
  allocation holds.  The target will hand them out again, so a mapping of them
  would reach the next owner's data;
- a **live allocation** (``vcm_phys_alloc``): its chunks, until ``vcm_phys_free``;
- **nobody the VCMM knows**: RAM outside every target and the table window (carve-outs
  the platform leaves to drivers).  Whoever maps it vouches for it.

:class:`OwnerMap` answers "who owns these pages" with a sorted index of live
allocation chunks (``bisect``, so a DMA map pays a logarithmic lookup, not a scan of
every allocation).  :meth:`OwnerMap.check_wrap` is the rule for ``vcm_phys_wrap``:
pages of a live allocation only for a caller who names it (``of=``: holding the
handle is the proof of ownership), no free or table pages ever, and memory nobody
owns freely.

A :class:`Pin` keeps a physical allocation (or view, or wrap) from being freed: an
exported dma-buf pins the memory it shares, a wrap made ``of`` an allocation pins it
while the wrap lives.  ``vcm_phys_free`` refuses while a pin lives and names the
holder, so memory is never handed to a new owner while an old mapping of it survives.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from vcmm.core.objects import PhysMem
from vcmm.errors import InvalidArgumentError, OwnershipError, StateError
from vcmm.mm.target import MemoryTarget
from vcmm.ranges import AddressRange, subtract, union


@dataclass(eq=False)
class Pin:
    """A hold on ``physmem`` by ``holder`` (a dma-buf, a wrap): it cannot be freed
    while the pin lives.  Given back with ``vcm_phys_unpin`` (a wrap's pins go with the
    wrap)."""

    physmem: PhysMem
    holder: str
    #: The wrap that holds this pin (freed with it), or None for ``vcm_phys_pin``.
    wrap: PhysMem | None = None
    released: bool = False

    def __repr__(self) -> str:
        state = "released" if self.released else "held"
        return f"<Pin of {self.physmem.name} by {self.holder} {state}>"


def pinned_message(call: str, physmem: PhysMem) -> str:
    """Why ``physmem`` cannot be freed: its live pins, by holder."""
    holders = ", ".join(p.holder for p in physmem.pins)
    return (
        f"{call}: {physmem.name} is pinned by {holders}; memory is not freed while "
        "something that shares or wraps it lives (release that first)"
    )


def pin(physmem: PhysMem, holder: str, wrap: PhysMem | None = None) -> Pin:
    """Pin ``physmem`` for ``holder`` (for ``wrap``, if a wrap holds the pin)."""
    made = Pin(physmem, holder, wrap)
    physmem.pins.append(made)
    return made


#: How many of the newest pins :func:`release` searches before the whole list.
_RECENT = 64


def release(made: Pin) -> None:
    """Take ``made`` off its memory's pins (order kept).  The newest pins are searched
    first: a streaming map's wrap pins the allocation holding its page and goes soon
    after, while the allocation (64 MiB of kernel RAM) may hold a thousand pins, and
    ``list.remove`` compares its way from the oldest (15 us for 1000)."""
    pins = made.physmem.pins
    try:
        del pins[pins.index(made, max(len(pins) - _RECENT, 0))]
    except ValueError:
        pins.remove(made)
    made.released = True


def unpin(call: str, made: object) -> None:
    """Give back a pin ``vcm_phys_pin`` made (a wrap's pins go with the wrap)."""
    if not isinstance(made, Pin):
        raise InvalidArgumentError(f"{call}: {made!r} is not a Pin")
    if made.wrap is not None:
        raise InvalidArgumentError(
            f"{call}: {made!r} belongs to {made.wrap.name}; it goes when the wrap is freed"
        )
    if made.released:
        raise StateError(f"{call}: {made!r} was already given back")
    release(made)


def check_of(call: str, of: object) -> tuple[PhysMem, ...]:
    """``of`` of ``vcm_phys_wrap``: a live PhysMem or a list of them (repeats dropped)."""
    items = [of] if isinstance(of, PhysMem) else of
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise InvalidArgumentError(f"{call}: of={of!r} must be a PhysMem or a list of them")
    out: list[PhysMem] = []
    for p in items:
        if not isinstance(p, PhysMem):
            raise InvalidArgumentError(f"{call}: of= holds {p!r}, not a PhysMem")
        p.check_alive(call)
        if all(p is not q for q in out):
            out.append(p)
    return tuple(out)


class OwnerMap:
    """The owner of every physical page: table window, target free lists, live
    allocations (indexed), or nobody."""

    def __init__(
        self, table_window: AddressRange | None, targets: Mapping[str, MemoryTarget]
    ) -> None:
        self._tables = table_window
        self._regions = [(r, name) for name, t in targets.items() for r in t.regions]
        #: Chunk starts of live allocations, sorted, and the chunk and allocation at each.
        self._starts: list[int] = []
        self._chunks: list[tuple[AddressRange, PhysMem]] = []

    # -- targets registered at run time -------------------------------------------------

    def add_target(self, name: str, regions: Iterable[AddressRange]) -> None:
        """A target was registered: its regions' free pages are now its free list."""
        self._regions.extend((r, name) for r in regions)

    def remove_target(self, name: str) -> None:
        """A target was unregistered (it held nothing): its regions are nobody's again."""
        self._regions = [(r, n) for r, n in self._regions if n != name]

    # -- the index of live allocations --------------------------------------------------

    def add(self, physmem: PhysMem) -> None:
        """A target handed ``physmem`` out: its chunks are now its own."""
        for chunk in physmem.chunk_ranges:
            i = bisect.bisect_left(self._starts, chunk.start)
            self._starts.insert(i, chunk.start)
            self._chunks.insert(i, (chunk, physmem))

    def remove(self, physmem: PhysMem) -> None:
        """``physmem`` went back to its target."""
        for chunk in physmem.chunk_ranges:
            i = bisect.bisect_left(self._starts, chunk.start)
            while self._chunks[i][1] is not physmem:
                i += 1
            del self._starts[i]
            del self._chunks[i]

    def allocations_in(self, r: AddressRange) -> list[tuple[AddressRange, PhysMem]]:
        """The parts of ``r`` live allocations hold, with the allocation of each."""
        out: list[tuple[AddressRange, PhysMem]] = []
        chunks, end = self._chunks, r.end
        i = max(bisect.bisect_right(self._starts, r.start) - 1, 0)
        while i < len(chunks) and chunks[i][0].start < end:
            chunk, physmem = chunks[i]
            if chunk == r or r in chunk:  # the common case: pages inside one chunk
                out.append((r, physmem))
            else:
                inside = chunk & r
                if inside is not None:
                    out.append((inside, physmem))
            i += 1
        return out

    # -- the rules --------------------------------------------------------------------

    def _refuse_unowned(self, call: str, r: AddressRange, held: Iterable[AddressRange]) -> None:
        """Refuse ``r`` if it touches the table window or free memory of a target
        (``held``: the parts of it live allocations hold)."""
        tables = self._tables
        if tables is not None and r.overlaps(tables):
            raise OwnershipError(
                f"{call}: {r} lies in the page-table allocator's window {tables}; page-table "
                "pages belong to the tables (a device mapping one could rewrite its own "
                "translations)"
            )
        held = list(held)
        if len(held) == 1 and held[0] == r:
            return  # one allocation holds all of it
        for part in subtract([r], held):
            for region, name in self._regions:
                free = part & region
                if free is not None:
                    raise OwnershipError(
                        f"{call}: {free} is free memory of target {name!r}; the target will "
                        "hand it out again, so only vcm_phys_alloc may take it"
                    )

    def owners(self, call: str, ranges: Sequence[AddressRange]) -> tuple[PhysMem, ...]:
        """The live allocations holding any of ``ranges``, in first-seen order.

        Raises :class:`OwnershipError` when a page is free in a memory target or lies in
        the page-table window: kernel code that is handed pages (``dma_map_page``, a
        driver's ``remap_pfn_range``) may map allocated memory and memory nobody owns,
        never those.
        """
        found: dict[int, PhysMem] = {}
        starts, chunks, tables = self._starts, self._chunks, self._tables
        last = len(starts) - 1
        for r in ranges:
            # The common case in one bisect: a non-empty ``r`` inside one chunk, clear of
            # the table window, the next chunk starting at or after its end: what
            # allocations_in and _refuse_unowned find then is that chunk's allocation.
            start, end = r.start, r.start + r.size
            i = bisect.bisect_right(starts, start) - 1
            if (
                i >= 0
                and start < end
                and (tables is None or not (tables.start < end and start < tables.end))
            ):
                chunk, physmem = chunks[i]
                if end <= chunk.start + chunk.size and (i == last or starts[i + 1] >= end):
                    found.setdefault(physmem.id, physmem)
                    continue
            held = self.allocations_in(r)
            self._refuse_unowned(call, r, (part for part, _ in held))
            for _, physmem in held:
                found.setdefault(physmem.id, physmem)
        return tuple(found.values())

    def check_wrap(self, call: str, ranges: Sequence[AddressRange], of: Sequence[PhysMem]) -> None:
        """The rule of ``vcm_phys_wrap``: every page lies inside one of ``of`` (memory the
        caller holds the handle of) or is owned by nobody; ``of`` names nothing the
        ranges do not touch."""
        named = {p.id for p in of}
        touched: set[int] = set()
        mine: _Sorted | None = None  # of's pieces, built only if a view or wrap is named
        for r in ranges:
            held = self.allocations_in(r)
            self._refuse_unowned(call, r, (part for part, _ in held))
            for part, physmem in held:
                if physmem.id in named:  # the allocation itself: all of it is the caller's
                    touched.add(physmem.id)
                    continue
                if mine is None:
                    mine = _Sorted([piece for p in of for piece in p.chunk_ranges])
                for stray in subtract([part], mine.inside(part)):
                    raise OwnershipError(
                        f"{call}: {stray} belongs to {physmem.name} (an allocation from "
                        f"{physmem.target!r}); only its owner may wrap it, naming it with "
                        "of= (or back with vcm_phys_view of it)"
                    )
        untouched = [p for p in of if p.id not in touched]
        if untouched:
            wanted = _Sorted(list(ranges))
            for p in untouched:
                if not any(wanted.inside(piece) for piece in p.chunk_ranges):
                    raise OwnershipError(
                        f"{call}: of= names {p.name}, but none of the ranges lies in it; a "
                        "wrap pins only what it wraps"
                    )


class _Sorted:
    """The union of some ranges, searchable with ``bisect`` (a wrap of thousands of
    pages against an allocation of thousands of chunks stays n log n)."""

    def __init__(self, ranges: list[AddressRange]) -> None:
        self._ranges = union(ranges)
        self._starts = [r.start for r in self._ranges]

    def inside(self, r: AddressRange) -> list[AddressRange]:
        """The parts of ``r`` the union covers."""
        out: list[AddressRange] = []
        i = max(bisect.bisect_right(self._starts, r.start) - 1, 0)
        while i < len(self._ranges) and self._ranges[i].start < r.end:
            part = self._ranges[i] & r
            if part is not None:
                out.append(part)
            i += 1
        return out
