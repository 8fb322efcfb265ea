"""Physical memory: an address map of named regions holding real bytes, stored sparsely.

The bytes live in a *chunked store*: fixed 2 MiB chunks keyed by physical address,
each created on the first write into it.  A read of memory nobody wrote returns zeros
without creating anything, so a platform with a 1 TiB RAM bank boots in microseconds
and costs only the chunks its software touches (Linux's SPARSEMEM makes the same
trade: memory sections are populated on demand).  Each chunk is an anonymous private
``mmap``, which the host kernel also fills lazily, page by page, so even inside a
chunk only the pages written cost host memory.  A touched-page bitmap per chunk makes
the cost visible (:meth:`PhysicalMemory.resident_bytes`) without asking the OS.

Bulk reads, writes, fills and copies stay vectorised: they move one numpy slice per
chunk they cross (a 64 MiB copy is 32 slice copies per side).

Holes between regions are real: an access that touches one raises :class:`BusError`
naming the first address that is not backed, and writes nothing.
"""

from __future__ import annotations

import bisect
import hashlib
import mmap
import sys
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from vcmm.checks import is_int
from vcmm.errors import BusError, InvalidArgumentError, NotFoundError
from vcmm.ranges import AddressRange

#: Granule of the touched-page accounting.
TRACK_PAGE = 4096
_TRACK_SHIFT = 12
#: Size of one chunk of the sparse store (a power of two; chunks are aligned to it).
CHUNK_SIZE = 2 << 20
_CHUNK_SHIFT = 21
_CHUNK_MASK = CHUNK_SIZE - 1

#: ``array``/``memoryview`` codes of 4- and 8-byte unsigned words (host order).
_WORD_CODES: dict[int, Literal["I", "Q"]] = {4: "I", 8: "Q"}
#: Whether host words are little-endian, as the simulated memory's are.
_LITTLE = sys.byteorder == "little"

#: Transparent huge pages for the chunks where the host offers them (Linux).
_HUGEPAGE: int | None = getattr(mmap, "MADV_HUGEPAGE", None)

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


class _Chunk:
    """``CHUNK_SIZE`` bytes of the store and which of their 4 KiB pages were written."""

    __slots__ = ("data", "touched", "view")

    def __init__(self) -> None:
        # A private anonymous mapping: zero-filled lazily by the host kernel, and
        # copy-on-write (never shared) across a fork, e.g. into a sweep's workers.
        buf = mmap.mmap(-1, CHUNK_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        if _HUGEPAGE is not None:  # one host TLB entry per chunk, as numpy does for
            buf.madvise(_HUGEPAGE)  # large arrays: bulk copies run at memcpy speed
        self.data: npt.NDArray[np.uint8] = np.frombuffer(buf, dtype=np.uint8)
        #: The same bytes as a memoryview: a word stored through it costs a slice
        #: assignment, not the numpy conversion of a 4-byte array.
        self.view = memoryview(buf)
        self.touched = np.zeros(CHUNK_SIZE >> _TRACK_SHIFT, dtype=np.bool_)

    def mark(self, off: int, n: int) -> None:
        self.touched[off >> _TRACK_SHIFT : ((off + n - 1) >> _TRACK_SHIFT) + 1] = True


def as_u8(data: Bytes) -> npt.NDArray[np.uint8]:
    """View any bytes-like value as a flat uint8 array without copying when possible."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            return np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        return data.reshape(-1)
    if isinstance(data, bytes | bytearray | memoryview):
        return np.frombuffer(data, dtype=np.uint8)
    raise InvalidArgumentError(f"data of type {type(data).__name__} is not bytes-like")


def _spans(pa: int, length: int) -> Iterator[tuple[int, int, int, int]]:
    """``(chunk key, offset in chunk, offset in the access, n)`` for ``[pa, pa+length)``."""
    pos = 0
    while pos < length:
        addr = pa + pos
        off = addr & _CHUNK_MASK
        n = min(CHUNK_SIZE - off, length - pos)
        yield addr >> _CHUNK_SHIFT, off, pos, n
        pos += n


class PhysicalMemory:
    """The SoC's physical address map.  Anyone may read it: ``memory.read(pa, n)``."""

    def __init__(self, regions: Iterable[MemoryRegion]) -> None:
        ordered: list[MemoryRegion] = []
        for region in sorted(regions, key=lambda r: r.base):
            if region.size <= 0 or region.base % TRACK_PAGE or region.size % TRACK_PAGE:
                raise InvalidArgumentError(
                    f"region {region.name!r} {region.range} must be non-empty and 4 KiB aligned"
                )
            if ordered and ordered[-1].range.overlaps(region.range):
                raise InvalidArgumentError(
                    f"region {region.name!r} {region.range} overlaps "
                    f"{ordered[-1].name!r} {ordered[-1].range}"
                )
            if any(r.name == region.name for r in ordered):
                raise InvalidArgumentError(f"region name {region.name!r} is used twice")
            ordered.append(region)
        if not ordered:
            raise InvalidArgumentError("physical memory needs at least one region")
        self._regions = tuple(ordered)
        self._starts = [r.base for r in ordered]
        self._ends = [r.range.end for r in ordered]
        self._chunks: dict[int, _Chunk] = {}
        #: Transaction counters, for reports: bytes read and written by anyone.
        self.bytes_read = 0
        self.bytes_written = 0

    # -- address map -----------------------------------------------------------------

    @property
    def regions(self) -> tuple[MemoryRegion, ...]:
        return self._regions

    def region(self, name: str) -> MemoryRegion:
        for region in self._regions:
            if region.name == name:
                return region
        known = ", ".join(r.name for r in self._regions)
        raise NotFoundError(f"no memory region named {name!r} (known: {known})")

    def region_at(self, pa: int) -> MemoryRegion:
        return self._regions[self._index_at(pa)]

    def _index_at(self, pa: int) -> int:
        i = bisect.bisect_right(self._starts, pa) - 1
        if i >= 0 and pa < self._ends[i]:
            return i
        raise BusError(f"bus error: physical address {pa:#x} is in a hole of the address map", pa)

    def is_backed(self, pa: int, length: int = 1) -> bool:
        if type(pa) is int and type(length) is int and pa >= 0 and length >= 0:
            # the usual case (a page or a word in one region): one bisect, no exception
            i = bisect.bisect_right(self._starts, pa) - 1
            if i >= 0 and pa + length <= self._ends[i]:
                return True
        try:
            self._check(pa, length)
        except BusError:
            return False
        return True

    def _check(self, pa: int, length: int) -> tuple[int, int]:
        """``(pa, length)`` as ints once every byte of the range is known to be backed;
        raises (before anything is touched) on a bad argument or a hole."""
        if type(pa) is int and type(length) is int and pa >= 0 and length >= 0:
            # Fast path (page-table words, single-region buffers): one bisect, no loop.
            i = bisect.bisect_right(self._starts, pa) - 1
            if i >= 0 and pa + length <= self._ends[i]:
                return pa, length
        if not isinstance(pa, int | np.integer) or not isinstance(length, int | np.integer):
            raise InvalidArgumentError(f"address {pa!r} and length {length!r} must be integers")
        pa, length = int(pa), int(length)
        if pa < 0 or length < 0:
            raise InvalidArgumentError(f"address {pa:#x} and length {length} must be >= 0")
        addr, end = pa, pa + length
        while addr < end:
            addr = self._ends[self._index_at(addr)]
        return pa, length

    def _chunk(self, key: int) -> tuple[_Chunk, bool]:
        """The chunk ``key`` and whether this call created it (all zeros)."""
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = _Chunk()
            return chunk, True
        return chunk, False

    # -- byte access ------------------------------------------------------------------

    def read(self, pa: int, length: int) -> bytes:
        """Copy ``length`` bytes starting at ``pa`` out of memory."""
        return self.read_array(pa, length).tobytes()

    def read_array(self, pa: int, length: int) -> npt.NDArray[np.uint8]:
        """Like :meth:`read` but returns a fresh uint8 array (no bytes conversion).
        Untouched memory reads as zeros and creates nothing."""
        pa, length = self._check(pa, length)
        self.bytes_read += length
        off = pa & _CHUNK_MASK
        if off + length <= CHUNK_SIZE:
            chunk = self._chunks.get(pa >> _CHUNK_SHIFT)
            if chunk is None:
                return np.zeros(length, dtype=np.uint8)
            return chunk.data[off : off + length].copy()
        out = np.empty(length, dtype=np.uint8)
        for key, off, pos, n in _spans(pa, length):
            chunk = self._chunks.get(key)
            out[pos : pos + n] = 0 if chunk is None else chunk.data[off : off + n]
        return out

    def write(self, pa: int, data: Bytes) -> None:
        """Store ``data`` at ``pa``.  Nothing is written if any byte would hit a hole."""
        src = as_u8(data)
        pa, length = self._check(pa, src.size)
        for key, off, pos, n in _spans(pa, length):
            chunk, _ = self._chunk(key)
            chunk.data[off : off + n] = src[pos : pos + n]
            chunk.mark(off, n)
        self.bytes_written += length

    def copy(self, dst: int, src: int, length: int) -> None:
        """Move ``length`` bytes from ``src`` to ``dst`` (memmove semantics), one numpy
        slice copy per chunk crossed; nothing moves if either side hits a hole."""
        src, length = self._check(src, length)
        dst, _ = self._check(dst, length)
        if length == 0:
            return
        if abs(dst - src) < length:  # overlapping: stage through a buffer
            self.write(dst, self.read_array(src, length))
            return
        pos = 0
        while pos < length:
            s, d = src + pos, dst + pos
            soff, doff = s & _CHUNK_MASK, d & _CHUNK_MASK
            n = min(CHUNK_SIZE - soff, CHUNK_SIZE - doff, length - pos)
            source = self._chunks.get(s >> _CHUNK_SHIFT)
            target, fresh = self._chunk(d >> _CHUNK_SHIFT)
            if source is not None:
                np.copyto(target.data[doff : doff + n], source.data[soff : soff + n])
            elif not fresh:
                target.data[doff : doff + n] = 0
            target.mark(doff, n)
            pos += n
        self.bytes_read += length
        self.bytes_written += length

    def fill(self, pa: int, length: int, value: int = 0) -> None:
        """Set ``length`` bytes at ``pa`` to ``value``; a new chunk is zeros already,
        so zero-filling untouched memory creates the chunk but writes no host page."""
        if not is_int(value):
            raise InvalidArgumentError(f"fill value {value!r} is not a byte (0..255)")
        if not 0 <= value <= 0xFF:
            raise InvalidArgumentError(f"fill value {value!r} is not a byte (0..255)")
        pa, length = self._check(pa, length)
        for key, off, _, n in _spans(pa, length):
            chunk, fresh = self._chunk(key)
            if value or not fresh:  # a new chunk is zeros already
                chunk.data[off : off + n] = value
            chunk.mark(off, n)
        self.bytes_written += length

    # -- little-endian words, as page-table walkers use them --------------------------------

    def _read_word(self, pa: int, width: int) -> int:
        """One little-endian word: the page-table walker's hot path, kept lean."""
        i = bisect.bisect_right(self._starts, pa) - 1
        if i >= 0 and type(pa) is int:
            off = pa & _CHUNK_MASK
            if pa + width <= self._ends[i] and off + width <= CHUNK_SIZE:
                self.bytes_read += width
                chunk = self._chunks.get(pa >> _CHUNK_SHIFT)
                if chunk is None:
                    return 0
                # the memoryview's slice: a third of the numpy slice's cost
                return int.from_bytes(chunk.view[off : off + width], "little")
        return int.from_bytes(self.read_array(pa, width).tobytes(), "little")

    def read_u32(self, pa: int) -> int:
        return self._read_word(pa, 4)

    def _write_word(self, pa: int, value: int, width: int) -> None:
        """Store one little-endian word: the table writer's hot path (a descriptor per
        page of a streaming map), kept lean as :meth:`_read_word` is; anything but a
        plain word inside one chunk goes through :meth:`write`, which checks it."""
        if type(pa) is int and type(value) is int and value >> (width << 3) == 0:
            i = bisect.bisect_right(self._starts, pa) - 1
            off = pa & _CHUNK_MASK
            if i >= 0 and pa + width <= self._ends[i] and off + width <= CHUNK_SIZE:
                chunk, _ = self._chunk(pa >> _CHUNK_SHIFT)
                chunk.view[off : off + width] = value.to_bytes(width, "little")
                touched = chunk.touched
                touched[off >> _TRACK_SHIFT] = True
                touched[(off + width - 1) >> _TRACK_SHIFT] = True
                self.bytes_written += width
                return
        if not is_int(value) or not 0 <= value < 1 << (width << 3):
            raise InvalidArgumentError(
                f"word value {value!r} at {pa!r} is not a {width << 3}-bit unsigned integer"
            )
        self.write(pa, np.array([value], dtype=f"<u{width}").view(np.uint8))

    def write_u32(self, pa: int, value: int) -> None:
        self._write_word(pa, value, 4)

    def read_u64(self, pa: int) -> int:
        return self._read_word(pa, 8)

    def write_u64(self, pa: int, value: int) -> None:
        self._write_word(pa, value, 8)

    def _window(self, pa: int, nbytes: int, width: int) -> tuple[int, int] | None:
        """``(chunk key, offset)`` of ``[pa, pa+nbytes)`` when it is aligned to
        ``width``, in one region and one chunk, and host words are little-endian (a
        memoryview cast reads host order); None otherwise."""
        if _LITTLE and not pa % width and pa >= 0:
            i = bisect.bisect_right(self._starts, pa) - 1
            off = pa & _CHUNK_MASK
            if i >= 0 and pa + nbytes <= self._ends[i] and off + nbytes <= CHUNK_SIZE:
                return pa >> _CHUNK_SHIFT, off
        return None

    def peek_window(self, pa: int, count: int, width: int) -> Sequence[int] | None:
        """The ``count`` words of ``width`` bytes at ``pa`` (a table page) as a
        read-only sequence of ints, indexed at the cost of a list's index; None when
        they are not aligned words of one region and one chunk (the caller then reads
        word by word, with the checks and errors of :meth:`read_u32`).

        Why: a table writer checks a few slots of one table per call; a counted word
        read each costs a bisect and a slice.  Like :meth:`peek_words` nothing is
        counted: the caller counts the reads it stands for (:meth:`count_reads`).  The
        view is live on the store, except that memory never written reads as a
        snapshot of zeros: use it within one call that does not write there first.
        """
        words = type(width) is int and width in (4, 8)
        if not (words and is_int(pa) and is_int(count) and count >= 0):
            raise InvalidArgumentError(
                f"peek_window: address {pa!r}, count {count!r} and width {width!r} must be "
                "ints, count >= 0, width 4 or 8"
            )
        at = self._window(int(pa), int(count) * width, width)
        if at is None:
            return None
        key, off = at
        code = _WORD_CODES[width]
        chunk = self._chunks.get(key)
        if chunk is None:
            return memoryview(bytes(count * width)).cast(code)
        return chunk.view[off : off + count * width].toreadonly().cast(code)

    def exchange_words(
        self, pa: int, width: int, indexes: Sequence[int], values: Sequence[int]
    ) -> list[int]:
        """Store ``values[k]`` as word ``indexes[k]`` of ``width`` bytes from ``pa``,
        one after the other, and return the word each store overwrote.  Counted as
        one word read and one word write each (what :meth:`read_u32` then
        :meth:`write_u32` per word count), the pages written marked touched.  Nothing
        is stored if an argument is bad or a word would hit a hole.

        Why: a table writer storing a few descriptors of one table keeps each table's
        count of valid entries from the words it overwrites; a read and a write call
        per descriptor cost two bisects and two slices.
        """
        code = _WORD_CODES.get(width) if type(width) is int else None
        if code is None or not is_int(pa) or pa < 0:
            raise InvalidArgumentError(
                f"exchange_words: address {pa!r} must be an int >= 0 and width {width!r} 4 or 8"
            )
        try:
            vals = array(code, values)
            idx = array("Q", indexes)
        except (TypeError, OverflowError) as exc:
            raise InvalidArgumentError(
                f"exchange_words: indexes must be ints >= 0 and values {width << 3}-bit "
                f"unsigned ints: {exc}"
            ) from exc
        if len(idx) != len(vals):
            raise InvalidArgumentError(
                f"exchange_words: {len(idx)} indexes need as many values, not {len(vals)}"
            )
        if not idx:
            return []
        pa, lo = int(pa), min(idx)
        start, nbytes = pa + lo * width, (max(idx) - lo + 1) * width
        at = self._window(start, nbytes, width)
        if at is None:  # words across regions or chunks: checked first, then one by one
            for i in idx:
                self._check(pa + i * width, width)
            old = []
            for i, value in zip(idx, vals, strict=True):  # counted as they go
                old.append(self._read_word(pa + i * width, width))
                self._write_word(pa + i * width, value, width)
            return old
        key, off = at
        chunk, _ = self._chunk(key)
        words = chunk.view[off : off + nbytes].cast(code)
        old = []
        for i, value in zip(idx, vals, strict=True):
            old.append(words[i - lo])
            words[i - lo] = value
        touched = chunk.touched
        for page in {(off + (i - lo) * width) >> _TRACK_SHIFT for i in idx}:
            touched[page] = True
        self.bytes_read += len(idx) * width
        self.bytes_written += len(idx) * width
        return old

    def read_words(self, pa: int, count: int, width: int) -> npt.NDArray[np.uint64]:
        """``count`` little-endian words of ``width`` (4 or 8) bytes, as uint64."""
        if width not in (4, 8):
            raise InvalidArgumentError(f"word width {width} must be 4 or 8")
        raw = self.read_array(pa, count * width)
        return raw.view("<u4" if width == 4 else "<u8").astype(np.uint64)

    def count_reads(self, nbytes: int) -> None:
        """Count ``nbytes`` read by walks made from :meth:`peek_words` results, as the
        word reads of those walks would have counted them."""
        if not is_int(nbytes) or nbytes < 0:
            raise InvalidArgumentError(f"count_reads: {nbytes!r} is not a byte count >= 0")
        self.bytes_read += int(nbytes)

    def peek_words(
        self, addrs: npt.NDArray[np.uint64], width: int
    ) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.bool_]]:
        """Little-endian words of ``width`` bytes at each of ``addrs`` (aligned to
        ``width``), and which addresses are backed (the others read 0).

        A gather for walks done ahead of time: nothing is counted, since a walk that
        the model then does not make must not show as traffic; the caller counts the
        reads it uses.
        """
        if width not in (4, 8):
            raise InvalidArgumentError(f"word width {width} must be 4 or 8")
        addrs = np.asarray(addrs, dtype=np.uint64)
        if addrs.size and bool((addrs & np.uint64(width - 1)).any()):
            raise InvalidArgumentError(f"peek_words: addresses must be aligned to {width}")
        if not addrs.size:
            return np.zeros(addrs.shape, dtype=np.uint64), np.zeros(addrs.shape, dtype=np.bool_)
        dtype = "<u4" if width == 4 else "<u8"
        lo, hi = int(addrs.min()), int(addrs.max())
        i = bisect.bisect_right(self._starts, lo) - 1
        everywhere = i >= 0 and hi + width <= self._ends[i]  # one region holds them all
        if everywhere:
            backed = np.ones(addrs.shape, dtype=np.bool_)
        else:
            starts = np.asarray(self._starts, dtype=np.uint64)
            ends = np.asarray(self._ends, dtype=np.uint64)
            region = np.searchsorted(starts, addrs, side="right") - 1
            backed = region >= 0
            backed[backed] = addrs[backed] + np.uint64(width) <= ends[region[backed]]
        at_shift = np.uint64(width.bit_length() - 1)
        if lo >> _CHUNK_SHIFT == hi >> _CHUNK_SHIFT:  # one chunk holds them all
            chunk = self._chunks.get(lo >> _CHUNK_SHIFT)
            if chunk is None:
                return np.zeros(addrs.shape, dtype=np.uint64), backed
            at = (addrs & np.uint64(_CHUNK_MASK)) >> at_shift
            if everywhere:  # the usual case (tables in one chunk): one gather
                return chunk.data.view(dtype)[at].astype(np.uint64), backed
            words = np.zeros(addrs.shape, dtype=np.uint64)
            words[backed] = chunk.data.view(dtype)[at[backed]]
            return words, backed
        words = np.zeros(addrs.shape, dtype=np.uint64)
        keys = addrs >> np.uint64(_CHUNK_SHIFT)
        first, last = lo >> _CHUNK_SHIFT, hi >> _CHUNK_SHIFT
        # a few chunks (a table window): try each; else only the keys present
        candidates = (
            range(first, last + 1) if last - first < 8 else np.unique(keys[backed]).tolist()
        )
        for key in candidates:
            chunk = self._chunks.get(key)
            if chunk is None:
                continue
            sel = np.flatnonzero(backed & (keys == np.uint64(key)))
            at = (addrs[sel] & np.uint64(_CHUNK_MASK)) >> at_shift
            words[sel] = chunk.data.view(dtype)[at]
        return words, backed

    # -- accounting and snapshots ----------------------------------------------------------

    def resident_bytes(self) -> int:
        """Bytes of memory that have ever been written (4 KiB granularity)."""
        return sum(int(c.touched.sum()) for c in self._chunks.values()) * TRACK_PAGE

    def store_bytes(self) -> int:
        """Bytes of chunk store created so far (the upper bound of what the host pays)."""
        return len(self._chunks) * CHUNK_SIZE

    def digest(self) -> str:
        """A hash of every non-zero page's address and contents: equal digests, equal memory."""
        h = hashlib.sha256()
        for key in sorted(self._chunks):
            chunk = self._chunks[key]
            for page in np.flatnonzero(chunk.touched):
                off = int(page) << _TRACK_SHIFT
                data = chunk.data[off : off + TRACK_PAGE]
                if data.any():
                    h.update(((key << _CHUNK_SHIFT) + off).to_bytes(8, "little"))
                    h.update(data.tobytes())
        return h.hexdigest()

    def __repr__(self) -> str:
        regions = ", ".join(f"{r.name}{r.range}" for r in self._regions)
        return f"PhysicalMemory({regions})"
