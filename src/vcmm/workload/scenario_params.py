"""Sweep parameters: a scenario with ``--grid key=value`` settings applied.

A sweep varies a few of a scenario's settings over a grid (:mod:`vcmm.workload.sweep`);
each point is the scenario with those settings replaced in every buffer, step or TLB
they apply to.  Every value is checked first and an error is keyed ``--grid <key>``
(or ``--grid key=value, ...`` when the replaced record refuses it), so a bad grid is
reported before any point runs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final, TypeVar

from vcmm.checks import is_int
from vcmm.platform.errors import suggest
from vcmm.tlbcost import INVALIDATION_MODES
from vcmm.workload.patterns import PATTERNS
from vcmm.workload.scenario_keys import POLICIES, REPLACEMENTS, ScenarioError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from vcmm.workload.scenario import BufferSpec, Scenario, StepSpec, TlbOverride

#: A scenario record a parameter replaces fields of (a buffer or a step).
_Record = TypeVar("_Record", bound="DataclassInstance")

#: The parameters a sweep may vary (``--grid key=v1,v2``).
SWEEP_KEYS: Final = (
    "policy",
    "tlb_entries",
    "ways",
    "replacement",
    "pattern",
    "frames",
    "burst",
    "invalidation",
)


def apply_params(sc: Scenario, params: dict[str, object]) -> Scenario:
    """A copy with sweep parameters applied (see :data:`SWEEP_KEYS`).

    ``policy`` sets every buffer's policy, ``pattern`` / ``frames`` every step's,
    ``tlb_entries`` / ``ways`` / ``replacement`` every SMMU's TLB, ``burst`` the burst,
    ``invalidation`` the DMA API's IOTLB invalidation mode.
    Errors name the parameter as ``--grid <key>``.
    """
    unknown = [k for k in params if k not in SWEEP_KEYS]
    if unknown:
        name = unknown[0]
        raise ScenarioError(
            f"unknown parameter {name!r}{suggest(name, SWEEP_KEYS)}; "
            f"allowed: {', '.join(SWEEP_KEYS)}",
            key=f"--grid {name}",
            source=sc.source,
        )
    merged = dict(sc.params) | dict(params)
    try:
        buffers, steps, tlb, burst = _param_changes(sc, params)
        invalidation = sc.invalidation
        if "invalidation" in params:
            invalidation = _param_choice("invalidation", params["invalidation"], INVALIDATION_MODES)
        return dataclasses.replace(
            sc,
            buffers=buffers,
            steps=steps,
            tlb=tlb,
            burst=burst,
            invalidation=invalidation,
            params=tuple(merged.items()),
        )
    except ScenarioError as err:
        if err.key.startswith("--grid"):
            raise ScenarioError(err.problem, key=err.key, source=sc.source) from None
        what = ", ".join(f"{k}={v}" for k, v in params.items())
        raise ScenarioError(
            f"{err.key + ': ' if err.key else ''}{err.problem}",
            key=f"--grid {what}",
            source=sc.source,
        ) from None


def _replaced(items: tuple[_Record, ...], where: str, **changes: object) -> tuple[_Record, ...]:
    """Every item with ``changes``; an item's error is keyed ``where[i]``."""
    out = []
    for index, item in enumerate(items):
        try:
            out.append(dataclasses.replace(item, **changes))
        except ScenarioError as err:
            raise err.within(f"{where}[{index}]") from None
    return tuple(out)


def _param_changes(
    sc: Scenario, params: dict[str, object]
) -> tuple[tuple[BufferSpec, ...], tuple[StepSpec, ...], TlbOverride, int]:
    """The buffers, steps, TLB override and burst under sweep ``params``, each
    parameter checked first."""
    buffers, steps, tlb, burst = sc.buffers, sc.steps, sc.tlb, sc.burst
    if "policy" in params:
        policy = _param_choice("policy", params["policy"], tuple(POLICIES))
        buffers = _replaced(buffers, "buffers", policy=policy)
    step_changes: dict[str, object] = {}
    if "pattern" in params:
        step_changes["pattern"] = _param_choice("pattern", params["pattern"], PATTERNS)
    if "frames" in params:
        step_changes["frames"] = _param_int("frames", params["frames"], 1)
    if step_changes:
        steps = _replaced(steps, "steps", **step_changes)
    if "burst" in params:
        burst = _param_int("burst", params["burst"], 1)
    tlb_changes: dict[str, object] = {}
    for param, attr in (("tlb_entries", "entries"), ("ways", "ways")):
        if param in params:
            tlb_changes[attr] = _param_int(param, params[param], 1)
    if "replacement" in params:
        tlb_changes["replacement"] = _param_choice(
            "replacement", params["replacement"], REPLACEMENTS
        )
    if tlb_changes:
        tlb = dataclasses.replace(tlb, **tlb_changes)  # type: ignore[arg-type]
    return buffers, steps, tlb, burst


def _param_choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ScenarioError(
            f"{value!r} is not one of {', '.join(choices)}"
            + (suggest(value, choices) if isinstance(value, str) else ""),
            key=f"--grid {key}",
        )
    return value


def _param_int(key: str, value: object, minimum: int) -> int:
    if not is_int(value) or value < minimum:
        raise ScenarioError(f"{value!r} is not an integer >= {minimum}", key=f"--grid {key}")
    return value
