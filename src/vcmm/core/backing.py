"""The machinery behind ``vcm_back``/``vcm_unback``: plans, sharing rewrites, undo.

A backing is computed completely before anything changes: where each chunk goes
(:func:`pieces`), which pages map it (:func:`page_runs`), which existing aliases must
change their shareable bit (:func:`reshare_plan`).  Only then are tables written, and
every write is recorded in an :class:`UndoLog` so that a failure part way (table
memory running out in the middle of a large backing) is taken back before the error
leaves: tables, TLBs and allocators end as they began.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vcmm.attrs import PageAttrs
from vcmm.core.graph import Mapping, MappingGraph
from vcmm.core.mappers import Mapper, PageRun, merge_runs, plan_pages
from vcmm.core.objects import PhysMem, Reservation
from vcmm.errors import InvalidArgumentError, StateError, VcmmError
from vcmm.ranges import AddressRange

#: A pair (existing mapping, the same mapping with its shareable bit changed).
Rewrite = tuple[Mapping, Mapping]


def pieces(
    length: int, physmem: PhysMem, base: int
) -> list[tuple[int, AddressRange, AddressRange]]:
    """``(address, physical piece, chunk)`` laying ``physmem``'s chunks from ``base``.

    The chunks go end to end in the target's order; the last piece is cut where the
    reservation ends.
    """
    out = []
    offset = 0
    for chunk in physmem.chunk_ranges:
        if offset >= length:
            break
        n = min(chunk.size, length - offset)
        out.append((base + offset, AddressRange(chunk.start, n), chunk))
        offset += n
    return out


def page_cap(physmem: PhysMem) -> int:
    """Largest page a backing of ``physmem`` may use: its largest block size, if any."""
    sizes = physmem.attr.block_sizes
    return max(sizes) if sizes else 1 << 64


def page_runs(mapper: Mapper, mappings: list[Mapping], cap: int) -> list[tuple[PageAttrs, PageRun]]:
    """Page runs for one reservation's ``mappings`` (VA order), joined where possible."""
    if not mapper.page_sizes:
        return []
    out: list[tuple[PageAttrs, PageRun]] = []
    for attrs, group in itertools.groupby(mappings, key=lambda m: m.attrs):
        runs: list[PageRun] = []
        for m in group:
            runs.extend(plan_pages(m.va, m.phys.start, m.phys.size, mapper.page_sizes, cap))
        out.extend((attrs, run) for run in merge_runs(runs))
    return out


def one_to_one_base(call: str, res: Reservation, physmem: PhysMem) -> int:
    """Where a one-to-one reservation sits: at its backing's physical address.

    The backing must be physically contiguous over the reservation's length, inside
    the VCM, and clear of the VCM's other placed reservations.
    """
    vcm = res.vcm
    start = physmem.chunk_ranges[0].start
    expected = start
    for chunk in physmem.chunk_ranges:
        if expected >= start + res.len:
            break
        if chunk.start != expected:
            raise InvalidArgumentError(
                f"{call}: one-to-one {vcm.name} needs physically contiguous backing; "
                f"{physmem.name} jumps from {expected:#x} to {chunk.start:#x}"
            )
        expected = chunk.end
    span = AddressRange(start, res.len)
    if span not in vcm.range:
        raise InvalidArgumentError(
            f"{call}: {physmem.name} at {span} lies outside one-to-one {vcm.name} "
            f"{vcm.range}; a one-to-one reservation sits at its physical address"
        )
    for other in vcm.reservations:
        if other.range is not None and other.range.overlaps(span):
            raise StateError(
                f"{call}: {span} is already taken by {other.name} in one-to-one {vcm.name}"
            )
    return start


def reshare_plan(
    graph: MappingGraph,
    chunks: list[AddressRange],
    *,
    extra_space: str | None = None,
    leaving: int | None = None,
) -> list[Rewrite]:
    """Existing mappings whose shareable bit must change, and their replacements.

    ``extra_space`` is an address space about to map the chunks; ``leaving`` the id of
    a reservation about to stop mapping them (its own mappings are not rewritten).
    """
    plan = []
    for chunk in chunks:
        staying = [m for m in graph.aliases(chunk) if leaving is None or m.res_id != leaving]
        spaces = {m.space for m in staying}
        if extra_space is not None:
            spaces.add(extra_space)
        want = graph.shareable(chunk, spaces)
        for old in staying:
            if old.res_id is not None and old.attrs.shareable != want:
                plan.append((old, old.with_attrs(old.attrs.with_(shareable=want))))
    return plan


@dataclass(frozen=True, slots=True)
class _Step:
    what: str
    mapper: Any = None
    va: int = 0
    size: int = 0
    attrs: PageAttrs | None = None
    run: PageRun | None = None
    allocator: Any = None


class UndoLog:
    """The changes a call has made so far, and how to take them back in reverse."""

    def __init__(self) -> None:
        self._steps: list[_Step] = []

    def placed(self, allocator: Any, addr: int) -> None:
        self._steps.append(_Step("place", va=addr, allocator=allocator))

    def mapped(self, mapper: Mapper, run: PageRun) -> None:
        self._steps.append(_Step("map", mapper, run.va, run.size, run=run))

    def unmapped(self, mapper: Mapper, run: PageRun, attrs: PageAttrs) -> None:
        self._steps.append(_Step("unmap", mapper, run.va, run.size, attrs=attrs, run=run))

    def attrs_changed(self, mapper: Mapper, va: int, size: int, before: PageAttrs) -> None:
        self._steps.append(_Step("attrs", mapper, va, size, attrs=before))

    def roll_back(self) -> None:
        """Undo every recorded step, newest first, each inside its update bracket."""
        for step in reversed(self._steps):
            if step.what == "place":
                step.allocator.free(step.va)
                continue
            with step.mapper.updating():
                if step.what == "map":
                    step.mapper.unmap(step.va, step.size)
                elif step.what == "unmap":
                    assert step.run is not None and step.attrs is not None
                    step.mapper.map(step.run, step.attrs)
                else:
                    assert step.attrs is not None
                    step.mapper.set_attrs(step.va, step.size, step.attrs)
        self._steps.clear()


def apply_rewrites(
    rewrites: list[Rewrite],
    reservation: Callable[[int | None], Reservation],
    mapper_of: Callable[[Any], Mapper],
    undo: UndoLog,
) -> None:
    """Rewrite the attributes of aliases, joining VA-adjacent mappings of one reservation
    into one table call (and one update bracket)."""
    ordered = sorted(rewrites, key=lambda p: (p[0].res_id or 0, p[0].va))
    groups: list[tuple[int | None, int, int, PageAttrs, PageAttrs]] = []
    for old, new in ordered:
        last = groups[-1] if groups else None
        if (
            last is not None
            and last[0] == old.res_id
            and last[1] + last[2] == old.va
            and last[3] == old.attrs
            and last[4] == new.attrs
        ):
            groups[-1] = (last[0], last[1], last[2] + old.phys.size, last[3], last[4])
        else:
            groups.append((old.res_id, old.va, old.phys.size, old.attrs, new.attrs))
    for res_id, va, size, before, after in groups:
        mapper = mapper_of(reservation(res_id).vcm)
        with mapper.updating():
            mapper.set_attrs(va, size, after)
        undo.attrs_changed(mapper, va, size, before)


def explained(exc: VcmmError, what: str) -> VcmmError:
    """``exc`` again (same type) with the failed call and its objects named in front.

    Errors raised deep in the tables or allocators name table addresses; the caller
    wants to know which of its calls failed and that nothing was changed.  An error
    type whose constructor takes more than a message gets a note instead.
    """
    try:
        return type(exc)(f"{what} failed and was undone: {exc}")
    except TypeError:
        exc.add_note(f"{what} failed and was undone")
        return exc
