"""Folding participants' constraints into one statement, sysmem's rules exactly.

:func:`fold` combines two :class:`~vcmm.share.constraints.Constraints`:

- buffer counts: minimum by max, maximum by min, per-participant ``camping`` by sum;
- sizes: minimum by max, maximum by min; size alignment by max;
- physically contiguous and secure: OR;
- coherency domains (CPU, RAM, inaccessible): AND (set intersection);
- permitted memory targets: intersection (``None``, any, is the identity);
- image formats (pixel format and modifier): intersection; minimum width and height
  by max, maximum by min, minimum bytes per row by max, bytes-per-row divisor by LCM;
- IOMMU page sizes (vcmm's addition): intersection over the participants behind an
  IOMMU (``None``, not behind one, is the identity).

So ``fold`` is commutative and associative with ``Constraints()`` as identity, and it
never fails: an empty intersection is a value.  :func:`conflicts` says which
constraints of a folded value no buffer can meet, and :func:`fold_participants`
folds named statements one at a time, raising a :class:`~vcmm.errors.ConstraintError`
that names the participant whose statement made the set empty, the constraint, and
the participants on the other side.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from vcmm.errors import ConstraintError
from vcmm.share.constraints import Constraints, Domain, ImageConstraints
from vcmm.sizes import format_size


def _min_optional(a: int | None, b: int | None) -> int | None:
    """The smaller bound, ``None`` meaning unbounded."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _meet(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


def fold_image(a: ImageConstraints | None, b: ImageConstraints | None) -> ImageConstraints | None:
    """Image constraints agreed by both (``None``: no image constraints)."""
    if a is None:
        return b
    if b is None:
        return a
    return ImageConstraints(
        formats=a.formats & b.formats,
        min_width=max(a.min_width, b.min_width),
        min_height=max(a.min_height, b.min_height),
        max_width=_min_optional(a.max_width, b.max_width),
        max_height=_min_optional(a.max_height, b.max_height),
        min_bytes_per_row=max(a.min_bytes_per_row, b.min_bytes_per_row),
        bytes_per_row_divisor=math.lcm(a.bytes_per_row_divisor, b.bytes_per_row_divisor),
    )


def fold(a: Constraints, b: Constraints) -> Constraints:
    """The constraints of a buffer both ``a`` and ``b`` can use (module docstring)."""
    page_sizes: frozenset[int] | None
    if a.page_sizes is None or b.page_sizes is None:
        page_sizes = a.page_sizes if b.page_sizes is None else b.page_sizes
    else:
        page_sizes = a.page_sizes & b.page_sizes
    return Constraints(
        min_buffers=max(a.min_buffers, b.min_buffers),
        max_buffers=_min_optional(a.max_buffers, b.max_buffers),
        camping=a.camping + b.camping,
        min_size=max(a.min_size, b.min_size),
        max_size=_min_optional(a.max_size, b.max_size),
        size_alignment=max(a.size_alignment, b.size_alignment),
        contiguous=a.contiguous or b.contiguous,
        secure=a.secure or b.secure,
        domains=a.domains & b.domains,
        targets=_meet(a.targets, b.targets),
        image=fold_image(a.image, b.image),
        page_sizes=page_sizes,
    )


def fold_all(statements: Sequence[Constraints]) -> Constraints:
    """Every statement folded (``Constraints()`` for none)."""
    result = Constraints()
    for statement in statements:
        result = fold(result, statement)
    return result


# -- what cannot be met ----------------------------------------------------------------------

#: A named statement: (participant, its constraints).
Named = tuple[str, Constraints]


@dataclass(frozen=True, slots=True)
class Conflict:
    """A constraint no buffer can meet, and why, naming who set each side."""

    constraint: str
    detail: str


def _who(statements: Sequence[Named], test: Callable[[Constraints], bool]) -> str:
    names = [name for name, c in statements if test(c)]
    return ", ".join(repr(n) for n in names) or "nobody"


def _count_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    most = total.max_buffers
    if most is None or total.buffers_needed <= most:
        return None
    need = total.buffers_needed
    if total.camping >= total.min_buffers:
        why = f"the participants camp on {total.camping} together ({_camping(named)})"
    else:
        who = _who(named, lambda c: c.min_buffers == total.min_buffers)
        why = f"{who} need at least {total.min_buffers}"
    allows = _who(named, lambda c: c.max_buffers == most)
    return Conflict("buffer count", f"{need} buffers are needed ({why}) but {allows} allow {most}")


def _camping(named: Sequence[Named]) -> str:
    return ", ".join(f"{n!r} {c.camping}" for n, c in named if c.camping)


def _size_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    most = total.max_size
    if most is None or total.min_size <= most:
        return None
    needs = _who(named, lambda c: c.min_size == total.min_size)
    allows = _who(named, lambda c: c.max_size == most)
    return Conflict(
        "size",
        f"{needs} need at least {format_size(total.min_size)} (min_size) but {allows} "
        f"allow at most {format_size(most)} (max_size)",
    )


def _domain_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    if total.domains:
        return None
    lacking = "; ".join(
        f"{d.value}: not {', '.join(repr(n) for n, c in named if d not in c.domains)}"
        for d in Domain
    )
    return Conflict("coherency domains", f"no domain every participant supports ({lacking})")


def _secure_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    if not total.secure or Domain.INACCESSIBLE in total.domains:
        return None
    return Conflict(
        "secure",
        f"{_who(named, lambda c: c.secure)} require a secure buffer, which only the "
        f"inaccessible domain can be, and {_who(named, lambda c: Domain.INACCESSIBLE not in c.domains)} "
        "cannot work in it",
    )


def _target_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    if total.targets is None or total.targets:
        return None
    permits = "; ".join(
        f"{n!r}: {', '.join(sorted(c.targets)) or 'none'}"
        for n, c in named
        if c.targets is not None
    )
    return Conflict("memory targets", f"no target every participant permits ({permits})")


def _image_conflict(total: Constraints, named: Sequence[Named]) -> Conflict | None:
    image = total.image
    if image is None:
        return None
    if not image.formats:
        offers = "; ".join(
            f"{n!r}: {', '.join(f'{p}/{m}' for p, m in sorted(c.image.formats))}"
            for n, c in named
            if c.image is not None
        )
        return Conflict("image formats", f"no (pixel format, modifier) in common ({offers})")
    for axis in ("width", "height"):
        low, high = getattr(image, f"min_{axis}"), getattr(image, f"max_{axis}")
        if high is not None and low > high:
            needs = _image_bound(named, f"min_{axis}", low)
            allows = _image_bound(named, f"max_{axis}", high)
            return Conflict(
                f"image {axis}", f"{needs} need at least {low} but {allows} allow at most {high}"
            )
    return None


def _image_bound(named: Sequence[Named], key: str, value: int) -> str:
    """The participants whose image constraint ``key`` is ``value``."""
    return ", ".join(
        repr(n) for n, c in named if c.image is not None and getattr(c.image, key) == value
    )


_CHECKS = (
    _count_conflict,
    _size_conflict,
    _domain_conflict,
    _secure_conflict,
    _target_conflict,
    _image_conflict,
)


def conflicts(named: Sequence[Named]) -> list[Conflict]:
    """Everything the fold of ``named`` cannot meet (empty: some buffer can)."""
    total = fold_all([c for _, c in named])
    return [found for check in _CHECKS if (found := check(total, named)) is not None]


def fold_participants(collection: str, named: Sequence[Named]) -> Constraints:
    """Fold ``named`` in order; the first statement that leaves a constraint
    unsatisfiable raises :class:`ConstraintError` naming that participant."""
    for count in range(1, len(named) + 1):
        found = conflicts(named[:count])
        if found:
            who = named[count - 1][0]
            first = found[0]
            raise ConstraintError(
                f"buffer collection {collection!r}: participant {who!r} breaks the "
                f"{first.constraint} constraint: {first.detail}",
                participant=who,
                constraint=first.constraint,
            )
    return fold_all([c for _, c in named])
