"""SMMU context banks during a scenario run: contexts taking turns, and what it cost.

When a scenario drives more contexts of one SMMU than the SMMU has banks, they cannot
all stay active (the VCMM refuses an activation with every bank active), so on such
an SMMU each device's association is activated just for its step's frame and
deactivated after it, as a driver activates around a job (the seed's
``smmu_activate``/``smmu_deactivate``).  A context that finds no free bank then takes
the least recently used idle one: a *bank switch*, whose TLB entries are invalidated.
SMMUs with enough banks keep every context active for the whole run, as before.

:class:`SmmuResult` reports per SMMU the bank switches and the TLB entries they
invalidated (read from :meth:`Smmu.bank_stats`), where its registers sit (the seed's
``smmu_get_base_addr``) and each bank's fault registers FSR, FAR and FSYNR0 (ARM
SMMUv2 names) decoded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from vcmm.core import Association
from vcmm.hw.bus import SmmuDevice
from vcmm.hw.smmu import Smmu
from vcmm.system import System
from vcmm.workload.scenario import Scenario


@dataclass
class BankRegistersResult:
    """One bank's holder and fault registers at the end of the run."""

    bank: int
    context: str | None
    fsr: int
    far: int
    fsynr0: int
    #: ``FSR=0x00000002 [TF Format=0] FAR=0x... FSYNR0=... [PLVL=1]`` (SMMUv2 names).
    decoded: str
    faulted: bool


@dataclass
class SmmuResult:
    """One SMMU over the run: its banks, the contexts the scenario used, the cost of
    their taking turns on the banks."""

    name: str
    register_base: int
    context_banks: int
    #: The contexts of this SMMU the scenario's devices use, in first-use order.
    contexts: list[str]
    #: Whether those contexts outnumber the banks, so they took turns (see above).
    takes_turns: bool
    #: Activations that evicted an idle context from its bank.
    bank_switches: int
    #: TLB entries those switches invalidated.
    invalidated: int
    banks: list[BankRegistersResult] = field(default_factory=list)


def _smmu_contexts(system: System, scenario: Scenario) -> dict[str, list[str]]:
    """SMMU name -> the contexts the scenario's devices use on it (first-use order)."""
    used: dict[str, list[str]] = {}
    for step in scenario.steps:
        device = system.device(step.device)
        if isinstance(device, SmmuDevice):
            names = used.setdefault(device.ctx.smmu.name, [])
            if device.ctx.name not in names:
                names.append(device.ctx.name)
    return used


class BankTurns:
    """Which devices take turns on their SMMU's banks, and their associations."""

    def __init__(self, system: System, scenario: Scenario) -> None:
        self._system = system
        self.used = _smmu_contexts(system, scenario)
        #: SMMUs whose used contexts outnumber their banks.
        self.turn_smmus = {
            name
            for name, contexts in self.used.items()
            if len(contexts) > system.smmus[name].context_banks
        }
        self._held: dict[str, Association] = {}

    def defers(self, device: object) -> bool:
        """Whether ``device`` is activated per frame rather than once at set-up."""
        return isinstance(device, SmmuDevice) and device.ctx.smmu.name in self.turn_smmus

    def hold(self, device_name: str, assoc: Association) -> None:
        """Keep ``assoc`` (inactive) to activate around ``device_name``'s frames."""
        self._held[device_name] = assoc

    @contextlib.contextmanager
    def turn(self, device_name: str) -> Iterator[None]:
        """Activate the device's association for the block (if it takes turns and its
        context is not running already), deactivate it after."""
        assoc = self._held.get(device_name)
        if assoc is None or assoc.active or (assoc.context is not None and assoc.context.is_active):
            yield
            return
        self._system.vcm_activate(assoc)
        try:
            yield
        finally:
            self._system.vcm_deactivate(assoc)


def _bank_registers(smmu: Smmu) -> list[BankRegistersResult]:
    out = []
    for bank in range(smmu.context_banks):
        status = smmu.fault_status(bank)
        holder = smmu.bound_context(bank)
        out.append(
            BankRegistersResult(
                bank=bank,
                context=holder.name if holder is not None else None,
                fsr=status.fsr,
                far=status.far,
                fsynr0=status.fsynr0,
                decoded=status.describe(),
                faulted=status.faulted,
            )
        )
    return out


def smmu_results(system: System, turns: BankTurns) -> list[SmmuResult]:
    """Every SMMU the scenario used, in platform order."""
    out = []
    for name, smmu in system.smmus.items():
        if name not in turns.used:
            continue
        stats = smmu.bank_stats()
        out.append(
            SmmuResult(
                name=name,
                register_base=smmu.register_base,
                context_banks=smmu.context_banks,
                contexts=list(turns.used[name]),
                takes_turns=name in turns.turn_smmus,
                bank_switches=stats.switches,
                invalidated=stats.invalidated,
                banks=_bank_registers(smmu),
            )
        )
    return out
