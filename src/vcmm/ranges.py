"""Address ranges as small immutable values, in the spirit of :mod:`ipaddress`.

Every layer talks about ``[start, start + size)`` windows: physical regions, VCMs,
reservations, TLB entries, page-table blocks.  One value type with clear operators
keeps the half-open arithmetic in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vcmm.errors import InvalidArgumentError


@dataclass(frozen=True, order=True, slots=True, init=False)
class AddressRange:
    """The half-open byte range ``[start, start + size)``."""

    start: int
    size: int

    def __init__(self, start: int, size: int) -> None:
        # Validation and stores in one frame, through the slots' own descriptors (the
        # generated frozen __init__ goes through object.__setattr__ and a
        # __post_init__): every layer builds these on its hot paths.
        plain = type(start) is int and type(size) is int
        if not plain and (not isinstance(start, int) or not isinstance(size, int)):
            raise InvalidArgumentError(
                f"AddressRange needs integer start and size, got {start!r}, {size!r}"
            )
        if start < 0 or size < 0:
            raise InvalidArgumentError(
                f"AddressRange start {start:#x} and size {size:#x} must be >= 0"
            )
        _set_start(self, start)
        _set_size(self, size)

    @classmethod
    def from_bounds(cls, start: int, end: int) -> AddressRange:
        """Build from ``start`` and exclusive ``end``."""
        if end < start:
            raise InvalidArgumentError(f"range end {end:#x} is below start {start:#x}")
        return cls(start, end - start)

    @property
    def end(self) -> int:
        """First address after the range."""
        return self.start + self.size

    @property
    def last(self) -> int:
        """Last address inside the range (``end - 1``)."""
        return self.start + self.size - 1

    def __contains__(self, item: object) -> bool:
        if isinstance(item, AddressRange):
            return self.start <= item.start and item.end <= self.end and item.size >= 0
        if isinstance(item, int):
            return self.start <= item < self.end
        return False

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def overlaps(self, other: AddressRange) -> bool:
        return self.start < other.end and other.start < self.end

    def __and__(self, other: AddressRange) -> AddressRange | None:
        """Intersection, or ``None`` when the ranges do not overlap."""
        start, end = max(self.start, other.start), min(self.end, other.end)
        return AddressRange(start, end - start) if start < end else None

    def __add__(self, offset: int) -> AddressRange:
        return AddressRange(self.start + offset, self.size)

    def __sub__(self, offset: int) -> AddressRange:
        return AddressRange(self.start - offset, self.size)

    def is_aligned(self, alignment: int) -> bool:
        return self.start % alignment == 0 and self.size % alignment == 0

    def chunks(self, step: int) -> Iterator[AddressRange]:
        """Split at multiples of ``step`` (absolute boundaries, not relative to start)."""
        if step <= 0:
            raise InvalidArgumentError(f"chunk step {step} must be > 0")
        addr = self.start
        while addr < self.end:
            nxt = min((addr // step + 1) * step, self.end)
            yield AddressRange(addr, nxt - addr)
            addr = nxt

    def __str__(self) -> str:
        return f"[{self.start:#x}, {self.end:#x})"


# The slots' member descriptors (C setters): how __init__ stores a frozen value.
_set_start = AddressRange.__dict__["start"].__set__
_set_size = AddressRange.__dict__["size"].__set__


def subtract(ranges: list[AddressRange], gone: list[AddressRange]) -> list[AddressRange]:
    """The parts of ``ranges`` outside every range of ``gone``, in order."""
    out = list(ranges)
    for g in gone:
        nxt: list[AddressRange] = []
        for r in out:
            inside = r & g
            if inside is None:
                nxt.append(r)
                continue
            if r.start < inside.start:
                nxt.append(AddressRange(r.start, inside.start - r.start))
            if inside.end < r.end:
                nxt.append(AddressRange(inside.end, r.end - inside.end))
        out = nxt
    return out


def coalesce(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sort ``(start, size)`` spans and join those that overlap or touch.

    The one coalescer beside :class:`AddressRange` (as :func:`ipaddress.collapse_addresses`
    sits beside its address types): :func:`union` is it for ``AddressRange`` values; this
    form takes plain tuples for callers that gather many spans on hot paths (TLB
    maintenance after a 16384-page change).  Empty spans are dropped.
    """
    merged: list[tuple[int, int]] = []
    for start, size in sorted(spans):
        if merged and start <= merged[-1][0] + merged[-1][1]:
            last_start, last_size = merged[-1]
            merged[-1] = (last_start, max(last_start + last_size, start + size) - last_start)
        elif size:
            merged.append((start, size))
    return merged


def union(ranges: list[AddressRange]) -> list[AddressRange]:
    """``ranges`` sorted, with overlapping or touching ones merged (disjoint result)."""
    return [AddressRange(s, n) for s, n in coalesce((r.start, r.size) for r in ranges)]


def join_runs(runs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(start, size)`` runs kept in their order, each one that starts exactly where
    the one before it ends joined to it.

    Unlike :func:`coalesce` this neither sorts nor joins overlaps: the order is meaningful
    (a buffer's pieces, a transfer's physical runs), and only a piece that continues
    the previous one may become part of it, as ``sg_alloc_table_from_pages`` joins
    pages and a DMA engine streams physically consecutive runs in one burst.
    """
    joined: list[tuple[int, int]] = []
    for start, size in runs:
        if joined and joined[-1][0] + joined[-1][1] == start:
            joined[-1] = (joined[-1][0], joined[-1][1] + size)
        else:
            joined.append((start, size))
    return joined


def join_adjacent(ranges: Iterable[AddressRange]) -> list[AddressRange]:
    """:func:`join_runs` for ``AddressRange`` values: in order, touching ones joined."""
    return [AddressRange(s, n) for s, n in join_runs((r.start, r.size) for r in ranges)]
