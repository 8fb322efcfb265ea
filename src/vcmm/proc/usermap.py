"""Putting physical pages into a process's page table, as edges of the mapping graph.

The VCMM core has no user address spaces yet (its VMM VCM is the kernel's), so a
process's mappings are entered into the mapping graph here, under keys of their own
(negative numbers, so they never collide with reservation ids), with the graph's own
rules applied first:

- the memory type must agree with every alias of the chunk (``graph.check``): this is
  how "an architecture may refuse a mapping that would break cache rules" (seed 004)
  shows up;
- the shareable bit follows the graph's sharing rule for the chunk.  The core rewrites
  the bit of *its* mappings when a new address space arrives through ``vcm_back``; it
  cannot be asked to do that for a user mapping, so a user mapping that would need an
  existing alias rewritten is refused instead of leaving the aliases disagreeing.  In
  practice kernel RAM (always shareable) and DMA buffers (already mapped by a device
  and the kernel) never hit this.

Every piece names the allocation *chunk* it lies in, because the graph looks aliases up
by chunk: a piece of a DMA buffer mapped at a page offset keys on the buffer's chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vcmm.attrs import MemType, PageAttrs
from vcmm.core.graph import Mapping
from vcmm.errors import AlignmentError, AttributeConflictError, InvalidArgumentError
from vcmm.proc.flags import Prot
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K

_keys = itertools.count(-1, -1)


@dataclass(frozen=True, slots=True)
class UserPiece:
    """A physical range to map and the allocation chunk containing it (the graph key)."""

    phys: AddressRange
    chunk: AddressRange

    @staticmethod
    def of(phys: AddressRange, chunk: AddressRange | None = None) -> UserPiece:
        return UserPiece(phys, phys if chunk is None else chunk)


def page_attrs(prot: Prot, memtype: MemType, shareable: bool) -> PageAttrs:
    """User PTE attributes: ARM cannot encode write-only, so write implies read."""
    return PageAttrs(
        read=bool(prot & (Prot.READ | Prot.WRITE | Prot.EXEC)),
        write=bool(prot & Prot.WRITE),
        exec=bool(prot & Prot.EXEC),
        user=True,
        memtype=memtype,
        shareable=shareable,
        global_=False,
    )


class UserMapper:
    """Maps pieces into one process's TTBR0 table and records them in the graph."""

    def __init__(self, system: Any, asid: int, space: str) -> None:
        self.system = system
        self.asid = asid
        self.space = space

    def plan(
        self,
        call: str,
        va: int,
        pieces: Sequence[UserPiece],
        memtype: MemType,
        prot: Prot,
        owner: str,
    ) -> list[Mapping]:
        """Graph edges for mapping ``pieces`` end to end from ``va``; raises (changing
        nothing) if a piece is misaligned, lies outside its chunk or breaks a rule."""
        graph = self.system.graph
        out: list[Mapping] = []
        pos = va
        for piece in pieces:
            phys, chunk = piece.phys, piece.chunk
            if phys.start % SZ_4K or phys.size % SZ_4K or phys.size == 0:
                raise AlignmentError(
                    f"{call}: physical piece {phys} is not a non-empty run of whole 4 KiB pages"
                )
            if phys not in chunk:
                raise InvalidArgumentError(
                    f"{call}: physical piece {phys} lies outside its chunk {chunk}"
                )
            if not self.system.memory.is_backed(phys.start, phys.size):
                raise InvalidArgumentError(f"{call}: {phys} is not physical memory")
            spaces = graph.spaces(chunk) | {self.space}
            shareable = graph.shareable(chunk, spaces)
            attrs = page_attrs(prot, memtype, shareable)
            mapping = Mapping(self.space, owner, phys, pos, attrs, None, chunk)
            graph.check(call, mapping)
            if graph.check_attributes:
                for old in graph.aliases(chunk):
                    if old.attrs.shareable != shareable:
                        raise AttributeConflictError(
                            f"{call}: mapping {phys} into {self.space} makes chunk {chunk} "
                            f"shared by {len(spaces)} address spaces, but {old.describe()} "
                            "is not shareable and the VCMM core cannot rewrite it for a user "
                            "mapping; every alias must agree on shareability"
                        )
            out.append(mapping)
            pos += phys.size
        return out

    def install(self, mappings: Sequence[Mapping]) -> int:
        """Write the PTEs (joined where VA and PA run on) and register the edges;
        returns the graph key.  All or nothing."""
        runs = _runs(mappings)
        done: list[tuple[int, int]] = []
        cpu = self.system.cpu
        try:
            for va, pa, size, attrs in runs:
                cpu.map_user(self.asid, va, pa, size, attrs)
                done.append((va, size))
        except BaseException:
            for va, size in reversed(done):
                cpu.unmap_user(self.asid, va, size)
            raise
        key = next(_keys)
        self.system.graph.add(key, mappings)
        return key

    def uninstall(self, key: int, cut: AddressRange) -> list[Mapping]:
        """Unmap the part of ``key``'s mappings inside ``cut``; drop ``key`` from the
        graph and return the mappings that remain (the caller re-registers them)."""
        graph = self.system.graph
        kept: list[Mapping] = []
        gone: list[Mapping] = []
        for m in graph.of_reservation(key):
            here = AddressRange(m.va, m.phys.size)
            inside = here & cut
            if inside is None:
                kept.append(m)
                continue
            gone.append(_slice(m, inside))
            if here.start < inside.start:
                kept.append(_slice(m, AddressRange(here.start, inside.start - here.start)))
            if inside.end < here.end:
                kept.append(_slice(m, AddressRange(inside.end, here.end - inside.end)))
        for va, _, size, _ in _runs(sorted(gone, key=lambda m: m.va)):
            self.system.cpu.unmap_user(self.asid, va, size)
        graph.remove(key)
        return sorted(kept, key=lambda m: m.va)

    def register(self, mappings: Sequence[Mapping]) -> int:
        """Record already-installed mappings under a new key (after a VMA split)."""
        key = next(_keys)
        self.system.graph.add(key, mappings)
        return key


def _slice(m: Mapping, part: AddressRange) -> Mapping:
    off = part.start - m.va
    phys = AddressRange(m.phys.start + off, part.size)
    return Mapping(m.space, m.owner, phys, part.start, m.attrs, m.res_id, m.chunk)


def _runs(mappings: Sequence[Mapping]) -> list[tuple[int, int, int, PageAttrs]]:
    runs: list[tuple[int, int, int, PageAttrs]] = []
    for m in mappings:
        if runs:
            va, pa, size, attrs = runs[-1]
            if va + size == m.va and pa + size == m.phys.start and attrs == m.attrs:
                runs[-1] = (va, pa, size + m.phys.size, attrs)
                continue
        runs.append((m.va, m.phys.start, m.phys.size, m.attrs))
    return runs
