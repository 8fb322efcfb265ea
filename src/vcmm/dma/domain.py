"""A DMA domain: one IOMMU VCM with an IOVA allocator, shared by its devices.

Linux gives each IOMMU group a default DMA domain; devices in one group share one
page table and one IOVA space (seed 002's review: "a single default domain per IOMMU
... assembling big bits of virtually-contiguous memory that are visible to all the
devices that need to share them").  Here a domain is a VCM covering the IOMMU's whole
input space (the aperture: 32 bits for the ARMv7 formats, 48 for VMSAv8-64, as
arm-smmu's domain geometry) in the table format of its devices' SMMU, whose allocator
is an :class:`~vcmm.mm.iova.IovaDomain` with that format's smallest page size as
granule; every device of the domain is associated with that VCM and activated on it,
so a mapping made for one is visible to all.  The platform file says which devices
share a domain (``domain = "..."``; devices on one context, an IOMMU group, must);
a device without one gets a domain of its own.  Members on one context share it: the
core keeps the context running until the last member's association goes, so a
member removed from the DMA API leaves the others mapping.

**A device is driven either through a VCM of its own or through the DMA API.**  Linux
gives a device either its default DMA domain (used by the DMA API) or an explicit,
unmanaged domain a driver attached; the seed's calls are the latter.  So a domain
programs its devices' contexts lazily: joining the domain costs nothing, and the first
mapping made in it activates the domain's VCM on every member whose context is free.
A member whose context runs a VCM of the seed calls stays off the domain (the DMA API
refuses to map for it, saying which association to deactivate) and joins it at a
later mapping once its context is free; the associations the domain makes carry a
``holder`` naming the DMA API, so the seed calls refuse to take such a context with a
message that says how to release it (``DmaApi.remove_device``).

Each domain places IOVAs by one policy, fixed when it is created: ``"seed"`` (the
2015 allocator of seed 002, :class:`~vcmm.mm.iova.IovaDomain`) or ``"linux"``
(mainline 6.x, :class:`~vcmm.mm.iova_linux.LinuxIovaDomain`).  The platform file's
``iova_policy`` chooses for every domain; ``DmaApi(iova_policy=...)`` overrides it for
all domains or, with a mapping, per domain (:class:`PolicyChoice`).

Each domain also invalidates its IOTLB entries after an unmap in one mode, fixed when
it is created: ``"strict"`` (at every unmap) or ``"lazy"`` (a flush queue on the DMA
API's simulated clock); see :mod:`vcmm.dma.invalidation`.  The platform's
``invalidation`` and ``DmaApi(invalidation=...)`` choose it as they choose the IOVA
policy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from vcmm.attrs import MemType
from vcmm.core.objects import Association, Vcm, VcmKind
from vcmm.core.tableformat import input_limit
from vcmm.dma.clock import SimClock
from vcmm.dma.invalidation import DomainInvalidation
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.errors import InvalidArgumentError
from vcmm.mm.iova_policy import DEFAULT_IOVA_POLICY, check_policy, new_iova_domain
from vcmm.ranges import AddressRange
from vcmm.tlbcost import DEFAULT_INVALIDATION, check_mode
from vcmm.undo import Transaction

if TYPE_CHECKING:
    from vcmm.core.interfaces import VcmmApi
    from vcmm.dma.records import DmaMapping
    from vcmm.hw.bus import SmmuDevice
    from vcmm.hw.pgtable import PageTableFormat


def aperture_of(fmt: PageTableFormat) -> AddressRange:
    """The IOVA space of a domain whose tables are ``fmt``: the format's whole input."""
    return AddressRange(0, input_limit(fmt))


class DmaDomain:
    """The VCM, IOVA allocator, attached devices and live mappings of one domain."""

    def __init__(
        self,
        system: VcmmApi,
        name: str,
        fmt: PageTableFormat,
        *,
        rcache: bool = True,
        iova_policy: str = DEFAULT_IOVA_POLICY,
        invalidation: str = DEFAULT_INVALIDATION,
        clock: SimClock | None = None,
    ) -> None:
        check_mode(invalidation)
        granule = min(fmt.geometry(None).sizes)
        aperture = aperture_of(fmt)
        self.name = name
        #: The table format of the domain's SMMU (every member's SMMU walks it).
        self.fmt = fmt
        self.iova = new_iova_domain(iova_policy, granule, aperture, rcache=rcache)
        self.allocator = IovaVcmAllocator(self.iova)
        self.vcm: Vcm = system.vcm_create(
            aperture.start, aperture.size, kind=VcmKind.IOMMU, allocator=self.allocator, fmt=fmt
        )
        self.granule = granule
        #: Strict or lazy IOTLB invalidation after an unmap, and its counters.
        self.invalidation = DomainInvalidation(
            system, self.vcm, self.allocator, invalidation, clock or SimClock()
        )
        #: Devices of the domain, by name; ``associations`` holds those programmed.
        self.members: dict[str, SmmuDevice] = {}
        self.associations: dict[str, Association] = {}
        #: Live mappings by the start of their IOVA range.
        self.records: dict[int, DmaMapping] = {}
        #: The domain's own zeroed page per memory type that ``map_sg`` padding maps
        #: (made on first use), and how to give each back.
        self.padding: dict[MemType, tuple[AddressRange, Callable[[], None]]] = {}

    @property
    def iova_policy(self) -> str:
        """``"seed"`` or ``"linux"``: how this domain places IOVAs."""
        return self.iova.policy

    def attach(self, device: SmmuDevice) -> None:
        """Make ``device`` a member; its context is programmed at the first mapping."""
        self.check_member(device)
        self.members[device.name] = device

    def check_member(self, device: SmmuDevice) -> None:
        """Refuse a device whose SMMU does not walk the domain's table format (Linux
        refuses to attach a domain to an SMMU that cannot walk its io-pgtable)."""
        smmu = device.ctx.smmu
        if smmu.fmt is not self.fmt:
            raise InvalidArgumentError(
                f"{device.name} cannot join DMA domain {self.name!r}: its SMMU {smmu.name} "
                f"walks {smmu.fmt.name} tables, the domain's are {self.fmt.name}"
            )

    def blocker(self, system: VcmmApi, device: SmmuDevice) -> Association | None:
        """The active association of another VCM on ``device``'s context, if any: what
        keeps the domain off the device."""
        ctx = device.ctx
        for assoc in system.associations:
            if (
                assoc.active
                and assoc.vcm is not self.vcm
                and assoc.vcm.kind is VcmKind.IOMMU
                and assoc.context is ctx
            ):
                return assoc
        return None

    def activate(self, system: VcmmApi) -> tuple[Association, ...]:
        """Program the domain on every member whose context is free (the first mapping
        of a domain does this); members sharing a context each get an association of
        the domain's VCM, which the core runs once on the context; all or nothing."""
        pending = [
            d
            for d in self.members.values()
            if d.name not in self.associations and self.blocker(system, d) is None
        ]
        made: list[Association] = []
        with Transaction("activate domain") as txn:
            for device in pending:
                holder = (
                    f"the DMA API (domain {self.name!r}); DmaApi.remove_device"
                    f"({device.name!r}) releases it once the device has no mappings"
                )
                assoc = system.vcm_assoc(self.vcm, device, holder=holder)
                txn.on_undo(system.vcm_deassoc, assoc)
                made.append(assoc)
                system.vcm_activate(assoc)
                txn.on_undo(system.vcm_deactivate, assoc)
            for assoc in made:
                self.associations[assoc.device.name] = assoc
            txn.on_undo(self._forget, tuple(made))
        return tuple(made)

    def _forget(self, made: tuple[Association, ...]) -> None:
        for assoc in made:
            if self.associations.get(assoc.device.name) is assoc:
                del self.associations[assoc.device.name]

    def release_unused(self, system: VcmmApi, activated: tuple[Association, ...]) -> None:
        """Release the contexts a mapping's :meth:`activate` programmed (``activated``)
        if the domain maps nothing any more.

        For a mapping taken back while a transaction rolls back (the undo of a failed
        compound operation), so that operation leaves no trace.  An ordinary unmap
        keeps the contexts, as Linux keeps a device on its default domain."""
        if self.records:
            return
        for assoc in reversed(activated):
            if self.associations.get(assoc.device.name) is assoc:
                del self.associations[assoc.device.name]
                system.vcm_deactivate(assoc)
                system.vcm_deassoc(assoc)

    def detach(self, system: VcmmApi, device: SmmuDevice) -> None:
        """Take ``device`` out of the domain, releasing its context if programmed."""
        del self.members[device.name]
        assoc = self.associations.pop(device.name, None)
        if assoc is not None:
            system.vcm_deactivate(assoc)
            system.vcm_deassoc(assoc)

    def destroy(self, system: VcmmApi) -> None:
        self.invalidation.close()
        system.vcm_free(self.vcm)
        while self.padding:
            _, (_page, give_back) = self.padding.popitem()
            give_back()

    def record_at(self, addr: int) -> DmaMapping | None:
        """The live mapping whose IOVA range contains ``addr``."""
        found = self.allocator.find(addr)
        return None if found is None else self.records.get(found.start)

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.name,
            tuple(sorted(self.members)),
            tuple(sorted(self.associations)),
            tuple(sorted(self.records)),
            tuple(sorted((m.value, page.start) for m, (page, _) in self.padding.items())),
            self.invalidation.snapshot(),
        )

    def __repr__(self) -> str:
        return (
            f"<DmaDomain {self.name} {self.vcm.name} {self.iova_policy} IOVAs "
            f"{self.invalidation.mode} invalidation "
            f"devices={sorted(self.members)}>"
        )


class PolicyChoice:
    """Which IOVA placement policy (or, with ``check=check_mode`` and ``key=
    "invalidation"``, which invalidation mode) each domain of a DmaApi gets.

    ``choice`` is ``None`` (every domain takes ``default``, the platform's), one policy
    name for every domain, or a mapping from domain names to policies (the others take
    ``default``).  A mapping may name only domains that can exist (``domains``), so a
    misspelt name is an error rather than a silently ignored wish.
    """

    def __init__(
        self,
        default: str,
        choice: object,
        domains: Collection[str],
        *,
        check: Callable[[object, str], str] = check_policy,
        key: str = "iova_policy",
    ) -> None:
        self.default = check(default, f"the platform's {key}")
        self.per_domain: dict[str, str] = {}
        if choice is None:
            return
        if isinstance(choice, str):
            self.default = check(choice, key)
            return
        if not isinstance(choice, Mapping):
            raise InvalidArgumentError(
                f"{key} {choice!r} must be a policy name or map domain names to policies"
            )
        for name, policy in choice.items():
            if name not in domains:
                known = ", ".join(sorted(domains)) or "none"
                raise InvalidArgumentError(
                    f"{key} names domain {name!r}, which no IOMMU device is in (domains: {known})"
                )
            self.per_domain[name] = check(policy, f"{key}[{name!r}]")

    def __call__(self, domain: str) -> str:
        return self.per_domain.get(domain, self.default)
