"""A page table's bytes at one moment: what tests and undo checks compare."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PageTableSnapshot:
    """The bytes of every table page plus the shadow, for before/after comparisons."""

    root: int
    #: (pa, size, valid entries, bytes) per table page, sorted by pa.
    tables: tuple[tuple[int, int, int, bytes], ...]

    @property
    def table_pages(self) -> list[tuple[int, int]]:
        return [(pa, size) for pa, size, _, _ in self.tables]
