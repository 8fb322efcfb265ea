"""Each record field declared once: its file key, codec, rules and file default.

Platform and scenario records are frozen dataclasses.  Every field that a file can
hold carries a :class:`FileKey` in its metadata (``field(default=4,
metadata=key(Integer(minimum=1)))``), which says everything the rest of vcmm needs:

- the TOML key (the field's name unless told otherwise, or none for a value derived
  from other keys),
- the *codec*: how the value is read from a TOML table, what type it must have, and
  how it is written back (:mod:`vcmm.platform.codecs`),
- the *rules* its value must follow (``at_least(1)``, ``one_of(...)``), checked
  whenever the record is constructed, from a file or in code,
- a default computed while reading a file (``derive``) where the file's default
  differs from the constructor's (a context's ``tree_name`` is ``ctx<n>``, numbered
  across the file),
- when the key may not appear at all (``forbid``), and whether a dump leaves out a
  default value (``omit_default``).

The generic reader and writer (:mod:`vcmm.platform.toml_table`) and
:func:`check_fields` work from these declarations alone, so a new field is one line
in its record and a new record is one class: as pyelftools declares each ELF
structure once and derives parsing and building from it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from vcmm.errors import InvalidArgumentError
from vcmm.platform.errors import KeyedError, join_key, suggest

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from vcmm.platform.codecs import Codec
    from vcmm.platform.toml_table import Reading

#: The metadata key a record field's :class:`FileKey` is stored under.
META: Final = "vcmm.file_key"

#: A rule a value must follow: returns quietly or raises :class:`Invalid`.
Rule = Callable[[Any], None]


class Invalid(Exception):
    """One value breaks one rule: ``problem`` says how, ``key`` where below the field
    (``[2]`` for the third item of a tuple).  The record turns it into its own error
    class with the full key (:func:`check_fields`)."""

    def __init__(self, problem: str, key: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.key = key


@dataclass(frozen=True, slots=True)
class FileKey:
    """How one record field is written in a file and what its value must hold.

    ``name`` is the TOML key: ``""`` means the field's own name, ``None`` that the
    field has no key of its own (its value is ``derive``-d from other keys).
    ``forbid`` gets the record's other values (as read so far, or all of them when
    dumping) and returns why the key may not appear there, or ``None``.
    """

    codec: Codec | None
    rules: tuple[Rule, ...] = ()
    name: str | None = ""
    derive: Callable[[Reading], object] | None = None
    forbid: Callable[[Mapping[str, object]], str | None] | None = None
    omit_default: bool = False

    def __post_init__(self) -> None:
        if self.derive is not None and self.omit_default:
            raise InvalidArgumentError(
                "a field with a derived file default must be written out: omit_default "
                "would make a dump read back different"
            )
        if self.name is None and self.derive is None:
            raise InvalidArgumentError("a field without a file key needs a derive function")
        if not all(callable(rule) for rule in self.rules):
            raise InvalidArgumentError(f"rules {self.rules!r} must all be callables")

    def check(self, value: object) -> None:
        """Check ``value``'s type (the codec's) and then every rule, in order."""
        if self.codec is not None:
            self.codec.check(value)
        for rule in self.rules:
            rule(value)


def key(
    codec: Codec | None,
    *rules: Rule,
    name: str | None = "",
    derive: Callable[[Reading], object] | None = None,
    forbid: Callable[[Mapping[str, object]], str | None] | None = None,
    omit_default: bool = False,
) -> dict[str, FileKey]:
    """Field metadata declaring a file key: ``field(default=..., metadata=key(...))``."""
    return {META: FileKey(codec, rules, name, derive, forbid, omit_default)}


class _Missing:
    def __repr__(self) -> str:
        return "<required>"


#: The default of a field that has none (a required key).
REQUIRED: Final = _Missing()


@dataclass(frozen=True, slots=True)
class Declared:
    """One field of a record as the readers see it: attribute, file key, default."""

    attr: str
    file: FileKey
    default: Callable[[], object] | None

    @property
    def key(self) -> str | None:
        """The TOML key (``None`` for a field derived from other keys)."""
        return self.attr if self.file.name == "" else self.file.name

    @property
    def error_key(self) -> str:
        """The key errors about this field name (a flattened window names its record)."""
        own = self.key or self.attr
        return self.file.codec.error_key(own) if self.file.codec is not None else own

    def default_value(self) -> object:
        return REQUIRED if self.default is None else self.default()


@dataclass(frozen=True, slots=True)
class Shape:
    """A record class and its declared fields, in declaration order."""

    cls: type
    fields: tuple[Declared, ...]

    def allowed(self) -> tuple[str, ...]:
        """Every TOML key a table of this record may hold."""
        out: list[str] = []
        for d in self.fields:
            if d.key is not None and d.file.codec is not None:
                out += d.file.codec.keys(d.key)
        return tuple(out)

    def field(self, attr: str) -> Declared:
        for d in self.fields:
            if d.attr == attr:
                return d
        raise KeyError(attr)


_FOREIGN: dict[type, Mapping[str, FileKey]] = {}
_SHAPES: dict[type, Shape] = {}


def declare(cls: type, keys: Mapping[str, dict[str, FileKey]]) -> None:
    """Declare the file keys of a dataclass this package does not own (a hardware
    value such as :class:`~vcmm.hw.memory.MemoryRegion`), field name -> :func:`key`."""
    _FOREIGN[cls] = {attr: meta[META] for attr, meta in keys.items()}
    _SHAPES.pop(cls, None)


def _default_of(f: dataclasses.Field[Any]) -> Callable[[], object] | None:
    if f.default is not dataclasses.MISSING:
        value = f.default
        return lambda: value
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory
    return None


def shape_of(cls: type) -> Shape:
    """The declared fields of record class ``cls`` (fields without a declaration are
    not the file's: a platform's ``source``, say).  Worked out once per class."""
    shape = _SHAPES.get(cls)
    if shape is None:
        if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
            raise InvalidArgumentError(f"{cls!r} is not a record class (a dataclass)")
        foreign = _FOREIGN.get(cls, {})
        declared = []
        for f in dataclasses.fields(cls):
            file = foreign.get(f.name) or f.metadata.get(META)
            if file is not None:
                declared.append(Declared(f.name, file, _default_of(f)))
        shape = _SHAPES[cls] = Shape(cls, tuple(declared))
    return shape


def check_fields(record: DataclassInstance, error: type[KeyedError]) -> None:
    """Check every declared field of ``record`` (types, then rules, in field order);
    the first broken rule raises ``error`` keyed with the field's file key."""
    for d in shape_of(type(record)).fields:
        value = getattr(record, d.attr)
        if value is None and d.default_value() is None:
            continue  # an optional value left out
        try:
            d.file.check(value)
        except Invalid as err:
            raise error(err.problem, key=join_key(d.error_key, err.key)) from None


# -- rules ----------------------------------------------------------------------------------


def at_least(minimum: int) -> Rule:
    """The integer must be ``minimum`` or more (its type is the codec's to check)."""

    def rule(value: int) -> None:
        if value < minimum:
            raise Invalid(f"value {value} is below the minimum {minimum}")

    return rule


def one_of(choices: tuple[str, ...] | Mapping[str, object]) -> Rule:
    """The string must be one of ``choices``; the message suggests the closest."""
    names = tuple(choices)

    def rule(value: object) -> None:
        if value not in names:
            hint = suggest(value, names) if isinstance(value, str) else ""
            raise Invalid(f"{value!r} is not one of {', '.join(names)}{hint}")

    return rule


_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def is_name(value: str) -> None:
    """Names become /dev node names and lookup keys: one path component, no spaces."""
    if not value or not set(value) <= _NAME_CHARS or value in (".", ".."):
        raise Invalid(
            f"name {value!r} must be non-empty and use only letters, digits, '_', '.', '-'"
        )


#: Characters Linux puts in device names: a devicetree node name's own (letters,
#: digits, ``,._+-``), ``@`` before a unit address and ``:`` joining a node to its
#: parent's name (``5c00000.remoteproc:glink-edge``).
_DT_NAME_CHARS: Final = _NAME_CHARS | frozenset(",+@:")


def is_dt_name(value: str) -> None:
    """Names of devices, memory regions, targets and reserved regions may use what
    Linux uses (``ae00000.display-subsystem``, ``memory@80000000``, ``linux,cma``) so
    that they match kernel logs; no spaces or slashes."""
    if not value or not set(value) <= _DT_NAME_CHARS or value in (".", ".."):
        raise Invalid(
            f"name {value!r} must be non-empty and use only letters, digits and "
            "'_', '.', '-', ',', '+', '@', ':'"
        )
