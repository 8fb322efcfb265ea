"""Which device each ``map`` and ``unmap`` belongs to.

``iommu:map`` and ``iommu:unmap`` name no device.  The kernel emits them inside the
DMA API call that caused them, on the same task and CPU, so the neighbouring
``dma_*`` event of that task and CPU names the device (kernel/dma/mapping.c and
drivers/iommu/dma-iommu.c fix the order):

- ``map`` comes before ``dma_map_page``/``_phys``/``_resource``/``_sg`` and
  ``dma_alloc*``: pending maps of a task and CPU go to the next such event of it;
- ``dma_unmap_page``/``_phys``/``_resource`` come after their ``unmap``: pending
  unmaps go to the next such event;
- ``dma_unmap_sg`` and ``dma_free*`` come before their ``unmap``: they open a window
  in which the unmaps of that task and CPU are theirs (for ``dma_free`` only those
  inside the freed range), closed by the next ``dma_*`` or ``map`` of that task;
- ``dma_map_sg_err`` takes the maps and unmaps of the failed mapping before it.

Any other ``dma_*`` event of the task and CPU ends the wait: what was pending then
(and everything pending at the end) is unattributed and reported as a skipped line
with the reason.  Events leave in trace order: one waiting for its ``dma_*`` event
holds back the later ones (of any task), so the replay sees every domain's changes
in the order the trace has them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vcmm.trace.events import DmaEvent, DmaRole, Event, IommuMap, IommuUnmap, Skipped

Item = Event | Skipped

_UNMAP_WINDOW = (DmaRole.OPENS_UNMAPS,)


@dataclass(slots=True)
class _Slot:
    """One place in the reorder buffer: an item, or a map/unmap still waiting."""

    item: Item
    ready: bool


@dataclass(slots=True)
class _Task:
    """What one (pid, cpu) is waiting for."""

    maps: list[_Slot] = field(default_factory=list)
    unmaps: list[_Slot] = field(default_factory=list)
    #: The open dma_unmap_sg/dma_free window: its device and freed range (or None).
    window: DmaEvent | None = None


def _unattributed(ev: IommuMap | IommuUnmap, why: str) -> Skipped:
    kind = "map" if isinstance(ev, IommuMap) else "unmap"
    return Skipped(
        ev.line,
        f"{kind} of iova {ev.iova:#x} by {ev.comm}-{ev.pid} on CPU {ev.cpu} has no device: {why}",
    )


def _in_window(window: DmaEvent, ev: IommuUnmap) -> bool:
    """Whether ``ev`` may be the unmap of ``window`` (a dma_free checks its range)."""
    if window.dma_addr is None or window.size is None:
        return True
    start = window.dma_addr & ~0xFFF
    end = window.dma_addr + window.size
    return start <= ev.iova and ev.iova + ev.size <= ((end + 0xFFF) & ~0xFFF)


class Attribution:
    """Attribute maps and unmaps of a stream of parsed items (see the module notes)."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[int, int], _Task] = {}
        self._queue: deque[_Slot] = deque()
        #: How many maps and unmaps got a device, and how many did not.
        self.attributed = 0
        self.unattributed = 0

    def _task(self, ev: Event) -> _Task:
        key = (ev.pid, ev.cpu)
        task = self._tasks.get(key)
        if task is None:
            task = self._tasks[key] = _Task()
        return task

    def _give(self, slots: list[_Slot], device: str) -> None:
        for slot in slots:
            slot.item.device = device  # type: ignore[union-attr]
            slot.ready = True
        self.attributed += len(slots)
        slots.clear()

    def _drop(self, slots: list[_Slot], why: str) -> None:
        for slot in slots:
            item = slot.item
            assert isinstance(item, IommuMap | IommuUnmap)
            slot.item = _unattributed(item, why)
            slot.ready = True
        self.unattributed += len(slots)
        slots.clear()

    def _dma(self, ev: DmaEvent, task: _Task) -> None:
        role = ev.role
        task.window = None
        if role is DmaRole.CLAIMS_MAPS or role is DmaRole.CLAIMS_BOTH:
            self._give(task.maps, ev.device)
        elif task.maps:
            self._drop(task.maps, f"the next dma event of the task, line {ev.line}, is {ev.name}")
        if role is DmaRole.CLAIMS_UNMAPS or role is DmaRole.CLAIMS_BOTH:
            self._give(task.unmaps, ev.device)
        elif task.unmaps:
            self._drop(task.unmaps, f"the next dma event of the task, line {ev.line}, is {ev.name}")
        if role in _UNMAP_WINDOW:
            task.window = ev

    def run(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items in trace order, maps and unmaps with ``device`` set or skipped.

        The queue's head is never ready after an item is placed (ready ones leave at
        once), so an item that waits joins the queue's tail with nothing to flush,
        and one that does not wait leaves at once when the queue empties before it."""
        queue, tasks = self._queue, self._tasks
        for item in items:
            if isinstance(item, IommuMap):
                task = tasks.get((item.pid, item.cpu)) or self._task(item)
                task.window = None
                slot = _Slot(item, False)
                task.maps.append(slot)
                queue.append(slot)
                continue  # a map waits for its dma event
            if isinstance(item, IommuUnmap):
                task = tasks.get((item.pid, item.cpu)) or self._task(item)
                window = task.window
                if window is None or not _in_window(window, item):
                    slot = _Slot(item, False)
                    task.unmaps.append(slot)
                    queue.append(slot)
                    continue  # it waits for its dma event
                item.device = window.device
                self.attributed += 1
            elif isinstance(item, DmaEvent):
                self._dma(item, tasks.get((item.pid, item.cpu)) or self._task(item))
            while queue and queue[0].ready:
                yield queue.popleft().item
            if queue:
                queue.append(_Slot(item, True))
            else:
                yield item
        for task in self._tasks.values():
            self._drop(task.maps, "no dma_map/dma_alloc event of the task followed it")
            self._drop(task.unmaps, "no dma_unmap/dma_free event of the task came with it")
        while self._queue:
            yield self._queue.popleft().item


def attribute(items: Iterable[Item]) -> Iterator[Item]:
    """Shorthand for ``Attribution().run(items)``."""
    return Attribution().run(items)
