"""The result of a page-table walk, shared by every format and every translator.

A walk either finds a leaf descriptor (a page or block) or stops at a fault.  It also
reports how many descriptor reads it made from physical memory, which is what an IOTLB
miss really costs and what the TLB counters accumulate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import FaultKind, PageAttrs


@dataclass(frozen=True, slots=True)
class Walk:
    """Outcome of walking the tables for one input address ``va``."""

    va: int
    #: Descriptor reads from physical memory this walk made.
    reads: int
    #: Output address of ``va`` itself (not of the page base); ``None`` on a fault.
    pa: int | None = None
    #: Size of the page or block that maps ``va`` (0 on a fault).
    page_size: int = 0
    attrs: PageAttrs | None = None
    #: Level of the leaf descriptor, or of the descriptor that faulted.
    level: int = 0
    fault: FaultKind | None = None

    @property
    def ok(self) -> bool:
        return self.fault is None

    @property
    def va_base(self) -> int:
        """Input address of the start of the page or block."""
        return self.va - self.va % self.page_size if self.page_size else self.va

    @property
    def pa_base(self) -> int:
        """Output address of the start of the page or block."""
        if self.pa is None:
            raise ValueError(f"walk of {self.va:#x} faulted ({self.fault}); it has no output")
        return self.pa - self.va % self.page_size


@dataclass(frozen=True, eq=False)
class WalkArrays:
    """Walks of many addresses at once, as arrays (one row per address walked).

    What a stream needs of a successful walk: the leaf's input base and log2 size, its
    output base, the descriptor reads, the level and the attributes (an index into
    ``attrs``).  A row with ``ok`` False is a walk the model must redo one at a time
    (a fault, or anything unusual): the fast paths stop before using it.
    """

    ok: npt.NDArray[np.bool_]
    reads: npt.NDArray[np.int64]
    level: npt.NDArray[np.int64]
    base: npt.NDArray[np.uint64]
    shift: npt.NDArray[np.int64]
    pa_base: npt.NDArray[np.uint64]
    attr_index: npt.NDArray[np.int64]
    attrs: tuple[PageAttrs, ...]

    @classmethod
    def empty(cls, n: int) -> WalkArrays:
        """``n`` rows, none of them walked yet (all not ok)."""
        return cls(
            np.zeros(n, dtype=np.bool_),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.uint64),
            np.zeros(n, dtype=np.int64),
            np.zeros(n, dtype=np.uint64),
            np.full(n, -1, dtype=np.int64),
            (),
        )

    def columns(self) -> tuple[npt.NDArray[np.generic], ...]:
        """The row columns, in field order (``ok`` ... ``attr_index``)."""
        return (
            self.ok,
            self.reads,
            self.level,
            self.base,
            self.shift,
            self.pa_base,
            self.attr_index,
        )

    def with_attrs(self, attrs: list[PageAttrs]) -> WalkArrays:
        """The same rows with the attribute table ``attrs`` (filled while walking)."""
        return dataclasses.replace(self, attrs=tuple(attrs))

    def __len__(self) -> int:
        return int(self.ok.shape[0])
