"""A Qualcomm-style System MMU: context banks sharing one global TLB.

The seed (000 L442-531) describes the hardware: an SMMU holds several *context banks*
that translate in parallel and share one global TLB whose entries are tagged by bank.
Software works with *virtual contexts* (the seed's ``smmu_dev``): a context is created
by name, bound to a free hardware bank at run time, then activated, which programs the
bank's registers (TTBR0, TTBR1, TTBCR.N, enable) from the context: a context switch.

Seed call                          here
---------------------------------  ---------------------------------------------------
``smmu_drvdata_init``              ``Smmu(name, memory, table_memory, ...)``
``smmu_ctx_init`` / ``_deinit``    ``smmu.context_init(name)`` / ``ctx.deinit()``
``smmu_ctx_bind``                  ``ctx.bind(smmu, bank=None)`` / ``ctx.unbind()``
``smmu_activate`` / ``deactivate`` ``ctx.activate()`` / ``ctx.deactivate()``
``smmu_is_active``                 ``ctx.is_active``
``smmu_map`` / ``smmu_unmap``      ``ctx.map(pa, va, len, attrs)`` / ``ctx.unmap(va, len)``
``smmu_update_start`` / ``_done``  ``ctx.update_start()`` / ``ctx.update_done()``
``smmu_translate``                 ``ctx.translate(va)``
``smmu_hook_interrupt``            ``ctx.hook_interrupt(handler, data)``
``smmu_get_ctx_instance``          ``smmu.context(name)``, ``find_context(smmus, name)``

Modules, one job each:

- :mod:`.instance`: :class:`Smmu`, its banks and shared TLB, the registry of contexts;
- :mod:`.bank`: a hardware bank's registers and the walker that follows only them;
- :mod:`.context`: :class:`SmmuContext`, the facade drivers hold, which checks each
  call and hands it to one of: :mod:`.binding` (bind, activate: the driver lifecycle),
  :mod:`.tables` (own or external tables, split mode), :mod:`.updates` (the update
  bracket and map/unmap) and :mod:`.faults` (translation, the fault hook).

Decisions:

- **Each SMMU has its own table format**, given to its constructor (``fmt``:
  ARMv7 short-descriptor by default, ARMv7 LPAE long-descriptor as SMMUv1 MMU-400/401
  walks, VMSAv8-64 4K), so one SoC may mix them.  Activation programs TTBCR as that
  format's ARMv7 register reads (EAE=1 for LPAE); the walker follows it.
- **Tables belong to the context** until the upper layer points it at its own; split
  mode is TTBCR.N=1 (see :mod:`.tables`).  The hardware walker reads the *registers*
  of the bank, never a Python table object, so a context that is not active cannot be
  walked through.
- **Invalidation goes through a gather** (:mod:`vcmm.hw.tlbgather`): every change is
  reported to the context's ``tlb_gather`` and ``update_done`` invalidates the bank's
  entries overlapping each changed range (adjacent ranges merged), or the bank's whole
  tag past :data:`PRECISE_INVALIDATION_LIMIT` ranges.  Until then a device keeps using
  what it has cached, exactly as the seed's bracket implies.
- **Faults**: see :mod:`.faults` (handler returns 1 to retry, 0 to terminate; at most
  :data:`MAX_FAULT_RETRIES` retries per access).
"""

from vcmm.hw.smmu.bank import SPLIT_BIT, SPLIT_LOW_VA_BITS, BankRegisters
from vcmm.hw.smmu.context import ContextStats, SmmuContext
from vcmm.hw.smmu.faults import MAX_FAULT_RETRIES, FaultHandler, SmmuFault
from vcmm.hw.smmu.instance import Smmu, SmmuSnapshot, find_context
from vcmm.hw.tlbgather import PRECISE_INVALIDATION_LIMIT

__all__ = [
    "MAX_FAULT_RETRIES",
    "PRECISE_INVALIDATION_LIMIT",
    "SPLIT_BIT",
    "SPLIT_LOW_VA_BITS",
    "BankRegisters",
    "ContextStats",
    "FaultHandler",
    "Smmu",
    "SmmuContext",
    "SmmuFault",
    "SmmuSnapshot",
    "find_context",
]
