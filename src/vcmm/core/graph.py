"""The mapping graph: every mapping of every physical chunk, and the rules they obey.

The seed pictures map management as a graph whose edges run from bus masters through
VCMs and reservations to physical memory (000 L68-96).  The reviewers added the rule
that makes the graph worth having: on ARMv6+ every alias of a physical page must agree
on memory type, cacheability and shareability, because speculative prefetch through a
cacheable alias can corrupt data seen through another (King, L2075-2094).  The kernel's
linear map of system RAM is such an alias, always present.  So the graph keeps a
reverse map from physical ranges to every mapping of them, linear map included, and
refuses a new mapping that disagrees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from vcmm.attrs import PageAttrs
from vcmm.errors import AttributeConflictError
from vcmm.ranges import AddressRange

#: Address-space key of the CPU's kernel address space (linear map and VMM VCM).
KERNEL_SPACE = "cpu"


@dataclass(frozen=True, slots=True)
class Mapping:
    """One edge: an address space maps ``phys`` at ``va`` with ``attrs``."""

    space: str
    owner: str
    phys: AddressRange
    va: int
    attrs: PageAttrs
    #: Identity of the reservation that made it (``None`` for the linear map).
    res_id: int | None = None

    def describe(self) -> str:
        return f"{self.owner} maps {self.phys} at {self.va:#x} as {self.attrs.memtype.value}"


@dataclass
class MappingGraph:
    """Reverse map from physical ranges to mappings, with the attribute rules.

    ``check_attributes`` can be switched off to demonstrate the corruption the rule
    prevents (with the CPU's speculative-prefetch mode on).
    """

    linear_map: tuple[Mapping, ...] = ()
    check_attributes: bool = True
    _mappings: dict[int, list[Mapping]] = field(default_factory=dict)

    def add(self, res_id: int, mappings: Iterable[Mapping]) -> None:
        self._mappings.setdefault(res_id, []).extend(mappings)

    def remove(self, res_id: int) -> list[Mapping]:
        return self._mappings.pop(res_id, [])

    def of_reservation(self, res_id: int) -> list[Mapping]:
        return list(self._mappings.get(res_id, ()))

    def all(self) -> list[Mapping]:
        out = list(self.linear_map)
        for maps in self._mappings.values():
            out.extend(maps)
        return out

    def overlapping(self, phys: AddressRange) -> list[Mapping]:
        """Every mapping whose physical range overlaps ``phys`` (linear map included)."""
        return [m for m in self.all() if m.phys.overlaps(phys)]

    def is_linear_mapped(self, phys: AddressRange) -> bool:
        return any(m.phys.overlaps(phys) for m in self.linear_map)

    def shareable_for(self, phys: AddressRange, extra_spaces: Iterable[str] = ()) -> bool:
        """The sharing rule: shareable once two address spaces map the range.

        Kernel-managed RAM is always shareable, as the kernel's linear map is on SMP
        ARM, so every alias of it must be too.
        """
        if self.is_linear_mapped(phys):
            return True
        spaces = {m.space for m in self.overlapping(phys)} | set(extra_spaces)
        return len(spaces) >= 2

    def check(self, new: Mapping) -> None:
        """Refuse ``new`` if it disagrees on memory type with an existing alias."""
        if not self.check_attributes:
            return
        for old in self.overlapping(new.phys):
            if old.attrs.memtype is not new.attrs.memtype:
                raise AttributeConflictError(
                    f"mismatched attributes: {new.describe()}, but {old.describe()}; "
                    "every alias of a physical page must share memory type and cache policy"
                    " (ARMv6+ speculative prefetch)"
                )

    def snapshot(self) -> tuple[object, ...]:
        return (
            self.check_attributes,
            tuple(sorted((k, tuple(v)) for k, v in self._mappings.items())),
        )
