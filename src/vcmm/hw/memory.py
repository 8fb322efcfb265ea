"""Physical memory: an address map of named regions holding real bytes.

Each region is backed by one ``numpy.zeros`` array.  The operating system hands such
large zeroed allocations out lazily, page by page, so a 4 GiB RAM bank costs only the
pages that are written; vcmm additionally keeps a bitmap of touched 4 KiB pages so
the cost is visible (:meth:`PhysicalMemory.resident_bytes`) without asking the OS.
Holes between regions are real: an access that touches one raises :class:`BusError`
naming the first address that is not backed, and writes nothing.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vcmm.errors import BusError, InvalidArgumentError, NotFoundError
from vcmm.ranges import AddressRange

#: Granule of the touched-page accounting.
TRACK_PAGE = 4096
_TRACK_SHIFT = 12

Bytes = bytes | bytearray | memoryview | npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class MemoryRegion:
    """A named window of the physical address map (a RAM bank, on-chip SRAM...)."""

    name: str
    range: AddressRange
    kind: str = "ram"

    @property
    def base(self) -> int:
        return self.range.start

    @property
    def size(self) -> int:
        return self.range.size


@dataclass(slots=True)
class _Bank:
    region: MemoryRegion
    data: npt.NDArray[np.uint8]
    touched: npt.NDArray[np.bool_] = field(repr=False)


def as_u8(data: Bytes) -> npt.NDArray[np.uint8]:
    """View any bytes-like value as a flat uint8 array without copying when possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return data.reshape(-1)
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    raise InvalidArgumentError(f"data of type {type(data).__name__} is not bytes-like")


class PhysicalMemory:
    """The SoC's physical address map.  Anyone may read it: ``memory.read(pa, n)``."""

    def __init__(self, regions: Iterable[MemoryRegion]) -> None:
        banks: list[_Bank] = []
        for region in sorted(regions, key=lambda r: r.base):
            if region.size <= 0 or region.base % TRACK_PAGE or region.size % TRACK_PAGE:
                raise InvalidArgumentError(
                    f"region {region.name!r} {region.range} must be non-empty and 4 KiB aligned"
                )
            if banks and banks[-1].region.range.overlaps(region.range):
                raise InvalidArgumentError(
                    f"region {region.name!r} {region.range} overlaps "
                    f"{banks[-1].region.name!r} {banks[-1].region.range}"
                )
            if any(b.region.name == region.name for b in banks):
                raise InvalidArgumentError(f"region name {region.name!r} is used twice")
            banks.append(
                _Bank(
                    region,
                    np.zeros(region.size, dtype=np.uint8),
                    np.zeros(region.size >> _TRACK_SHIFT, dtype=np.bool_),
                )
            )
        if not banks:
            raise InvalidArgumentError("physical memory needs at least one region")
        self._banks = banks
        self._starts = [b.region.base for b in banks]
        #: Transaction counters, for reports: bytes read and written by anyone.
        self.bytes_read = 0
        self.bytes_written = 0

    # -- address map -----------------------------------------------------------------

    @property
    def regions(self) -> tuple[MemoryRegion, ...]:
        return tuple(b.region for b in self._banks)

    def region(self, name: str) -> MemoryRegion:
        for bank in self._banks:
            if bank.region.name == name:
                return bank.region
        known = ", ".join(b.region.name for b in self._banks)
        raise NotFoundError(f"no memory region named {name!r} (known: {known})")

    def region_at(self, pa: int) -> MemoryRegion:
        return self._bank_at(pa).region

    def is_backed(self, pa: int, length: int = 1) -> bool:
        try:
            list(self._pieces(pa, length))
        except BusError:
            return False
        return True

    def _bank_at(self, pa: int) -> _Bank:
        i = bisect.bisect_right(self._starts, pa) - 1
        if i >= 0 and pa < self._banks[i].region.range.end:
            return self._banks[i]
        raise BusError(f"bus error: physical address {pa:#x} is in a hole of the address map", pa)

    def _pieces(self, pa: int, length: int) -> Iterator[tuple[_Bank, int, int]]:
        """Split ``[pa, pa+length)`` into (bank, offset, n) pieces; raise on any hole.

        Validates the whole range before yielding anything, so callers that consume it
        into a list first never act on half of a bad access.
        """
        if type(pa) is int and type(length) is int and pa >= 0 and length >= 0:
            # Fast path (page-table words, single-region buffers): one bisect, no loop.
            i = bisect.bisect_right(self._starts, pa) - 1
            if i >= 0:
                bank = self._banks[i]
                off = pa - bank.region.base
                if off + length <= bank.region.size:
                    return iter(((bank, off, length),))
        if not isinstance(pa, int | np.integer) or not isinstance(length, int | np.integer):
            raise InvalidArgumentError(f"address {pa!r} and length {length!r} must be integers")
        if pa < 0 or length < 0:
            raise InvalidArgumentError(f"address {pa:#x} and length {length} must be >= 0")
        pieces = []
        addr, end = int(pa), int(pa) + int(length)
        while addr < end:
            bank = self._bank_at(addr)
            n = min(end, bank.region.range.end) - addr
            pieces.append((bank, addr - bank.region.base, n))
            addr += n
        return iter(pieces)

    # -- byte access ------------------------------------------------------------------

    def read(self, pa: int, length: int) -> bytes:
        """Copy ``length`` bytes starting at ``pa`` out of memory."""
        return self.read_array(pa, length).tobytes()

    def read_array(self, pa: int, length: int) -> npt.NDArray[np.uint8]:
        """Like :meth:`read` but returns a fresh uint8 array (no bytes conversion)."""
        pieces = list(self._pieces(pa, length))
        self.bytes_read += int(length)
        if len(pieces) == 1:
            bank, off, n = pieces[0]
            return bank.data[off : off + n].copy()
        out = np.empty(int(length), dtype=np.uint8)
        pos = 0
        for bank, off, n in pieces:
            out[pos : pos + n] = bank.data[off : off + n]
            pos += n
        return out

    def view(self, pa: int, length: int) -> npt.NDArray[np.uint8]:
        """A writable view of a range inside one region, for zero-copy bulk paths.

        Writers through a view must call :meth:`mark_written` so accounting stays true.
        """
        pieces = list(self._pieces(pa, length))
        if len(pieces) != 1:
            raise InvalidArgumentError(
                f"view {AddressRange(pa, length)} spans {len(pieces)} regions; views need one"
            )
        bank, off, n = pieces[0]
        return bank.data[off : off + n]

    def write(self, pa: int, data: Bytes) -> None:
        """Store ``data`` at ``pa``.  Nothing is written if any byte would hit a hole."""
        src = as_u8(data)
        pieces = list(self._pieces(pa, src.size))
        pos = 0
        for bank, off, n in pieces:
            bank.data[off : off + n] = src[pos : pos + n]
            bank.touched[off >> _TRACK_SHIFT : ((off + n - 1) >> _TRACK_SHIFT) + 1] = True
            pos += n
        self.bytes_written += int(src.size)

    def mark_written(self, pa: int, length: int) -> None:
        """Record that ``[pa, pa+length)`` was written through a :meth:`view`."""
        for bank, off, n in self._pieces(pa, length):
            if n:
                bank.touched[off >> _TRACK_SHIFT : ((off + n - 1) >> _TRACK_SHIFT) + 1] = True
        self.bytes_written += int(length)

    def copy(self, dst: int, src: int, length: int) -> None:
        """Move ``length`` bytes from ``src`` to ``dst`` (memmove semantics)."""
        self.write(dst, self.read_array(src, length))

    def fill(self, pa: int, length: int, value: int = 0) -> None:
        if not 0 <= value <= 0xFF:
            raise InvalidArgumentError(f"fill value {value} is not a byte (0..255)")
        pieces = list(self._pieces(pa, length))
        for bank, off, n in pieces:
            bank.data[off : off + n] = value
            if n:
                bank.touched[off >> _TRACK_SHIFT : ((off + n - 1) >> _TRACK_SHIFT) + 1] = True
        self.bytes_written += int(length)

    # -- little-endian words, as page-table walkers use them --------------------------------

    def _read_word(self, pa: int, width: int) -> int:
        """One little-endian word: the page-table walker's hot path, kept lean."""
        i = bisect.bisect_right(self._starts, pa) - 1
        if i >= 0 and isinstance(pa, int):
            bank = self._banks[i]
            off = pa - bank.region.base
            if off >= 0 and off + width <= bank.region.size:
                self.bytes_read += width
                return int.from_bytes(bank.data[off : off + width], "little")
        return int.from_bytes(self.read_array(pa, width).tobytes(), "little")

    def read_u32(self, pa: int) -> int:
        return self._read_word(pa, 4)

    def write_u32(self, pa: int, value: int) -> None:
        self.write(pa, np.array([value], dtype="<u4").view(np.uint8))

    def read_u64(self, pa: int) -> int:
        return self._read_word(pa, 8)

    def write_u64(self, pa: int, value: int) -> None:
        self.write(pa, np.array([value], dtype="<u8").view(np.uint8))

    def read_words(self, pa: int, count: int, width: int) -> npt.NDArray[np.uint64]:
        """``count`` little-endian words of ``width`` (4 or 8) bytes, as uint64."""
        if width not in (4, 8):
            raise InvalidArgumentError(f"word width {width} must be 4 or 8")
        raw = self.read_array(pa, count * width)
        return raw.view("<u4" if width == 4 else "<u8").astype(np.uint64)

    # -- accounting and snapshots ----------------------------------------------------------

    def resident_bytes(self) -> int:
        """Bytes of memory that have ever been written (4 KiB granularity)."""
        return sum(int(b.touched.sum()) for b in self._banks) * TRACK_PAGE

    def digest(self) -> str:
        """A hash of every touched page's address and contents: equal digests, equal memory."""
        h = hashlib.sha256()
        for bank in self._banks:
            for page in np.flatnonzero(bank.touched):
                off = int(page) << _TRACK_SHIFT
                chunk = bank.data[off : off + TRACK_PAGE]
                if chunk.any():
                    h.update((bank.region.base + off).to_bytes(8, "little"))
                    h.update(chunk.tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        regions = ", ".join(f"{r.name}{r.range}" for r in self.regions)
        return f"PhysicalMemory({regions})"
