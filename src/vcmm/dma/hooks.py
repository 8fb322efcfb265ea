"""Observing CPU and device accesses for the debugging checker, without touching hw.

The hardware models expose plain methods (``cpu.read``/``cpu.write``,
``device.read_array``/``write``/``copy``); :class:`AccessHooks` shadows them on the
*instances* with wrappers that ask the checker first (so in ``raise`` mode a bad access
is refused before a byte moves) and tell it afterwards what a device wrote.
``uninstall`` deletes the shadows, restoring the class methods.  ``access_batch``
(address-only translation, no data) is not observed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vcmm.hw.memory import as_u8

if TYPE_CHECKING:
    from vcmm.dma.debug import DebugChecker


def _length(data: Any) -> int:
    try:
        return int(as_u8(data).size)
    except Exception:
        return 0


def _ints(*values: Any) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values)


class AccessHooks:
    """Instance-level wrappers around the CPU's and every device's data accesses."""

    def __init__(self, checker: DebugChecker, system: Any) -> None:
        self.checker = checker
        self.system = system
        self._patched: list[tuple[Any, str]] = []

    def install(self) -> None:
        cpu = self.system.cpu
        checker = self.checker
        cpu_read, cpu_write = cpu.read, cpu.write

        def read(va: int, length: int, *, asid: int | None = None, user: bool = False) -> bytes:
            if _ints(va, length):
                checker.cpu_access(va, length, asid, user, write=False)
            return bytes(cpu_read(va, length, asid=asid, user=user))

        def write(va: int, data: Any, *, asid: int | None = None, user: bool = False) -> None:
            if _ints(va):
                checker.cpu_access(va, _length(data), asid, user, write=True)
            cpu_write(va, data, asid=asid, user=user)

        self._patch(cpu, "read", read)
        self._patch(cpu, "write", write)
        for dev in self.system.devices.values():
            if dev is not cpu:
                self._install_device(dev)

    def _install_device(self, dev: Any) -> None:
        checker = self.checker
        dev_read, dev_write, dev_copy = dev.read_array, dev.write, dev.copy

        def read_array(addr: int, length: int) -> Any:
            if _ints(addr, length):
                checker.device_access(dev, addr, length, write=False)
            return dev_read(addr, length)

        def write(addr: int, data: Any) -> None:
            n = _length(data)
            if _ints(addr):
                checker.device_access(dev, addr, n, write=True)
            dev_write(addr, data)
            if _ints(addr):
                checker.device_done(dev, addr, n, write=True)

        def copy(src_addr: int, dst_addr: int, length: int) -> None:
            if _ints(src_addr, dst_addr, length):
                checker.device_access(dev, src_addr, length, write=False)
                checker.device_access(dev, dst_addr, length, write=True)
            dev_copy(src_addr, dst_addr, length)
            if _ints(dst_addr, length):
                checker.device_done(dev, dst_addr, length, write=True)

        self._patch(dev, "read_array", read_array)
        self._patch(dev, "write", write)
        self._patch(dev, "copy", copy)

    def _patch(self, obj: Any, name: str, fn: Any) -> None:
        setattr(obj, name, fn)
        self._patched.append((obj, name))

    def uninstall(self) -> None:
        for obj, name in reversed(self._patched):
            delattr(obj, name)
        self._patched.clear()
