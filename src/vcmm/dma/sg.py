"""Scatterlists: a buffer as a list of physical pieces, and the DMA view of it.

Each :class:`SgEntry` is one CPU-side piece (``phys`` = page + offset, ``length``), as
in ``struct scatterlist``.  ``map_sg`` fills ``dma_address``/``dma_length`` of the
first *n* entries with the merged DMA segments and returns *n*; the other entries'
DMA fields say "no segment" (``DMA_MAPPING_ERROR``, 0).  The CPU fields are never
changed, and a failed ``map_sg`` leaves the whole list as it was.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

from vcmm.checks import is_int
from vcmm.dma.attrs import DMA_MAPPING_ERROR
from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange
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
        out: list[tuple[int, int]] = []
        for r in ranges:
            if merge and out and out[-1][0] + out[-1][1] == r.start:
                out[-1] = (out[-1][0], out[-1][1] + r.size)
            else:
                out.append((r.start, r.size))
        return cls(out)

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

    @property
    def total_length(self) -> int:
        return sum(e.length for e in self._entries)

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
