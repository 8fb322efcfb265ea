"""Buffer collections: buffers allocated once every participant has said what it needs.

Today's dma-buf is allocated before anyone attaches, so the exporter guesses: too
scattered for a camera without an IOMMU, cached where a display wanted uncached, 4K
pages where the codec's IOTLB would have liked 1M.  Fuchsia's sysmem shows the better
way, and :class:`BufferCollection` is it for vcmm's dma-buf:

1. the collection is created naming its participants (devices by name, ``"cpu"``);
2. each participant :meth:`~BufferCollection.join` s with its constraints
   (:class:`~vcmm.share.constraints.Constraints`); vcmm adds what it knows of the
   device (:mod:`vcmm.share.participants`), and the statements are folded
   (:mod:`vcmm.share.folding`) at once, so the join that makes them impossible is
   refused, naming that participant and the constraint, and nothing changes;
3. the last join places the buffers (:mod:`vcmm.share.placement`), allocates them
   from one target (exported dma-bufs), attaches and maps every device participant
   through the DMA API, and hands each participant its part (:class:`Membership`):
   the dma-bufs, and for a device its attachments and scatterlists.  If anything
   fails the whole allocation is taken back and the join refused.

:meth:`~BufferCollection.close` unmaps, detaches and drops the collection's
references; the memory goes back when every other holder (fds, mappings the
participants made) has let go too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vcmm.attrs import DmaDirection
from vcmm.checks import is_int
from vcmm.core.objects import PhysMem
from vcmm.dma.sg import MappedScatterList
from vcmm.errors import InvalidArgumentError, StateError
from vcmm.share.attachment import Attachment
from vcmm.share.constraints import Constraints
from vcmm.share.dmabuf import DmaBuf
from vcmm.share.exporter import VcmBuffer, VcmExporter
from vcmm.share.folding import Named, fold, fold_participants
from vcmm.share.lock import lock_of
from vcmm.share.participants import CPU, Facts, check_participant, facts_of
from vcmm.share.placement import Placement, iotlb_entries, place
from vcmm.share.state import state_of
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi


@dataclass(eq=False)
class Membership:
    """One participant's part of a collection: what it stated, what vcmm added, and
    once allocated its buffers (and, for a device, their mappings)."""

    participant: str
    stated: Constraints
    facts: Facts
    direction: DmaDirection
    buffers: tuple[DmaBuf, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    mappings: tuple[MappedScatterList, ...] = field(default=())

    @property
    def constraints(self) -> Constraints:
        """The statement folded: its own constraints and the platform's."""
        return fold(self.stated, self.facts.implied)

    @property
    def dma_addresses(self) -> tuple[int, ...]:
        """Each buffer's first device address for this device (empty for the CPU)."""
        return tuple(sg.entries[0].dma_address for sg in self.mappings)


def _check_direction(call: str, direction: object) -> DmaDirection:
    if not isinstance(direction, DmaDirection) or direction is DmaDirection.NONE:
        raise InvalidArgumentError(
            f"{call}: direction {direction!r} must be a DmaDirection other than NONE"
        )
    return direction


def _clear(members: list[Membership]) -> None:
    """Undo step of an allocation: the members hold nothing of it."""
    for member in members:
        member.buffers, member.attachments, member.mappings = (), (), ()


class BufferCollection:
    """Buffers negotiated by ``participants`` (module docstring)."""

    def __init__(self, system: VcmmApi, name: str, participants: Sequence[str]) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"BufferCollection name {name!r} must be a non-empty string")
        call = f"buffer collection {name!r}"
        if isinstance(participants, str) or not isinstance(participants, Sequence):
            raise InvalidArgumentError(f"{call}: participants {participants!r} must be a list")
        if not participants:
            raise InvalidArgumentError(f"{call}: needs at least one participant")
        state_of(system)  # refuses what is not a booted system
        expected = [check_participant(system, p) for p in participants]
        repeated = sorted({p for p in expected if expected.count(p) > 1})
        if repeated:
            raise InvalidArgumentError(f"{call}: participants {repeated} are named twice")
        self.system = system
        self.name = name
        self.expected: tuple[str, ...] = tuple(expected)
        self.members: dict[str, Membership] = {}
        self.placement: Placement | None = None
        self.buffers: tuple[DmaBuf, ...] = ()
        self.closed = False
        self._exporter = VcmExporter(system, name=name)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("allocated" if self.allocated else "open")
        return f"<BufferCollection {self.name} {len(self.members)}/{len(self.expected)} {state}>"

    @property
    def allocated(self) -> bool:
        return bool(self.buffers)

    @property
    def waiting_for(self) -> tuple[str, ...]:
        """Participants that have not joined yet."""
        return tuple(p for p in self.expected if p not in self.members)

    @property
    def constraints(self) -> Constraints:
        """The fold of every joined participant's constraints."""
        result = Constraints()
        for member in self.members.values():
            result = fold(result, member.constraints)
        return result

    def named(self) -> list[Named]:
        """(participant, folded statement) in join order."""
        return [(m.participant, m.constraints) for m in self.members.values()]

    # -- joining ------------------------------------------------------------------------------

    def join(
        self,
        participant: str,
        constraints: Constraints | None = None,
        *,
        direction: DmaDirection = DmaDirection.BIDIRECTIONAL,
    ) -> Membership:
        """``participant`` states ``constraints`` (default: none of its own); a device
        maps the buffers for ``direction``.  The last join allocates.  Refused with
        :class:`~vcmm.errors.ConstraintError` when the statements cannot all be met,
        and then nothing changed."""
        call = f"buffer collection {self.name!r}: join"
        stated = Constraints() if constraints is None else constraints
        if not isinstance(stated, Constraints):
            raise InvalidArgumentError(f"{call}: {stated!r} is not a Constraints")
        _check_direction(call, direction)
        with lock_of(self.system):
            self._check_open(call)
            if participant not in self.expected:
                raise InvalidArgumentError(
                    f"{call}: {participant!r} is not a participant (participants: "
                    f"{', '.join(self.expected)})"
                )
            if participant in self.members:
                raise StateError(f"{call}: {participant!r} has already joined")
            share = state_of(self.system)
            api, created = share.ensure_api() if participant != CPU else (None, False)
            try:
                facts = facts_of(self.system, api, participant)
                member = Membership(participant, stated, facts, direction)
                named = [*self.named(), (participant, member.constraints)]
                total = fold_participants(self.name, named)
                if len(named) == len(self.expected):
                    self._allocate(total, named, [*self.members.values(), member])
            except BaseException:
                if created:
                    share.drop_api()
                raise
            self.members[participant] = member
            return member

    def _check_open(self, call: str) -> None:
        if self.closed:
            raise StateError(f"{call}: the collection was closed")
        if self.allocated:
            raise StateError(f"{call}: the collection is allocated; every participant joined")

    # -- allocating -----------------------------------------------------------------------------

    def _allocate(self, total: Constraints, named: list[Named], members: list[Membership]) -> None:
        """Place, allocate, attach and map, all or nothing."""
        placement = place(self.name, self.system, total, named)
        # Undo steps run newest first; the rollback's frees of IOVAs are exact
        # (``vcmm.undo.rolling_back``): a domain's IOVAs go back newest first, and its
        # contexts with its last mapping, each idle context getting back the very
        # table page its activation freed.
        with Transaction(f"{self.name}: allocate", boundary=True) as txn:
            txn.on_undo(_clear, members)
            buffers = []
            for index in range(placement.count):
                buf = self._exporter.allocate(
                    placement.size,
                    target=placement.target,
                    cached=placement.cached,
                    attr=placement.phys_attr(),
                    name=f"{self.name}[{index}]",
                )
                txn.on_undo(buf.put)
                buffers.append(buf)
            for member in members:
                self._hand_out(member, buffers, txn)
        self.placement = placement
        self.buffers = tuple(buffers)

    def _hand_out(self, member: Membership, buffers: list[DmaBuf], txn: Transaction) -> None:
        member.buffers = tuple(buffers)
        if member.facts.kind == "cpu":
            return
        attachments, mappings = [], []
        for buf in buffers:
            att = buf.attach(member.participant)
            txn.on_undo(att.detach)
            sg = att.map(member.direction)
            txn.on_undo(att.unmap, sg)
            attachments.append(att)
            mappings.append(sg)
        member.attachments, member.mappings = tuple(attachments), tuple(mappings)

    # -- after allocation -------------------------------------------------------------------------

    def iotlb_entries(self, participant: str) -> tuple[int, int] | None:
        """IOTLB entries one buffer takes for ``participant``'s IOMMU: as allocated,
        and with 4 KiB pages only (``None``: not behind an IOMMU, or not allocated)."""
        member = self.members.get(participant)
        if member is None or not self.buffers or member.facts.implied.page_sizes is None:
            return None
        chunks = self._exporter_chunks(self.buffers[0])
        pages = member.facts.implied.page_sizes
        return iotlb_entries(chunks, pages), iotlb_entries(chunks, [min(pages)])

    def _exporter_chunks(self, buf: DmaBuf) -> list[tuple[int, int]]:
        return [(c.start, c.size) for c in buf.priv.physmem.chunk_ranges]

    def chunks(self, index: int = 0) -> list[tuple[int, int]]:
        """(physical address, size) of each chunk of buffer ``index``."""
        return self._exporter_chunks(self.buffers[self._index(index)])

    def allocation(self, index: int = 0) -> PhysMem:
        """The physical allocation behind buffer ``index`` (the collection's to free)."""
        buffer: VcmBuffer = self.buffers[self._index(index)].priv
        return buffer.physmem

    def _index(self, index: object) -> int:
        if not self.buffers:
            raise StateError(f"buffer collection {self.name!r} is not allocated yet")
        if not is_int(index) or not 0 <= index < len(self.buffers):
            raise InvalidArgumentError(
                f"buffer collection {self.name!r}: buffer index {index!r} is not in "
                f"0..{len(self.buffers) - 1}"
            )
        return int(index)

    def close(self) -> None:
        """Unmap and detach every device, drop the collection's references."""
        with lock_of(self.system):
            if self.closed:
                raise StateError(f"buffer collection {self.name!r} was already closed")
            for member in self.members.values():
                for att, sg in zip(member.attachments, member.mappings, strict=True):
                    att.unmap(sg)
                    att.detach()
                member.attachments, member.mappings = (), ()
            for buf in self.buffers:
                buf.put()
            self.closed = True
