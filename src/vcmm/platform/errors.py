"""The error every platform rule raises, and the key paths it names.

Kept apart from the schema so every module that checks part of a platform (the
schema, the ``[dma]`` roles, the TOML readers) raises the same error without
importing the others.
"""

from __future__ import annotations

from vcmm.errors import InvalidArgumentError


class PlatformError(InvalidArgumentError):
    """A platform description breaks a rule; says which file, which key and why.

    ``key`` is the path of the offending key inside the description (``targets[1].base``)
    and ``source`` the file it came from.  The loader re-raises errors of nested values
    :meth:`within` the enclosing path so the final message names the full path.
    """

    def __init__(self, problem: str, *, key: str = "", source: str = "") -> None:
        self.problem = problem
        self.key = key
        self.source = source
        super().__init__(": ".join(part for part in (source, key, problem) if part))

    def within(self, prefix: str = "", source: str = "") -> PlatformError:
        """The same error seen from an enclosing table: ``prefix`` joined before the key."""
        return PlatformError(
            self.problem, key=join_key(prefix, self.key), source=self.source or source
        )


def join_key(prefix: str, key: str) -> str:
    """Join key paths: ``join_key("smmus[0]", "tlb.ways")`` -> ``smmus[0].tlb.ways``."""
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"
