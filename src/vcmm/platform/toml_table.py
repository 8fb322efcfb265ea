"""Reading and writing declared records as TOML: one reader and one writer for all.

Platform files and scenario files are read the same way.  Each table knows its key
path and file, refuses keys it does not know (suggesting the closest known one), and
reports a value of the wrong type with its TOML type name.  :func:`read_record` reads
any record from its declared fields (:mod:`vcmm.platform.fields`): keys the file
gives go through their codec, keys it leaves out take the field's file default, the
constructor checks the rules, and every error comes out as ``file: key path:
problem`` in the caller's error class.  :func:`dump_record` writes a record back in
the same shape, so a dump reads back equal.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from vcmm.checks import is_int
from vcmm.platform.errors import KeyedError, join_key, suggest
from vcmm.platform.fields import Declared, Shape, shape_of

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T")


def type_name(value: object) -> str:
    """The TOML name of a value's type, as a user reading the file knows it."""
    names = {bool: "boolean", int: "integer", float: "float", str: "string"}
    names.update({list: "array", dict: "table"})
    return names.get(type(value), type(value).__name__)


class AnyKey(Collection[str]):
    """Every key is allowed (a table whose keys are data, such as block sizes)."""

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class TomlTable:
    """One TOML table being read: knows its key path and file for error messages.

    ``error`` is the error class its problems become (:class:`PlatformError`,
    ``ScenarioError``); the table checks its own shape on construction so a reader
    never sees a key it did not ask for.
    """

    def __init__(
        self,
        data: object,
        path: str,
        source: str,
        allowed: Collection[str],
        error: type[KeyedError],
    ) -> None:
        self.path = path
        self.source = source
        self.error_class = error
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

    def error(self, key: str, problem: str) -> KeyedError:
        """The error for ``problem`` at ``key`` of this table."""
        return self.error_class(problem, key=join_key(self.path, key), source=self.source)

    def child(self, key: str) -> str:
        """The full key path of ``key`` inside this table."""
        return join_key(self.path, key)

    def require(self, key: str, noun: str = "key") -> object:
        """The raw value of ``key``; a missing key is an error naming it."""
        if key not in self.data:
            raise self.error(key, f"missing required {noun} {key!r}")
        return self.data[key]

    def table(self, key: str, allowed: Collection[str]) -> TomlTable:
        """A sub-table; missing means empty, so its keys take their defaults."""
        return TomlTable(
            self.data.get(key, {}), self.child(key), self.source, allowed, self.error_class
        )

    def tables(self, key: str, allowed: Collection[str]) -> list[TomlTable]:
        """An array of tables (``[[memory]]`` or an inline ``[{...}, {...}]``)."""
        value = self.data.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"expected an array of tables, got {type_name(value)} {value!r}")
        return [
            TomlTable(item, f"{self.child(key)}[{i}]", self.source, allowed, self.error_class)
            for i, item in enumerate(value)
        ]

    def build(self, factory: Callable[..., _T], /, **kwargs: Any) -> _T:
        """Construct a record; its validation errors get this table's path and file."""
        try:
            return factory(**kwargs)
        except KeyedError as err:
            raise err.within(self.path, self.source) from None

    def checked_string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {type_name(value)} {value!r}")
        return value

    def checked_boolean(self, key: str, value: object) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {type_name(value)} {value!r}")
        return value

    def checked_integer(self, key: str, value: object) -> int:
        if not is_int(value):
            raise self.error(key, f"expected an integer, got {type_name(value)} {value!r}")
        return value


# -- reading ---------------------------------------------------------------------------------


@dataclass
class Reading:
    """One record being read: its table, the values read so far, the enclosing record.

    File defaults (:attr:`FileKey.derive`) look here: ``value("mask")`` is a sibling's
    value, ``parent.value("targets")`` one of the enclosing record, ``ordinal`` how
    many records of this class the file held before this one, and ``context`` what
    the caller of the whole read passed in (a scenario's folder, say).
    """

    table: TomlTable
    shape: Shape
    parent: Reading | None
    context: dict[str, Any]
    ordinal: int = 0
    values: dict[str, object] = field(default_factory=dict)
    #: Records of each class read so far in the file (shared by the whole read).
    counts: dict[type, int] = field(default_factory=dict)

    def value(self, attr: str) -> object:
        """A field's value as read, else its default (``REQUIRED`` if it has none)."""
        if attr in self.values:
            return self.values[attr]
        return self.shape.field(attr).default_value()


def _read_field(reading: Reading, d: Declared) -> None:
    """Read one field: through its codec when the file has its key (or the key is a
    table whose own fields have defaults, or it is required and the codec must say
    so), else through its file default; a field left alone takes its default."""
    table, codec, name = reading.table, d.file.codec, d.key
    if name is not None and codec is not None:
        present = any(k in table.data for k in codec.keys(name))
        if present and d.file.forbid is not None:
            problem = d.file.forbid(reading.values)
            if problem is not None:
                raise table.error(name, problem)
        if present or codec.absent_reads_empty or (d.default is None and d.file.derive is None):
            reading.values[d.attr] = codec.read(table, name, reading)
            return
    if d.file.derive is not None:
        reading.values[d.attr] = d.file.derive(reading)


def read_record(
    shape: Shape,
    table: TomlTable,
    parent: Reading | None = None,
    *,
    context: dict[str, Any] | None = None,
    given: Mapping[str, object] | None = None,
) -> Any:
    """Read one record of ``shape`` from ``table`` and construct it.

    Fields are read in declaration order, so a file default can use the fields
    declared before it; fields without a key of their own come last.  ``given``
    supplies constructor arguments that are not in the file (its ``source``).
    """
    ctx = context if context is not None else (parent.context if parent else {})
    counts = parent.counts if parent is not None else {}
    ordinal = counts.get(shape.cls, 0)
    counts[shape.cls] = ordinal + 1
    reading = Reading(table, shape, parent, ctx, ordinal, counts=counts)
    keyed = [d for d in shape.fields if d.key is not None]
    for d in keyed + [d for d in shape.fields if d.key is None]:
        _read_field(reading, d)
    return table.build(shape.cls, **reading.values, **(given or {}))


# -- writing ---------------------------------------------------------------------------------

Pairs = list[tuple[str, str]]


def inline_table(pairs: Pairs) -> str:
    return "{ " + ", ".join(f"{k} = {v}" for k, v in pairs) + " }"


def inline_array(rows: list[Pairs]) -> str:
    """A multi-line array of inline tables (TOML allows newlines between items)."""
    if not rows:
        return "[]"
    return "[\n" + "".join(f"    {inline_table(row)},\n" for row in rows) + "]"


def _dumped(record: DataclassInstance, shape: Shape) -> Iterator[tuple[Declared, object]]:
    """The fields a dump writes: keyed ones, not ``None``, not an omitted default,
    and not forbidden by the record's other values."""
    values = {d.attr: getattr(record, d.attr) for d in shape.fields}
    for d in shape.fields:
        value = values[d.attr]
        if d.key is None or d.file.codec is None or value is None:
            continue
        if d.file.omit_default and value == d.default_value():
            continue
        if d.file.forbid is not None and d.file.forbid(values) is not None:
            continue
        yield d, value


def record_pairs(record: DataclassInstance) -> Pairs:
    """``key = value`` pairs of a record written inline (nested tables inline too)."""
    out: Pairs = []
    for d, value in _dumped(record, shape_of(type(record))):
        assert d.key is not None and d.file.codec is not None
        out += d.file.codec.pairs(d.key, value)
    return out


def dump_record(record: DataclassInstance) -> str:
    """A record as a TOML document: its plain keys first (TOML wants them before any
    header), then a ``[key]`` section per table and ``[[key]]`` per array item."""
    head: list[str] = []
    sections: list[str] = []
    for d, value in _dumped(record, shape_of(type(record))):
        codec, name = d.file.codec, d.key
        assert codec is not None and name is not None
        if codec.layout == "table":
            sections += ["", f"[{name}]", *(f"{k} = {v}" for k, v in codec.rows(value)[0])]
        elif codec.layout == "tables":
            for row in codec.rows(value):
                sections += ["", f"[[{name}]]", *(f"{k} = {v}" for k, v in row)]
        else:
            head += [f"{k} = {v}" for k, v in codec.pairs(name, value)]
    return "\n".join(head + sections) + "\n"
