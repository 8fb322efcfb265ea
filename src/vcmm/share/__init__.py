"""Buffer sharing: fences, reservation objects, wound/wait locks, dma-buf, /dev nodes.

See docs/SHARING.md.  Modules, each with one job:

- :mod:`~vcmm.share.fence`: one-shot completion events with timeouts and timelines;
- :mod:`~vcmm.share.ww`: wound/wait mutexes and acquire contexts;
- :mod:`~vcmm.share.resv`: a buffer's exclusive and shared fences, and its lock;
- :mod:`~vcmm.share.lock`: which machine lock the sharing layer holds (the system's
  own, ``system.lock``) and the rule that no fence wait happens while holding one;
- :mod:`~vcmm.share.state`: per-system state, the one shared DMA API (:func:`dma_api`);
- :mod:`~vcmm.share.dmamap`: an attachment's mapping through the importer's DMA API;
- :mod:`~vcmm.share.ops`: the exporter's operations (``struct dma_buf_ops``);
- :mod:`~vcmm.share.attachment`: a device attached to a dma-buf, mapping and unmapping;
- :mod:`~vcmm.share.cpuaccess`: CPU-access brackets (``DMA_BUF_IOCTL_SYNC``) and fences;
- :mod:`~vcmm.share.kmap`: the kernel's vmap of a dma-buf;
- :mod:`~vcmm.share.dmabuf`: the dma-buf object: references, attachments, mappings, file;
- :mod:`~vcmm.share.fdcalls`: the calls a process makes with a dma-buf fd;
- :mod:`~vcmm.share.exporter`: the VCMM's exporter of physical allocations;
- :mod:`~vcmm.share.jobs`: device job queues ordered by fences;
- :mod:`~vcmm.share.devnode`: ``/dev/<context>`` nodes;
- :mod:`~vcmm.share.heap`: dma-buf heaps, ``/dev/dma_heap/<target>``.
"""

from vcmm.dma.sg import MappedScatterList as ScatterList
from vcmm.dma.sg import SgEntry
from vcmm.share.attachment import Attachment
from vcmm.share.cpuaccess import SyncFlags
from vcmm.share.devnode import VcmDevNode, register_dev_nodes
from vcmm.share.dmabuf import DmaBuf, DmaBufFile
from vcmm.share.exporter import VcmExporter
from vcmm.share.fdcalls import dma_buf_get, dma_buf_mmap, dma_buf_needs_sync, dma_buf_sync
from vcmm.share.fence import (
    DEFAULT_TIMEOUT,
    Fence,
    FenceTimeline,
    signaled_fence,
    wait_all,
    wait_any,
)
from vcmm.share.heap import DmaHeap, DmaHeapAllocationData, dma_heap_alloc, register_heaps
from vcmm.share.jobs import Engine, Job
from vcmm.share.kmap import KernelMapping
from vcmm.share.lock import locked
from vcmm.share.ops import Exporter
from vcmm.share.resv import RESERVATION_CLASS, ReservationObject
from vcmm.share.state import dma_api, set_dma_api
from vcmm.share.ww import AcquireContext, AlreadyHeldError, WoundedError, WWClass, WWMutex

__all__ = [
    "DEFAULT_TIMEOUT",
    "RESERVATION_CLASS",
    "AcquireContext",
    "AlreadyHeldError",
    "Attachment",
    "DmaBuf",
    "DmaBufFile",
    "DmaHeap",
    "DmaHeapAllocationData",
    "Engine",
    "Exporter",
    "Fence",
    "FenceTimeline",
    "Job",
    "KernelMapping",
    "ReservationObject",
    "ScatterList",
    "SgEntry",
    "SyncFlags",
    "VcmDevNode",
    "VcmExporter",
    "WWClass",
    "WWMutex",
    "WoundedError",
    "dma_api",
    "dma_buf_get",
    "dma_buf_mmap",
    "dma_buf_needs_sync",
    "dma_buf_sync",
    "dma_heap_alloc",
    "locked",
    "register_dev_nodes",
    "register_heaps",
    "set_dma_api",
    "signaled_fence",
    "wait_all",
    "wait_any",
]
