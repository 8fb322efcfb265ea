"""Views and wraps: backing a reservation with memory that is not a whole allocation.

``vcm_back`` maps a reservation onto a :class:`~vcmm.core.objects.PhysMem`.  Most of
the time that is an allocation from a memory target, but the layers above need two
more kinds, and the core offers them so that no layer has to invent its own:

- a **view** (``vcm_phys_view``) is a window of an allocation: bytes ``[offset,
  offset+len)`` of its pieces laid end to end (a DMA pool's sub-allocation, the pages
  of a file a process maps at an offset, the part of a mapping left by a partial
  ``munmap``).  It pins its parent: the allocation cannot be freed while a view of it
  lives.  A view of a view is a view of the same allocation, so views never chain;
- a **wrap** (``vcm_phys_wrap``) describes pages as one piece of memory without
  making them an allocation: kernel pages a driver passes to ``dma_map_page``, a
  caller's scatterlist, a carve-out the platform leaves to drivers.  Its ranges may
  repeat (a padding page mapped several times).  Who may wrap what is the ownership
  rule of :mod:`vcmm.core.ownership`: pages of a live allocation only for whoever
  names it (the wrap then pins it), memory no target or table allocator owns freely,
  free or page-table pages never.

Neither copies or moves anything: the mapping graph is keyed by physical range, so a
mapping through a view or a wrap is found as an alias of every other mapping of the
same bytes, whatever pieces they were made of.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from vcmm.checks import is_int
from vcmm.core.flags import PhysAttr
from vcmm.core.objects import EXTERNAL, PhysMem
from vcmm.errors import AlignmentError, InvalidArgumentError
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size


def window(physmem: PhysMem, offset: int, length: int) -> list[tuple[AddressRange, AddressRange]]:
    """``(piece, chunk)`` behind bytes ``[offset, offset+length)`` of ``physmem``
    (its pieces laid end to end); the caller checked the window fits."""
    out: list[tuple[AddressRange, AddressRange]] = []
    pos = 0
    end = offset + length
    for piece, chunk in zip(physmem.chunk_ranges, physmem.chunk_keys, strict=True):
        if pos >= end:
            break
        lo, hi = max(offset, pos), min(end, pos + piece.size)
        if lo < hi:
            out.append((AddressRange(piece.start + lo - pos, hi - lo), chunk))
        pos += piece.size
    return out


def check_windows(
    call: str, physmem: PhysMem, windows: Sequence[tuple[int, int]]
) -> list[tuple[int, int]]:
    """Validate ``(offset, len)`` windows of ``physmem``: whole pages inside it."""
    if not isinstance(windows, Sequence) or isinstance(windows, str) or not windows:
        raise InvalidArgumentError(f"{call}: windows {windows!r} must be a non-empty list")
    out: list[tuple[int, int]] = []
    for w in windows:
        if not isinstance(w, tuple) or len(w) != 2:
            raise InvalidArgumentError(f"{call}: window {w!r} is not (offset, len)")
        offset, length = w
        for name, value in (("offset", offset), ("len", length)):
            if not is_int(value) or value < 0:
                raise InvalidArgumentError(f"{call}: {name} {value!r} is not an integer >= 0")
        if length == 0:
            raise InvalidArgumentError(f"{call}: window at offset {offset:#x} is empty")
        if offset % SZ_4K or length % SZ_4K:
            raise AlignmentError(
                f"{call}: window offset {offset:#x} and len {length:#x} must be whole 4 KiB "
                "pages (a mapping maps pages)"
            )
        if offset + length > physmem.size:
            raise InvalidArgumentError(
                f"{call}: window [{offset:#x}, +{format_size(length)}) runs past the end of "
                f"{physmem.name} ({format_size(physmem.size)})"
            )
        out.append((offset, length))
    return out


def make_view(ident: int, parent: PhysMem, windows: Sequence[tuple[int, int]]) -> PhysMem:
    """A view of ``parent``'s validated ``windows`` (of the root allocation if
    ``parent`` is itself a view)."""
    root, base = parent, 0
    if parent.parent is not None:
        root, base = parent.parent, parent.offset
    pieces: list[AddressRange] = []
    chunks: list[AddressRange] = []
    for offset, length in windows:
        for piece, chunk in window(parent, offset, length):
            pieces.append(piece)
            chunks.append(chunk)
    total = sum(length for _, length in windows)
    return PhysMem(
        ident,
        root.target,
        total,
        root.attr,
        tuple(pieces),
        parent=root,
        offset=base + windows[0][0],
        chunk_keys=tuple(chunks),
    )


def check_page_ranges(call: str, memory: object, ranges: object) -> list[AddressRange]:
    """Validate ``ranges``: a non-empty list of runs of whole pages of physical memory."""
    if not isinstance(ranges, Sequence) or isinstance(ranges, str) or not ranges:
        raise InvalidArgumentError(
            f"{call}: ranges {ranges!r} must be a non-empty list of AddressRange"
        )
    pieces: list[AddressRange] = []
    is_backed = memory.is_backed  # type: ignore[attr-defined]
    for r in ranges:
        if type(r) is not AddressRange and not isinstance(r, AddressRange):
            raise InvalidArgumentError(f"{call}: {r!r} is not an AddressRange")
        start, size = r.start, r.size
        if size == 0 or start % SZ_4K or size % SZ_4K:
            raise AlignmentError(
                f"{call}: {r} is not a non-empty run of whole 4 KiB pages (a mapping maps pages)"
            )
        if not is_backed(start, size):
            raise InvalidArgumentError(f"{call}: {r} is not physical memory")
        pieces.append(r)
    return pieces


def check_owner(call: str, owner: object) -> str:
    """The ``owner`` a wrap names: a non-empty string."""
    if not isinstance(owner, str) or not owner:
        raise InvalidArgumentError(f"{call}: owner {owner!r} must be a non-empty string")
    return owner


def wrap_of(ident: int, pieces: Sequence[AddressRange], owner: str) -> PhysMem:
    """The wrap numbered ``ident`` of ``pieces`` (checked whole pages the ownership rule
    accepted) owned by ``owner``."""
    total = sum(p.size for p in pieces)
    return PhysMem(ident, EXTERNAL, total, PhysAttr.NONE, tuple(pieces), owner=owner)


def make_wrap(
    new_id: Callable[[], int],
    memory: object,
    ranges: object,
    owner: object,
    *,
    check: Callable[[list[AddressRange]], None],
) -> PhysMem:
    """A wrap of ``ranges`` (whole pages of physical memory) owned by ``owner``, once
    ``check`` (the ownership rule) accepted them; the id is drawn only once the
    arguments are known to be good."""
    call = "vcm_phys_wrap"
    owner = check_owner(call, owner)
    pieces = check_page_ranges(call, memory, ranges)
    check(pieces)
    return wrap_of(new_id(), pieces, owner)
