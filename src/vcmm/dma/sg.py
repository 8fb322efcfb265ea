"""Scatterlists: a buffer as a list of physical pieces, and the DMA view of it.

Each :class:`SgEntry` is one CPU-side piece (``phys`` = page + offset, ``length``), as
in ``struct scatterlist``.  ``map_sg`` fills ``dma_address``/``dma_length`` of the
first *n* entries with the merged DMA segments and returns *n*; the other entries'
DMA fields say "no segment" (``DMA_MAPPING_ERROR``, 0).  The CPU fields are never
changed, and a failed ``map_sg`` leaves the whole list as it was.

:class:`MappedScatterList` is the same entry type seen per piece after a mapping: what
a dma-buf attachment's map yields (every entry with its own device address, so
``dma_length == length``), beside the DMA API's list with the merged segments.  The
DMA API and the sharing layer thus speak of one ``SgEntry``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import overload

from vcmm.attrs import DmaDirection
from vcmm.checks import is_int
from vcmm.dma.attrs import DMA_MAPPING_ERROR
from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange, join_runs
from vcmm.sizes import SZ_4K


@dataclass(eq=False, slots=True)
class SgEntry:
    """One piece of a scatterlist: CPU side (phys, length) and DMA side."""

    phys: int
    length: int
    dma_address: int = DMA_MAPPING_ERROR
    dma_length: int = 0

    def __post_init__(self) -> None:
        for name in ("phys", "length"):
            value = getattr(self, name)
            if not is_int(value):
                raise InvalidArgumentError(f"SgEntry {name} {value!r} is not an integer")
        if self.phys < 0 or self.length <= 0:
            raise InvalidArgumentError(
                f"SgEntry phys {self.phys:#x} must be >= 0 and length {self.length} > 0"
            )

    @property
    def page(self) -> int:
        """Physical address of the 4 KiB page the entry starts in."""
        return self.phys - self.phys % SZ_4K

    @property
    def offset(self) -> int:
        """Offset of the entry inside its first page."""
        return self.phys % SZ_4K

    @property
    def range(self) -> AddressRange:
        return AddressRange(self.phys, self.length)

    def __repr__(self) -> str:
        dma = "-" if self.dma_address == DMA_MAPPING_ERROR else f"{self.dma_address:#x}"
        return f"SgEntry({self.phys:#x}+{self.length:#x} dma={dma}+{self.dma_length:#x})"


class ScatterList(Sequence[SgEntry]):
    """An ordered list of :class:`SgEntry` (``struct sg_table`` without chaining).

    ``label`` says whose list it is (e.g. a dma-buf attachment); DMA-debug reports name
    the mapping made of it with that label.
    """

    def __init__(self, entries: Iterable[SgEntry | tuple[int, int]], *, label: str = "") -> None:
        if not isinstance(label, str):
            raise InvalidArgumentError(f"scatterlist label {label!r} is not a string")
        items: list[SgEntry] = []
        for e in entries:
            if isinstance(e, SgEntry):
                items.append(e)
            elif isinstance(e, tuple) and len(e) == 2:
                items.append(SgEntry(e[0], e[1]))
            else:
                raise InvalidArgumentError(f"scatterlist entry {e!r} is not (phys, length)")
        if not items:
            raise InvalidArgumentError("a scatterlist needs at least one entry")
        self._entries = items
        self.label = label

    @property
    def labelled(self) -> str:
        """``", <label>"`` for messages, or nothing without a label."""
        return f", {self.label}" if self.label else ""

    @classmethod
    def from_ranges(cls, ranges: Iterable[AddressRange], *, merge: bool = True) -> ScatterList:
        """Entries for physical ranges, joining physically adjacent ones
        (``sg_alloc_table_from_pages``)."""
        runs = [(r.start, r.size) for r in ranges]
        return cls(join_runs(runs) if merge else runs)

    @overload
    def __getitem__(self, index: int) -> SgEntry: ...
    @overload
    def __getitem__(self, index: slice) -> list[SgEntry]: ...
    def __getitem__(self, index: int | slice) -> SgEntry | list[SgEntry]:
        return self._entries[index]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[SgEntry]:
        return iter(self._entries)

    def dma_segments(self, count: int | None = None) -> list[tuple[int, int]]:
        """``(dma_address, dma_length)`` of the first ``count`` entries (all with a
        segment when ``count`` is None)."""
        if count is None:
            count = sum(1 for e in self._entries if e.dma_length)
        return [(e.dma_address, e.dma_length) for e in self._entries[:count]]

    def snapshot(self) -> tuple[tuple[int, int, int, int], ...]:
        return tuple((e.phys, e.length, e.dma_address, e.dma_length) for e in self._entries)

    def __repr__(self) -> str:
        return f"ScatterList({self._entries!r})"


@dataclass(frozen=True)
class MappedScatterList:
    """A buffer mapped for one device: its pieces in buffer order, each an
    :class:`SgEntry` whose DMA fields give that piece's own device address
    (``entries``), and the DMA API's list as ``map_sg`` filled it (``table``: merged
    segments on its first entries).  The sharing layer exports it as
    ``vcmm.share.ScatterList``, what ``dma_buf_map_attachment`` returns."""

    device: str
    direction: DmaDirection
    entries: tuple[SgEntry, ...]
    table: ScatterList | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        return sum(e.length for e in self.entries)

    @property
    def dma_address(self) -> int:
        """Device address of the first byte."""
        return self.entries[0].dma_address

    def segments(self) -> list[tuple[int, int]]:
        """``(dma_address, length)`` runs, joined where the device addresses run on (an
        IOMMU makes scattered memory one run; a one-to-one device sees it as it is)."""
        return join_runs((e.dma_address, e.length) for e in self.entries)

    def __iter__(self) -> Iterator[SgEntry]:
        return iter(self.entries)
