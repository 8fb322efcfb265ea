"""Binding: associations of VCMs with bus masters, their activation, fault hooks.

An association links a VCM with a device whose translation path fits the VCM's kind
(an IOMMU VCM with a device behind an SMMU context, a one-to-one VCM with a
physically addressed device that reaches all of it, the VMM and user VCMs with the
CPU).  Activating an IOMMU association binds the device's context to a bank (the one
the platform names in the device's record, or any free one) and points its TTBRs at
the VCM's table; a split context runs a low and a high VCM.  The hook turns the SMMU's
fault into a :class:`~vcmm.core.objects.VcmFault` naming the VCM and reservation the
address falls in, which is what on-demand backing needs.
"""

from __future__ import annotations

from typing import Any

from vcmm.core import tableformat
from vcmm.core.banks import check_bank_available, park_context, release_parked
from vcmm.core.flags import AssocAttr, check_assoc_attr
from vcmm.core.mappers import IommuMapper, program_context
from vcmm.core.objects import Association, Vcm, VcmFault, VcmKind
from vcmm.core.state import CoreState, FaultHandler, check_handle, check_holder
from vcmm.errors import BusyError, InvalidArgumentError, StateError, VcmmError
from vcmm.hw.bus import PhysicalDevice, SmmuDevice
from vcmm.hw.master import TranslationPath
from vcmm.hw.pgtable import ARMV7S, PageTableFormat
from vcmm.hw.smmu import SmmuFault

#: TTBCR.N=1 splits a 32-bit space here: VA[31]=1 walks TTBR1 (the high VCM).
SPLIT_BOUNDARY = 1 << 31

#: The translation path each VCM kind needs of the masters it is associated with.
_PATH_OF_KIND = {
    VcmKind.IOMMU: TranslationPath.IOMMU,
    VcmKind.VMM: TranslationPath.CPU,
    VcmKind.USER: TranslationPath.CPU,
    VcmKind.ONE_TO_ONE: TranslationPath.PHYSICAL,
}


def _check_reach(call: str, vcm: Vcm, device: PhysicalDevice) -> None:
    """A one-to-one device must reach the whole region through one bus window."""
    try:
        first = device.phys_to_bus(vcm.start)
        last = device.phys_to_bus(vcm.range.last)
    except VcmmError as exc:
        raise InvalidArgumentError(
            f"{call}: {device.name} cannot reach one-to-one {vcm.name} {vcm.range}: {exc}"
        ) from None
    if last - first != vcm.len - 1:
        raise InvalidArgumentError(
            f"{call}: {device.name} sees one-to-one {vcm.name} {vcm.range} through "
            "more than one dma-ranges window; its bus addresses would not be contiguous"
        )


class Binding:
    """The associations of one VCMM and the contexts they program."""

    def __init__(self, state: CoreState) -> None:
        self.state = state

    # -- associations ------------------------------------------------------------------

    def vcm_assoc(
        self, vcm: Vcm, dev: object, attr: int = AssocAttr.NONE, *, holder: str | None = None
    ) -> Association:
        """Link a VCM with a device; many-to-many, inactive until :meth:`vcm_activate`.

        The kinds must match: IOMMU VCMs go with devices behind an SMMU, one-to-one
        VCMs with physically addressed devices that can reach the whole region, the
        VMM VCM with the CPU.  ``SPLIT | USE_HIGH`` makes the VCM the TTBR1 half of the
        device's context (VA[31]=1, so the VCM must lie at or above 2 GiB) and
        ``SPLIT | USE_LOW`` the TTBR0 half (below 2 GiB).  The VCM's one table serves
        both: with TTBCR.N=1 the SMMU indexes TTBR0 by VA[30:20], which for VA < 2 GiB
        is the same slot of the full table.  ``holder`` (an extension) names a layer
        that associates a device for its own use and how to release it.
        """
        call = "vcm_assoc"
        vcm = check_handle(call, "vcm", vcm, Vcm)
        device = self.state.resolve_device(call, dev)
        attr = check_assoc_attr(attr)
        check_holder(call, holder)
        path = device.path.value
        wanted = _PATH_OF_KIND[vcm.kind].value
        if path != wanted:
            raise InvalidArgumentError(
                f"{call}: {vcm.kind.value} {vcm.name} cannot be associated with {device.name},"
                f" which is a{'n' if path == 'iommu' else ''} {path} bus master"
                f" (a {vcm.kind.value} VCM needs a{'n' if wanted == 'iommu' else ''} {wanted} one)"
            )
        if attr and vcm.kind is not VcmKind.IOMMU:
            raise InvalidArgumentError(
                f"{call}: {attr!r}: split tables only exist on IOMMU contexts, not on {device.name}"
            )
        retable = None
        if isinstance(device, SmmuDevice):
            self._check_iommu_assoc(call, vcm, device, attr)
            retable = tableformat.assoc_format(call, vcm, device, vcm.table_settled)
        if isinstance(device, PhysicalDevice):
            _check_reach(call, vcm, device)
        for other in vcm.associations:
            if other.device is device:
                raise StateError(
                    f"{call}: {vcm.name} is already associated with {device.name} ({other.name})"
                )
        if retable is not None:
            self._rebuild_table(vcm, retable)
        if vcm.kind is VcmKind.IOMMU:
            vcm.table_settled = True
        assoc = Association(self.state.new_id(), vcm, device, attr, holder=holder)
        vcm.associations.append(assoc)
        return assoc

    def _rebuild_table(self, vcm: Vcm, fmt: PageTableFormat) -> None:
        """Give an empty, unsettled VCM a table in ``fmt`` (its first association's
        SMMU walks that): the new table first, so running out of table memory leaves
        the old one in place."""
        table = self.state.page_table(fmt)
        assert vcm.table is not None
        vcm.table.destroy()
        vcm.table = table
        self.state.mappers[vcm.id] = IommuMapper(vcm, self.state.brackets)

    def _check_iommu_assoc(self, call: str, vcm: Vcm, device: SmmuDevice, attr: AssocAttr) -> None:
        smmu = device.ctx.smmu
        if attr & AssocAttr.SPLIT and smmu.fmt is not ARMV7S:
            raise InvalidArgumentError(
                f"{call}: SPLIT is ARMv7 TTBCR.N=1; {device.name}'s SMMU walks {smmu.fmt.name}"
            )
        if attr & AssocAttr.USE_HIGH and vcm.start < SPLIT_BOUNDARY:
            raise InvalidArgumentError(
                f"{call}: USE_HIGH {vcm.name} {vcm.range} must lie at or above 0x80000000: "
                "only VA[31]=1 transactions reach the high table"
            )
        if attr & AssocAttr.USE_LOW and vcm.range.end > SPLIT_BOUNDARY:
            raise InvalidArgumentError(
                f"{call}: USE_LOW {vcm.name} {vcm.range} must lie below 0x80000000: "
                "VA[31]=1 transactions never reach the low table"
            )

    def vcm_deassoc(self, avcm: Association) -> None:
        """Remove an association; refused while it is active.  The device's context
        gives its bank back when no other association uses it."""
        call = "vcm_deassoc"
        avcm = check_handle(call, "avcm", avcm, Association)
        if avcm.active:
            raise BusyError(f"{call}: {avcm.name} is active; vcm_deactivate it first")
        ctx = avcm.context
        if ctx is not None:
            others = [a.context for a in self.state.associations() if a is not avcm]
            release_parked(ctx, avcm.vcm.table, others)
        avcm.vcm.associations.remove(avcm)
        avcm.freed = True

    def vcm_activate(self, avcm: Association) -> None:
        """Program the device with the VCM (000 L241-246).

        IOMMU: bind the device's context to its bank, point TTBR0 (or, split, TTBR0 or
        TTBR1) at the VCM's table and enable it: a context switch, so the bank's TLB
        entries are invalidated.  A split context takes a low and a high VCM, activated
        in either order.  Devices on one context (an IOMMU group: masters whose stream
        IDs match) share it: activating the VCM the context already runs, on the same
        half, for a second device changes no register, as Linux attaches a group to
        one domain.  VMM and one-to-one: mappings are live already; activation is
        counted (:attr:`Vcm.activations`).
        """
        call = "vcm_activate"
        avcm = check_handle(call, "avcm", avcm, Association)
        if avcm.active:
            raise StateError(f"{call}: {avcm.name} is already active")
        if avcm.vcm.kind is VcmKind.IOMMU:
            self._activate_iommu(call, avcm)
        avcm.active = True

    def _activate_iommu(self, call: str, avcm: Association) -> None:
        device = avcm.device
        assert isinstance(device, SmmuDevice)  # vcm_assoc matched the kinds
        ctx = device.ctx
        running = [a for a in self.state.associations() if a.active and a.context is ctx]
        if any(a.vcm is avcm.vcm and a.half == avcm.half for a in running):
            return  # an IOMMU group: the context runs this VCM for another member already
        for other in running:
            if other.half is None or avcm.half is None or other.half == avcm.half:
                what = "the whole space" if other.half is None else f"the {other.half} half"
                how = f", held by {other.holder}" if other.holder else "; vcm_deactivate it first"
                raise BusyError(
                    f"{call}: {device.name}'s context {ctx.name!r} already runs {other.vcm.name}"
                    f" ({other.name}) on {what}{how}"
                )
        if ctx.is_active and not running:
            raise BusyError(
                f"{call}: {device.name}'s context {ctx.name!r} is active outside the VCMM"
            )
        if ctx.in_update:
            raise StateError(f"{call}: context {ctx.name!r} is inside an update bracket")
        bank = self.state.record(device.name).bank
        check_bank_available(call, device, bank)
        vcm = avcm.vcm
        if avcm.half is None:
            program_context(ctx, bank, vcm.table, None, split=False)
            return
        partner = running[0].vcm if running else None
        if avcm.half == "low":
            low, high = vcm.table, partner.table if partner else None
        else:
            low, high = (partner.table if partner else None), vcm.table
        program_context(ctx, bank, low, high, split=True)

    def vcm_deactivate(self, avcm: Association) -> None:
        """Stop the device using the VCM: disable its context (IOMMU), which stays
        bound to its bank, idle, until another context takes the bank or the last
        association of the device goes (:mod:`vcmm.core.banks`); or drop the
        activation count (VMM, one-to-one).  A split context keeps its other half
        running, a context shared by a group keeps running while another member's
        association of the same VCM is active."""
        call = "vcm_deactivate"
        avcm = check_handle(call, "avcm", avcm, Association)
        if not avcm.active:
            raise StateError(f"{call}: {avcm.name} is not active")
        if avcm.vcm.kind is VcmKind.IOMMU:
            ctx = avcm.context
            assert ctx is not None  # vcm_assoc matched the kinds
            if ctx.in_update:
                raise StateError(f"{call}: context {ctx.name!r} is inside an update bracket")
            others = [a for a in self.state.associations() if a.active and a is not avcm]
            on_ctx = [a for a in others if a.context is ctx]
            other = next(iter(on_ctx), None)
            if any(a.vcm is avcm.vcm and a.half == avcm.half for a in on_ctx):
                pass  # another member of the group still runs the VCM on the context
            elif other is None:
                park_context(ctx)
            elif other.half == "low":
                ctx.set_tables(other.vcm.table, None, split=True)
            else:
                ctx.set_tables(None, other.vcm.table, split=True)
        avcm.active = False

    # -- faults ------------------------------------------------------------------------

    def vcm_hook(self, dev: object, handler: FaultHandler | None, data: Any = None) -> None:
        """Register a fault handler for a device behind an IOMMU (000 L304-317).

        On a translation or permission fault the VCMM calls ``handler(fault, data)``:
        ``fault`` is a :class:`~vcmm.core.objects.VcmFault` (device, va, access, kind,
        level, SMMU/context/bank, and the VCM and reservation the address falls in),
        ``data`` what was passed here.  Returning 1 replays the transaction: a handler
        that calls :meth:`vcm_back` on ``fault.reservation`` and returns 1 backs memory
        on demand and the access completes.  Returning 0 terminates it: the device's
        access raises :class:`~vcmm.errors.DeviceFaultError`.  With no handler the
        SMMU logs a warning and terminates.  Exceptions a handler raises propagate to
        the access.  ``handler=None`` removes the hook.
        """
        call = "vcm_hook"
        device = self.state.resolve_device(call, dev)
        if not isinstance(device, SmmuDevice):
            raise InvalidArgumentError(
                f"{call}: {device.name} has no IOMMU; its bad accesses are bus errors, not "
                "translation faults a handler could fix"
            )
        if handler is None:
            device.ctx.hook_interrupt(None)
            self.state.hooks.pop(device.name, None)
            return
        if not callable(handler):
            raise InvalidArgumentError(f"{call}: handler {handler!r} is not callable")

        def on_fault(fault: SmmuFault, _unused: object) -> int:
            return handler(self._vcm_fault(device, fault), data)

        device.ctx.hook_interrupt(on_fault, None)
        self.state.hooks[device.name] = (handler, data)

    def _vcm_fault(self, device: SmmuDevice, fault: SmmuFault) -> VcmFault:
        vcm = res = None
        for a in self.state.associations():
            if not a.active or a.context is not device.ctx:
                continue
            if a.half is not None and (fault.va >= SPLIT_BOUNDARY) != (a.half == "high"):
                continue
            if fault.va in a.vcm.range:
                vcm = a.vcm
        if vcm is not None:
            res = next(
                (r for r in vcm.reservations if r.range is not None and fault.va in r.range),
                None,
            )
        return VcmFault(
            device=fault.device or device.name,
            va=fault.va,
            access=fault.access,
            kind=fault.kind,
            level=fault.level,
            smmu=fault.smmu,
            context=fault.context,
            bank=fault.bank,
            registers=fault.registers,
            vcm=vcm,
            reservation=res,
        )
