"""The mapping graph: every mapping of every physical chunk, and the rules they obey.

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
- **Shareable once shared.**  The graph counts the address spaces mapping each chunk;
  when a second one maps it, every mapping gets the shareable bit, and when it drops
  back to one the bit is cleared (Pfeffer, L1978-1992).  Kernel RAM is always
  shareable, as the linear map of SMP ARM is.  Because the bit is set on every alias at
  once, shareability never disagrees between aliases.

The graph is a reverse map keyed by *chunk*: a physically contiguous piece a memory
target handed out.  Chunks of different allocations never overlap (targets are
disjoint and allocations inside one are too), so every alias of a byte is found by
looking at its chunk alone, plus the linear-map window that may cover it.  That keeps
every query independent of how many other mappings exist.

``check_attributes`` switches the conflict rule off, to demonstrate the corruption it
prevents (with the CPU's speculative prefetch).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vcmm.attrs import PageAttrs
from vcmm.errors import AttributeConflictError
from vcmm.ranges import AddressRange

#: Address-space key of the CPU's kernel address space (linear map and VMM VCMs).
KERNEL_SPACE = "cpu"


@dataclass(frozen=True, slots=True)
class Mapping:
    """One edge: address space ``space`` maps ``phys`` at ``va`` with ``attrs``.

    ``chunk`` is the allocation chunk ``phys`` belongs to (``phys`` may be a prefix of
    it when a reservation is shorter than its physical allocation); ``res_id`` is the
    reservation that made the mapping.  The linear map has neither.
    """

    space: str
    owner: str
    phys: AddressRange
    va: int
    attrs: PageAttrs
    res_id: int | None = None
    chunk: AddressRange | None = None

    def describe(self) -> str:
        return (
            f"{self.owner} maps {self.phys} at {self.va:#x} as {self.attrs.memtype.value}"
            f"{' shareable' if self.attrs.shareable else ''}"
        )

    def with_attrs(self, attrs: PageAttrs) -> Mapping:
        return Mapping(self.space, self.owner, self.phys, self.va, attrs, self.res_id, self.chunk)


@dataclass
class MappingGraph:
    """Reverse map from physical chunks to mappings, with the aliasing rules."""

    linear_map: tuple[Mapping, ...] = ()
    check_attributes: bool = True
    _by_chunk: dict[AddressRange, list[Mapping]] = field(default_factory=dict)
    _by_res: dict[int, list[Mapping]] = field(default_factory=dict)

    # -- queries ---------------------------------------------------------------------------

    def of_reservation(self, res_id: int) -> list[Mapping]:
        """The mappings one reservation made, in VA order."""
        return list(self._by_res.get(res_id, ()))

    def of_chunk(self, chunk: AddressRange) -> list[Mapping]:
        """Every mapping of ``chunk`` made by reservations (the linear map excluded)."""
        return list(self._by_chunk.get(chunk, ()))

    def chunks(self) -> list[AddressRange]:
        """Chunks that have at least one reservation mapping them, by address."""
        return sorted(self._by_chunk)

    def all(self) -> list[Mapping]:
        """Every mapping, linear-map windows first."""
        out = list(self.linear_map)
        for maps in self._by_res.values():
            out.extend(maps)
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
        """Address spaces mapping ``chunk`` (the linear map counts as the CPU's)."""
        return {m.space for m in self.aliases(chunk)}

    def shareable(self, chunk: AddressRange, spaces: Iterable[str]) -> bool:
        """The sharing rule for a chunk mapped by ``spaces``.

        Kernel-managed RAM is always shareable (the SMP linear map is); anything else is
        shareable exactly when two or more address spaces map it.
        """
        return self.linear_alias(chunk) is not None or len(set(spaces)) >= 2

    def is_empty(self) -> bool:
        """Whether no reservation maps anything (the linear map does not count)."""
        return not self._by_res

    # -- the conflict rule -------------------------------------------------------------------

    def conflict(self, new: Mapping) -> Mapping | None:
        """The first existing alias of ``new``'s chunk that disagrees on memory type."""
        assert new.chunk is not None
        for old in self.aliases(new.chunk):
            if old.attrs.memtype is not new.attrs.memtype:
                return old
        return None

    def check(self, call: str, new: Mapping) -> None:
        """Refuse ``new`` if its memory type or cache policy disagrees with an alias.

        Permissions (read/write/exec/user) may differ: each mapping has its own.
        """
        if not self.check_attributes:
            return
        old = self.conflict(new)
        if old is not None:
            raise AttributeConflictError(
                f"{call}: mismatched attributes: {new.owner} would map {new.phys} at "
                f"{new.va:#x} as {new.attrs.memtype.value}, but {old.describe()}; every "
                "alias of a physical page must agree on memory type and cache policy "
                "(ARMv6+ speculative prefetch, seed 000 L2075-2094)"
            )

    # -- updates (the manager validates first, then calls these) --------------------------

    def add(self, res_id: int, mappings: Iterable[Mapping]) -> None:
        maps = list(mappings)
        self._by_res.setdefault(res_id, []).extend(maps)
        for m in maps:
            assert m.chunk is not None
            self._by_chunk.setdefault(m.chunk, []).append(m)

    def remove(self, res_id: int) -> list[Mapping]:
        maps = self._by_res.pop(res_id, [])
        for m in maps:
            assert m.chunk is not None
            left = self._by_chunk[m.chunk]
            left.remove(m)
            if not left:
                del self._by_chunk[m.chunk]
        return maps

    def replace(self, old: Mapping, new: Mapping) -> None:
        """Swap one mapping for another of the same reservation and chunk (new attrs)."""
        assert old.res_id is not None and old.chunk is not None and old.chunk == new.chunk
        for seq in (self._by_res[old.res_id], self._by_chunk[old.chunk]):
            seq[seq.index(old)] = new

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.check_attributes,
            tuple(sorted((k, tuple(v)) for k, v in self._by_res.items())),
        )
