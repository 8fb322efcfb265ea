"""The mapping graph: every mapping of every physical page, and the rules they obey.

The seed pictures map management as a graph whose edges run from bus masters through
VCMs and reservations to physical memory (000 L68-96).  The reviewers added the rules
that make the graph worth having:

- **No conflicting aliases.**  On ARMv6+ every mapping of a physical page must agree on
  memory type, cache policy and shareability; permissions may differ (King, L2075-2094,
  L2673-2757).  Speculative prefetch through a cacheable alias fills lines that an
  uncached alias never sees, so the architecture calls mismatches unpredictable.  The
  kernel's linear map of system RAM is such an alias, always present, so an uncached
  mapping of kernel RAM is refused.  Allocation hints (write-allocate or not) count as
  cache policy too: on ARM they live in the same TEX/C/B bits (King, L2720).
- **One security state per page.**  Everything here runs in the Non-secure world,
  which maps with NS=1 (the linear map included); an ``Attr.SECURE`` reservation maps
  with NS=0, which on a TrustZone bus names the *Secure* physical address space, a
  different memory from the Non-secure page at the same address.  So a secure alias
  of a page some other mapping reaches non-secure is refused like a memory-type
  mismatch (secure buffers come from carve-outs outside the linear map).
- **Shareable once shared.**  The graph counts the address spaces mapping each page;
  when a second one maps it, every mapping of it gets the shareable bit, and when it
  drops back to one the bit is cleared (Pfeffer, L1978-1992).  Kernel RAM is always
  shareable, as the linear map of SMP ARM is.  Because the bit is set on every alias at
  once, shareability never disagrees between aliases.

The graph is keyed by *physical range*, not by how memory was handed out: an edge
(:class:`Mapping`) covers some physical bytes, and a :class:`PhysIndex` of segments
finds every edge covering any byte, whatever pieces the mappings were made of (a
whole chunk, a page inside it, a caller's buffer across two chunks).  The sharing
rule is evaluated per segment, the finest unit at which the set of address spaces can
change, so each edge has one shareable bit: the backing code splits an edge where the
rule starts to differ along it.  Every edge is keyed by ``(reservation id, va)``;
the linear map's windows are edges too (reservation id ``None``).

``check_attributes`` switches the conflict rule off, to demonstrate the corruption it
prevents (with the CPU's speculative prefetch).
"""

from __future__ import annotations

import bisect
import collections
import itertools
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vcmm.attrs import MemType, PageAttrs
from vcmm.core.lazyindex import LazyIndex
from vcmm.core.physindex import PhysIndex
from vcmm.errors import AttributeConflictError
from vcmm.ranges import AddressRange

#: Address-space key of the CPU's kernel address space (linear map and VMM VCMs).
KERNEL_SPACE = "cpu"

#: An edge's key: ``(reservation id, va)``; the linear map's windows have ``None``.
Key = tuple[int | None, int]


@dataclass(frozen=True, slots=True)
class Mapping:
    """One edge: address space ``space`` maps ``phys`` at ``va`` with ``attrs``.

    ``res_id`` is the reservation that made the mapping (``None`` for the linear map);
    ``chunk`` is the allocation chunk ``phys`` lies in (what the graph export draws the
    edge to; ``None`` for the linear map).
    """

    space: str
    owner: str
    phys: AddressRange
    va: int
    attrs: PageAttrs
    res_id: int | None = None
    chunk: AddressRange | None = None

    @property
    def key(self) -> Key:
        return (self.res_id, self.va)

    @property
    def va_range(self) -> AddressRange:
        return AddressRange(self.va, self.phys.size)

    def describe(self) -> str:
        return (
            f"{self.owner} maps {self.phys} at {self.va:#x} as {self.attrs.memtype.value}"
            f"{' shareable' if self.attrs.shareable else ''}"
            f"{' non-secure' if self.attrs.ns else ' secure'}"
        )

    def with_attrs(self, attrs: PageAttrs) -> Mapping:
        return Mapping(self.space, self.owner, self.phys, self.va, attrs, self.res_id, self.chunk)

    def part(self, start: int, end: int, attrs: PageAttrs | None = None) -> Mapping:
        """The sub-edge over physical ``[start, end)`` (inside ``phys``)."""
        return Mapping(
            self.space,
            self.owner,
            AddressRange(start, end - start),
            self.va + (start - self.phys.start),
            self.attrs if attrs is None else attrs,
            self.res_id,
            self.chunk,
        )


_SET_FIELDS = tuple(
    getattr(Mapping, name).__set__
    for name in ("space", "owner", "phys", "va", "attrs", "res_id", "chunk")
)


def private_edges(
    space: str,
    owner: str,
    attrs: PageAttrs,
    res_id: int,
    pieces: Iterable[tuple[int, AddressRange, AddressRange]],
) -> list[Mapping]:
    """``Mapping(space, owner, phys, va, attrs, res_id, chunk)`` for every ``(va, phys,
    chunk)`` of ``pieces``: the edges of a backing of fresh memory.  Equal to what the
    constructor gives (Mapping has no checks), but each field is stored through its
    slot: the frozen dataclass constructor's ``object.__setattr__`` per field is half
    the cost of the 16384 edges of a backing of separate pages."""
    new = object.__new__
    s_space, s_owner, s_phys, s_va, s_attrs, s_res, s_chunk = _SET_FIELDS
    out = []
    for va, phys, chunk in pieces:
        m = new(Mapping)
        s_space(m, space)
        s_owner(m, owner)
        s_phys(m, phys)
        s_va(m, va)
        s_attrs(m, attrs)
        s_res(m, res_id)
        s_chunk(m, chunk)
        out.append(m)
    return out


def share_rule(aliases: Iterable[Mapping]) -> bool:
    """The sharing rule for bytes mapped by ``aliases``: the linear map among them
    (kernel RAM, always shareable) or two or more address spaces."""
    spaces: set[str] = set()
    for m in aliases:
        if m.res_id is None:
            return True
        spaces.add(m.space)
    return len(spaces) >= 2


class MappingGraph:
    """Every mapping, indexed by reservation and by physical range, with the rules."""

    def __init__(
        self,
        linear_map: Iterable[Mapping] = (),
        *,
        check_attributes: bool = True,
        lazy: bool = True,
    ) -> None:
        """``lazy`` queues the physical index's adds until a query needs them
        (:class:`LazyIndex`: a streaming mapping's edge is then never indexed); the
        plain :class:`PhysIndex` (``lazy=False``) is the reference it answers as."""
        self.linear_map: tuple[Mapping, ...] = tuple(linear_map)
        self.check_attributes = check_attributes
        self._edges: dict[Key, Mapping] = {}
        self._by_res: dict[int, dict[int, Mapping]] = {}
        self._sorted: dict[int, list[Mapping]] = {}
        self._chunks: dict[AddressRange, int] = {}
        self._index: PhysIndex | LazyIndex = LazyIndex() if lazy else PhysIndex()
        for m in self.linear_map:
            self._edges[m.key] = m
            self._index.add(m.phys.start, m.phys.end, m.key)
        if isinstance(self._index, LazyIndex):
            self._index.settle()  # the linear map stays: no use queueing it

    # -- queries ---------------------------------------------------------------------------

    def edge(self, key: Key) -> Mapping:
        """The edge with ``key``."""
        return self._edges[key]

    def of_reservation(self, res_id: int) -> list[Mapping]:
        """The mappings one reservation made, in VA order."""
        cached = self._sorted.get(res_id)
        if cached is None:
            edges = self._by_res.get(res_id)
            if not edges:
                return []
            cached = self._sorted[res_id] = [edges[va] for va in sorted(edges)]
        return list(cached)

    def at_va(self, res_id: int, va: int) -> Mapping | None:
        """The mapping of reservation ``res_id`` covering ``va``."""
        edges = self._by_res.get(res_id)
        if not edges:
            return None
        ordered = self._sorted.get(res_id)
        if ordered is None:
            ordered = self._sorted[res_id] = [edges[v] for v in sorted(edges)]
        i = bisect.bisect_right(ordered, va, key=lambda m: m.va) - 1
        if i >= 0 and va < ordered[i].va + ordered[i].phys.size:
            return ordered[i]
        return None

    def cover(self, phys: AddressRange) -> list[tuple[AddressRange, list[Mapping]]]:
        """``phys`` cut into segments, each with every edge covering it (linear map
        included), gaps included with no edges."""
        edges = self._edges
        return [
            (AddressRange(s, e - s), [edges[k] for k in keys])  # type: ignore[index]
            for s, e, keys in self._index.cover(phys.start, phys.end)
        ]

    def cover_keys(self, phys: AddressRange) -> list[tuple[int, int, Iterable[Key]]]:
        """Like :meth:`cover` with keys, for the backing planner's inner loops (the
        key sets are the index's own: do not mutate them)."""
        return self._index.cover(phys.start, phys.end)  # type: ignore[return-value]

    def untouched(self, ranges: Iterable[AddressRange]) -> bool:
        """Whether no edge (the linear map included) covers any byte of ``ranges``, and
        no two of them overlap: new edges over them change no other and share nothing."""
        return self._index.clear_of_spans(*_range_spans(list(ranges)))

    def alone(self, mappings: Iterable[Mapping]) -> bool:
        """Whether no other edge (the linear map included) covers any byte of these
        edges: taking them away changes no other."""
        maps = list(mappings)
        starts, ends = _spans(maps)
        return self._index.sole_spans(starts, ends, [(m.res_id, m.va) for m in maps])

    def overlapping(self, phys: AddressRange, *, linear: bool = True) -> list[Mapping]:
        """Every edge covering some byte of ``phys``, by physical address then VA."""
        keys = self._index.keys_over(phys.start, phys.end)
        found = [self._edges[k] for k in keys if linear or k[0] is not None]  # type: ignore[index]
        return sorted(found, key=lambda m: (m.phys.start, m.va))

    def of_chunk(self, chunk: AddressRange) -> list[Mapping]:
        """Every mapping of any byte of ``chunk`` made by reservations (the linear map
        excluded)."""
        return self.overlapping(chunk, linear=False)

    def chunks(self) -> list[AddressRange]:
        """Allocation chunks that reservation mappings lie in, by address."""
        return sorted(self._chunks)

    def all(self) -> list[Mapping]:
        """Every mapping, linear-map windows first."""
        out = list(self.linear_map)
        for res_id in self._by_res:
            out.extend(self.of_reservation(res_id))
        return out

    def linear_alias(self, phys: AddressRange) -> Mapping | None:
        """The kernel linear-map window overlapping ``phys``, if any."""
        for m in self.linear_map:
            if m.phys.overlaps(phys):
                return m
        return None

    def aliases(self, chunk: AddressRange) -> list[Mapping]:
        """Every mapping of ``chunk``: the linear map (if it covers it) and reservations."""
        linear = self.linear_alias(chunk)
        return ([linear] if linear is not None else []) + self.of_chunk(chunk)

    def spaces(self, chunk: AddressRange) -> set[str]:
        """Address spaces mapping some byte of ``chunk`` (the linear map counts as the
        CPU's)."""
        return {m.space for m in self.aliases(chunk)}

    def shareable(self, chunk: AddressRange, spaces: Iterable[str]) -> bool:
        """The sharing rule for memory mapped by ``spaces``.

        Kernel-managed RAM is always shareable (the SMP linear map is); anything else is
        shareable exactly when two or more address spaces map it.
        """
        return self.linear_alias(chunk) is not None or len(set(spaces)) >= 2

    def segments(self, phys: AddressRange) -> list[tuple[AddressRange, list[Mapping], bool]]:
        """``phys`` cut where the set of aliases changes: each segment, its aliases
        and what the sharing rule wants for it (uncovered segments left out)."""
        return [(r, maps, share_rule(maps)) for r, maps in self.cover(phys) if maps]

    def memtypes(self, phys: AddressRange) -> set[MemType]:
        """Memory types of every mapping (linear map included) of some byte of ``phys``:
        a new alias must use the one they agree on."""
        edges = self._edges
        return {
            edges[k].attrs.memtype  # type: ignore[index]
            for k in self._index.keys_over(phys.start, phys.end)
        }

    def memtypes_over(self, ranges: Iterable[AddressRange]) -> set[MemType]:
        """:meth:`memtypes` of all ``ranges`` together: the keys over them gathered
        first (:meth:`PhysIndex.keys_over_ranges`), each edge's memory type then read
        once (a scatterlist's pages)."""
        found = self._index.keys_over_ranges(*_range_spans(list(ranges)))
        edges = self._edges
        return {edges[k].attrs.memtype for k in found}  # type: ignore[index]

    def is_empty(self) -> bool:
        """Whether no reservation maps anything (the linear map does not count)."""
        return not self._by_res

    # -- the conflict rule -------------------------------------------------------------------

    def conflict(self, new: Mapping) -> Mapping | None:
        """The first existing alias of ``new``'s bytes that disagrees on memory type
        or security state."""
        for old in self.overlapping(new.phys):
            if disagree(old.attrs, new.attrs):
                return old
        return None

    def check(self, call: str, new: Mapping) -> None:
        """Refuse ``new`` if its memory type, cache policy or security state disagrees
        with an alias.

        Permissions (read/write/exec/user) may differ: each mapping has its own.
        """
        if not self.check_attributes:
            return
        old = self.conflict(new)
        if old is not None:
            raise conflict_error(call, new, old)

    # -- updates (the manager validates first, then calls these) --------------------------

    def _insert(self, m: Mapping) -> None:
        assert m.res_id is not None
        self._edges[m.key] = m
        self._by_res.setdefault(m.res_id, {})[m.va] = m
        self._index.add(m.phys.start, m.phys.end, m.key)
        if m.chunk is not None:
            self._chunks[m.chunk] = self._chunks.get(m.chunk, 0) + 1

    def _delete(self, m: Mapping) -> None:
        assert m.res_id is not None
        del self._edges[m.key]
        edges = self._by_res[m.res_id]
        del edges[m.va]
        if not edges:
            del self._by_res[m.res_id]
        self._index.discard(m.phys.start, m.phys.end, m.key)
        if m.chunk is not None:
            left = self._chunks[m.chunk] - 1
            if left:
                self._chunks[m.chunk] = left
            else:
                del self._chunks[m.chunk]

    def add(self, res_id: int, mappings: Iterable[Mapping]) -> None:
        """Enter a reservation's new mappings (in bulk: a backing of 16384 pieces
        enters them with a few dict updates and one index merge)."""
        new = list(mappings)
        assert [m.res_id for m in new].count(res_id) == len(new)
        if len(new) < 2:  # one block or page: the bulk lists cost more than they save
            for m in new:
                self._insert(m)
            self._sorted.pop(res_id, None)
            return
        vas = [m.va for m in new]
        keys = list(zip(itertools.repeat(res_id), vas))
        self._edges.update(zip(keys, new, strict=True))
        self._by_res.setdefault(res_id, {}).update(zip(vas, new, strict=True))
        starts, ends = _spans(new)
        self._index.add_spans(starts, ends, keys)
        chunks = self._chunks
        for chunk, n in _chunk_runs(new):
            chunks[chunk] = chunks.get(chunk, 0) + n
        self._sorted.pop(res_id, None)

    def remove(self, res_id: int) -> list[Mapping]:
        """Drop every mapping of a reservation; returns them in VA order."""
        maps = self.of_reservation(res_id)
        if len(maps) < 2:
            for m in maps:
                self._delete(m)
            self._sorted.pop(res_id, None)
            return maps
        keys = list(zip(itertools.repeat(res_id), [m.va for m in maps]))
        collections.deque(map(self._edges.__delitem__, keys), maxlen=0)  # a C loop
        del self._by_res[res_id]
        self._index.discard_spans(*_spans(maps), keys)
        chunks = self._chunks
        for chunk, n in _chunk_runs(maps):
            left = chunks[chunk] - n
            if left:
                chunks[chunk] = left
            else:
                del chunks[chunk]
        self._sorted.pop(res_id, None)
        return maps

    def replace(self, old: Mapping, new: Mapping | Sequence[Mapping]) -> None:
        """Swap one mapping for another of the same reservation, or for pieces that
        cover exactly its bytes (a split where the sharing rule starts to differ).

        A swap that only changes attributes touches two dicts; a split re-indexes the
        old edge's range: either way the cost does not grow with the graph.
        """
        assert old.res_id is not None
        pieces = [new] if isinstance(new, Mapping) else list(new)
        if len(pieces) == 1 and pieces[0].key == old.key and pieces[0].phys == old.phys:
            m = pieces[0]
            self._edges[old.key] = m
            self._by_res[old.res_id][old.va] = m
        else:
            self._delete(old)
            for m in pieces:
                assert m.res_id == old.res_id
                self._insert(m)
        self._sorted.pop(old.res_id, None)

    def split_reservation(self, res_id: int, at_va: int, new_id: int, owner: str) -> None:
        """Hand the mappings of ``res_id`` at and above ``at_va`` to reservation
        ``new_id`` (named ``owner``), cutting the one that straddles ``at_va``."""
        for m in self.of_reservation(res_id):
            end = m.va + m.phys.size
            if end <= at_va:
                continue
            if m.va < at_va:
                cut = m.phys.start + (at_va - m.va)
                self._delete(m)
                self._insert(m.part(m.phys.start, cut))
                right = m.part(cut, m.phys.end)
                self._insert(_moved(right, new_id, owner))
                continue
            self._move(m, new_id, owner)
        self._sorted.pop(res_id, None)
        self._sorted.pop(new_id, None)

    def join_reservations(self, left_id: int, right_id: int, owner: str) -> None:
        """Hand every mapping of ``right_id`` to ``left_id`` (named ``owner``), joining
        the two that meet where the reservations do if they continue each other."""
        left_maps = self.of_reservation(left_id)
        right_maps = self.of_reservation(right_id)
        for m in right_maps:
            self._move(m, left_id, owner)
        self._sorted.pop(left_id, None)
        self._sorted.pop(right_id, None)
        if not left_maps or not right_maps:
            return
        a, b = left_maps[-1], self._edges[(left_id, right_maps[0].va)]
        if (
            a.va + a.phys.size == b.va
            and a.phys.end == b.phys.start
            and a.attrs == b.attrs
            and a.chunk == b.chunk
            and a.space == b.space
        ):
            self._delete(a)
            self._delete(b)
            joined = AddressRange(a.phys.start, a.phys.size + b.phys.size)
            self._insert(Mapping(a.space, owner, joined, a.va, a.attrs, left_id, a.chunk))
            self._sorted.pop(left_id, None)

    def _move(self, m: Mapping, res_id: int, owner: str) -> None:
        """Re-key ``m`` to reservation ``res_id`` without changing its bytes."""
        assert m.res_id is not None
        moved = _moved(m, res_id, owner)
        del self._edges[m.key]
        edges = self._by_res[m.res_id]
        del edges[m.va]
        if not edges:
            del self._by_res[m.res_id]
        self._edges[moved.key] = moved
        self._by_res.setdefault(res_id, {})[moved.va] = moved
        self._index.rename(m.phys.start, m.phys.end, m.key, moved.key)

    def snapshot(self) -> tuple[object, ...]:
        """The mappings in a normal form: per reservation, edges that continue each other
        with the same attributes are joined, so how an edge happens to be cut (a split
        for sharing that was undone) does not count, only what is mapped."""
        out = []
        for res_id in sorted(self._by_res):
            merged: list[tuple[int, int, int, PageAttrs, str]] = []
            for m in self.of_reservation(res_id):
                if merged:
                    va, pa, size, attrs, space = merged[-1]
                    if va + size == m.va and pa + size == m.phys.start and attrs == m.attrs:
                        merged[-1] = (va, pa, size + m.phys.size, attrs, space)
                        continue
                merged.append((m.va, m.phys.start, m.phys.size, m.attrs, m.space))
            out.append((res_id, tuple(merged)))
        return (self.check_attributes, tuple(out))


def _chunk_runs(maps: list[Mapping]) -> list[tuple[AddressRange, int]]:
    """``(chunk, count)`` of each run of ``maps`` in one chunk object (compared by
    identity: no dataclass comparison per edge; a backing of one allocation's pages is
    one run), leaving out edges without a chunk."""
    runs = [
        (group[0], len(group))
        for _, it in itertools.groupby([m.chunk for m in maps], key=id)
        for group in [list(it)]
    ]
    return [(chunk, n) for chunk, n in runs if chunk is not None]


def _range_spans(ranges: list[AddressRange]) -> tuple[list[int], list[int]]:
    """Starts and ends of ``ranges`` (list loops: no ``end`` property call per range,
    which for the 16384 edges of a backing of pages is most of the cost)."""
    starts = [r.start for r in ranges]
    return starts, list(map(operator.add, starts, [r.size for r in ranges]))


def _spans(maps: list[Mapping]) -> tuple[list[int], list[int]]:
    """Physical starts and ends of ``maps``."""
    return _range_spans([m.phys for m in maps])


def _moved(m: Mapping, res_id: int, owner: str) -> Mapping:
    return Mapping(m.space, owner, m.phys, m.va, m.attrs, res_id, m.chunk)


def disagree(a: PageAttrs, b: PageAttrs) -> bool:
    """Whether two aliases of one page break the rule: another memory type or cache
    policy, or another security state (NS)."""
    return a.memtype is not b.memtype or a.ns != b.ns


def conflict_error(call: str, new: Mapping, old: Mapping) -> AttributeConflictError:
    """The refusal of ``new`` because alias ``old`` has another memory type or
    security state."""
    if new.attrs.ns != old.attrs.ns:
        return AttributeConflictError(
            f"{call}: mismatched security state: {new.owner} would map {new.phys} at "
            f"{new.va:#x} {'non-secure (NS=1)' if new.attrs.ns else 'secure (NS=0)'}, but "
            f"{old.describe()}; a page is Secure or Non-secure memory, never both "
            "(Attr.SECURE buffers come from carve-outs no non-secure mapping reaches)"
        )
    return AttributeConflictError(
        f"{call}: mismatched attributes: {new.owner} would map {new.phys} at "
        f"{new.va:#x} as {new.attrs.memtype.value}, but {old.describe()}; every "
        "alias of a physical page must agree on memory type and cache policy "
        "(ARMv6+ speculative prefetch, seed 000 L2075-2094)"
    )
