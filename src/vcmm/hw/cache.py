"""The CPU's data cache: physically indexed, physically tagged, holding real line data.

The cache exists so that vcmm's memory can go stale the way a real SoC's does.  A CPU
write through a write-back mapping sits dirty in a line while physical memory still
holds the old bytes; a non-coherent device reading memory sees those old bytes until
someone cleans the line.  A device writing memory behind the CPU's back leaves a clean
but stale line that the CPU keeps reading until it is invalidated.  The DMA API's sync
calls exist to manage exactly this, with the maintenance operations by physical range
offered here (clean, invalidate, clean+invalidate).

The policy of each access comes from the memory type of the mapping it went through
(:class:`vcmm.attrs.MemType`).  Device and Strongly-ordered accesses, and every
non-cacheable write, go to memory without touching a line.  A Normal non-cacheable
*read* searches the cache first, as King describes ARMv6/v7 cores doing (seed 000
L2075-2094), and a line found there answers with its bytes.  Only a cacheable alias of
the page (a CPU access, a speculative prefetch) can have put that line there: the ARMv7
ARM calls such mismatched attributes UNPREDICTABLE (uniprocessor semantics and
coherency may be lost), and the graph refuses them.  ``uncached_lookup = False``
selects the other outcome, a bypass.  Either way a dirty line of the cacheable alias
overwrites memory when it is evicted or cleaned.

State lives in numpy arrays indexed ``[set, way]``: tags, valid and dirty bits, last-use
ticks for LRU, and the line data itself (``[set, way, byte]``).  Multi-line accesses
advance in *chunks* of ``sets`` consecutive lines; the lines of one chunk fall into
distinct sets, so they cannot interact and each chunk is one vectorised step.  Chunks do
interact (they reuse the same sets), so they run in order; for long accesses the middle
chunks are settled in bulk (see :meth:`DataCache._bulk_middle`), so reading 8 MiB costs
a handful of numpy steps, not 131072 lines of Python.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from vcmm.attrs import MemType
from vcmm.checks import is_int
from vcmm.errors import BusError, InvalidArgumentError
from vcmm.hw.cacheconfig import MAX_LINE, MIN_LINE, CacheConfig, CacheCounters, CacheSnapshot
from vcmm.hw.cacheheld import HeldLines
from vcmm.hw.lineruns import LineAccess, LineMode, runs, runs_of
from vcmm.hw.memory import Bytes, PhysicalMemory, as_u8
from vcmm.ranges import AddressRange

__all__ = ["MAX_LINE", "MIN_LINE", "CacheConfig", "CacheCounters", "CacheSnapshot", "DataCache"]

U8 = npt.NDArray[np.uint8]
I64 = npt.NDArray[np.int64]
_NONE: I64 = np.zeros(0, dtype=np.int64)  # no lines (callers only index with it)
_INT64_MAX = (1 << 63) - 1


class DataCache(HeldLines):
    """A write-back data cache over :class:`PhysicalMemory`, policy chosen per access.

    =================  ==============  ===================================================
    memory type        read            write
    =================  ==============  ===================================================
    NORMAL_WB_WA       allocate        allocate, dirty; memory updated on eviction/clean
    NORMAL_WB_NWA      allocate        hit: line updated, dirty; miss: memory, no alloc
    NORMAL_WT          allocate        memory always; line updated if present (no dirty)
    NORMAL_NC          memory; cached  memory only; a cached line is left as it was
                       lines win (*)
    DEVICE,            memory only     memory only; the cache is not looked at
    STRONGLY_ORDERED
    =================  ==============  ===================================================

    (*) Only with a mismatched cacheable alias, and only while :attr:`uncached_lookup`
    is True (the default); the lookup allocates nothing and moves no LRU position.
    Replacement is LRU per set (an invalid way is used first).  Every cacheable access,
    hit or fill, makes its line the most recently used.
    """

    def __init__(self, memory: PhysicalMemory, config: CacheConfig | None = None) -> None:
        if not isinstance(memory, PhysicalMemory):
            raise InvalidArgumentError(
                f"DataCache needs a PhysicalMemory, got {type(memory).__name__}"
            )
        if config is None:
            config = CacheConfig()
        if not isinstance(config, CacheConfig):
            raise InvalidArgumentError(f"DataCache config {config!r} is not a CacheConfig")
        self._memory = memory
        self._cfg = config
        sets, ways = config.sets, config.ways
        self._tags: I64 = np.full((sets, ways), -1, dtype=np.int64)  # -1: no line
        self._valid = np.zeros((sets, ways), dtype=np.bool_)
        self._dirty = np.zeros((sets, ways), dtype=np.bool_)
        #: Tick of the last use of each way; the smallest valid tick in a set is its LRU.
        self._age: I64 = np.zeros((sets, ways), dtype=np.int64)
        self._data: U8 = np.zeros((sets, ways, config.line), dtype=np.uint8)
        self._set_index: I64 = np.arange(sets, dtype=np.int64)[:, None]
        self._clock = 0
        self._counters = CacheCounters()
        self._uncached_lookup = True
        # Geometry as plain ints for the hot paths (CacheConfig computes its properties).
        self._line_shift, self._tag_shift = config.line_shift, config.set_shift
        self._set_mask = sets - 1

    # -- properties and introspection ------------------------------------------------------

    @property
    def config(self) -> CacheConfig:
        return self._cfg

    @property
    def memory(self) -> PhysicalMemory:
        return self._memory

    @property
    def uncached_lookup(self) -> bool:
        """Whether a Normal non-cacheable read searches the cache (default True): a
        line a cacheable alias left there then answers it, as on King's ARMv6/v7 cores.
        False reads memory without a lookup.  Without such an alias both read memory."""
        return self._uncached_lookup

    @uncached_lookup.setter
    def uncached_lookup(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise InvalidArgumentError(f"cache uncached_lookup {value!r} is not a bool")
        self._uncached_lookup = value

    @property
    def counters(self) -> CacheCounters:
        """A copy of the event counters."""
        return dataclasses.replace(self._counters)

    def contains(self, pa: int) -> bool:
        """Whether the line holding physical address ``pa`` is in the cache."""
        return self._find(self._address("contains", pa)) is not None

    def is_dirty(self, pa: int) -> bool:
        """Whether the line holding ``pa`` is cached and newer than memory."""
        where = self._find(self._address("is_dirty", pa))
        return where is not None and bool(self._dirty[where])

    def lines(self) -> list[tuple[int, bool]]:
        """Every cached line as ``(line physical address, dirty)``, sorted by address."""
        s, w = np.nonzero(self._valid)
        addrs = (self._line_numbers()[s, w] << self._cfg.line_shift).tolist()
        dirty = self._dirty[s, w].tolist()
        return sorted(zip(addrs, dirty, strict=True))

    def snapshot(self) -> CacheSnapshot:
        """Everything that defines the cache's state, as an equality-comparable value."""
        return CacheSnapshot(
            tags=self._tags.tobytes(),
            valid=self._valid.tobytes(),
            dirty=self._dirty.tobytes(),
            ages=self._age.tobytes(),
            data=self._data.tobytes(),
            clock=self._clock,
            counters=dataclasses.astuple(self._counters),
            uncached_lookup=self._uncached_lookup,
        )

    def __repr__(self) -> str:
        c = self._cfg
        return (
            f"DataCache({c.size} bytes, {c.ways}-way, {c.line}-byte lines, "
            f"{int(self._valid.sum())} valid, {int(self._dirty.sum())} dirty)"
        )

    # -- CPU accesses ---------------------------------------------------------------------

    def read(self, pa: int, length: int, memtype: MemType) -> bytes:
        """What the CPU reads at ``[pa, pa+length)`` through a mapping of ``memtype``."""
        pa, length = self._span("read", pa, length)
        self._memtype("read", memtype)
        if length == 0:
            return b""
        self._require_backed("read", pa, length)
        if not memtype.cacheable:
            self._counters.bypasses += 1
            if memtype is not MemType.NORMAL_NC or not self._uncached_lookup:
                return self._memory.read(pa, length)
            data, hits = self._with_cached_lines(pa, length)
            self._counters.uncached_hits += hits
            return data
        acc = self._begin(pa, length, LineMode.READ)
        acc.out = np.empty(acc.n * self._cfg.line, dtype=np.uint8)
        self._run(acc)
        return acc.out[acc.off : acc.off + length].tobytes()

    def write(self, pa: int, data: Bytes, memtype: MemType) -> None:
        """The CPU stores ``data`` at ``pa`` through a mapping of ``memtype``."""
        pa = self._address("write", pa)
        self._memtype("write", memtype)
        src = as_u8(data).copy()  # a private copy: data may alias memory or the caller's
        length = int(src.size)
        if length == 0:
            return
        self._require_backed("write", pa, length)
        if not memtype.cacheable:
            self._counters.bypasses += 1
            self._memory.write(pa, src)
        elif memtype is MemType.NORMAL_WB_WA:
            acc = self._begin(pa, length, LineMode.WRITE)
            acc.src = src
            self._run(acc)
        else:
            self._write_no_allocate(pa, src, write_through=memtype is MemType.NORMAL_WT)

    # -- speculative fills ----------------------------------------------------------------

    def fill_line(self, pa: int) -> bool:
        """Speculatively load the line holding ``pa``; ``True`` if it was not cached.

        A speculative fill is clean, may evict (writing a dirty victim back) and, like
        any access, makes the line the most recently used.
        """
        pa = self._address("fill_line", pa)
        self._require_backed("fill_line", pa, 1)
        return self._fill(pa, 1) == 1

    def fill_range(self, pa: int, length: int) -> int:
        """Speculatively load every line overlapping ``[pa, pa+length)``; lines newly filled."""
        pa, length = self._span("fill_range", pa, length)
        if length == 0:
            return 0
        self._require_backed("fill_range", pa, length)
        return self._fill(pa, length)

    def _fill(self, pa: int, length: int) -> int:
        acc = self._begin(pa, length, LineMode.PREFETCH)
        self._run(acc)
        self._counters.prefetch_fills += acc.filled
        return acc.filled

    # -- coherent devices -------------------------------------------------------------------

    def snoop_read(self, pa: int, length: int) -> bytes:
        """What a coherent device reads: memory, with every cached line's data on top."""
        pa, length = self._span("snoop_read", pa, length)
        if length == 0:
            return b""
        self._require_backed("snoop_read", pa, length)
        data, hits = self._with_cached_lines(pa, length)
        self._counters.snoop_hits += hits
        return data

    def _with_cached_lines(self, pa: int, length: int) -> tuple[bytes, int]:
        """Memory's bytes with cached lines' bytes on top, and the lines found (a lookup:
        nothing is allocated, no LRU position moves)."""
        first, n, off = self._geometry(pa, length)
        s, w, idx = self._present(first, n)
        if not idx.size:
            return self._memory.read(pa, length), 0
        span = np.empty(n * self._cfg.line, dtype=np.uint8)
        span[off : off + length] = self._memory.read_array(pa, length)
        span.reshape(n, self._cfg.line)[idx] = self._data[s, w]
        return span[off : off + length].tobytes(), int(idx.size)

    def snoop_write(self, pa: int, data: Bytes) -> None:
        """A coherent device's write: memory is written and cached copies are updated.

        Cached copies are updated in place rather than invalidated: a partial-line write
        must not throw away the dirty bytes of the rest of the line, and updating keeps
        the dirty bit meaning "some byte is newer than memory".  The CPU did not use the
        line, so its LRU position does not move.
        """
        pa = self._address("snoop_write", pa)
        src = as_u8(data).copy()
        length = int(src.size)
        if length == 0:
            return
        self._require_backed("snoop_write", pa, length)
        self._memory.write(pa, src)
        first, n, off = self._geometry(pa, length)
        s, w, idx = self._present(first, n)
        if idx.size:
            self._merge_into_lines(s, w, idx, n, off, src)
            self._counters.snoop_hits += int(idx.size)

    # -- maintenance by physical range --------------------------------------------------------

    def clean(self, pa: int, length: int) -> int:
        """Write back the dirty lines overlapping the range and keep them; lines written."""
        mask = self._range_mask("clean", pa, length)
        return self._clean_mask(mask & self._dirty)

    def invalidate(self, pa: int, length: int) -> int:
        """Drop every line overlapping the range; lines dropped.

        Dirty data in those lines is LOST, as on hardware: invalidation is only safe when
        memory holds the truth (after a device wrote it).  A range that covers part of a
        line drops the whole line; maintenance for a transfer that must keep
        neighbouring bytes goes through :func:`vcmm.hw.cachesync.dma_sync`, which
        cleans and invalidates such edge lines instead.
        """
        mask = self._range_mask("invalidate", pa, length)
        return self._drop_mask(mask)

    def clean_invalidate(self, pa: int, length: int) -> int:
        """Write back dirty lines overlapping the range, then drop them all; lines dropped."""
        mask = self._range_mask("clean_invalidate", pa, length)
        self._clean_mask(mask & self._dirty)
        return self._drop_mask(mask)

    def clean_all(self) -> int:
        """Write back every dirty line (they stay valid); lines written."""
        return self._clean_mask(self._valid & self._dirty)

    def invalidate_all(self) -> int:
        """Drop every line, losing dirty data; lines dropped."""
        return self._drop_mask(self._valid.copy())

    def clean_invalidate_all(self) -> int:
        """Write back every dirty line, then drop everything; lines dropped."""
        self._clean_mask(self._valid & self._dirty)
        return self._drop_mask(self._valid.copy())

    def _range_mask(self, op: str, pa: int, length: int) -> npt.NDArray[np.bool_]:
        pa, length = self._span(op, pa, length)
        if length == 0:
            return np.zeros_like(self._valid)
        self._require_backed(op, pa, length)
        first, n, _ = self._geometry(pa, length)
        numbers = self._line_numbers()
        mask: npt.NDArray[np.bool_] = self._valid & (numbers >= first) & (numbers < first + n)
        return mask

    def _clean_mask(self, mask: npt.NDArray[np.bool_]) -> int:
        s, w = np.nonzero(mask)
        if s.size:
            self._write_lines(self._line_numbers()[s, w], self._data[s, w])
            self._dirty[s, w] = False
            self._counters.writebacks += int(s.size)
        return int(s.size)

    def _drop_mask(self, mask: npt.NDArray[np.bool_]) -> int:
        count = int(mask.sum())
        self._valid[mask] = False
        self._dirty[mask] = False
        self._tags[mask] = -1
        return count

    # -- validation ---------------------------------------------------------------------------

    @staticmethod
    def _address(op: str, pa: object) -> int:
        if not is_int(pa):
            raise InvalidArgumentError(f"cache {op}: address {pa!r} is not an integer")
        if pa < 0:
            raise InvalidArgumentError(f"cache {op}: address {int(pa):#x} is negative")
        return int(pa)

    @classmethod
    def _span(cls, op: str, pa: object, length: object) -> tuple[int, int]:
        address = cls._address(op, pa)
        if not is_int(length):
            raise InvalidArgumentError(f"cache {op}: length {length!r} is not an integer")
        if length < 0:
            raise InvalidArgumentError(f"cache {op} at {address:#x}: length {length} is negative")
        return address, int(length)

    @staticmethod
    def _memtype(op: str, memtype: object) -> None:
        if not isinstance(memtype, MemType):
            raise InvalidArgumentError(f"cache {op}: memtype {memtype!r} is not a MemType")

    def check_backed(self, op: str, pa: int, length: int) -> None:
        """Raise BusError unless ``[pa, pa+length)`` is all memory; ``op`` names the caller.

        For components that feed addresses to the cache (the prefetcher) and want to
        refuse a bad range before they change anything.
        """
        if not isinstance(op, str):
            raise InvalidArgumentError(f"check_backed: operation name {op!r} is not a string")
        pa, length = self._span(op, pa, length)
        self._require_backed(op, pa, length)

    def _require_backed(self, op: str, pa: int, length: int) -> None:
        """Raise BusError naming the first unbacked address before anything changes."""
        addr, end = pa, pa + length
        while addr < end:
            try:
                region = self._memory.region_at(addr)
            except BusError:
                raise BusError(
                    f"cache {op} of {AddressRange(pa, length)}: physical address {addr:#x} "
                    "is in a hole of the address map",
                    addr,
                ) from None
            addr = region.range.end

    # -- line bookkeeping ---------------------------------------------------------------------

    def _line_numbers(self) -> I64:
        """Line number (pa >> line_shift) held by each way, valid or not."""
        numbers: I64 = (self._tags << self._cfg.set_shift) | self._set_index
        return numbers

    def _geometry(self, pa: int, length: int) -> tuple[int, int, int]:
        """First line number, line count and offset in the first line of a byte range."""
        shift = self._line_shift
        first = pa >> shift
        return first, ((pa + length - 1) >> shift) - first + 1, pa - (first << shift)

    def _find(self, pa: int) -> tuple[int, int] | None:
        number = pa >> self._cfg.line_shift
        s = number & (self._cfg.sets - 1)
        hit = self._valid[s] & (self._tags[s] == number >> self._cfg.set_shift)
        if not hit.any():
            return None
        return s, int(hit.argmax())

    def _present(self, first: int, n: int) -> tuple[I64, I64, I64]:
        """Sets, ways and access indexes of the cached lines among lines first..first+n-1.

        One line (most CPU accesses) is ruled out by its set's tags in Python (an invalid
        way's tag is -1); a few probe only their own sets; many scan the whole cache.
        """
        mask, shift = self._set_mask, self._tag_shift
        if n == 1 and first >> shift not in self._tags[first & mask].tolist():
            return _NONE, _NONE, _NONE
        if n > mask + 1:
            numbers = self._line_numbers()
            s, w = np.nonzero(self._valid & (numbers >= first) & (numbers < first + n))
            return s, w, numbers[s, w] - first
        lines = np.arange(first, first + n, dtype=np.int64)
        sets = lines & mask
        idx, w = np.nonzero(self._valid[sets] & (self._tags[sets] == (lines >> shift)[:, None]))
        return sets[idx], w, idx

    def _merge_into_lines(self, s: I64, w: I64, idx: I64, n: int, off: int, src: U8) -> None:
        """Overlay span bytes ``[off, off+len(src))`` onto the cached lines ``idx``."""
        line = self._cfg.line
        span = np.empty(n * line, dtype=np.uint8)
        lines = span.reshape(n, line)
        lines[idx] = self._data[s, w]
        span[off : off + src.size] = src
        self._data[s, w] = lines[idx]

    def _read_lines(self, numbers: I64) -> U8:
        """Memory contents of the given ascending line numbers, as ``[k, line]``."""
        line, shift = self._cfg.line, self._cfg.line_shift
        out = np.empty((numbers.size, line), dtype=np.uint8)
        for a, b in runs(numbers):
            out[a:b] = self._memory.read_array(int(numbers[a]) << shift, (b - a) * line).reshape(
                b - a, line
            )
        return out

    def _write_lines(self, numbers: I64, data: U8) -> None:
        """Write whole lines to memory, one memory write per run of consecutive lines."""
        order = np.argsort(numbers, kind="stable")
        numbers, data = numbers[order], data[order]
        shift = self._cfg.line_shift
        for a, b in runs(numbers):
            self._memory.write(int(numbers[a]) << shift, data[a:b].reshape(-1))

    # -- non-allocating writes -------------------------------------------------------------------

    def _write_no_allocate(self, pa: int, src: U8, *, write_through: bool) -> None:
        """WB_NWA and WT writes: present lines are updated, nothing is allocated.

        Without allocation nothing is evicted, so lines of one access cannot interact and
        the whole access is one vectorised step.
        """
        length = int(src.size)
        first, n, off = self._geometry(pa, length)
        s, w, idx = self._present(first, n)
        base = self._tick(n)
        if idx.size:
            self._merge_into_lines(s, w, idx, n, off, src)
            self._age[s, w] = base + idx
            if not write_through:
                self._dirty[s, w] = True
        self._counters.hits += int(idx.size)
        self._counters.misses += n - int(idx.size)
        if write_through:
            self._memory.write(pa, src)
            return
        cached = np.zeros(n, dtype=np.bool_)
        cached[idx] = True
        line = self._cfg.line
        for a, b in runs_of(~cached):
            lo, hi = max(a * line, off), min(b * line, off + length)
            self._memory.write(pa - off + lo, src[lo - off : hi - off])

    # -- the allocating engine ---------------------------------------------------------------------

    def _tick(self, n: int) -> int:
        """Reserve ``n`` consecutive use ticks; line ``i`` of an access uses ``base + i``."""
        base = self._clock
        self._clock += n
        return base

    def _begin(self, pa: int, length: int, mode: LineMode) -> LineAccess:
        first, n, off = self._geometry(pa, length)
        return LineAccess(first, n, mode, off, length, self._tick(n))

    def _run(self, acc: LineAccess) -> None:
        """Perform an allocating access line by line in effect, chunk by chunk in fact.

        A chunk is ``sets`` consecutive lines: each falls in a different set, so the
        chunk is one vectorised step.  When the access has at least ``3 * ways`` chunks,
        the first ``ways`` chunks and the last ``ways`` run as steps and the middle (at
        least ``ways`` chunks, enough to push every earlier line out) is settled in bulk.
        """
        if acc.n == 1:
            self._single(acc)
            return
        sets, ways = self._cfg.sets, self._cfg.ways
        chunks = -(-acc.n // sets)
        if chunks >= 3 * ways:
            head = [self._step(acc, c * sets, sets) for c in range(ways)]
            self._bulk_middle(acc, head, chunks)
            start = chunks - ways
        else:
            start = 0
        for c in range(start, chunks):
            self._step(acc, c * sets, min(sets, acc.n - c * sets))

    def _single(self, acc: LineAccess) -> None:
        """The one-line case of :meth:`_step` with scalars: most CPU accesses are this."""
        cfg = self._cfg
        number, line = acc.first, cfg.line
        s, tag = number & (cfg.sets - 1), number >> cfg.set_shift
        valid = self._valid[s]
        match = np.flatnonzero(valid & (self._tags[s] == tag))
        if match.size:
            w = int(match[0])
        else:
            free = np.flatnonzero(~valid)
            w = int(free[0]) if free.size else int(self._age[s].argmin())
            if valid[w]:
                self._counters.evictions += 1
                if self._dirty[s, w]:
                    victim = ((int(self._tags[s, w]) << cfg.set_shift) | s) << cfg.line_shift
                    self._memory.write(victim, self._data[s, w])
                    self._counters.writebacks += 1
            if acc.mode is not LineMode.WRITE or acc.length < line:
                self._data[s, w] = self._memory.read_array(number << cfg.line_shift, line)
            self._tags[s, w] = tag
            self._valid[s, w] = True
            self._dirty[s, w] = False
            self._counters.fills += 1
            acc.filled += 1
        if acc.mode is not LineMode.PREFETCH:
            if match.size:
                self._counters.hits += 1
            else:
                self._counters.misses += 1
        self._age[s, w] = acc.base_tick
        if acc.mode is LineMode.READ:
            assert acc.out is not None
            acc.out[:] = self._data[s, w]
        elif acc.mode is LineMode.WRITE:
            assert acc.src is not None
            self._data[s, w, acc.off : acc.off + acc.length] = acc.src
            self._dirty[s, w] = True

    def _step(self, acc: LineAccess, i0: int, m: int) -> I64:
        """Access lines ``i0 .. i0+m-1`` of ``acc`` (distinct sets); return their ways."""
        cfg = self._cfg
        idx = np.arange(i0, i0 + m, dtype=np.int64)
        numbers = acc.first + idx
        sets = numbers & (cfg.sets - 1)
        tags = numbers >> cfg.set_shift
        match = self._valid[sets] & (self._tags[sets] == tags[:, None])
        hit = match.any(axis=1)
        ways: I64 = match.argmax(axis=1)
        miss = np.flatnonzero(~hit)
        if miss.size:
            ms = sets[miss]
            free = ~self._valid[ms]
            victims = np.where(free.any(axis=1), free.argmax(axis=1), self._age[ms].argmin(axis=1))
            ways[miss] = victims
            self._evict(ms, victims)
            self._data[ms, victims] = self._fill_data(acc, idx[miss], numbers[miss])
            self._tags[ms, victims] = tags[miss]
            self._valid[ms, victims] = True
            self._dirty[ms, victims] = False
            self._counters.fills += int(miss.size)
            acc.filled += int(miss.size)
        if acc.mode is not LineMode.PREFETCH:
            self._counters.hits += m - int(miss.size)
            self._counters.misses += int(miss.size)
        self._age[sets, ways] = acc.base_tick + idx
        line = cfg.line
        if acc.mode is LineMode.READ:
            assert acc.out is not None
            acc.out[i0 * line : (i0 + m) * line] = self._data[sets, ways].reshape(-1)
        elif acc.mode is LineMode.WRITE:
            assert acc.src is not None
            merged = self._data[sets, ways]
            flat = merged.reshape(-1)
            lo, hi = max(acc.off, i0 * line), min(acc.off + acc.length, (i0 + m) * line)
            flat[lo - i0 * line : hi - i0 * line] = acc.src[lo - acc.off : hi - acc.off]
            self._data[sets, ways] = merged
            self._dirty[sets, ways] = True
        return ways

    def _fill_data(self, acc: LineAccess, idx: I64, numbers: I64) -> U8:
        """Data for newly allocated lines: memory, except lines a write fully overwrites."""
        if acc.mode is not LineMode.WRITE:
            return self._read_lines(numbers)
        out = np.zeros((idx.size, self._cfg.line), dtype=np.uint8)
        partial = ((idx == 0) & (acc.off > 0)) | (
            (idx == acc.n - 1) & (acc.off + acc.length < acc.n * self._cfg.line)
        )
        if partial.any():
            out[partial] = self._read_lines(numbers[partial])
        return out

    def _evict(self, sets: I64, ways: I64) -> None:
        """Displace the lines in ``(sets, ways)``: count valid ones, write back dirty ones."""
        valid = self._valid[sets, ways]
        dirty = valid & self._dirty[sets, ways]
        self._counters.evictions += int(valid.sum())
        if dirty.any():
            ds, dw = sets[dirty], ways[dirty]
            self._write_lines(self._line_numbers()[ds, dw], self._data[ds, dw])
            self._counters.writebacks += int(dirty.sum())
        self._valid[sets, ways] = False
        self._dirty[sets, ways] = False

    def _bulk_middle(self, acc: LineAccess, head: list[I64], chunks: int) -> None:
        """Settle chunks ``ways .. chunks-ways-1`` of a long access without stepping.

        Why this is exact: after the ``ways`` head chunks (all full), every set holds
        exactly its ``ways`` head lines, because each chunk touched every set with a line
        that became most recent.  Every middle line is therefore a miss; each one
        replaces the least recent line of its set, which is the line of the same set
        ``ways`` chunks earlier, so chunk ``c`` lands in the way of head chunk
        ``c % ways``.  The head lines are evicted first, then every middle line but the
        last ``ways`` chunks' is filled and evicted in turn: for a read or prefetch that
        leaves memory as it was, for a write it leaves the new (full-line) bytes in
        memory.  The last ``ways`` middle chunks stay cached, and the tail chunks then
        run as ordinary steps.
        """
        cfg = self._cfg
        sets, ways, line = cfg.sets, cfg.ways, cfg.line
        row = np.arange(sets, dtype=np.int64)
        set_of = (acc.first + row) & (sets - 1)
        self._evict(np.tile(set_of, ways), np.concatenate(head))
        lo, keep, hi = ways * sets, (chunks - 2 * ways) * sets, (chunks - ways) * sets
        self._counters.fills += hi - lo
        self._counters.evictions += keep - lo
        acc.filled += hi - lo
        if acc.mode is not LineMode.PREFETCH:
            self._counters.misses += hi - lo
        span_pa = acc.first << cfg.line_shift
        if acc.mode is LineMode.WRITE:
            assert acc.src is not None
            self._memory.write(
                span_pa + lo * line, acc.src[lo * line - acc.off : keep * line - acc.off]
            )
            self._counters.writebacks += keep - lo
        elif acc.mode is LineMode.READ:
            assert acc.out is not None
            acc.out[lo * line : keep * line] = self._memory.read_array(
                span_pa + lo * line, (keep - lo) * line
            )
        for c in range(chunks - 2 * ways, chunks - ways):
            i0 = c * sets
            w = head[c % ways]
            if acc.mode is LineMode.WRITE:
                assert acc.src is not None
                data = acc.src[i0 * line - acc.off : (i0 + sets) * line - acc.off]
            else:
                data = self._memory.read_array(span_pa + i0 * line, sets * line)
            if acc.out is not None:
                acc.out[i0 * line : (i0 + sets) * line] = data
            self._data[set_of, w] = data.reshape(sets, line)
            self._tags[set_of, w] = (acc.first + i0 + row) >> cfg.set_shift
            self._valid[set_of, w] = True
            self._dirty[set_of, w] = acc.mode is LineMode.WRITE
            self._age[set_of, w] = acc.base_tick + i0 + row
