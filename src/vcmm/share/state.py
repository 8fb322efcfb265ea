"""What the sharing layer keeps per booted system: the DMA API and a kernel VCM.

**One DMA API per system.**  Linux has one set of DMA ops per device, shared by every
driver and by dma-buf: an exporter's ``map_dma_buf`` calls ``dma_map_sg`` on the
*importing* device.  Here the :class:`~vcmm.dma.api.DmaApi` owns every IOMMU context
it serves (its domains run on them), so two of them on one system cannot coexist and
the sharing layer must not create VCMs of its own on those contexts.
:func:`dma_api` returns the system's one API, creating it on first use;
:func:`set_dma_api` registers one the caller built with its own options (debugging,
domains) before the sharing layer needed one.  (The registry belongs in the DMA API
itself, e.g. ``DmaApi.of(system)``; it lives here until it moves there.)

The state is created and changed under the system's machine lock
(:func:`vcmm.share.lock.lock_of`), so two threads' first uses make one of it.

**The kernel's own mappings** (``vmap``, and the exporter's mapping of carve-out
buffers) are reservations in one VMM VCM of the sharing layer.
"""

from __future__ import annotations

from typing import Any

from vcmm.core.flags import Attr
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
from vcmm.share.lock import lock_of

#: Attribute of a System under which its sharing state lives (dies with the system).
_STATE_ATTR = "_vcmm_share_state"


def check_system(call: str, system: object) -> Any:
    """``system`` must be a booted :class:`vcmm.System`."""
    if not all(
        hasattr(system, a) for a in ("device", "devices", "cpu", "graph", "vcm_create", "lock")
    ):
        raise InvalidArgumentError(f"{call}: {system!r} is not a booted vcmm.System")
    return system


class ShareState:
    """The sharing layer's view of one system (see :func:`state_of`)."""

    def __init__(self, system: Any) -> None:
        self.system = system
        self.api: DmaApi | None = None
        self._vmm: Vcm | None = None

    # -- the DMA API -----------------------------------------------------------------------

    def ensure_api(self) -> tuple[DmaApi, bool]:
        """The system's DMA API and whether this call created it (so a caller that
        then fails can take it back with :meth:`drop_api`)."""
        if self.api is not None:
            return self.api, False
        try:
            self.api = DmaApi(self.system)
        except (BusyError, OutOfMemoryError) as exc:
            # A DmaApi built directly holds the contexts and the coherent pool.
            raise type(exc)(
                f"vcmm.share: cannot set up the system's DMA API ({exc}); if a DmaApi was "
                "built directly, register it with set_dma_api(api)"
            ) from exc
        return self.api, True

    def drop_api(self) -> None:
        """Close and forget an API :meth:`ensure_api` just created (nothing uses it)."""
        if self.api is not None:
            api, self.api = self.api, None
            api.close()

    def serving(self, call: str, api: DmaApi, device: Any) -> str:
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

    def resolve(self, call: str, device: object) -> Any:
        """A device (bus master) of this system, by name or object; not the CPU."""
        system = self.system
        if isinstance(device, str):
            dev = system.device(device)
        elif any(device is d for d in system.devices.values()):
            dev = device
        else:
            raise InvalidArgumentError(f"{call}: {device!r} is not a device of this system")
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
        if self._vmm is None or self._vmm.freed:
            self._vmm = system.vcm_create_from_prebuilt(VMM_EXT_ID)
        try:
            res = system.vcm_reserve(self._vmm, length, attr)
            try:
                system.vcm_back(res, physmem)
            except BaseException:
                system.vcm_unreserve(res)
                raise
        except BaseException:
            self._drop_idle_vmm()
            raise
        return res

    def unmap_kernel(self, res: Reservation) -> None:
        self.system.vcm_unback(res)
        self.system.vcm_unreserve(res)
        self._drop_idle_vmm()

    def _drop_idle_vmm(self) -> None:
        if self._vmm is not None and not self._vmm.freed and not self._vmm.reservations:
            self.system.vcm_free(self._vmm)
            self._vmm = None


def state_of(system: Any) -> ShareState:
    """The one :class:`ShareState` of ``system`` (created on first use)."""
    check_system("vcmm.share", system)
    with lock_of(system):
        found = getattr(system, _STATE_ATTR, None)
        if found is None:
            found = ShareState(system)
            setattr(system, _STATE_ATTR, found)
        return found


def dma_api(system: Any) -> DmaApi:
    """The DMA API of ``system`` every layer shares (created with defaults if none).

    Use it instead of constructing a second ``DmaApi(system)``, which would find the
    contexts taken (``BusyError``).
    """
    state = state_of(system)
    with lock_of(system):
        api, _ = state.ensure_api()
        return api


def set_dma_api(api: DmaApi) -> DmaApi:
    """Register a :class:`DmaApi` the caller built (its own debugging, domains, pools)
    as its system's shared API; refused if the system already has one."""
    if not isinstance(api, DmaApi):
        raise InvalidArgumentError(f"set_dma_api: {api!r} is not a DmaApi")
    state = state_of(api.system)
    with lock_of(api.system):
        if state.api is api:
            return api
        if state.api is not None:
            raise StateError(
                "set_dma_api: the system already has its shared DmaApi; use "
                "vcmm.share.dma_api(system) instead of building another"
            )
        state.api = api
        return api
