"""Where a DMA API call came from, for reports that name the culprit.

CONFIG_DMA_API_DEBUG can record a stack trace per mapping; a short summary is what a
report needs: the call and its arguments, plus the first few frames outside this
package (the driver or test that made the call).  Capturing walks frame objects
only, without reading source files, so it is cheap enough to do on every mapping.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: Frames kept in a summary.
DEPTH = 2


@dataclass(frozen=True, slots=True)
class CallSite:
    """``call(args)`` made from ``where`` (innermost caller first)."""

    call: str
    args: str
    where: tuple[str, ...]

    def __str__(self) -> str:
        at = f" at {' <- '.join(self.where)}" if self.where else ""
        return f"{self.call}({self.args}){at}"


def capture(call: str, args: str) -> CallSite:
    """Record ``call(args)`` and the first :data:`DEPTH` frames outside vcmm.dma."""
    frames: list[str] = []
    frame = sys._getframe(1)
    while frame is not None and len(frames) < DEPTH:
        filename = frame.f_code.co_filename
        if not os.path.abspath(filename).startswith(_PACKAGE_DIR):
            frames.append(f"{os.path.basename(filename)}:{frame.f_lineno} {frame.f_code.co_name}")
        frame = frame.f_back  # type: ignore[assignment]
    return CallSite(call, args, tuple(frames))
