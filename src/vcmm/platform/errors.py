"""The errors file records raise, and the key paths they name.

Kept apart from the records so every module that checks part of a file (the platform
schema, the ``[dma]`` roles, the TOML readers, the scenario records) raises the same
kind of error without importing the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from vcmm.errors import InvalidArgumentError


class KeyedError(InvalidArgumentError):
    """A described value breaks a rule; says which file, which key and why.

    ``key`` is the path of the offending key inside the description (``targets[1].base``)
    and ``source`` the file it came from.  Readers re-raise the errors of nested records
    :meth:`within` the enclosing path, so the final message names the full path:
    ``board.toml: smmus[0].tlb.ways: ways 5 does not divide entries 64``.
    """

    def __init__(self, problem: str, *, key: str = "", source: str = "") -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def within(self, prefix: str = "", source: str = "") -> KeyedError:
        """The same error seen from an enclosing table: ``prefix`` joined before the key."""
        return type(self)(
            self.problem, key=join_key(prefix, self.key), source=self.source or source
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep key and source when the error crosses a process boundary (sweeps).
        return (_rebuild, (type(self), self.problem, self.key, self.source))


def _rebuild(cls: type[KeyedError], problem: str, key: str, source: str) -> KeyedError:
    return cls(problem, key=key, source=source)


class PlatformError(KeyedError):
    """A platform description breaks a rule; says which file, which key and why."""


def join_key(prefix: str, key: str) -> str:
    """Join key paths: ``join_key("smmus[0]", "tlb.ways")`` -> ``smmus[0].tlb.ways``."""
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


def suggest(word: str, choices: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
