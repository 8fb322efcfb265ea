"""The values a TLB deals in: its configuration, its entries, its counters.

Kept apart from the TLB's behaviour (:mod:`vcmm.hw.tlb`, :mod:`vcmm.hw.tlbstore`) so
that the translation engine, the TLB and anything that reports on them share one
definition of an entry and of what is counted.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, fields

from vcmm.attrs import PageAttrs
from vcmm.checks import is_int
from vcmm.errors import AlignmentError, InvalidArgumentError, UnsupportedSizeError
from vcmm.hw.walk import Walk
from vcmm.sizes import SZ_1K, is_power_of_two

#: Replacement policies a TLB can use.
REPLACEMENT_POLICIES: tuple[str, ...] = ("lru", "fifo", "random")
#: Smallest page size an entry may have (ARMv5 tiny pages were 1 KiB).
MIN_PAGE_SIZE = SZ_1K
#: Input and output addresses are at most 64 bits wide.
ADDRESS_LIMIT = 1 << 64


def check_tag(tag: object, what: str = "tag") -> Hashable:
    """Validate a TLB tag: hashable, not ``None`` (reserved for "all tags"), not a bool."""
    if tag is None or isinstance(tag, bool):
        raise InvalidArgumentError(
            f"{what} {tag!r} is not a valid TLB tag: None means 'all tags' and bools are "
            "ambiguous; use a context number or an ASID"
        )
    try:
        hash(tag)
    except TypeError:
        raise InvalidArgumentError(
            f"{what} {tag!r} of type {type(tag).__name__} is not hashable, so it cannot tag "
            "TLB entries"
        ) from None
    return tag


def check_address(va: object, what: str = "va") -> int:
    """Validate an input address: an integer in [0, 2**64)."""
    if not is_int(va):
        raise InvalidArgumentError(f"{what} {va!r} is not an integer address")
    value = int(va)
    if not 0 <= value < ADDRESS_LIMIT:
        raise InvalidArgumentError(f"{what} {value:#x} is outside the 64-bit address space")
    return value


@dataclass(slots=True)
class TLBStats:
    """Event counters of a TLB, for the whole TLB or one tag.

    Mutable on purpose: the TLB and the translation engine add to them in place, and a
    caller holding ``tlb.stats_for(tag)`` sees them grow.
    """

    lookups: int = 0
    hits: int = 0
    misses: int = 0
    #: Page-table walks made on misses, and the descriptor reads they cost.
    walks: int = 0
    walk_reads: int = 0
    evictions: int = 0
    #: Entries removed by invalidation.
    invalidations: int = 0

    def reset(self) -> None:
        """Zero every counter in place (holders of this object see the reset)."""
        for f in fields(self):
            setattr(self, f.name, 0)

    def copy(self) -> TLBStats:
        """An independent copy, for before/after comparisons."""
        return TLBStats(*(getattr(self, f.name) for f in fields(self)))

    def assign(self, other: TLBStats) -> None:
        """Overwrite every counter with ``other``'s (used to roll back)."""
        for f in fields(self):
            setattr(self, f.name, getattr(other, f.name))

    def is_zero(self) -> bool:
        return all(getattr(self, f.name) == 0 for f in fields(self))

    @property
    def hit_rate(self) -> float:
        """Hits per lookup (0.0 before any lookup)."""
        return self.hits / self.lookups if self.lookups else 0.0


@dataclass(frozen=True, slots=True)
class TLBConfig:
    """Geometry and policy of a TLB.  ``ways == entries`` means fully associative."""

    entries: int
    ways: int
    replacement: str = "lru"
    #: Seed of the victim generator of the ``random`` policy.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("entries", "ways", "seed"):
            value = getattr(self, name)
            if not is_int(value):
                raise InvalidArgumentError(f"TLBConfig {name}={value!r} must be an integer")
        if self.entries <= 0:
            raise InvalidArgumentError(f"TLBConfig entries={self.entries} must be > 0")
        if self.ways <= 0 or self.entries % self.ways:
            raise InvalidArgumentError(
                f"TLBConfig ways={self.ways} must be > 0 and divide entries={self.entries}"
            )
        if self.replacement not in REPLACEMENT_POLICIES:
            raise InvalidArgumentError(
                f"TLBConfig replacement={self.replacement!r} is not one of "
                f"{', '.join(REPLACEMENT_POLICIES)}"
            )

    @property
    def sets(self) -> int:
        return self.entries // self.ways

    @property
    def fully_associative(self) -> bool:
        return self.ways == self.entries


@dataclass(frozen=True, slots=True)
class TLBEntry:
    """One cached leaf translation: ``[va_base, va_base + size) -> pa_base``.

    ``level`` is the table level of the leaf descriptor, kept so that a permission fault
    on a hit reports the same level a walk would.
    """

    tag: Hashable
    va_base: int
    size: int
    pa_base: int
    attrs: PageAttrs
    global_: bool = False
    level: int = 0

    def __post_init__(self) -> None:
        check_tag(self.tag, "TLBEntry tag")
        for name in ("va_base", "size", "pa_base", "level"):
            value = getattr(self, name)
            if not is_int(value):
                raise InvalidArgumentError(f"TLBEntry {name}={value!r} must be an integer")
        if not is_power_of_two(self.size) or self.size < MIN_PAGE_SIZE:
            raise UnsupportedSizeError(
                f"TLBEntry size {self.size:#x} must be a power of two >= {MIN_PAGE_SIZE:#x}"
            )
        for name in ("va_base", "pa_base"):
            value = getattr(self, name)
            if value < 0 or value + self.size > ADDRESS_LIMIT:
                raise InvalidArgumentError(
                    f"TLBEntry {name} {value:#x} + size {self.size:#x} leaves the 64-bit space"
                )
            if value % self.size:
                raise AlignmentError(
                    f"TLBEntry {name} {value:#x} is not aligned to its size {self.size:#x}"
                )
        if not isinstance(self.attrs, PageAttrs):
            raise InvalidArgumentError(f"TLBEntry attrs {self.attrs!r} is not a PageAttrs")
        if not isinstance(self.global_, bool):
            raise InvalidArgumentError(f"TLBEntry global_={self.global_!r} must be a bool")
        if self.level < 0:
            raise InvalidArgumentError(f"TLBEntry level={self.level} must be >= 0")

    @classmethod
    def from_walk(cls, walk: Walk, tag: Hashable, *, global_: bool = False) -> TLBEntry:
        """The entry a successful walk of ``walk.va`` yields, for a translation engine.

        Every rule of :class:`TLBEntry` is checked against the walk here, so the entry
        is built without validating twice (this is the miss path of every stream).
        ``tag`` must already be a checked tag (:func:`check_tag`).
        """
        va, size, pa, attrs, level = walk.va, walk.page_size, walk.pa, walk.attrs, walk.level
        if (
            type(size) is not int
            or size < MIN_PAGE_SIZE
            or size & (size - 1)
            or type(pa) is not int
            or not 0 <= pa < ADDRESS_LIMIT
            or type(attrs) is not PageAttrs
            or type(level) is not int
            or level < 0
        ):
            raise InvalidArgumentError(
                f"walk of {va:#x} succeeded without a power-of-two page size >= "
                f"{MIN_PAGE_SIZE:#x}, a 64-bit pa, PageAttrs and a level >= 0: {walk!r}"
            )
        offset = va & (size - 1)
        if pa & (size - 1) != offset:
            raise InvalidArgumentError(
                f"walk of {va:#x} maps to {pa:#x}: the offsets in the {size:#x} page differ"
            )
        pa_base = pa - offset
        if pa_base + size > ADDRESS_LIMIT:
            raise InvalidArgumentError(f"walk of {va:#x}: page at {pa_base:#x} leaves 64 bits")
        return cls.from_leaf(tag, va - offset, size, pa_base, attrs, global_, level)

    @classmethod
    def from_leaf(
        cls,
        tag: Hashable,
        va_base: int,
        size: int,
        pa_base: int,
        attrs: PageAttrs,
        global_: bool,
        level: int,
    ) -> TLBEntry:
        """The entry a fill of a walked leaf inserts, for a compiled stream: the walk
        arrays already hold checked values (aligned bases, power-of-two sizes), so the
        per-field validation of the constructor is not repeated."""
        entry = object.__new__(cls)
        put_tag, put_va, put_size, put_pa, put_attrs, put_global, put_level = _SLOT_SETTERS
        put_tag(entry, tag)
        put_va(entry, va_base)
        put_size(entry, size)
        put_pa(entry, pa_base)
        put_attrs(entry, attrs)
        put_global(entry, global_)
        put_level(entry, level)
        return entry

    def covers(self, va: int) -> bool:
        return self.va_base <= va < self.va_base + self.size

    def overlaps(self, start: int, size: int) -> bool:
        return self.va_base < start + size and start < self.va_base + self.size

    def matches(self, tag: Hashable) -> bool:
        """Whether a lookup with ``tag`` may use this entry."""
        return self.global_ or self.tag == tag

    def output(self, va: int) -> int:
        """Output address of ``va`` (which must lie inside the entry)."""
        return self.pa_base + (va - self.va_base)


# The slots' own setters, in field order: what :meth:`TLBEntry.from_leaf` fills a new
# entry with (a frozen dataclass refuses ``setattr``; the slot descriptors are the
# storage itself and cost half of ``object.__setattr__``, which looks them up).
_SLOT_SETTERS = tuple(vars(TLBEntry)[f.name].__set__ for f in fields(TLBEntry))
