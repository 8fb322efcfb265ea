"""What the sharing layer keeps per booted system, and which DMA API it maps through.

**One DMA API per system.**  Linux has one set of DMA ops per device, shared by every
driver and by dma-buf: an exporter's ``map_dma_buf`` calls ``dma_map_sg`` on the
*importing* device.  The registry is the DMA API's own (:meth:`DmaApi.of`, one open
:class:`~vcmm.dma.api.DmaApi` per system): :func:`dma_api` returns it, creating it
with the platform's choices on first use, and :func:`set_dma_api` accepts one a
caller built with its own options (debugging, domains).  Creating it programs no
device (a device's domain takes its context at its first mapping), so a device
driven through the seed's calls and dma-buf attachments of other devices coexist.

The state is created and changed under the system's machine lock
(:func:`vcmm.share.lock.lock_of`), so two threads' first uses make one of it.

**The kernel's own mappings** (``vmap``, and the exporter's mapping of carve-out
buffers) are reservations in one VMM VCM of the sharing layer.

**Where buffers come from** when an exporter or a ``/dev`` node is not told:
:data:`EXPORTER_DEFAULT` stands for the platform's exporter target
(``[dma] exporter_target``, kernel RAM unless the platform says otherwise).
"""

from __future__ import annotations

import enum
from typing import Final, cast

from vcmm.core.flags import Attr
from vcmm.core.interfaces import VcmmApi, front_ends_of
from vcmm.core.manager import VMM_EXT_ID
from vcmm.core.objects import PhysMem, Reservation, Vcm
from vcmm.dma.api import DmaApi
from vcmm.errors import (
    BusyError,
    InvalidArgumentError,
    NotFoundError,
    OutOfMemoryError,
    StateError,
)
from vcmm.hw.master import AnyMaster
from vcmm.share.lock import lock_of
from vcmm.undo import Transaction


class _Default(enum.Enum):
    EXPORTER = "the platform's exporter target"


#: ``target=`` of exporters and ``/dev`` nodes: the platform's ``[dma] exporter_target``.
EXPORTER_DEFAULT: Final = _Default.EXPORTER
#: A memory target as exporters take it: a name, ``None`` (the priority order) or
#: :data:`EXPORTER_DEFAULT`.
TargetChoice = str | None | _Default


def exporter_target(system: VcmmApi, target: TargetChoice) -> str | None:
    """The target ``target`` stands for on ``system``."""
    if target is EXPORTER_DEFAULT:
        return str(system.memory_roles.exporter)
    if target is not None and not isinstance(target, str):
        raise InvalidArgumentError(f"target {target!r} is not a memory target name or None")
    return target


def check_system(call: str, system: object) -> VcmmApi:
    """``system`` must be a booted :class:`vcmm.System` (one with front-end slots)."""
    front_ends_of(call, system)
    return cast(VcmmApi, system)


class ShareState:
    """The sharing layer's view of one system (see :func:`state_of`)."""

    def __init__(self, system: VcmmApi) -> None:
        self.system = system
        self._vmm: Vcm | None = None

    @property
    def api(self) -> DmaApi | None:
        """The system's open DMA API, if one was made."""
        return DmaApi.current(self.system)

    # -- the DMA API -----------------------------------------------------------------------

    def ensure_api(self) -> tuple[DmaApi, bool]:
        """The system's DMA API and whether this call created it (so a caller that
        then fails can take it back with :meth:`drop_api`)."""
        api = DmaApi.current(self.system)
        if api is not None:
            return api, False
        try:
            return DmaApi(self.system), True
        except (BusyError, OutOfMemoryError) as exc:
            raise type(exc)(f"vcmm.share: cannot set up the system's DMA API ({exc})") from exc

    def drop_api(self) -> None:
        """Close an API :meth:`ensure_api` just created (nothing uses it yet)."""
        api = DmaApi.current(self.system)
        if api is not None:
            api.close()

    def serving(self, call: str, api: DmaApi, device: AnyMaster) -> str:
        """The DMA ops the API gives ``device`` (``"iommu"``/``"direct"``), or why
        it gives none."""
        try:
            return api.ops(device)
        except NotFoundError:
            raise StateError(
                f"{call}: the DMA API serves no {device.name} (remove_device was called); "
                "attach_device it again first"
            ) from None

    # -- device lookup ---------------------------------------------------------------------

    def resolve(self, call: str, device: object) -> AnyMaster:
        """A device (bus master) of this system, by name or object; not the CPU."""
        system = self.system
        if isinstance(device, str):
            dev = system.device(device)
        else:
            found = [d for d in system.devices.values() if d is device]
            if not found:
                raise InvalidArgumentError(f"{call}: {device!r} is not a device of this system")
            dev = found[0]
        if dev is system.cpu:
            raise InvalidArgumentError(
                f"{call}: the CPU is not an importer; use mmap (user) or vmap (kernel)"
            )
        return dev

    # -- the kernel ------------------------------------------------------------------------

    def map_kernel(self, physmem: PhysMem, length: int, attr: Attr) -> Reservation:
        """A kernel virtual mapping of the first ``length`` bytes of ``physmem``.

        The sharing layer's VMM VCM exists while it maps something (made by the first
        mapping, freed with the last), so a failed mapping leaves no VCM behind."""
        system = self.system
        with Transaction("map_kernel", boundary=True) as txn:
            if self._vmm is None or self._vmm.freed:
                self._vmm = system.vcm_create_from_prebuilt(VMM_EXT_ID)
            txn.on_undo(self._drop_idle_vmm)
            res = system.vcm_reserve(self._vmm, length, attr)
            txn.on_undo(system.vcm_unreserve, res)
            system.vcm_back(res, physmem)
        return res

    def unmap_kernel(self, res: Reservation) -> None:
        self.system.vcm_unback(res)
        self.system.vcm_unreserve(res)
        self._drop_idle_vmm()

    def _drop_idle_vmm(self) -> None:
        if self._vmm is not None and not self._vmm.freed and not self._vmm.reservations:
            self.system.vcm_free(self._vmm)
            self._vmm = None


def state_of(system: VcmmApi) -> ShareState:
    """The one :class:`ShareState` of ``system`` (created on first use)."""
    slots = front_ends_of("vcmm.share", system)
    with lock_of(system):
        return slots.setdefault(ShareState, lambda: ShareState(system))


def dma_api(system: VcmmApi) -> DmaApi:
    """The DMA API of ``system`` every layer shares (created with the platform's
    choices if none is open): the same as :meth:`DmaApi.of`."""
    check_system("dma_api", system)
    with lock_of(system):
        return DmaApi.of(system)


def set_dma_api(api: DmaApi) -> DmaApi:
    """Check that ``api`` (built by the caller with its own debugging, domains, pools)
    is its system's shared DMA API; refused for a closed one while another is open."""
    if not isinstance(api, DmaApi):
        raise InvalidArgumentError(f"set_dma_api: {api!r} is not a DmaApi")
    with lock_of(api.system):
        current = DmaApi.current(api.system)
        if current is api:
            return api
        if current is not None:
            raise StateError(
                f"set_dma_api: the system already has its shared DmaApi ({current!r}); use "
                "vcmm.share.dma_api(system) instead of another"
            )
        raise StateError(f"set_dma_api: {api!r} is closed; build a new DmaApi(system)")
