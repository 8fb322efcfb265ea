"""Choosing an IOVA placement policy by name: ``"seed"`` or ``"linux"``.

The DMA API, the platform file and the command line name a policy; this module turns
the name into a domain object, so nothing above the allocators needs to know the
classes.  Both classes answer the same calls (:class:`IovaAllocator`).
"""

from __future__ import annotations

from typing import Final, Protocol

from vcmm.errors import InvalidArgumentError
from vcmm.mm.iova import IovaCounters, IovaDomain, IovaSnapshot
from vcmm.mm.iova_linux import LinuxIovaDomain, LinuxIovaSnapshot
from vcmm.ranges import AddressRange

#: The placement policies, the default first.
IOVA_POLICIES: Final = ("seed", "linux")
DEFAULT_IOVA_POLICY: Final = "seed"


class IovaAllocator(Protocol):
    """What the DMA layer asks of an IOVA domain, whatever its policy."""

    @property
    def policy(self) -> str: ...
    @property
    def granule(self) -> int: ...
    @property
    def aperture(self) -> AddressRange: ...
    @property
    def counters(self) -> IovaCounters: ...
    @property
    def cached_count(self) -> int: ...
    def alloc(self, size: int, limit: int | None = None, *, size_aligned: bool = True) -> int: ...
    def undo_alloc(self, addr: int) -> AddressRange: ...
    def free(self, addr: int) -> AddressRange: ...
    def find(self, addr: int) -> AddressRange | None: ...
    def reserve(self, range: AddressRange) -> AddressRange: ...
    def allocated(self) -> list[AddressRange]: ...
    def flush_rcache(self) -> int: ...
    def snapshot(self) -> IovaSnapshot | LinuxIovaSnapshot: ...


def check_policy(policy: object, what: str = "iova_policy") -> str:
    """``policy`` if it names a placement policy; otherwise a one-sentence error."""
    if not isinstance(policy, str) or policy not in IOVA_POLICIES:
        raise InvalidArgumentError(
            f"{what} {policy!r} is not an IOVA placement policy (choose {' or '.join(IOVA_POLICIES)})"
        )
    return policy


def new_iova_domain(
    policy: str, granule: int, aperture: AddressRange | None = None, *, rcache: bool = True
) -> IovaDomain | LinuxIovaDomain:
    """A fresh IOVA domain placing allocations by ``policy``."""
    if check_policy(policy) == "linux":
        return LinuxIovaDomain(granule, aperture, rcache=rcache)
    return IovaDomain(granule, aperture, rcache=rcache)
