"""A context's transaction path: translation through its bank, faults and the hook.

A transaction is translated by the bound bank's :class:`~vcmm.hw.translate.Translator`
(the SMMU's shared TLB, then the bank's hardware walker, then the permission check).
A fault is first recorded in the bank's fault registers (FSR, FAR, FSYNR0:
:mod:`.registers`), then goes to the hook: ``handler(fault, data)`` returns 1 (retry:
the TLB entry for the address is invalidated and the translation replayed) or 0
(terminate).  That is SMMUv2's stall model: while the handler decides, FSR.SS is set,
and its answer is the resume that clears it.  Without a handler a warning is logged
(logger ``vcmm.hw.smmu``) and the transaction terminates.  Terminated transactions
raise :class:`~vcmm.errors.DeviceFaultError`.  At most :data:`MAX_FAULT_RETRIES`
retries per access.  The fault bits stay set until software writes them back (write
1 to clear); a fault that arrives before that only sets FSR.MULTI.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access, FaultKind
from vcmm.errors import DeviceFaultError, InvalidArgumentError
from vcmm.hw.smmu.binding import ContextBinding
from vcmm.hw.smmu.registers import FaultStatus, record_fault, set_stalled
from vcmm.hw.tlb import TLB, check_address
from vcmm.hw.translate import SpanResult, Translation, TranslationFault, Translator

log = logging.getLogger("vcmm.hw.smmu")

#: Retries one access may take before the SMMU gives up on a handler that keeps asking.
MAX_FAULT_RETRIES = 8

#: The fault handler protocol: ``handler(fault, data) -> 1 (retry) or 0 (terminate)``.
FaultHandler = Callable[["SmmuFault", Any], int]


@dataclass(frozen=True, slots=True)
class SmmuFault:
    """What a fault handler receives: where, who, and why a transaction faulted."""

    smmu: str
    context: str
    bank: int
    va: int
    access: Access
    kind: FaultKind
    #: Table level of the faulting descriptor (the leaf for permission faults).
    level: int
    #: Name of the bus master whose transaction faulted, if known.
    device: str | None = None
    #: The bank's FSR, FAR and FSYNR0 as the handler finds them (FSR.SS set: stalled).
    registers: FaultStatus | None = None

    def describe(self) -> str:
        who = f"device {self.device!r}" if self.device else "a transaction"
        return (
            f"{who}: {self.access.value} at {self.va:#x} through SMMU {self.smmu!r} "
            f"context {self.context!r} (bank {self.bank}) took a {self.kind.value} fault "
            f"at level {self.level}"
        )


class ContextFaults:
    """Translation of one context's transactions, with its fault hook and counters."""

    def __init__(self, smmu_name: str, name: str, binding: ContextBinding, tlb: TLB) -> None:
        self._smmu_name = smmu_name
        self._name = name
        self._binding = binding
        self._tlb = tlb
        self._handler: FaultHandler | None = None
        self._handler_data: Any = None
        #: Fault events (every time a translation faulted, retried or not).
        self.faults = 0
        #: Replays the fault handler asked for.
        self.retries = 0
        #: Transactions terminated by a fault.
        self.terminated = 0

    def hook(self, handler: FaultHandler | None, data: Any) -> None:
        if handler is not None and not callable(handler):
            raise InvalidArgumentError(
                f"context {self._name!r}: fault handler {handler!r} is not callable"
            )
        self._handler = handler
        self._handler_data = data

    def translate(self, va: int, access: Access, device: str | None) -> Translation:
        """One access (the caller holds the SMMU's lock): TLB, walk, permission, hook."""
        translator = self._binding.translator("translate_access")
        v = check_address(va)
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        result = translator.translate(v, access)
        if isinstance(result, TranslationFault):
            return self._handle(translator, result, device)
        return result

    def translate_batch(
        self, vas: npt.NDArray[np.integer], access: Access, device: str | None
    ) -> npt.NDArray[np.uint64]:
        """An access stream, faults handled as one by one; the output addresses."""
        translator = self._binding.translator("translate_batch")
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        if not isinstance(vas, np.ndarray):
            raise InvalidArgumentError(
                f"{self._name}.translate_batch: vas must be a numpy array, got {type(vas).__name__}"
            )
        arr = np.ascontiguousarray(vas)
        out = np.empty(len(arr), dtype=np.uint64)
        i, n = 0, len(arr)
        while i < n:
            res = translator.translate_batch(arr[i:], access)
            out[i : i + res.done] = res.pas
            i += res.done
            if res.fault is None:
                break
            try:
                out[i] = self._handle(translator, res.fault, device).pa
            except DeviceFaultError as exc:
                exc.completed = i
                raise
            i += 1
        return out

    def translate_span(
        self, va: int, length: int, access: Access, device: str | None
    ) -> SpanResult:
        """A transaction's pages (the caller holds the lock), faults handled as
        :meth:`translate` handles them, page by page."""
        translator = self._binding.translator("translate_access")
        if not isinstance(access, Access):
            raise InvalidArgumentError(f"access {access!r} is not a vcmm.attrs.Access")
        end = va + length
        pieces = []
        while True:
            span = translator.translate_span(va, end - va, access)
            pieces.append((span.va, span.pa, span.length))
            if span.fault is None:
                break
            tr = self._handle(translator, span.fault, device)
            n = min(end, tr.va - tr.va % tr.page_size + tr.page_size) - tr.va
            one = [np.array([x], dtype=np.uint64) for x in (tr.va, tr.pa, n)]
            pieces.append((one[0], one[1], one[2]))
            va = tr.va + n
            if va >= end:
                break
        cols = [np.concatenate([p[c] for p in pieces]) for c in range(3)]
        return SpanResult(cols[0], cols[1], cols[2], end, None)

    def _event(
        self, translator: Translator, fault: TranslationFault, device: str | None, *, stall: bool
    ) -> SmmuFault:
        """Record ``fault`` in the bank's registers (stalled if a handler will decide)
        and describe it for the handler."""
        bank = self._binding.bank
        assert bank is not None
        status = record_fault(
            bank.faults,
            fault.kind,
            fault.va,
            fault.access,
            fault.level,
            privileged=translator.privileged,
        )
        bank.faults = set_stalled(status, True) if stall else status
        return SmmuFault(
            smmu=self._smmu_name,
            context=self._name,
            bank=bank.index,
            va=fault.va,
            access=fault.access,
            kind=fault.kind,
            level=fault.level,
            device=device,
            registers=bank.faults,
        )

    def _decide(self, event: SmmuFault) -> object:
        """Call the handler with the transaction stalled; its answer is the resume."""
        assert self._handler is not None
        bank = self._binding.bank
        assert bank is not None
        try:
            return self._handler(event, self._handler_data)
        finally:
            bank.faults = set_stalled(bank.faults, False)

    def _handle(
        self, translator: Translator, fault: TranslationFault, device: str | None
    ) -> Translation:
        """Report ``fault`` to the hook; replay while it asks, else terminate."""
        retries = 0
        while True:
            self.faults += 1
            event = self._event(translator, fault, device, stall=self._handler is not None)
            if self._handler is None:
                log.warning("%s; no fault handler hooked: transaction terminated", event.describe())
                raise self._terminate(event, "no fault handler is hooked")
            decision = self._decide(event)
            if isinstance(decision, bool):
                decision = int(decision)
            if decision not in (0, 1):
                raise self._terminate(
                    event, f"the fault handler returned {decision!r}, not 1 (retry) or 0"
                )
            if decision == 0:
                raise self._terminate(event, "the fault handler asked to terminate")
            if retries >= MAX_FAULT_RETRIES:
                raise self._terminate(
                    event,
                    f"the fault handler kept asking for retries ({MAX_FAULT_RETRIES} replays "
                    "all faulted)",
                )
            if not self._binding.active:
                raise self._terminate(event, "the fault handler deactivated the context")
            retries += 1
            self.retries += 1
            self._tlb.invalidate_va(translator.tag, fault.va)
            result = translator.translate(fault.va, fault.access)
            if isinstance(result, Translation):
                return result
            fault = result

    def _terminate(self, event: SmmuFault, why: str) -> DeviceFaultError:
        self.terminated += 1
        return DeviceFaultError(
            f"{event.describe()}; transaction terminated: {why}",
            device=event.device,
            address=event.va,
            va=event.va,
            access=event.access,
            kind=event.kind,
            context=event.context,
            smmu=event.smmu,
            bank=event.bank,
            fault=event,
        )
