"""A Qualcomm-style System MMU: context banks sharing one global TLB.

The seed (000 L442-531) describes the hardware: an SMMU holds several *context banks*
that translate in parallel and share one global TLB whose entries are tagged by bank.
Software works with *virtual contexts* (the seed's ``smmu_dev``): a context is created
by name, bound to a free hardware bank at run time, then activated, which programs the
bank's registers (TTBR0, TTBR1, TTBCR.N, enable) from the context: a context switch.

Seed call                          here
---------------------------------  ---------------------------------------------------
``smmu_drvdata_init``              ``Smmu(name, memory, table_memory, ..., register_base=)``
``smmu_get_base_addr``             ``smmu.register_base`` (``smmu.read_register(addr)``)
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
- :mod:`.banktable`: which context holds which bank, more contexts than banks (LRU);
- :mod:`.bank`: a hardware bank's registers and the walker that follows only them;
- :mod:`.registers`: the fault registers FSR, FAR, FSYNR0 bit for bit (SMMUv2);
- :mod:`.mmio`: the register window (base, pages) and reads and writes by address;
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
- **More contexts than banks**: a context binds a free bank, else the least recently
  used idle one, whose context loses it (a bank switch, counted with the TLB entries it
  invalidated in :meth:`Smmu.bank_stats`); see :mod:`.banktable`.
- **Faults**: see :mod:`.faults` (handler returns 1 to retry, 0 to terminate; at most
  :data:`MAX_FAULT_RETRIES` retries per access), recorded in the bank's FSR, FAR and
  FSYNR0 (:mod:`.registers`), readable by address (:mod:`.mmio`).
"""

from vcmm.hw.smmu.bank import SPLIT_BIT, SPLIT_LOW_VA_BITS, BankRegisters
from vcmm.hw.smmu.banktable import BankStats
from vcmm.hw.smmu.context import ContextStats, SmmuContext
from vcmm.hw.smmu.faults import MAX_FAULT_RETRIES, FaultHandler, SmmuFault
from vcmm.hw.smmu.instance import Smmu, SmmuSnapshot, find_context
from vcmm.hw.smmu.mmio import DEFAULT_REGISTER_BASE
from vcmm.hw.smmu.registers import CB_FAR, CB_FSR, CB_FSYNR0, FaultStatus
from vcmm.hw.tlbgather import PRECISE_INVALIDATION_LIMIT

__all__ = [
    "CB_FAR",
    "CB_FSR",
    "CB_FSYNR0",
    "DEFAULT_REGISTER_BASE",
    "MAX_FAULT_RETRIES",
    "PRECISE_INVALIDATION_LIMIT",
    "SPLIT_BIT",
    "SPLIT_LOW_VA_BITS",
    "BankRegisters",
    "BankStats",
    "ContextStats",
    "FaultHandler",
    "FaultStatus",
    "Smmu",
    "SmmuContext",
    "SmmuFault",
    "SmmuSnapshot",
    "find_context",
]
