"""A memory target registered at run time, held to the target contract.

The built-in targets (:mod:`vcmm.mm.pools`) are trusted: their answers are tested.
A platform's or a caller's own policy (seed 000 L247-253: a pool that "need[s] to be
allocated from in a unique way"; L4053: "we need to use our own allocator") is not,
and a wrong answer from it would hand one page to two owners.  So the core keeps such
a target behind :class:`CheckedTarget`, which checks every allocation the policy
returns before the core records it:

- a non-empty list of :class:`~vcmm.mm.chunk.Chunk`, whole pages, each inside one of
  the target's regions and aligned as asked (and to a page);
- one chunk when the request is contiguous; a multiple of the smallest requested
  block size each when block sizes are given;
- enough bytes for the request, with no chunk the request does not need;
- no chunk overlapping another chunk of the answer or any live allocation.

A wrong answer is given back to the policy (``free``) and refused with
:class:`~vcmm.errors.TargetPolicyError` naming the chunk and the rule; the message
says whether the policy took the chunks back.  The
policy's out-of-memory and unsupported-size errors pass through (the core then tries
the next target in priority order); anything else it raises that is not a
:class:`~vcmm.errors.VcmmError` becomes a ``TargetPolicyError``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise
from typing import TypeVar

from vcmm import inject
from vcmm.errors import TargetPolicyError, VcmmError
from vcmm.mm.chunk import Chunk
from vcmm.mm.target import AllocRequest, MemoryTarget, check_free_list, check_request
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size

#: ``held(range)``: the live allocations' pieces inside ``range`` (the owner map's).
HeldBy = Callable[[AddressRange], Sequence[object]]
T = TypeVar("T")


class CheckedTarget:
    """A run-time target's policy, each answer checked (see the module notes).

    ``secure`` marks memory only secure mappings (``Attr.SECURE``) may reach;
    ``held`` finds live allocations in a range, so an answer that overlaps one is
    refused.
    """

    def __init__(self, policy: MemoryTarget, *, secure: bool, held: HeldBy) -> None:
        self.policy = policy
        self.secure = secure
        self._held = held
        self._regions = tuple(policy.regions)

    # -- what the contract asks for, from the policy ---------------------------------------

    @property
    def name(self) -> str:
        return self.policy.name

    @property
    def linear_mapped(self) -> bool:
        return False  # registration refuses memory the linear map covers

    @property
    def special(self) -> bool:
        return bool(self.policy.special)

    @property
    def regions(self) -> tuple[AddressRange, ...]:
        """The regions it was registered with (a policy cannot grow them later)."""
        return self._regions

    @property
    def free_bytes(self) -> int:
        return self._answer("free_bytes", lambda: int(self.policy.free_bytes))

    @property
    def total_bytes(self) -> int:
        return self._answer("total_bytes", lambda: int(self.policy.total_bytes))

    def snapshot(self) -> object:
        return self._answer("snapshot", self.policy.snapshot)

    def can_satisfy(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> bool:
        check_request(length, block_sizes, alignment, contiguous)
        answer = self._answer(
            "can_satisfy",
            lambda: self.policy.can_satisfy(
                length, block_sizes=block_sizes, alignment=alignment, contiguous=contiguous
            ),
        )
        if not isinstance(answer, bool):
            raise TargetPolicyError(
                f"memory target {self.name!r}: can_satisfy answered {answer!r}, not a bool"
            )
        return answer

    def allocate(
        self,
        length: int,
        *,
        block_sizes: tuple[int, ...] | None = None,
        alignment: int = 1,
        contiguous: bool = False,
    ) -> list[Chunk]:
        request = check_request(length, block_sizes, alignment, contiguous)
        inject.check(inject.AllocSite.PHYS, self)
        chunks = self._answer(
            "allocate",
            lambda: self.policy.allocate(
                length, block_sizes=block_sizes, alignment=alignment, contiguous=contiguous
            ),
        )
        wrong = self._wrong(request, chunks)
        if wrong is None:
            return list(chunks)
        restored = self._give_back(chunks)
        raise TargetPolicyError(
            f"memory target {self.name!r} answered allocate({request.describe()}) with "
            f"{chunks!r}: {wrong}; the allocation is refused and {restored}"
        )

    def free(self, chunks: Iterable[Chunk]) -> None:
        items = check_free_list(chunks)
        self._answer("free", lambda: self.policy.free(items))

    # -- the checks ------------------------------------------------------------------------

    def _answer(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, with a non-VcmmError from the policy turned into a refusal."""
        try:
            return call()
        except VcmmError:
            raise
        except Exception as exc:  # the policy is foreign code: any bug is its own
            raise TargetPolicyError(
                f"memory target {self.name!r}: its {what} raised {type(exc).__name__}: {exc}"
            ) from exc

    def _wrong(self, request: AllocRequest, chunks: object) -> str | None:
        """What is wrong with the policy's answer to ``request``, or None."""
        if not isinstance(chunks, list | tuple) or not chunks:
            return "not a non-empty list of Chunk"
        if not all(isinstance(c, Chunk) for c in chunks):
            return "not a list of Chunk"
        if request.contiguous and len(chunks) != 1:
            return f"{len(chunks)} chunks for a contiguous request"
        unit = max(SZ_4K, request.block_sizes[-1] if request.block_sizes else SZ_4K)
        align = max(SZ_4K, request.alignment)
        for chunk in chunks:
            if chunk.size <= 0 or chunk.size % unit or chunk.pa % align:
                return (
                    f"chunk {chunk} is not a multiple of {format_size(unit)} aligned to "
                    f"{format_size(align)}"
                )
            if not any(chunk.range in region for region in self._regions):
                return f"chunk {chunk} is not inside one of its regions {list(self._regions)}"
        total = sum(c.size for c in chunks)
        if total < request.length:
            return f"{format_size(total)} for a request of {format_size(request.length)}"
        if total - min(c.size for c in chunks) >= request.length:
            return (
                f"{format_size(total)} holds a chunk the {format_size(request.length)} do not need"
            )
        ordered = sorted(chunks, key=lambda c: c.pa)
        for left, right in pairwise(ordered):
            if left.range.overlaps(right.range):
                return f"chunks {left} and {right} overlap"
        for chunk in ordered:
            if self._held(chunk.range):
                return f"chunk {chunk} overlaps memory a live allocation holds"
        return None

    def _give_back(self, chunks: object) -> str:
        """Hand a refused answer back to the policy (``free``); what became of it.

        (Comparing the policy's snapshot before and after would say more, but costs a
        copy of its state on every allocation: quadratic over many live ones.)"""
        if not isinstance(chunks, list | tuple) or not all(isinstance(c, Chunk) for c in chunks):
            return "nothing could be handed back to the policy"
        try:
            self.policy.free(list(chunks))
        except Exception as exc:  # a broken policy may refuse its own answer
            return f"the policy refused them back ({type(exc).__name__}: {exc})"
        return "the chunks went back to the policy (free)"

    def __repr__(self) -> str:
        kind = "secure " if self.secure else ""
        return f"<CheckedTarget {kind}{self.policy!r}>"
