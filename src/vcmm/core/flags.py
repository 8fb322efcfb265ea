"""The seed's attribute words, as Python flags, and their meaning for the hardware.

``vcm_reserve`` takes mapping attributes (000 L204-207), ``vcm_assoc`` association
attributes (L231-239) and ``vcm_phys_alloc`` allocation attributes (L262-264).  The
first two are bit flags, as in the C API.  Allocation attributes carry numbers
(alignment, block sizes), so :class:`PhysAttr` is a small immutable value that still
combines with ``|`` the way the C flags do.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import ClassVar

from vcmm.attrs import MemType, PageAttrs
from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.sizes import SEED_BLOCK_SIZES, SZ_4K, format_size, is_power_of_two


class Attr(enum.IntFlag):
    """Mapping attributes of a reservation (seed 000 L204-207).

    READ/WRITE/EXEC: the permissions of this mapping (aliases may differ in them).
    Neither READ nor WRITE means a read/write buffer, as the seed's examples pass bare
    cache flags.  USER grants unprivileged access too (refused for kernel VMM
    mappings); SUPERVISOR is implied (ARM descriptors always grant privileged access
    when they grant user access).  SECURE makes the mapping secure (NS=0); without it
    mappings are non-secure (NS=1), as everything the Non-secure kernel maps is, its
    linear map included; a secure mapping may not alias memory any non-secure mapping
    reaches (see :mod:`vcmm.core.graph`).  At most one cache policy: NONCACHED (Normal
    non-cacheable), WB_WA (the default), WB_NWA, WT; every alias of a page must use the
    same one (see :mod:`vcmm.core.graph`).
    """

    NONE = 0
    READ = 1 << 0
    WRITE = 1 << 1
    EXEC = 1 << 2
    USER = 1 << 3
    SUPERVISOR = 1 << 4
    SECURE = 1 << 5
    NONCACHED = 1 << 6
    WB_WA = 1 << 7
    WB_NWA = 1 << 8
    WT = 1 << 9

    #: The usual read/write cacheable buffer.
    RW = READ | WRITE


_CACHE_FLAGS = {
    Attr.NONCACHED: MemType.NORMAL_NC,
    Attr.WB_WA: MemType.NORMAL_WB_WA,
    Attr.WB_NWA: MemType.NORMAL_WB_NWA,
    Attr.WT: MemType.NORMAL_WT,
}


_ALL_ATTR_BITS = 0
for _flag in Attr:
    _ALL_ATTR_BITS |= int(_flag)
_CACHE_BITS = tuple((int(flag), flag.name) for flag in _CACHE_FLAGS)
#: Attribute words already validated (the check runs on every reservation).
_checked: dict[int, Attr] = {}


def check_attr(attr: object) -> Attr:
    """Validate a reservation attribute word and return it as :class:`Attr`."""
    if type(attr) is not Attr and not is_int(attr):  # an Attr is an int: no more tests
        raise InvalidArgumentError(f"reservation attr {attr!r} is not an Attr flag word")
    value = int(attr)
    known = _checked.get(value)
    if known is not None:
        return known
    if value & ~_ALL_ATTR_BITS:
        raise InvalidArgumentError(f"reservation attr {attr:#x} has bits that are not Attr flags")
    cache = [name for bit, name in _CACHE_BITS if value & bit]
    if len(cache) > 1:
        raise InvalidArgumentError(
            f"reservation attr {Attr(value)!r} names {len(cache)} cache policies ({', '.join(map(str, cache))});"
            " choose one of NONCACHED, WB_WA, WB_NWA, WT"
        )
    if value & Attr.WRITE and not value & Attr.READ:
        raise InvalidArgumentError(
            f"reservation attr {Attr(value)!r} is write-only; ARM page tables cannot encode that"
        )
    checked = _checked[value] = Attr(value)
    return checked


def memtype_of(attr: Attr) -> MemType:
    """Cache policy of a reservation: write-back/write-allocate unless a flag says otherwise."""
    for flag, memtype in _CACHE_FLAGS.items():
        if attr & flag:
            return memtype
    return MemType.NORMAL_WB_WA


def page_attrs_of(attr: Attr, *, shareable: bool, global_: bool = True) -> PageAttrs:
    """The descriptor attributes a reservation's mappings get.

    An attr word without READ or WRITE (e.g. ``0`` or just a cache flag) means a normal
    read/write buffer, as most seed examples pass ``attr`` without spelling it out.
    ``global_`` is False for user address spaces (their TLB entries are ASID-tagged).
    The result is cached per word: backing a 16384-chunk buffer asks once per chunk.
    """
    return _page_attrs(int(check_attr(attr)), bool(shareable), bool(global_))


@functools.lru_cache(maxsize=512)
def _page_attrs(attr: int, shareable: bool, global_: bool) -> PageAttrs:
    value = Attr(attr)
    rw = value & (Attr.READ | Attr.WRITE)
    return PageAttrs(
        read=bool(value & Attr.READ) or not rw,
        write=bool(value & Attr.WRITE) or not rw,
        exec=bool(value & Attr.EXEC),
        user=bool(value & Attr.USER),
        memtype=memtype_of(value),
        shareable=shareable,
        ns=not value & Attr.SECURE,
        global_=global_,
    )


class AssocAttr(enum.IntFlag):
    """Association attributes (seed 000 L231-239): split tables on the top address bit."""

    NONE = 0
    SPLIT = 1 << 0
    USE_HIGH = 1 << 1
    USE_LOW = 1 << 2


def check_assoc_attr(attr: object) -> AssocAttr:
    if not is_int(attr) or attr & ~7:
        raise InvalidArgumentError(f"association attr {attr!r} is not an AssocAttr flag word")
    value = AssocAttr(attr)
    halves = bool(value & AssocAttr.USE_HIGH) + bool(value & AssocAttr.USE_LOW)
    if value & AssocAttr.SPLIT and halves != 1:
        raise InvalidArgumentError(
            f"association attr {value!r}: SPLIT needs exactly one of USE_HIGH or USE_LOW"
        )
    if halves and not value & AssocAttr.SPLIT:
        raise InvalidArgumentError(
            f"association attr {value!r}: USE_HIGH/USE_LOW only make sense with SPLIT"
        )
    return value


@dataclass(frozen=True, slots=True)
class PhysAttr:
    """Allocation attributes: physically contiguous, alignment, allowed block sizes.

    Combine like the C flags: ``PhysAttr.CONTIGUOUS | PhysAttr.align(SZ_1M)``.
    ``block_sizes=None`` means every block size the target offers, largest first.
    """

    contiguous: bool = False
    alignment: int = SZ_4K
    block_sizes: tuple[int, ...] | None = None

    CONTIGUOUS: ClassVar[PhysAttr]
    NONE: ClassVar[PhysAttr]

    def __post_init__(self) -> None:
        if not isinstance(self.alignment, int) or not is_power_of_two(self.alignment):
            raise InvalidArgumentError(
                f"PhysAttr alignment {self.alignment!r} is not a power of two"
            )
        if self.alignment < SZ_4K:
            raise InvalidArgumentError(
                f"PhysAttr alignment {self.alignment:#x} is below the 4 KiB page size"
            )
        if self.block_sizes is not None:
            bad = [s for s in self.block_sizes if s not in SEED_BLOCK_SIZES]
            if bad or not self.block_sizes:
                raise InvalidArgumentError(
                    f"PhysAttr block sizes {[format_size(s) for s in self.block_sizes]} must be a "
                    f"non-empty subset of {[format_size(s) for s in SEED_BLOCK_SIZES]}"
                )
            object.__setattr__(
                self, "block_sizes", tuple(sorted(set(self.block_sizes), reverse=True))
            )

    @staticmethod
    def align(alignment: int) -> PhysAttr:
        return PhysAttr(alignment=alignment)

    @staticmethod
    def blocks(*sizes: int) -> PhysAttr:
        return PhysAttr(block_sizes=tuple(sizes))

    def __or__(self, other: PhysAttr) -> PhysAttr:
        if not isinstance(other, PhysAttr):
            return NotImplemented
        if self.block_sizes and other.block_sizes:
            sizes: tuple[int, ...] | None = tuple(set(self.block_sizes) & set(other.block_sizes))
            if not sizes:
                raise InvalidArgumentError(
                    f"PhysAttr block sizes {self.block_sizes} and {other.block_sizes} share none"
                )
        else:
            sizes = self.block_sizes or other.block_sizes
        return PhysAttr(
            contiguous=self.contiguous or other.contiguous,
            alignment=max(self.alignment, other.alignment),
            block_sizes=sizes,
        )


PhysAttr.CONTIGUOUS = PhysAttr(contiguous=True)
PhysAttr.NONE = PhysAttr()


def check_phys_attr(attr: object) -> PhysAttr:
    """Accept a :class:`PhysAttr`, or ``0``/``None`` for the defaults (the C habit)."""
    if attr is None or (isinstance(attr, int) and not isinstance(attr, bool) and attr == 0):
        return PhysAttr.NONE
    if isinstance(attr, PhysAttr):
        return attr
    raise InvalidArgumentError(
        f"allocation attr {attr!r} is not a PhysAttr (e.g. PhysAttr.CONTIGUOUS | PhysAttr.align(SZ_1M))"
    )
