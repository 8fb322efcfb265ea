"""Buffer collections in scenario files: declared, negotiated, run and reported.

A scenario's ``[[collections]]`` table declares a :class:`~vcmm.share.collection.BufferCollection`:
its participants (``[[collections.participants]]``, a device or ``cpu`` each) with
their constraints.  The runner joins them in file order, so the allocation happens at
the last one, and steps may then name the collection as their ``buffer``: frame ``f``
of a step uses buffer ``f mod count`` through the device's own mapping of it (an IOVA
of its DMA domain, or a bus address).  The result reports the folded constraints,
the choice and the reasons, and the IOTLB entries one buffer takes per IOMMU.

Keys are declared once, on the records' fields (format: docs/CLI.md).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from vcmm.attrs import DmaDirection
from vcmm.errors import ConstraintError, InvalidArgumentError
from vcmm.pixels import LINEAR, ImageLayout
from vcmm.platform import PlatformSpec
from vcmm.platform.codecs import Boolean, Integer, Records, Size, Strings, Text
from vcmm.platform.errors import suggest
from vcmm.platform.fields import Invalid, check_fields, is_name, key, one_of
from vcmm.share.collection import BufferCollection
from vcmm.share.constraints import Constraints, Domain, ImageConstraints
from vcmm.share.folding import fold_all
from vcmm.share.participants import CPU
from vcmm.share.placement import choose_image, choose_size
from vcmm.sizes import SZ_4K
from vcmm.workload.patterns import FORMAT_NAMES, FrameFormat
from vcmm.workload.scenario_keys import ScenarioError

if TYPE_CHECKING:
    from vcmm.system import System
    from vcmm.workload.scenario import BufferSpec, StepSpec

#: ``usage`` of a participant: how a device's mapping may move data.
USAGES: Final = {
    "read": DmaDirection.TO_DEVICE,
    "write": DmaDirection.FROM_DEVICE,
    "rw": DmaDirection.BIDIRECTIONAL,
}
DOMAIN_NAMES: Final = tuple(d.value for d in Domain)
#: Image keys that need ``formats``.
_IMAGE_KEYS: Final = (
    "width",
    "height",
    "max_width",
    "max_height",
    "bytes_per_row_divisor",
    "min_bytes_per_row",
)


def _domains(value: tuple[str, ...]) -> None:
    for item in value:
        one_of(DOMAIN_NAMES)(item)


def _power_of_two(value: int) -> None:
    if value < 1 or value & (value - 1):
        raise Invalid(f"{value} is not a power of two")


def _format_pair(text: str) -> tuple[str, str]:
    name, _, modifier = text.partition("/")
    return name, modifier or LINEAR


@dataclass(frozen=True, slots=True)
class ParticipantSpec:
    """One participant and its constraints (see :class:`~vcmm.share.constraints.Constraints`);
    ``formats`` are ``"nv12"`` or ``"nv12/tile-64x32"``, ``width``/``height`` the image's
    minimum size."""

    device: str = field(metadata=key(Text()))
    usage: str = field(default="rw", metadata=key(Text(), one_of(USAGES)))
    camping: int = field(default=0, metadata=key(Integer()))
    min_buffers: int = field(default=0, metadata=key(Integer()))
    max_buffers: int | None = field(default=None, metadata=key(Integer()))
    min_size: int = field(default=0, metadata=key(Size()))
    max_size: int | None = field(default=None, metadata=key(Size()))
    size_alignment: int = field(default=1, metadata=key(Size(), _power_of_two))
    contiguous: bool = field(default=False, metadata=key(Boolean()))
    secure: bool = field(default=False, metadata=key(Boolean()))
    domains: tuple[str, ...] | None = field(default=None, metadata=key(Strings(), _domains))
    targets: tuple[str, ...] | None = field(default=None, metadata=key(Strings()))
    formats: tuple[str, ...] | None = field(default=None, metadata=key(Strings()))
    width: int = field(default=1, metadata=key(Integer(minimum=1)))
    height: int = field(default=1, metadata=key(Integer(minimum=1)))
    max_width: int | None = field(default=None, metadata=key(Integer(minimum=1)))
    max_height: int | None = field(default=None, metadata=key(Integer(minimum=1)))
    bytes_per_row_divisor: int = field(default=1, metadata=key(Integer(minimum=1)))
    min_bytes_per_row: int = field(default=0, metadata=key(Integer()))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)
        if self.formats is None:
            for name in _IMAGE_KEYS:
                if getattr(self, name) != ParticipantSpec.__dataclass_fields__[name].default:
                    raise ScenarioError(
                        f"{name} describes an image: give the image's formats too "
                        '(formats = ["nv12"])',
                        key=name,
                    )
        try:
            self.constraints()
        except InvalidArgumentError as err:
            raise ScenarioError(str(err), key="formats") from None

    @property
    def direction(self) -> DmaDirection:
        return USAGES[self.usage]

    def image(self) -> ImageConstraints | None:
        if self.formats is None:
            return None
        return ImageConstraints(
            frozenset(_format_pair(f) for f in self.formats),
            min_width=self.width,
            min_height=self.height,
            max_width=self.max_width,
            max_height=self.max_height,
            min_bytes_per_row=self.min_bytes_per_row,
            bytes_per_row_divisor=self.bytes_per_row_divisor,
        )

    def constraints(self) -> Constraints:
        """The participant's statement as the sharing layer takes it."""
        return Constraints(
            min_buffers=self.min_buffers,
            max_buffers=self.max_buffers,
            camping=self.camping,
            min_size=self.min_size,
            max_size=self.max_size,
            size_alignment=self.size_alignment,
            contiguous=self.contiguous,
            secure=self.secure,
            domains=(
                frozenset(Domain(d) for d in self.domains)
                if self.domains is not None
                else frozenset(Domain)
            ),
            targets=frozenset(self.targets) if self.targets is not None else None,
            image=self.image(),
        )


@dataclass(frozen=True, slots=True)
class CollectionSpec:
    """A collection: its name (steps use it as a buffer name) and participants."""

    name: str = field(metadata=key(Text(), is_name))
    participants: tuple[ParticipantSpec, ...] = field(metadata=key(Records(ParticipantSpec)))

    def __post_init__(self) -> None:
        check_fields(self, ScenarioError)
        if not self.participants:
            raise ScenarioError("a collection needs at least one participant", key="participants")
        seen: set[str] = set()
        for index, part in enumerate(self.participants):
            if part.device in seen:
                raise ScenarioError(
                    f"{part.device!r} joins twice", key=f"participants[{index}].device"
                )
            seen.add(part.device)

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(p.device for p in self.participants)

    def participant(self, device: str) -> ParticipantSpec | None:
        return next((p for p in self.participants if p.device == device), None)

    @property
    def has_image(self) -> bool:
        return any(p.formats is not None for p in self.participants)


# -- the rules that tie collections to the rest of the scenario ---------------------------------


def check_collections(
    collections: tuple[CollectionSpec, ...],
    platform: PlatformSpec,
    buffers: tuple[BufferSpec, ...],
    steps: tuple[StepSpec, ...],
) -> None:
    """Names unique among buffers and collections, participants and targets the
    platform has, and no device both in a collection (DMA API) and in a step over a
    plain buffer (the seed's calls on its context)."""
    devices = [d.name for d in platform.devices]
    targets = [t.name for t in platform.targets]
    taken = {b.name for b in buffers}
    plain = {s.device: s.buffer for s in steps if s.buffer in taken}
    for i, spec in enumerate(collections):
        where = f"collections[{i}]"
        if spec.name in taken:
            raise ScenarioError(
                f"{spec.name!r} already names a buffer or collection", key=f"{where}.name"
            )
        taken.add(spec.name)
        for j, part in enumerate(spec.participants):
            at = f"{where}.participants[{j}]"
            if part.device != CPU and part.device not in devices:
                raise ScenarioError(
                    f"unknown device {part.device!r}{suggest(part.device, devices)}; "
                    f"participants are the platform's devices or cpu: {', '.join(devices)}",
                    key=f"{at}.device",
                )
            if part.device in plain:
                raise ScenarioError(
                    f"{part.device!r} also runs a step over plain buffer "
                    f"{plain[part.device]!r} (the seed's calls on its context); a device is "
                    "driven either through a VCM of its own or through the DMA API",
                    key=f"{at}.device",
                )
            for target in part.targets or ():
                if target not in targets:
                    raise ScenarioError(
                        f"unknown memory target {target!r}{suggest(target, targets)}; "
                        f"the platform has: {', '.join(targets)}",
                        key=f"{at}.targets",
                    )


def check_collection_step(step: StepSpec, spec: CollectionSpec) -> None:
    """A step over a collection: its device joined it, and the pattern fits (keys
    relative to the step)."""
    if spec.participant(step.device) is None:
        raise ScenarioError(
            f"{step.device!r} is not a participant of collection {spec.name!r} "
            f"(participants: {', '.join(spec.devices)})",
            key="device",
        )
    if step.plane != "all":
        raise ScenarioError(
            f"collection {spec.name!r} chooses its format when it is allocated, so a step "
            'covers all its planes (plane = "all")',
            key="plane",
        )
    if step.pattern in ("raster", "tiled") and not spec.has_image:
        raise ScenarioError(
            f"pattern {step.pattern!r} needs rows, but no participant of collection "
            f"{spec.name!r} states image formats",
            key="pattern",
        )


# -- running ------------------------------------------------------------------------------------


def negotiate(system: System, spec: CollectionSpec, where: str, source: str) -> BufferCollection:
    """Create the collection and join every participant in file order; a refusal is
    a :class:`ScenarioError` keyed by the participant that broke it."""
    collection = BufferCollection(system, spec.name, spec.devices)
    for index, part in enumerate(spec.participants):
        try:
            collection.join(part.device, part.constraints(), direction=part.direction)
        except ConstraintError as err:
            blamed = next(
                (i for i, p in enumerate(spec.participants) if p.device == err.participant), index
            )
            raise ScenarioError(
                str(err), key=f"{where}.participants[{blamed}]", source=source
            ) from None
    return collection


def stream_shape(collection: BufferCollection) -> tuple[int, FrameFormat | None, int | None]:
    """(bytes, frame, row stride) a step's address stream covers in one buffer: the
    image (as a frame when the workload layer knows its format) or the whole buffer."""
    placement = collection.placement
    assert placement is not None
    return _shape(placement.image, placement.size)


def estimated_shape(spec: CollectionSpec) -> tuple[int, FrameFormat | None, int | None]:
    """:func:`stream_shape` before anything is allocated, from the participants'
    statements alone (the platform adds alignment, not bytes): for cost estimates."""
    named = [(p.device, p.constraints()) for p in spec.participants]
    total = fold_all([c for _, c in named])
    try:
        image = choose_image(spec.name, total, named)
        return _shape(image, choose_size(spec.name, total, named, image))
    except ConstraintError:
        return SZ_4K, None, None


def _shape(image: ImageLayout | None, size: int) -> tuple[int, FrameFormat | None, int | None]:
    if image is None:
        return size, None, None
    if image.modifier == LINEAR and image.format in FORMAT_NAMES:
        frame = FrameFormat.build(
            image.width, image.height, image.format, stride=image.bytes_per_row
        )
        if frame.size == image.size:
            return image.size, frame, None
    stride = image.bytes_per_row if image.size % image.bytes_per_row == 0 else None
    return image.size, None, stride


@dataclass
class CollectionResult:
    """What a report shows of one collection."""

    name: str
    #: (participant, kind, what it stated, what vcmm added) per participant.
    participants: list[tuple[str, str, str, str]]
    #: (constraint, folded value) rows.
    folded: list[tuple[str, str]]
    #: (what, choice) rows, then the reasons.
    choice: list[tuple[str, str]]
    reasons: list[str]
    #: Chunk size -> count of buffer 0.
    chunks: dict[int, int]
    #: Participant -> (IOTLB entries one buffer takes, entries with 4 KiB pages).
    iotlb: dict[str, tuple[int, int]] = field(default_factory=dict)
    #: Participant -> device address of each buffer.
    addresses: dict[str, list[int]] = field(default_factory=dict)


def _rows_text(rows: list[tuple[str, str]]) -> str:
    return "; ".join(f"{k} {v}" for k, v in rows) or "nothing"


def collection_result(collection: BufferCollection) -> CollectionResult:
    placement = collection.placement
    assert placement is not None
    participants = []
    iotlb: dict[str, tuple[int, int]] = {}
    addresses: dict[str, list[int]] = {}
    for name, member in collection.members.items():
        implied = "; ".join(r.split(": ", 1)[-1] for r in member.facts.reasons)
        participants.append(
            (name, member.facts.kind, _rows_text(member.stated.describe()), implied)
        )
        entries = collection.iotlb_entries(name)
        if entries is not None:
            iotlb[name] = entries
        if name != CPU:
            addresses[name] = list(member.dma_addresses)
    chunks = Counter(size for _, size in collection.chunks(0))
    return CollectionResult(
        name=collection.name,
        participants=participants,
        folded=collection.constraints.describe(),
        choice=placement.rows(),
        reasons=list(placement.reasons),
        chunks=dict(sorted(chunks.items(), reverse=True)),
        iotlb=iotlb,
        addresses=addresses,
    )
