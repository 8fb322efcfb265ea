"""Physical memory the DMA API maps but does not own: a PhysMem over existing pages.

``vcm_back`` maps a reservation onto a :class:`~vcmm.core.objects.PhysMem`, which the
core normally gets from a memory target.  Streaming mappings (``map_page``,
``map_sg``) map pages the *caller* owns, and coherent buffers from the DMA API's own
pools are sub-ranges of a carve-out; neither must ever be given back to a target.
:class:`BorrowedPhysMem` describes such pages for ``vcm_back`` without being
registered with the manager, so ``vcm_phys_free`` is never asked to free it.

The mapping graph finds aliases by *allocation chunk*.  A piece that is exactly a
chunk some registered allocation owns (the common case: a buffer's chunks handed to
``map_sg`` as they are) is described by that chunk, so the graph sees every alias of
it.  A piece strictly inside a bigger chunk cannot be described that way through
``vcm_back`` (chunks are laid from their start); the DMA API then checks the aliases
itself before mapping (:func:`alias_memtypes`) and the piece becomes its own chunk.
See docs/DMA.md for what the core would need to do this natively.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from typing import Any

from vcmm.attrs import MemType
from vcmm.core.flags import PhysAttr
from vcmm.core.objects import PhysMem
from vcmm.ranges import AddressRange

_ids = itertools.count(1)


class BorrowedPhysMem(PhysMem):
    """Pages owned elsewhere, laid end to end for one backing."""

    prefix = "dma-pages"


def borrow(pieces: Sequence[AddressRange], owner: str) -> BorrowedPhysMem:
    """A PhysMem describing ``pieces`` (page-aligned physical ranges) in order."""
    size = sum(p.size for p in pieces)
    return BorrowedPhysMem(next(_ids), owner, size, PhysAttr.NONE, tuple(pieces))


def alias_memtypes(system: Any, pieces: Iterable[AddressRange]) -> set[MemType]:
    """Memory types of every existing mapping overlapping ``pieces`` (linear map
    included): a new alias must use one of them, or be refused.

    Memory in the kernel's linear map needs no search: the graph already holds every
    alias of it to the linear map's type.  Other memory (carve-outs) is compared with
    every chunk the graph knows.
    """
    graph = system.graph
    found: set[MemType] = set()
    rest: list[AddressRange] = []
    for piece in pieces:
        linear = graph.linear_alias(piece)
        if linear is not None and piece in linear.phys:
            found.add(linear.attrs.memtype)
        else:
            rest.append(piece)
    if not rest:
        return found
    for piece in rest:
        linear = graph.linear_alias(piece)
        if linear is not None:
            found.add(linear.attrs.memtype)
    for chunk in graph.chunks():
        for piece in rest:
            if chunk.overlaps(piece):
                found.update(
                    m.attrs.memtype for m in graph.of_chunk(chunk) if m.phys.overlaps(piece)
                )
    return found
