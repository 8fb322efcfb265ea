"""Buffer sharing: fences, reservation objects, wound/wait locks, dma-buf, /dev nodes."""

from vcmm.share.fence import (
    DEFAULT_TIMEOUT,
    Fence,
    FenceTimeline,
    signaled_fence,
    wait_all,
    wait_any,
)
from vcmm.share.resv import RESERVATION_CLASS, ReservationObject
from vcmm.share.ww import AcquireContext, AlreadyHeldError, WoundedError, WWClass, WWMutex

__all__ = [
    "DEFAULT_TIMEOUT",
    "RESERVATION_CLASS",
    "AcquireContext",
    "AlreadyHeldError",
    "Fence",
    "FenceTimeline",
    "ReservationObject",
    "WWClass",
    "WWMutex",
    "WoundedError",
    "signaled_fence",
    "wait_all",
    "wait_any",
]
