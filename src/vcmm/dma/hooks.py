"""The debugging checker's access observers on the CPU and every device.

The hardware reports every transaction to its observers (:mod:`vcmm.hw.observe`)
after translation and before data moves, with the physical runs it resolved to.
:class:`AccessHooks` registers one observer on the CPU and one on each device of the
system and routes the events to the :class:`~vcmm.dma.debug.DebugChecker`: in
``raise`` mode a bad access is refused by the checker's exception before a byte
moves; a device write is recorded when its event passes (the access cannot fail
after that), so the checker knows which bytes the CPU must not read unsynced.
Batches (``access_batch``) arrive as one event with address arrays and are checked
vectorised; a device transaction the translation refused arrives with its fault and
is checked like any other, so the report says why it faulted (an access after unmap,
a write to a ``TO_DEVICE`` buffer); the checker raising then replaces the fault.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vcmm.attrs import Access
from vcmm.core.interfaces import VcmmApi
from vcmm.hw.cpu import Cpu
from vcmm.hw.observe import AccessEvent, Observable, Observer

if TYPE_CHECKING:
    from vcmm.dma.debug import DebugChecker
    from vcmm.hw.bus import BusMaster


class AccessHooks:
    """The checker's observers on one system's CPU and devices."""

    def __init__(self, checker: DebugChecker, system: VcmmApi) -> None:
        self.checker = checker
        self.system = system
        self._installed: list[tuple[Observable, Observer]] = []

    def install(self) -> None:
        cpu = self.system.cpu
        self._observe(cpu, self._cpu_event)
        for dev in self.system.devices.values():
            if not isinstance(dev, Cpu):
                self._observe(dev, self._device_observer(dev))

    def _observe(self, master: Observable, callback: Observer) -> None:
        master.add_observer(callback)
        self._installed.append((master, callback))

    def _cpu_event(self, event: AccessEvent) -> None:
        if event.faulted:
            return  # nothing of it happens; the fault itself is the report
        self.checker.cpu_access(event)

    def _device_observer(self, dev: BusMaster) -> Observer:
        checker = self.checker

        def observe(event: AccessEvent) -> None:
            write = event.access is Access.WRITE
            if event.is_batch:
                checker.device_batch(dev, event)
                return
            checker.device_access(
                dev, event.address, event.length, write=write, faulted=event.faulted
            )
            if write and not event.faulted:
                checker.device_done(dev, event.address, event.length, write=True)

        return observe

    def uninstall(self) -> None:
        for master, callback in reversed(self._installed):
            master.remove_observer(callback)
        self._installed.clear()
