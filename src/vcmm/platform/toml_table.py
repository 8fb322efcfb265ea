"""The shape checks every TOML file of vcmm shares: tables, unknown keys, value types.

Platform files and scenario files are read the same way: each table knows its key
path and file, refuses keys it does not know (suggesting the closest known one), and
reports a value of the wrong type with its TOML type name.  The readers differ in
their error class and in how they treat missing keys, so each subclasses
:class:`TomlTable` and supplies :meth:`TomlTable.error`; the messages stay one text.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection
from typing import Any

from vcmm.platform.errors import join_key


def type_name(value: object) -> str:
    """The TOML name of a value's type, as a user reading the file knows it."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names.update({list: "array", dict: "table"})
    return names.get(type(value), type(value).__name__)


def suggest(word: str, choices: Collection[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or nothing when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


class TomlTable:
    """One TOML table being read: knows its key path and file for error messages.

    Subclasses say which error a problem becomes (:meth:`error`); the table checks its
    own shape on construction so a reader never sees a key it did not ask for.
    """

    def __init__(self, data: object, path: str, source: str, allowed: Collection[str]) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, dict):
            raise self.error("", f"expected a table, got {type_name(data)} {data!r}")
        self.data: dict[str, Any] = data
        for key in data:
            if key not in allowed:
                raise self.error(
                    key,
                    f"unknown key {key!r}{suggest(key, allowed)}; allowed here: "
                    + ", ".join(allowed),
                )

    def error(self, key: str, problem: str) -> Exception:
        """The error for ``problem`` at ``key`` of this table (subclasses pick the class)."""
        raise NotImplementedError

    def child(self, key: str) -> str:
        """The full key path of ``key`` inside this table."""
        return join_key(self.path, key)

    def checked_string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type_name(value)} {value!r}")
        return value

    def checked_boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {type_name(value)} {value!r}")
        return value

    def checked_integer(self, key: str, value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {type_name(value)} {value!r}")
        return value
