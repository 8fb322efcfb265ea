"""Where a DMA API call came from, for reports that name the culprit.

CONFIG_DMA_API_DEBUG can record a stack trace per mapping; a short summary is what a
report needs: the call and its arguments, plus the first few frames outside this
package (the driver or test that made the call).  Capturing walks frame objects
only, without reading source files, and formats nothing until a report is shown, so it
is cheap enough to do on every mapping.
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
    """``call(args)`` made from ``where`` (innermost caller first).

    Formatting waits until a report needs the text: ``args`` is ``template`` filled
    with ``values`` and each frame of ``where`` is kept as (file, line, function).
    """

    call: str
    template: str
    values: tuple[object, ...]
    frames: tuple[tuple[str, int, str], ...]

    @property
    def args(self) -> str:
        return self.template.format(*self.values)

    @property
    def where(self) -> tuple[str, ...]:
        return tuple(f"{name}:{line} {func}" for name, line, func in self.frames)

    def __str__(self) -> str:
        where = self.where
        at = f" at {' <- '.join(where)}" if where else ""
        return f"{self.call}({self.args}){at}"


#: Per source file: its base name if it lies outside vcmm.dma, else None.  Resolving a
#: path costs more than the rest of a capture, and a program has few source files.
_outside: dict[str, str | None] = {}


def _shown(filename: str) -> str | None:
    try:
        return _outside[filename]
    except KeyError:
        inside = os.path.abspath(filename).startswith(_PACKAGE_DIR)
        shown = _outside[filename] = None if inside else os.path.basename(filename)
        return shown


def capture(call: str, template: str, *values: object) -> CallSite:
    """Record ``call`` with its arguments (``template.format(*values)``, formatted only
    when shown) and the first :data:`DEPTH` frames outside vcmm.dma."""
    frames: list[tuple[str, int, str]] = []
    frame = sys._getframe(1)
    while frame is not None and len(frames) < DEPTH:
        code = frame.f_code
        name = _shown(code.co_filename)
        if name is not None:
            frames.append((name, frame.f_lineno, code.co_name))
        frame = frame.f_back  # type: ignore[assignment]
    return CallSite(call, template, values, tuple(frames))
