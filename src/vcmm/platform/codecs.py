"""Codecs: how a value of one type is read from a TOML table, checked and written back.

A record field names its codec once (:mod:`vcmm.platform.fields`); the codec then
serves three readers of that declaration:

- the file reader: :meth:`Codec.read` turns the TOML value into the field's value,
  with errors in the file's terms (``expected an integer, got string '32'``);
- construction: :meth:`Codec.check` refuses a value of the wrong type whoever built
  the record (a file, a devicetree importer, a test);
- the writer: :meth:`Codec.pairs` writes the value back in a form the reader takes,
  so a dump loads back equal.

Sizes take the seed's notation (``"2M+4K"``), addresses are written in hex grouped by
16 bits, windows are ``{ base, size }`` tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from vcmm.checks import is_int
from vcmm.errors import InvalidArgumentError
from vcmm.platform.fields import Invalid, shape_of
from vcmm.platform.toml_table import (
    Pairs,
    Reading,
    TomlTable,
    inline_array,
    inline_table,
    read_record,
    record_pairs,
    type_name,
)
from vcmm.ranges import AddressRange
from vcmm.sizes import SZ_4K, format_size, parse_size

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

#: Addresses are 64-bit: nothing may reach past this.
ADDRESS_LIMIT: Final = 1 << 64
#: Granule every window of the physical map is aligned to (the smallest page).
PAGE_SIZE: Final = SZ_4K

#: An underscore between two digits ("0x8000_0000"); SZ_1M keeps its underscore.
_DIGIT_SEPARATOR = re.compile(r"(?<=[0-9a-fA-F])_(?=[0-9a-fA-F])")


def parse_number(
    value: object,
    what: str,
    fail: Callable[[str], Exception] | None = None,
) -> int:
    """Parse a size or address written as an integer or a string ("2M+4K", "0x8000_0000").

    Underscores between digits are accepted in strings as TOML accepts them in integers.
    """

    def problem(text: str) -> Exception:
        return fail(text) if fail else InvalidArgumentError(text)

    if isinstance(value, bool) or not isinstance(value, int | str):
        raise problem(f"expected an {what} (integer or string), got {type_name(value)} {value!r}")
    try:
        number = parse_size(_DIGIT_SEPARATOR.sub("", value) if isinstance(value, str) else value)
    except InvalidArgumentError as err:
        raise problem(f"bad {what} {value!r}: {err}") from None
    if number >= ADDRESS_LIMIT:
        raise problem(f"{what} {value!r} does not fit in 64 bits")
    return number


def hex_text(value: int) -> str:
    """``0x8000_0000``: grouped by 16 bits; values >= 2^63 as strings (TOML ints are 64-bit)."""
    digits = f"{value:x}"
    groups: list[str] = []
    while digits:
        groups.insert(0, digits[-4:])
        digits = digits[:-4]
    text = "0x" + "_".join(groups)
    return string_text(text) if value >= 1 << 63 else text


def string_text(value: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters (TOML refuses
    U+0000-U+001F and U+007F raw) escaped; everything else written as is."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif char < " " or char == "\x7f":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def size_text(value: int) -> str:
    """``"2M+4K"``; a size without a unit (``0``, ``64``) as a plain integer."""
    text = format_size(value)
    return text if text.isdigit() else string_text(text)


class Codec:
    """Reads, checks and writes one kind of value.

    ``layout`` says how it sits in a file: ``value`` (one key), ``flat`` (several keys
    of the enclosing table, as a region's ``base`` and ``size``), ``table`` or
    ``tables`` (a sub-table or an array of them: sections at the top of a file,
    inline below).  ``noun`` names it in "missing required ..." messages.
    """

    layout = "value"
    noun = "key"
    #: A missing table is read as an empty one, so its own fields take their defaults.
    absent_reads_empty = False

    def keys(self, key: str) -> tuple[str, ...]:
        """The TOML keys the value occupies."""
        return (key,)

    def error_key(self, key: str) -> str:
        """The key an error about the value names."""
        return key

    def read(self, table: TomlTable, key: str, reading: Reading) -> object:
        """The value of ``key`` in ``table`` (a missing required key is the table's
        error); ``reading`` holds what the record read so far."""
        raise NotImplementedError

    def check(self, value: object) -> None:
        """Refuse a value of the wrong type (raises :class:`Invalid`)."""

    def dump(self, value: Any) -> str:
        """The value as inline TOML (``value`` layout)."""
        raise NotImplementedError

    def rows(self, value: Any) -> list[Pairs]:
        """The key/value pairs of each table (``table``: one, ``tables``: one per item)."""
        raise NotImplementedError

    def pairs(self, key: str, value: Any) -> Pairs:
        """How the value is written inside an enclosing table."""
        if self.layout == "table":
            return [(key, inline_table(self.rows(value)[0]))]
        if self.layout == "tables":
            return [(key, inline_array(self.rows(value)))]
        return [(key, self.dump(value))]


class Text(Codec):
    def read(self, table: TomlTable, key: str, reading: Reading) -> str:
        return table.checked_string(key, table.require(key))

    def check(self, value: object) -> None:
        if not isinstance(value, str):
            raise Invalid(f"expected a string, got {value!r}")
        if any("\ud800" <= char <= "\udfff" for char in value):
            raise Invalid(f"string {value!r} holds a lone surrogate, which no file can")

    def dump(self, value: str) -> str:
        return string_text(value)


class Boolean(Codec):
    def read(self, table: TomlTable, key: str, reading: Reading) -> bool:
        return table.checked_boolean(key, table.require(key))

    def check(self, value: object) -> None:
        if not isinstance(value, bool):
            raise Invalid(f"expected true or false, got {value!r}")

    def dump(self, value: bool) -> str:
        return "true" if value else "false"


class Integer(Codec):
    """A plain integer, at least ``minimum``."""

    def __init__(self, minimum: int = 0) -> None:
        self.minimum = minimum

    def read(self, table: TomlTable, key: str, reading: Reading) -> int:
        return table.checked_integer(key, table.require(key))

    def check(self, value: object) -> None:
        if not is_int(value):
            raise Invalid(f"expected an integer, got {value!r}")
        if value < self.minimum:
            raise Invalid(f"value {value} is below the minimum {self.minimum}")

    def dump(self, value: int) -> str:
        return str(value)


class OptionalInteger(Integer):
    """An integer that may be absent (None): a file leaves the key out, a dump too."""

    def check(self, value: object) -> None:
        if value is not None:
            super().check(value)


class Size(Integer):
    """A byte count in the size notation (``"2M+4K"``, ``0x1000``)."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> int:
        return parse_number(table.require(key), "size", lambda p: table.error(key, p))

    def dump(self, value: int) -> str:
        return size_text(value)


class Address(Integer):
    """A 64-bit address (``0x8000_0000``, ``"0xffff_0000_0000_0000"``)."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> int:
        return parse_number(table.require(key), "address", lambda p: table.error(key, p))

    def check(self, value: object) -> None:
        super().check(value)
        if is_int(value) and value >= ADDRESS_LIMIT:
            raise Invalid(f"address {value:#x} does not fit in 64 bits")

    def dump(self, value: int) -> str:
        return hex_text(value)


class Strings(Codec):
    """An array of strings, held as a tuple."""

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[str, ...]:
        value = table.require(key)
        if not isinstance(value, list):
            raise table.error(
                key, f"expected an array of strings, got {type_name(value)} {value!r}"
            )
        return tuple(table.checked_string(f"{key}[{i}]", item) for i, item in enumerate(value))

    def check(self, value: object) -> None:
        if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
            raise Invalid(f"expected a tuple of strings, got {value!r}")
        for item in value:
            _TEXT.check(item)

    def dump(self, value: tuple[str, ...]) -> str:
        return f"[{', '.join(string_text(v) for v in value)}]"


_TEXT = Text()


# -- windows ---------------------------------------------------------------------------------


def check_window(window: object) -> None:
    """A physical or virtual window: non-empty, page aligned, inside 64-bit space."""
    if not isinstance(window, AddressRange):
        raise Invalid(f"expected an AddressRange, got {window!r}")
    if window.size == 0:
        raise Invalid(f"window {window} is empty")
    if not window.is_aligned(PAGE_SIZE):
        raise Invalid(
            f"window base {window.start:#x} and size {window.size:#x} must be multiples of "
            f"{format_size(PAGE_SIZE)}"
        )
    if window.end > ADDRESS_LIMIT:
        raise Invalid(f"window {window} reaches past the 64-bit address space")


_ADDRESS, _SIZE = Address(), Size()


def _window_of(table: TomlTable, reading: Reading) -> AddressRange:
    base, size = _ADDRESS.read(table, "base", reading), _SIZE.read(table, "size", reading)
    return table.build(AddressRange, start=base, size=size)


def _window_pairs(window: AddressRange) -> Pairs:
    return [("base", hex_text(window.start)), ("size", size_text(window.size))]


class Window(Codec):
    """An address window written as a ``{ base, size }`` table."""

    layout = "table"
    noun = "table"

    def read(self, table: TomlTable, key: str, reading: Reading) -> AddressRange:
        table.require(key, self.noun)
        return _window_of(table.table(key, ("base", "size")), reading)

    def check(self, value: object) -> None:
        check_window(value)

    def rows(self, value: AddressRange) -> list[Pairs]:
        return [_window_pairs(value)]


class FlatWindow(Window):
    """A window whose ``base`` and ``size`` are keys of the record's own table."""

    layout = "flat"

    def keys(self, key: str) -> tuple[str, ...]:
        return ("base", "size")

    def error_key(self, key: str) -> str:
        return ""

    def read(self, table: TomlTable, key: str, reading: Reading) -> AddressRange:
        return _window_of(table, reading)

    def pairs(self, key: str, value: AddressRange) -> Pairs:
        return _window_pairs(value)


class Windows(Codec):
    """An array of ``{ base, size }`` windows, held as a tuple."""

    layout = "tables"
    noun = "array of tables"

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[AddressRange, ...]:
        table.require(key, self.noun)
        return tuple(_window_of(t, reading) for t in table.tables(key, ("base", "size")))

    def check(self, value: object) -> None:
        if not isinstance(value, tuple):
            raise Invalid(f"expected a tuple of AddressRange, got {value!r}")
        for index, window in enumerate(value):
            try:
                check_window(window)
            except Invalid as err:
                raise Invalid(err.problem, f"[{index}]") from None

    def rows(self, value: tuple[AddressRange, ...]) -> list[Pairs]:
        return [_window_pairs(w) for w in value]


# -- records ---------------------------------------------------------------------------------


class Record(Codec):
    """A nested record of class ``cls`` (declared with :func:`~vcmm.platform.fields.key`)."""

    layout = "table"
    noun = "table"
    absent_reads_empty = True

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def read(self, table: TomlTable, key: str, reading: Reading) -> object:
        shape = shape_of(self.cls)
        return read_record(shape, table.table(key, shape.allowed()), reading)

    def check(self, value: object) -> None:
        if not isinstance(value, self.cls):
            raise Invalid(f"expected a {self.cls.__name__}, got {value!r}")

    def rows(self, value: DataclassInstance) -> list[Pairs]:
        return [record_pairs(value)]


class Records(Codec):
    """An array of records of class ``cls``, held as a tuple."""

    layout = "tables"
    noun = "array of tables"

    def __init__(self, cls: type) -> None:
        self.cls = cls

    def read(self, table: TomlTable, key: str, reading: Reading) -> tuple[object, ...]:
        table.require(key, self.noun)
        shape = shape_of(self.cls)
        return tuple(read_record(shape, t, reading) for t in table.tables(key, shape.allowed()))

    def check(self, value: object) -> None:
        name = self.cls.__name__
        if not isinstance(value, tuple):
            raise Invalid(f"expected a tuple of {name}, got {value!r}")
        for index, item in enumerate(value):
            if not isinstance(item, self.cls):
                raise Invalid(f"expected a {name}, got {item!r}", f"[{index}]")

    def rows(self, value: tuple[DataclassInstance, ...]) -> list[Pairs]:
        return [record_pairs(item) for item in value]
