"""The constants of the process model: memory protections, mmap flags, open modes.

They carry POSIX's names so a test reads like the C program it stands for
(``mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)``); the values are Python
flags so a wrong combination is caught by type and by :func:`check_prot`.
"""

from __future__ import annotations

import enum

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError


class Prot(enum.IntFlag):
    """Page protections of a mapping (``PROT_*``)."""

    NONE = 0
    READ = 1
    WRITE = 2
    EXEC = 4


class MapFlags(enum.IntFlag):
    """``mmap`` flags: exactly one of SHARED / PRIVATE, optionally FIXED, ANONYMOUS."""

    SHARED = 0x01
    PRIVATE = 0x02
    FIXED = 0x10
    ANONYMOUS = 0x20


class OpenMode(enum.Enum):
    """How a file description was opened (``O_RDONLY`` / ``O_WRONLY`` / ``O_RDWR``)."""

    RDONLY = "r"
    WRONLY = "w"
    RDWR = "rw"

    @property
    def readable(self) -> bool:
        return self is not OpenMode.WRONLY

    @property
    def writable(self) -> bool:
        return self is not OpenMode.RDONLY


PROT_NONE = Prot.NONE
PROT_READ = Prot.READ
PROT_WRITE = Prot.WRITE
PROT_EXEC = Prot.EXEC
MAP_SHARED = MapFlags.SHARED
MAP_PRIVATE = MapFlags.PRIVATE
MAP_FIXED = MapFlags.FIXED
MAP_ANONYMOUS = MapFlags.ANONYMOUS
O_RDONLY = OpenMode.RDONLY
O_WRONLY = OpenMode.WRONLY
O_RDWR = OpenMode.RDWR


def check_prot(call: str, prot: object) -> Prot:
    """Validate a protection word (an int made of ``PROT_*`` bits)."""
    if not is_int(prot):
        raise InvalidArgumentError(f"{call}: prot {prot!r} is not a PROT_* flag word")
    if prot & ~int(Prot.READ | Prot.WRITE | Prot.EXEC):
        raise InvalidArgumentError(f"{call}: prot {prot:#x} has bits that are not PROT_* flags")
    return Prot(prot)


def check_map_flags(call: str, flags: object) -> MapFlags:
    """Validate ``mmap`` flags: one of SHARED/PRIVATE, no unknown bits."""
    if not is_int(flags):
        raise InvalidArgumentError(f"{call}: flags {flags!r} is not a MAP_* flag word")
    known = int(MapFlags.SHARED | MapFlags.PRIVATE | MapFlags.FIXED | MapFlags.ANONYMOUS)
    if flags & ~known:
        raise InvalidArgumentError(f"{call}: flags {flags:#x} has bits that are not MAP_* flags")
    value = MapFlags(flags)
    if bool(value & MapFlags.SHARED) == bool(value & MapFlags.PRIVATE):
        raise InvalidArgumentError(
            f"{call}: flags {value!r} must contain exactly one of MAP_SHARED and MAP_PRIVATE"
        )
    return value


def check_mode(call: str, mode: object) -> OpenMode:
    if not isinstance(mode, OpenMode):
        raise InvalidArgumentError(
            f"{call}: mode {mode!r} is not an OpenMode (O_RDONLY, O_WRONLY or O_RDWR)"
        )
    return mode
