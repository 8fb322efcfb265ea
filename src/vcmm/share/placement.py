"""Choosing the buffers a folded set of constraints allows: count, size, image
layout, coherency domain, memory target, contiguity and block sizes, with the reasons.

The choice, given the fold (:mod:`vcmm.share.folding`):

- **count**: the fewest that meet every minimum and the participants' camping;
- **image**: the first (pixel format, modifier) every participant accepts, in
  :data:`vcmm.pixels.FORMATS` order, linear before tiled, laid out at the largest
  minimum size with the rows every participant accepts, whose size fits ``max_size``;
- **size**: the largest minimum (and the image), rounded up to the size alignment
  and to whole pages;
- **domain** (as sysmem): inaccessible if secure, else CPU (cached) if everyone
  supports it, else RAM (uncached);
- **target**: the permitted targets in the platform's priority order (the rest after
  it); an uncached or secure buffer needs one outside the kernel's linear map; one
  that can hold the buffers now; a contiguous buffer prefers the target that wastes
  least (a 16 MiB block for a 3 MiB frame loses to a contiguous pool);
- **block sizes** (vcmm's addition): from a pool of fixed blocks, only the blocks
  every IOMMU participant maps with a page larger than its smallest (plus the
  smallest block for the tail), so each buffer takes as few IOTLB entries as the pool
  allows.  On ARMv7 short descriptors that is 16M, 1M and 64K blocks; an LPAE SMMU
  (4K, 2M, 1G pages) gains nothing from 64K or 1M blocks, and only 16M blocks help.

Everything that cannot be met raises :class:`~vcmm.errors.ConstraintError` naming
the participant whose constraint binds (``platform`` when the platform cannot serve
what the participants agree on).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from vcmm.core.custom_targets import is_secure
from vcmm.core.flags import PhysAttr
from vcmm.errors import ConstraintError
from vcmm.mm.pools import BlockPool
from vcmm.pixels import FORMATS, MODIFIERS, ImageLayout, layout
from vcmm.share.constraints import Constraints, Domain
from vcmm.share.folding import Named
from vcmm.sizes import SZ_4K, align_up, format_size

#: Who a refusal names when no participant's constraint binds but the platform's.
PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class Placement:
    """The buffers a collection allocates, and why."""

    count: int
    size: int
    image: ImageLayout | None
    domain: Domain
    target: str
    contiguous: bool
    block_sizes: tuple[int, ...] | None
    reasons: tuple[str, ...]
    #: Alignment of every chunk (a contiguous buffer aligned to an IOMMU page maps
    #: with pages of that size).
    alignment: int = SZ_4K

    @property
    def cached(self) -> bool:
        """Whether the buffers are write-back cacheable (the CPU domain)."""
        return self.domain is Domain.CPU

    def phys_attr(self) -> PhysAttr:
        """The ``vcm_phys_alloc`` attributes of one buffer."""
        attr = PhysAttr.blocks(*self.block_sizes) if self.block_sizes else PhysAttr.NONE
        attr = attr | PhysAttr.align(self.alignment)
        return attr | PhysAttr.CONTIGUOUS if self.contiguous else attr

    def rows(self) -> list[tuple[str, str]]:
        """(what, choice) rows for reports."""
        blocks = (
            "any"
            if self.block_sizes is None
            else ", ".join(format_size(b) for b in self.block_sizes)
        )
        rows = [
            ("buffers", f"{self.count} x {format_size(self.size)}"),
            ("target", self.target),
            ("contiguous", "yes" if self.contiguous else "no"),
            ("block sizes", blocks),
            ("alignment", format_size(self.alignment)),
            ("domain", f"{self.domain.value} ({'cached' if self.cached else 'uncached'})"),
        ]
        if self.image is not None:
            rows.insert(1, ("image", self.image.describe()))
        return rows


def _fail(collection: str, who: str, constraint: str, detail: str) -> ConstraintError:
    return ConstraintError(
        f"buffer collection {collection!r}: {detail}", participant=who, constraint=constraint
    )


def _binding(named: Sequence[Named], value: int | None) -> str:
    """The first participant whose ``max_size`` is ``value`` (the binding one)."""
    return next((n for n, c in named if c.max_size == value), PLATFORM)


def choose_image(collection: str, total: Constraints, named: Sequence[Named]) -> ImageLayout | None:
    """The image layout every participant accepts that fits ``max_size``."""
    image = total.image
    if image is None:
        return None
    order = {name: i for i, name in enumerate(FORMATS)}
    pairs = sorted(image.formats, key=lambda p: (order[p[0]], MODIFIERS.index(p[1])))
    tried = []
    for fmt, mod in pairs:
        candidate = layout(
            fmt,
            image.min_width,
            image.min_height,
            modifier=mod,
            bytes_per_row_divisor=image.bytes_per_row_divisor,
            min_bytes_per_row=image.min_bytes_per_row,
        )
        if total.max_size is None or candidate.size <= total.max_size:
            return candidate
        tried.append(f"{candidate.describe()} takes {format_size(candidate.size)}")
    who = _binding(named, total.max_size)
    assert total.max_size is not None
    raise _fail(
        collection,
        who,
        "size",
        f"participant {who!r} allows at most {format_size(total.max_size)} (max_size), "
        f"too small for every image the participants accept: {'; '.join(tried)}",
    )


def choose_size(
    collection: str, total: Constraints, named: Sequence[Named], image: ImageLayout | None
) -> int:
    """Bytes per buffer: the minimum, the image, the alignment, whole pages."""
    wanted = max(total.min_size, image.size if image is not None else 0)
    if wanted == 0:
        raise _fail(
            collection,
            PLATFORM,
            "size",
            "no participant states a size (min_size) or an image, so the buffers would be empty",
        )
    size = align_up(align_up(wanted, total.size_alignment), SZ_4K)
    if total.max_size is not None and size > total.max_size:
        who = _binding(named, total.max_size)
        raise _fail(
            collection,
            who,
            "size",
            f"participant {who!r} allows at most {format_size(total.max_size)} (max_size) but "
            f"a buffer takes {format_size(size)} ({format_size(wanted)} rounded up to the size "
            f"alignment {format_size(total.size_alignment)} and whole pages)",
        )
    return size


def choose_domain(total: Constraints) -> Domain:
    """sysmem's choice: inaccessible if secure, else CPU, else RAM, else inaccessible."""
    if total.secure:
        return Domain.INACCESSIBLE
    for domain in (Domain.CPU, Domain.RAM, Domain.INACCESSIBLE):
        if domain in total.domains:
            return domain
    raise AssertionError("the fold refused an empty domain set")


def usable_page(block: int, page_sizes: Iterable[int]) -> int:
    """The largest IOMMU page that tiles a naturally aligned ``block`` (0: none)."""
    return max((p for p in page_sizes if p <= block and block % p == 0), default=0)


def choose_blocks(target: Any, total: Constraints) -> tuple[tuple[int, ...] | None, str]:
    """Block sizes to ask a pool of fixed blocks for, and why (``None``: any)."""
    if not isinstance(target, BlockPool) or total.contiguous or not total.page_sizes:
        return None, ""
    pages = total.page_sizes
    smallest = min(pages)
    sizes = target.block_sizes
    large = [b for b in sizes if usable_page(b, pages) > smallest]
    chosen = tuple(sorted({*large, min(sizes)}, reverse=True))
    text = ", ".join(format_size(b) for b in chosen)
    why = (
        f"blocks {text}: every IOMMU participant maps "
        + (
            ", ".join(
                f"{format_size(b)} blocks as {format_size(usable_page(b, pages))} pages"
                for b in large
            )
            if large
            else "only small pages, so no block size saves IOTLB entries"
        )
        + f"; {format_size(min(sizes))} blocks fill the tail"
    )
    return chosen, why


def choose_alignment(total: Constraints, size: int) -> tuple[int, str]:
    """A contiguous buffer's alignment: the largest page every IOMMU participant maps
    that the buffer can hold, so the DMA API (whose IOVAs are size-aligned) maps it
    with such pages rather than 4 KiB ones."""
    if not total.contiguous or not total.page_sizes:
        return SZ_4K, ""
    fits = [p for p in total.page_sizes if p <= size and p > SZ_4K]
    if not fits:
        return SZ_4K, ""
    page = max(fits)
    return page, (
        f"aligned to {format_size(page)}: the largest page every IOMMU participant maps "
        "that the buffer holds, so its mappings use such pages"
    )


def _allocated(target: Any, length: int, contiguous: bool) -> int:
    """Bytes a target hands out for one buffer of ``length``."""
    if isinstance(target, BlockPool) and contiguous:
        return min((b for b in target.block_sizes if b >= length), default=length)
    return length


def choose_target(
    collection: str,
    system: Any,
    total: Constraints,
    domain: Domain,
    count: int,
    size: int,
    alignment: int = SZ_4K,
) -> tuple[str, tuple[int, ...] | None, list[str]]:
    """The memory target, its block sizes and the reasons (module docstring)."""
    names = list(system.target_priority) + [
        t for t in system.targets if t not in system.target_priority
    ]
    rejected: list[str] = []
    fits: list[tuple[int, int, str, tuple[int, ...] | None, str]] = []
    for rank, name in enumerate(names):
        target = system.target(name)
        if total.targets is not None and name not in total.targets:
            rejected.append(f"{name}: not permitted by every participant")
            continue
        if is_secure(target) and not total.secure:
            rejected.append(f"{name}: a secure target (only secure mappings reach it)")
            continue
        if domain is not Domain.CPU and target.linear_mapped:
            rejected.append(f"{name}: in the kernel's cacheable linear map ({domain.value} domain)")
            continue
        blocks, why = choose_blocks(target, total)
        want = size if total.contiguous else size * count
        if not target.can_satisfy(
            want, block_sizes=blocks, alignment=alignment, contiguous=total.contiguous
        ):
            rejected.append(f"{name}: cannot hold {count} x {format_size(size)} now")
            continue
        waste = _allocated(target, size, total.contiguous) - size if total.contiguous else 0
        fits.append((waste, rank, name, blocks, why))
    if not fits:
        raise _fail(
            collection,
            PLATFORM,
            "memory targets",
            "no memory target can hold the buffers: " + "; ".join(rejected),
        )
    waste, _, name, blocks, why = min(fits)
    reasons = [
        f"target {name}: first permitted target, in the platform's priority, that holds them"
    ]
    if total.contiguous and waste:
        reasons[0] += f" (contiguous: {format_size(waste)} lost to block rounding)"
    elif total.contiguous:
        reasons[0] = (
            f"target {name}: the permitted target that holds them contiguously with least waste"
        )
    if why:
        reasons.append(why)
    return name, blocks, reasons + [f"passed over {r}" for r in rejected]


def place(collection: str, system: Any, total: Constraints, named: Sequence[Named]) -> Placement:
    """Everything the fold ``total`` of ``named`` lets the collection allocate."""
    image = choose_image(collection, total, named)
    size = choose_size(collection, total, named, image)
    count = total.buffers_needed
    domain = choose_domain(total)
    alignment, why_align = choose_alignment(total, size)
    target, blocks, reasons = choose_target(
        collection, system, total, domain, count, size, alignment
    )
    if why_align:
        reasons.insert(1, why_align)
    why_domain = {
        Domain.INACCESSIBLE: "domain inaccessible: a participant requires a secure buffer",
        Domain.CPU: "domain cpu: every participant works with a cached buffer",
        Domain.RAM: "domain ram: some participant cannot work with a cached buffer",
    }[domain]
    why_contiguous = (
        "contiguous: a participant requires it (a device without an IOMMU, or stated)"
        if total.contiguous
        else "not contiguous: every device is behind an IOMMU or takes pieces"
    )
    return Placement(
        count=count,
        size=size,
        image=image,
        domain=domain,
        target=target,
        contiguous=total.contiguous,
        block_sizes=blocks,
        reasons=(why_domain, why_contiguous, *reasons),
        alignment=alignment,
    )


def iotlb_entries(chunks: Iterable[tuple[int, int]], page_sizes: Iterable[int]) -> int:
    """IOTLB entries a mapping of ``chunks`` (in buffer order) takes: touching chunks
    are joined into runs, as the exporter's scatterlist joins them, and each run is
    mapped with the largest pages its address alignment and length allow (as the DMA
    API maps a buffer whose IOVA is aligned like its physical runs)."""
    pages = sorted(page_sizes, reverse=True)
    runs: list[list[int]] = []
    for pa, length in chunks:
        if runs and runs[-1][0] + runs[-1][1] == pa:
            runs[-1][1] += length
        else:
            runs.append([pa, length])
    entries = 0
    for pa, length in runs:
        pos, end = pa, pa + length
        while pos < end:
            step = next(p for p in pages if pos % p == 0 and pos + p <= end)
            pos += step
            entries += 1
    return entries
