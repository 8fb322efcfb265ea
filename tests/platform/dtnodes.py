"""Devicetree nodes the platform tests write again and again, built in one place.

An SMMU node is always the same handful of properties (``compatible``, ``reg``,
``#iommu-cells``, the global and context interrupts, a ``phandle``); the boards of
the tests differ only in their values.  Property order follows the bindings' examples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def irqs(n: int) -> list[int]:
    """``n`` GIC SPIs (``<0 100+i 4>``, level-high) for an ``interrupts`` property."""
    return [c for i in range(n) for c in (0, 100 + i, 4)]


def smmu_node(
    compatible: str | list[str],
    reg: list[int],
    phandle: int,
    *,
    cells: int = 1,
    interrupts: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """An IOMMU node; ``interrupts`` (one global fault interrupt plus the rest for
    the context banks) only for ARM SMMUs, whose binding requires them."""
    node: dict[str, Any] = {"compatible": compatible, "reg": reg, "#iommu-cells": cells}
    if interrupts is not None:
        node["#global-interrupts"] = 1
        node["interrupts"] = irqs(interrupts)
    node.update(extra or {})
    node["phandle"] = phandle
    return node
