"""Putting physical pages into a process's page table, as edges of the mapping graph.

The VCMM core has no user address spaces yet (its VMM VCM is the kernel's), so a
process's mappings are entered into the mapping graph here, under keys of their own
(negative numbers, so they never collide with reservation ids), with the graph's own
rules applied first:

- the memory type must agree with every alias of the chunk (``graph.check``): this is
  how "an architecture may refuse a mapping that would break cache rules" (seed 004)
  shows up;
- the shareable bit follows the graph's sharing rule for the chunk.  When a new user
  mapping changes what the rule wants, the bit of the other *user* mappings of the
  chunk is rewritten here (their PTEs and TLB entries, then their graph edges).  The
  core rewrites its own mappings only inside ``vcm_back``/``vcm_unback`` and offers no
  call to do it for a user mapping, so a user mapping that would need a *core*
  mapping rewritten is refused instead of leaving the aliases disagreeing.  Kernel RAM
  (always shareable) and DMA buffers (already mapped by a device and the kernel) never
  hit this.

Every piece names the allocation *chunk* it lies in, because the graph looks aliases up
by chunk: a piece of a DMA buffer mapped at a page offset keys on the buffer's chunk.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class Plan:
    """What :meth:`UserMapper.install` will do: new edges, and shareable-bit rewrites of
    other user mappings ``(their mapper, old edge, new edge)``."""

    mappings: list[Mapping]
    rewrites: list[tuple[UserMapper, Mapping, Mapping]] = field(default_factory=list)


class UserMapper:
    """Maps pieces into one process's TTBR0 table and records them in the graph.

    ``peers`` finds the mapper of another process's address space by its graph space
    name, so shareable bits of their mappings can be kept in step.
    """

    def __init__(
        self,
        system: Any,
        asid: int,
        space: str,
        peers: Callable[[str], UserMapper | None] | None = None,
    ) -> None:
        self.system = system
        self.asid = asid
        self.space = space
        self.peers = peers or (lambda space: None)
        self.keys: set[int] = set()

    def plan(
        self,
        call: str,
        va: int,
        pieces: Sequence[UserPiece],
        memtype: MemType,
        prot: Prot,
        owner: str,
    ) -> Plan:
        """Graph edges for mapping ``pieces`` end to end from ``va``; raises (changing
        nothing) if a piece is misaligned, lies outside its chunk or breaks a rule."""
        graph = self.system.graph
        out: list[Mapping] = []
        rewrites: list[tuple[UserMapper, Mapping, Mapping]] = []
        seen: set[Mapping] = set()
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
                    if old.attrs.shareable == shareable or old in seen:
                        continue
                    peer = self.peers(old.space) if old.res_id is None else None
                    if peer is None:
                        raise AttributeConflictError(
                            f"{call}: mapping {phys} into {self.space} makes chunk {chunk} "
                            f"mapped by {len(spaces)} address space(s), so it must be "
                            f"{'' if shareable else 'non-'}shareable, but {old.describe()} "
                            "and the VCMM core cannot rewrite it for a user mapping; every "
                            "alias must agree on shareability"
                        )
                    seen.add(old)
                    new = old.with_attrs(old.attrs.with_(shareable=shareable))
                    rewrites.append((peer, old, new))
            out.append(mapping)
            pos += phys.size
        return Plan(out, rewrites)

    def install(self, plan: Plan) -> int:
        """Write the PTEs (joined where VA and PA run on), rewrite peers' shareable
        bits, and register the edges; returns the graph key.  All or nothing."""
        mappings = plan.mappings
        runs = _runs(mappings)
        done: list[tuple[int, int]] = []
        rewritten: list[tuple[UserMapper, Mapping, Mapping]] = []
        cpu = self.system.cpu
        try:
            for va, pa, size, attrs in runs:
                cpu.map_user(self.asid, va, pa, size, attrs)
                done.append((va, size))
            for peer, old, new in plan.rewrites:
                peer._set_attrs(old, new)
                rewritten.append((peer, old, new))
        except BaseException:
            for peer, old, new in reversed(rewritten):
                peer._set_attrs(new, old)
            for va, size in reversed(done):
                cpu.unmap_user(self.asid, va, size)
            raise
        key = next(_keys)
        self.system.graph.add(key, mappings)
        self.keys.add(key)
        return key

    def _set_attrs(self, old: Mapping, new: Mapping) -> None:
        """Rewrite one of this process's mappings (PTE, TLB, graph edge)."""
        cpu = self.system.cpu
        cpu.address_space(self.asid).set_attrs(old.va, old.phys.size, new.attrs)
        cpu.flush_tlb_range(old.va, old.phys.size, asid=self.asid)
        graph = self.system.graph
        for key in self.keys:
            edges = graph.of_reservation(key)
            if old in edges:
                graph.remove(key)
                graph.add(key, [new if m == old else m for m in edges])
                return

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
        self.keys.discard(key)
        return sorted(kept, key=lambda m: m.va)

    def register(self, mappings: Sequence[Mapping]) -> int:
        """Record already-installed mappings under a new key (after a VMA split)."""
        key = next(_keys)
        self.system.graph.add(key, mappings)
        self.keys.add(key)
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
