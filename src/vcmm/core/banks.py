"""How the VCMM's associations hold SMMU context banks: more contexts than banks.

The seed binds virtual contexts to hardware banks at run time (000 L442-531,
``smmu_ctx_bind``) and real SMMUs have few banks, so contexts take turns.  The
hardware (:mod:`vcmm.hw.smmu.banktable`) gives a context that needs a bank a free
one, else the bank of the least recently used *idle* context (bound, not active),
invalidating that bank's TLB entries; this module is the VCMM's side of it:

- ``vcm_activate`` checks, before changing anything, that a bank can be had, and
  otherwise refuses naming the SMMU, its banks and the contexts running on them
  (:func:`check_bank_available`);
- ``vcm_deactivate`` *parks* the context (:func:`park_context`): disabled but still
  bound and pointing at the VCM's table, so it keeps its bank until another context
  needs one; its next activation then reuses the bank (with its TLB entries, when the
  tables are the same: the mapper keeps flushing a parked context's bank), or binds
  again if the bank was stolen meanwhile;
- ``vcm_deassoc`` points a context parked on the VCM back at tables of its own and
  gives the bank back when no association of the VCMM uses the context any more
  (:func:`release_parked`), so an association made and undone leaves the banks as
  they were.

The bank a context binds is the platform's ``bank`` of it (its device record's
``bank``) when one is named, else whichever the hardware picks.
"""

from __future__ import annotations

from collections.abc import Iterable

from vcmm.errors import BusyError
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.pgtable import PageTable
from vcmm.hw.smmu import Smmu, SmmuContext


def _running(smmu: Smmu) -> str:
    """``bank 0: 'a', bank 1: 'b'``: the banks of ``smmu`` and the contexts they run."""
    held = []
    for index in range(smmu.context_banks):
        ctx = smmu.bound_context(index)
        if ctx is None:
            held.append(f"bank {index}: free")
        else:
            held.append(f"bank {index}: {ctx.name!r}{' (active)' if ctx.is_active else ''}")
    return ", ".join(held)


def check_bank_available(call: str, device: SmmuDevice, bank: int | None) -> None:
    """Refuse (before any change) to activate ``device``'s context when it would get no
    bank: the named ``bank`` runs another active context, or (None) every bank does."""
    ctx = device.ctx
    if ctx.is_bound:
        return
    smmu = ctx.smmu
    if bank is not None:
        holder = smmu.bound_context(bank)
        if holder is not None and holder.is_active:
            raise BusyError(
                f"{call}: {device.name}'s context {ctx.name!r} binds bank {bank} of SMMU "
                f"{smmu.name!r}, which runs the active context {holder.name!r} "
                f"({_running(smmu)}); vcm_deactivate that context first"
            )
        return
    holders = [smmu.bound_context(i) for i in range(smmu.context_banks)]
    if all(h is not None and h.is_active for h in holders):
        raise BusyError(
            f"{call}: {device.name}'s context {ctx.name!r} needs a bank of SMMU "
            f"{smmu.name!r}, but all its {smmu.context_banks} context banks are active "
            f"({_running(smmu)}); vcm_deactivate one of them first"
        )


def park_context(ctx: SmmuContext) -> None:
    """Stop ``ctx`` (disable its bank) but keep it bound and pointing at its tables: an
    idle context, whose bank another context may take (a bank switch).  While parked,
    the VCM's table changes still flush its bank (:meth:`IommuMapper.contexts`), so if
    it comes back to the same bank with the same tables its TLB entries are still good
    and the hardware keeps them."""
    ctx.deactivate()


def parked_on(ctx: SmmuContext, table: PageTable | None) -> bool:
    """Whether ``ctx`` is parked (bound, not active) pointing at ``table``."""
    return (
        table is not None
        and ctx.is_bound
        and not ctx.is_active
        and any(t is table for t in (ctx.low_table, ctx.high_table))
    )


def release_parked(
    ctx: SmmuContext, table: PageTable | None, in_use: Iterable[SmmuContext | None]
) -> None:
    """An association of ``ctx`` with the VCM of ``table`` is going: a parked ``ctx``
    stops pointing at that table (fresh tables of its own: the only step that can fail,
    so it runs first), and gives its bank back unless it is one of ``in_use`` (the
    contexts the VCMM's other associations program)."""
    if not ctx.is_bound or ctx.is_active:
        return
    if parked_on(ctx, table):
        ctx.use_own_tables()
    if not any(other is ctx for other in in_use):
        ctx.unbind()
