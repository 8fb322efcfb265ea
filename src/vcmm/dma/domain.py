"""A DMA domain: one IOMMU VCM with an IOVA allocator, shared by its devices.

Linux gives each IOMMU group a default DMA domain; devices in one group share one
page table and one IOVA space (seed 002's review: "a single default domain per IOMMU
... assembling big bits of virtually-contiguous memory that are visible to all the
devices that need to share them").  Here a domain is a VCM covering the IOMMU's whole
input space (the aperture: 32 bits for ARMv7 short descriptors) whose allocator is
an IOVA domain with the smallest page size as granule; every device of the domain is
associated with that VCM and activated on it, so a mapping made for one is visible to
all.  The platform file says which devices share a domain (``domain = "..."``); a
device without one gets a domain of its own.

Each domain places IOVAs by one policy, fixed when it is created: ``"seed"`` (the
2015 allocator of seed 002, :class:`~vcmm.mm.iova.IovaDomain`) or ``"linux"``
(mainline 6.x, :class:`~vcmm.mm.iova_linux.LinuxIovaDomain`).  The platform file's
``iova_policy`` chooses for every domain; ``DmaApi(iova_policy=...)`` overrides it for
all domains or, with a mapping, per domain (:class:`PolicyChoice`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from vcmm.core.objects import Association, Vcm, VcmKind
from vcmm.dma.iova import IovaVcmAllocator
from vcmm.errors import InvalidArgumentError
from vcmm.mm.iova_policy import DEFAULT_IOVA_POLICY, check_policy, new_iova_domain
from vcmm.ranges import AddressRange

if TYPE_CHECKING:
    from vcmm.dma.records import DmaMapping

#: Input space of the IOMMU VCMs (the core's IOMMU_VA_LIMIT: 32-bit short descriptors).
APERTURE = AddressRange(0, 1 << 32)


class DmaDomain:
    """The VCM, IOVA allocator, attached devices and live mappings of one domain."""

    def __init__(
        self,
        system: Any,
        name: str,
        *,
        rcache: bool = True,
        iova_policy: str = DEFAULT_IOVA_POLICY,
    ) -> None:
        sizes = system.iommu_format.geometry(None).sizes
        granule = min(sizes)
        self.name = name
        self.iova = new_iova_domain(iova_policy, granule, APERTURE, rcache=rcache)
        self.allocator = IovaVcmAllocator(self.iova)
        self.vcm: Vcm = system.vcm_create(
            APERTURE.start, APERTURE.size, kind=VcmKind.IOMMU, allocator=self.allocator
        )
        self.granule = granule
        self.associations: dict[str, Association] = {}
        #: Live mappings by the start of their IOVA range.
        self.records: dict[int, DmaMapping] = {}

    @property
    def iova_policy(self) -> str:
        """``"seed"`` or ``"linux"``: how this domain places IOVAs."""
        return self.iova.policy

    def attach(self, system: Any, device: Any) -> None:
        """Associate ``device`` with the domain's VCM and switch its context to it."""
        assoc = system.vcm_assoc(self.vcm, device)
        try:
            system.vcm_activate(assoc)
        except BaseException:
            system.vcm_deassoc(assoc)
            raise
        self.associations[device.name] = assoc

    def detach(self, system: Any, device: Any) -> None:
        assoc = self.associations.pop(device.name)
        system.vcm_deactivate(assoc)
        system.vcm_deassoc(assoc)

    def destroy(self, system: Any) -> None:
        system.vcm_free(self.vcm)

    def record_at(self, addr: int) -> DmaMapping | None:
        """The live mapping whose IOVA range contains ``addr``."""
        found = self.allocator.find(addr)
        return None if found is None else self.records.get(found.start)

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.name,
            tuple(sorted(self.associations)),
            tuple(sorted(self.records)),
        )

    def __repr__(self) -> str:
        return (
            f"<DmaDomain {self.name} {self.vcm.name} {self.iova_policy} IOVAs "
            f"devices={sorted(self.associations)}>"
        )


class PolicyChoice:
    """Which IOVA placement policy each domain of a DmaApi gets.

    ``choice`` is ``None`` (every domain takes ``default``, the platform's), one policy
    name for every domain, or a mapping from domain names to policies (the others take
    ``default``).  A mapping may name only domains that can exist (``domains``), so a
    misspelt name is an error rather than a silently ignored wish.
    """

    def __init__(self, default: str, choice: object, domains: Collection[str]) -> None:
        self.default = check_policy(default, "the platform's iova_policy")
        self.per_domain: dict[str, str] = {}
        if choice is None:
            return
        if isinstance(choice, str):
            self.default = check_policy(choice)
            return
        if not isinstance(choice, Mapping):
            raise InvalidArgumentError(
                f"iova_policy {choice!r} must be a policy name or map domain names to policies"
            )
        for name, policy in choice.items():
            if name not in domains:
                known = ", ".join(sorted(domains)) or "none"
                raise InvalidArgumentError(
                    f"iova_policy names domain {name!r}, which no IOMMU device is in "
                    f"(domains: {known})"
                )
            self.per_domain[name] = check_policy(policy, f"iova_policy[{name!r}]")

    def __call__(self, domain: str) -> str:
        return self.per_domain.get(domain, self.default)
