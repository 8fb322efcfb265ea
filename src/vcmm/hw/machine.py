"""A machine: the hardware of one SoC, built and wired, before any software runs.

:class:`Machine` holds what a platform description turns into (physical memory, the
page-table window, the CPU, the interconnect, the SMMUs and the bus masters) and the
one machine lock they all hold.  It is a plain container: building one from a platform
file is the platform layer's job (:mod:`vcmm.platform.build`), running software on it
the core's (:class:`vcmm.core.manager.Vcmm`); a booted :class:`vcmm.System` is a
machine plus the VCMM plus the front ends.  Keeping the hardware in its own object
lets ``System.snapshot`` compare all hardware state in one place and lets tools study
a machine with no VCMM at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from vcmm.errors import InvalidArgumentError
from vcmm.hw.bus import Interconnect, PhysicalDevice, SmmuDevice
from vcmm.hw.cpu import Cpu
from vcmm.hw.lock import MachineLock
from vcmm.hw.master import AnyMaster
from vcmm.hw.memory import PhysicalMemory
from vcmm.hw.smmu import Smmu
from vcmm.hw.tablemem import TableMemory


@dataclass(frozen=True, eq=False)
class Machine:
    """The hardware of one SoC (see the module notes).

    ``devices`` maps every bus master's name to it, the CPU's (``cpu.name``) included;
    every master, the CPU and every SMMU hold ``lock``.
    """

    name: str
    memory: PhysicalMemory
    table_memory: TableMemory
    cpu: Cpu
    interconnect: Interconnect
    smmus: Mapping[str, Smmu]
    devices: Mapping[str, AnyMaster]
    lock: MachineLock = field(repr=False)

    def __post_init__(self) -> None:
        if self.devices.get(self.cpu.name) is not self.cpu:
            raise InvalidArgumentError(
                f"machine {self.name!r}: the devices must include the CPU as {self.cpu.name!r}"
            )
        for name, device in self.devices.items():
            if device.name != name:
                raise InvalidArgumentError(
                    f"machine {self.name!r}: device {device.name!r} is listed as {name!r}"
                )
            if device.lock is not self.lock:
                raise InvalidArgumentError(
                    f"machine {self.name!r}: {name} holds {device.lock!r}, not the machine lock"
                )

    def iommu_devices(self) -> dict[str, SmmuDevice]:
        """The bus masters behind an SMMU context, by name."""
        return {n: d for n, d in self.devices.items() if isinstance(d, SmmuDevice)}

    def physical_devices(self) -> dict[str, PhysicalDevice]:
        """The physically addressed bus masters, by name."""
        return {n: d for n, d in self.devices.items() if isinstance(d, PhysicalDevice)}

    def snapshot(self) -> tuple[object, ...]:
        """All hardware state, comparable: memory bytes, table pages, the CPU's TLB,
        cache and kernel table, and every SMMU."""
        with self.lock:
            return (
                self.memory.digest(),
                self.table_memory.snapshot(),
                self.cpu.tlb.snapshot(),
                self.cpu.cache.snapshot(),
                self.cpu.kernel_table.snapshot(),
                tuple(smmu.snapshot() for smmu in self.smmus.values()),
            )
