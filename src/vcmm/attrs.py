"""Hardware memory attributes shared by the page-table formats, TLBs, caches and devices.

These are the architecture's notions (memory type, cache policy, shareability,
permissions), independent of any one descriptor encoding: each page-table format
encodes a :class:`PageAttrs` into its own bits and decodes it back.  The VCMM's
``vcmm.Attr`` flags (the seed's names) are translated into these at the core layer.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from vcmm.errors import InvalidArgumentError


class Access(enum.Enum):
    """The kind of a memory transaction."""

    READ = "read"
    WRITE = "write"
    EXEC = "exec"


class MemType(enum.Enum):
    """Memory type and cache policy, as ARMv7 TEX/C/B or an ARMv8 MAIR entry express it.

    Write-combine, in Linux's ARM terms, is Normal non-cacheable (bufferable), so it is
    ``NORMAL_NC`` here.
    """

    STRONGLY_ORDERED = "strongly-ordered"
    DEVICE = "device"
    NORMAL_NC = "normal-nc"
    NORMAL_WT = "normal-wt"
    NORMAL_WB_NWA = "normal-wb-nwa"
    NORMAL_WB_WA = "normal-wb-wa"

    @property
    def cacheable(self) -> bool:
        return self in (MemType.NORMAL_WT, MemType.NORMAL_WB_NWA, MemType.NORMAL_WB_WA)

    @property
    def is_device(self) -> bool:
        return self in (MemType.STRONGLY_ORDERED, MemType.DEVICE)


class FaultKind(enum.Enum):
    """Why a translation failed (the fault status a handler receives)."""

    TRANSLATION = "translation"
    PERMISSION = "permission"
    ACCESS_FLAG = "access-flag"
    ADDRESS_SIZE = "address-size"
    BUS = "bus"


@dataclass(frozen=True, slots=True)
class PageAttrs:
    """Attributes of one mapping, as a page-table entry carries them.

    ``user`` grants unprivileged (EL0/user) access with the same read/write rights as
    privileged access; ``global_`` is the inverse of nG; ``ns`` is the NS bit.
    Write without read cannot be encoded by either ARM format and is refused.
    """

    read: bool = True
    write: bool = True
    exec: bool = False
    user: bool = False
    memtype: MemType = MemType.NORMAL_WB_WA
    shareable: bool = False
    global_: bool = True
    ns: bool = False

    def __post_init__(self) -> None:
        if self.write and not self.read:
            raise InvalidArgumentError(
                "PageAttrs(write=True, read=False): ARM descriptors cannot encode write-only"
            )

    def with_(self, **changes: object) -> PageAttrs:
        """A copy with some fields changed (``dataclasses.replace`` with a short name)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def allows(self, access: Access, *, privileged: bool = True) -> bool:
        """Whether a transaction of ``access`` kind passes the permission check."""
        if not privileged and not self.user:
            return False
        if access is Access.READ:
            return self.read
        if access is Access.WRITE:
            return self.write
        return self.exec and self.read

    def same_memory_type(self, other: PageAttrs) -> bool:
        """The rule of ARMv6+: aliases must agree on type, cacheability and sharing."""
        return self.memtype is other.memtype and self.shareable == other.shareable

    def short(self) -> str:
        """A compact rendering for tables and dumps, e.g. ``rw- wb-wa sh``."""
        perms = ("r" if self.read else "-") + ("w" if self.write else "-")
        perms += "x" if self.exec else "-"
        flags = [perms, self.memtype.value.removeprefix("normal-")]
        if self.user:
            flags.append("user")
        if self.shareable:
            flags.append("sh")
        if not self.global_:
            flags.append("nG")
        if self.ns:
            flags.append("ns")
        return " ".join(flags)


#: Read/write, write-back cacheable normal memory: the default for RAM mappings.
RW_WB = PageAttrs()
#: Read/write normal non-cacheable: write-combine buffers, non-coherent DMA aliases.
RW_NC = PageAttrs(memtype=MemType.NORMAL_NC)
#: Read-only write-back.
RO_WB = PageAttrs(write=False)


class DmaDirection(enum.Enum):
    """Who writes a buffer during a transfer: the kernel's ``enum dma_data_direction``.

    Cache maintenance depends on it: data going to a device must be cleaned out of the
    CPU cache first; data coming from a device must be invalidated so the CPU does not
    read stale lines afterwards.
    """

    BIDIRECTIONAL = 0
    TO_DEVICE = 1
    FROM_DEVICE = 2
    NONE = 3
