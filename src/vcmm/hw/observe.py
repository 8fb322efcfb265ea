"""Access observers: who may watch the CPU's and the devices' transactions.

A tool that must see every memory access (the DMA API's debugging checker, a tracer)
registers a callback on a bus master or the CPU with ``add_observer``.  The master
calls it for every transaction *after* translation and the permission and address-map
checks, and *before* any byte moves, with a frozen :class:`AccessEvent`: who, read or
write, the device or virtual address and length, and the physical runs the address
resolved to.  So an observer knows exactly which physical bytes the access will touch
without walking tables itself (and without TLB side effects of its own).

An observer may refuse the access by raising (a :class:`~vcmm.errors.VcmmError`
subclass, by convention): the exception leaves the access call, nothing moves and the
master's transaction counters stay as they were.  The translation's own side effects
(TLB fills, a fault handler's work) remain, as they would for a transaction the
hardware aborts after translating.  Once every observer has returned the access can no
longer fail, so an observer may record "this write happened" when it sees the event.

Two more kinds of event, so an observer sees everything a master issues:

- a **batch** (``access_batch``) is one event for the whole batch, with the burst
  addresses and their physical addresses as read-only numpy arrays, so a checker can
  test them vectorised;
- a transaction the translation **refused** (a fault, a bus error) is reported with
  ``fault`` set and no runs, just before the fault is raised, so a checker can say why
  (an access after unmap); an observer raising here replaces the fault.

Observers run under the machine lock (:mod:`vcmm.hw.lock`), in registration order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from vcmm.attrs import Access
from vcmm.errors import InvalidArgumentError, NotFoundError, VcmmError

#: A physical run: (physical address, length).
PhysRun = tuple[int, int]


@dataclass(frozen=True, slots=True)
class AccessEvent:
    """One transaction as an observer sees it (see the module notes).

    ``address`` is a device address for a bus master and a virtual address for the
    CPU (``asid`` and ``user`` then say how it was translated).  For a batch,
    ``addrs``/``pas`` hold every burst's address and physical address (``pas`` is
    ``None`` on a fault), ``burst`` its size, ``address`` the first address and
    ``length`` the total bytes.
    """

    master: str
    access: Access
    address: int
    length: int
    runs: tuple[PhysRun, ...] = ()
    asid: int | None = None
    user: bool = False
    addrs: npt.NDArray[np.uint64] | None = None
    pas: npt.NDArray[np.uint64] | None = None
    burst: int = 0
    fault: VcmmError | None = None

    @property
    def is_batch(self) -> bool:
        return self.addrs is not None

    @property
    def faulted(self) -> bool:
        """The translation refused the transaction: nothing will move."""
        return self.fault is not None


Observer = Callable[[AccessEvent], None]


def frozen(array: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """A read-only view, so no observer can change what the next one sees."""
    view = array.view()
    view.flags.writeable = False
    return view


class Observable:
    """The observer list of a bus master or the CPU.

    Subclasses set ``self._observers = []`` and ``self.name``; the hot paths test the
    plain list (``if self._observers:``) so an unobserved master pays nothing else.
    """

    name: str
    _observers: list[Observer]

    def add_observer(self, callback: Observer) -> None:
        """Call ``callback(event)`` for every transaction of this master from now on."""
        if not callable(callback):
            raise InvalidArgumentError(f"{self.name}.add_observer: {callback!r} is not callable")
        if any(cb == callback for cb in self._observers):
            raise InvalidArgumentError(
                f"{self.name}.add_observer: {callback!r} already observes this master"
            )
        self._observers.append(callback)

    def remove_observer(self, callback: Observer) -> None:
        """Stop calling ``callback``."""
        for i, cb in enumerate(self._observers):
            if cb == callback:
                del self._observers[i]
                return
        raise NotFoundError(f"{self.name}.remove_observer: {callback!r} does not observe it")

    @property
    def observers(self) -> tuple[Observer, ...]:
        """The registered callbacks, in calling order."""
        return tuple(self._observers)

    def _notify(self, event: AccessEvent) -> None:
        for callback in tuple(self._observers):
            callback(event)
