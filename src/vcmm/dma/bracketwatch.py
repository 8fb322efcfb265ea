"""Read-only CPU-access brackets the DMA-debug checker watches for writes.

Seed 001's debug aid: between ``DMA_BUF_SYNC_START|READ`` and END the CPU said it
would only read, so the exporter prepared the cache for reading and will not clean
at END; a store made in that window may never reach memory the devices read (a
write-back line is not cleaned for them), or be dropped by the next invalidation.
Linux cannot see such a store; the simulator sees every CPU access, so the checker
reports it (``CPU_WRITE_IN_READ_BRACKET``), naming the buffer, the writer, the
address and who opened the bracket.

The sharing layer opens and closes the watch with each READ-only bracket it opens
and closes (the checker knows nothing of dma-bufs); :class:`ReadBrackets` keeps the
open ones with the physical ranges they cover and finds the brackets a write lands
in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from vcmm.errors import InvalidArgumentError
from vcmm.ranges import AddressRange


@dataclass(frozen=True, slots=True)
class ReadBracket:
    """One open READ-only bracket: the buffer's name, who opened it, the physical
    bytes it covers and the names of the processes that might write (by ASID)."""

    buffer: str
    opener: str
    ranges: tuple[AddressRange, ...]
    writers: Mapping[int, str] = field(default_factory=dict)

    def writer(self, asid: int | None, user: bool) -> str:
        """Who made a CPU store, as far as the bracket's opener knows the processes."""
        if not user or asid is None:
            return "the kernel"
        name = self.writers.get(asid)
        return f"process {name} (ASID {asid})" if name else f"a process with ASID {asid}"


class ReadBrackets:
    """The open READ-only brackets, by the sharing layer's key."""

    def __init__(self) -> None:
        self._open: dict[object, ReadBracket] = {}

    def __bool__(self) -> bool:
        return bool(self._open)

    def open(self, key: object, bracket: ReadBracket) -> None:
        if not isinstance(bracket, ReadBracket):
            raise InvalidArgumentError(f"watch_read_bracket: {bracket!r} is not a ReadBracket")
        if key in self._open:
            raise InvalidArgumentError(f"watch_read_bracket: {key!r} is watched already")
        self._open[key] = bracket

    def close(self, key: object) -> None:
        """Stop watching ``key`` (nothing if it was not watched)."""
        self._open.pop(key, None)

    def hits(self, runs: Iterable[AddressRange]) -> list[tuple[ReadBracket, AddressRange]]:
        """Each open bracket some of ``runs`` land in, with the first byte range hit."""
        runs = list(runs)
        out = []
        for bracket in self._open.values():
            for run in runs:
                hit = next((r & run for r in bracket.ranges if r.overlaps(run)), None)
                if hit is not None:
                    out.append((bracket, hit))
                    break
        return out
