"""Reading a described input file (platform, devicetree, scenario) from disk.

Why one place: a user who names a file that is missing, unreadable or not text gets the
same one-line answer whichever reader they called (``board.toml: cannot read platform
file: No such file or directory``), and each reader's own error class, so the command
line reports it as that kind of input.
"""

from __future__ import annotations

from collections.abc import Callable

from vcmm.platform.errors import KeyedError


def read_input(
    name: str, what: str, error: type[KeyedError], *, hint: Callable[[], str] | None = None
) -> bytes:
    """The bytes of file ``name``; an OS error becomes ``error`` naming ``what`` was read
    (``hint``, if given, adds what the user may have meant)."""
    try:
        with open(name, "rb") as handle:
            return handle.read()
    except OSError as err:
        extra = hint() if hint is not None else ""
        raise error(f"cannot read {what}: {err.strerror or err}{extra}", source=name) from None


def read_text_input(
    name: str, what: str, error: type[KeyedError], *, hint: Callable[[], str] | None = None
) -> str:
    """:func:`read_input` decoded as UTF-8, the encoding TOML requires; anything else
    (a binary, a UTF-16 export) is refused with ``error`` naming the decoder's complaint."""
    raw = read_input(name, what, error, hint=hint)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise error(f"{what} is not UTF-8: {err}", source=name) from None
