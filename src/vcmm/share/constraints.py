"""What one participant of a buffer collection needs of the buffers: its constraints.

Fuchsia's sysmem lets every participant that will touch a buffer (a camera, a codec,
a display, the CPU) state what it can work with *before* anything is allocated; the
allocator folds the statements (:mod:`vcmm.share.folding`) and allocates once
(:mod:`vcmm.share.collection`).  A :class:`Constraints` value is one statement,
sysmem's ``BufferCollectionConstraints`` cut to what vcmm can act on, plus what vcmm
knows and sysmem cannot: the IOMMU page sizes of a device behind an SMMU
(``page_sizes``), from which the allocator picks block sizes that map as large pages.

The value is also the fold's result (a statement all participants agree with), so
every field has a neutral default that constrains nothing: ``Constraints()`` is the
identity of the fold.  Empty sets are allowed in the value (the fold can produce
them); a collection refuses them with a :class:`~vcmm.errors.ConstraintError`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.pixels import LINEAR, check_format
from vcmm.sizes import format_size, is_power_of_two


class Domain(enum.Enum):
    """sysmem's coherency domains: where the buffer's bytes are kept coherent.

    ``CPU``: cached (write-back) for the CPU, devices synchronised by the DMA API's
    cache maintenance; ``RAM``: uncached everywhere (needs a carve-out, as the kernel's
    linear map of RAM is cacheable); ``INACCESSIBLE``: the CPU never maps the buffer
    (what secure buffers need).
    """

    CPU = "cpu"
    RAM = "ram"
    INACCESSIBLE = "inaccessible"


ALL_DOMAINS: Final = frozenset(Domain)


def _check_count(who: str, name: str, value: object, minimum: int = 0) -> None:
    if not is_int(value) or value < minimum:
        raise InvalidArgumentError(f"{who}: {name} {value!r} must be an integer >= {minimum}")


def _check_optional(who: str, name: str, value: object, minimum: int) -> None:
    if value is not None:
        _check_count(who, name, value, minimum)


def _names(who: str, name: str, values: object) -> frozenset[str]:
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise InvalidArgumentError(f"{who}: {name} {values!r} must be a set of names")
    items = frozenset(values)
    if not all(isinstance(v, str) and v for v in items):
        raise InvalidArgumentError(f"{who}: {name} {sorted(map(repr, items))} must be names")
    return items


@dataclass(frozen=True, slots=True)
class ImageConstraints:
    """sysmem's image format constraints: which formats (pixel format, modifier), how
    big an image, and how its rows must be laid out.

    ``formats`` are ``(pixel format, modifier)`` pairs (:mod:`vcmm.pixels`; a bare
    format name means its linear layout).  The buffer holds an image of
    ``min_width`` x ``min_height`` in the chosen format, each row
    ``bytes_per_row_divisor``-aligned and at least ``min_bytes_per_row`` long.
    """

    formats: frozenset[tuple[str, str]]
    min_width: int = 1
    min_height: int = 1
    max_width: int | None = None
    max_height: int | None = None
    min_bytes_per_row: int = 0
    bytes_per_row_divisor: int = 1

    def __post_init__(self) -> None:
        who = "ImageConstraints"
        raw = self.formats
        if isinstance(raw, str) or not isinstance(raw, Iterable):
            raise InvalidArgumentError(f"{who}: formats {raw!r} must be a set of formats")
        pairs = set()
        for item in raw:
            name, mod = (item, LINEAR) if isinstance(item, str) else _pair(who, item)
            pairs.add(check_format(name, mod))
        object.__setattr__(self, "formats", frozenset(pairs))
        for name in ("min_width", "min_height", "bytes_per_row_divisor"):
            _check_count(who, name, getattr(self, name), 1)
        _check_count(who, "min_bytes_per_row", self.min_bytes_per_row)
        _check_optional(who, "max_width", self.max_width, 1)
        _check_optional(who, "max_height", self.max_height, 1)

    def describe(self) -> str:
        formats = ", ".join(_format_text(f) for f in sorted(self.formats)) or "none"
        parts = [f"formats {formats}"]
        if (self.min_width, self.min_height) != (1, 1):
            parts.append(f"at least {self.min_width}x{self.min_height}")
        if self.max_width is not None or self.max_height is not None:
            parts.append(f"at most {self.max_width or 'any'}x{self.max_height or 'any'}")
        if self.bytes_per_row_divisor > 1:
            parts.append(f"bytes/row divisible by {self.bytes_per_row_divisor}")
        if self.min_bytes_per_row:
            parts.append(f"bytes/row >= {self.min_bytes_per_row}")
        return ", ".join(parts)


def _pair(who: str, item: object) -> tuple[str, str]:
    if not isinstance(item, tuple) or len(item) != 2:
        raise InvalidArgumentError(
            f"{who}: format {item!r} must be a pixel format name or (format, modifier)"
        )
    return item[0], item[1]


def _format_text(pair: tuple[str, str]) -> str:
    name, mod = pair
    return name if mod == LINEAR else f"{name}/{mod}"


@dataclass(frozen=True, slots=True)
class Constraints:
    """One participant's constraints, or the fold of several (module docstring).

    Buffer counts: the collection has at least ``min_buffers`` buffers and at least
    the sum of every participant's ``camping`` (the buffers it holds at once while it
    works), at most ``max_buffers``.  Sizes: each buffer has at least ``min_size``
    bytes (and holds the image, if ``image``), at most ``max_size``, rounded up to
    ``size_alignment``.  ``contiguous``: one physical chunk per buffer; ``secure``:
    only devices may access it.  ``domains``: coherency domains the participant can
    work in; ``targets``: memory targets it permits (``None``: any).  ``page_sizes``:
    the IOMMU page sizes the participant's SMMU maps (``None``: not behind an IOMMU).
    """

    min_buffers: int = 0
    max_buffers: int | None = None
    camping: int = 0
    min_size: int = 0
    max_size: int | None = None
    size_alignment: int = 1
    contiguous: bool = False
    secure: bool = False
    domains: frozenset[Domain] = ALL_DOMAINS
    targets: frozenset[str] | None = None
    image: ImageConstraints | None = None
    page_sizes: frozenset[int] | None = field(default=None)

    def __post_init__(self) -> None:
        who = "Constraints"
        for name in ("min_buffers", "camping", "min_size"):
            _check_count(who, name, getattr(self, name))
        _check_optional(who, "max_buffers", self.max_buffers, 0)
        _check_optional(who, "max_size", self.max_size, 0)
        if not is_int(self.size_alignment) or not is_power_of_two(self.size_alignment):
            raise InvalidArgumentError(
                f"{who}: size_alignment {self.size_alignment!r} must be a power of two"
            )
        for name in ("contiguous", "secure"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidArgumentError(f"{who}: {name}={getattr(self, name)!r} is not a bool")
        domains = self.domains
        if isinstance(domains, str) or not isinstance(domains, Iterable):
            raise InvalidArgumentError(f"{who}: domains {domains!r} must be a set of Domain")
        try:
            object.__setattr__(self, "domains", frozenset(Domain(d) for d in domains))
        except ValueError:
            known = ", ".join(d.value for d in Domain)
            raise InvalidArgumentError(
                f"{who}: domains {sorted(map(str, domains))} must be among {known}"
            ) from None
        if self.targets is not None:
            object.__setattr__(self, "targets", _names(who, "targets", self.targets))
        if self.image is not None and not isinstance(self.image, ImageConstraints):
            raise InvalidArgumentError(f"{who}: image {self.image!r} is not ImageConstraints")
        if self.page_sizes is not None:
            sizes = self.page_sizes
            if isinstance(sizes, str | bytes) or not isinstance(sizes, Iterable):
                raise InvalidArgumentError(f"{who}: page_sizes {sizes!r} must be a set of sizes")
            checked = frozenset(sizes)
            if not all(is_int(s) and is_power_of_two(s) for s in checked):
                raise InvalidArgumentError(
                    f"{who}: page_sizes {sorted(checked)} must be powers of two"
                )
            object.__setattr__(self, "page_sizes", checked)

    @property
    def buffers_needed(self) -> int:
        """The fewest buffers that meet ``min_buffers`` and every participant's camping."""
        return max(self.min_buffers, self.camping, 1)

    def describe(self) -> list[tuple[str, str]]:
        """(constraint, value) rows of everything that constrains (defaults left out)."""
        rows: list[tuple[str, str]] = []
        counts = [
            f"{label} {value}"
            for label, value in (
                ("min", self.min_buffers),
                ("camping", self.camping),
                ("max", self.max_buffers),
            )
            if value
        ]
        if counts or self.max_buffers == 0:
            rows.append(("buffers", ", ".join(counts) or "max 0"))
        sizes = [f"min {format_size(self.min_size)}"] if self.min_size else []
        if self.max_size is not None:
            sizes.append(f"max {format_size(self.max_size)}")
        if sizes:
            rows.append(("size", ", ".join(sizes)))
        if self.size_alignment > 1:
            rows.append(("size alignment", format_size(self.size_alignment)))
        rows += [(name, "required") for name in ("contiguous", "secure") if getattr(self, name)]
        if self.domains != ALL_DOMAINS:
            rows.append(("domains", ", ".join(sorted(d.value for d in self.domains)) or "none"))
        if self.targets is not None:
            rows.append(("targets", ", ".join(sorted(self.targets)) or "none"))
        if self.image is not None:
            rows.append(("image", self.image.describe()))
        if self.page_sizes is not None:
            pages = sorted(self.page_sizes, reverse=True)
            rows.append(("IOMMU page sizes", ", ".join(format_size(p) for p in pages)))
        return rows
