"""The architecture gate: the boundary rules of issue 11, checked on the source itself.

Each rule walks the syntax trees of ``src/vcmm`` and FAILS listing every offender, so
a change that breaks a rule is stopped in the suite, not found in a later review:

- no module over 700 lines and no function over 80 lines;
- layers import only downwards (values -> hw -> mm -> core -> front ends ->
  platform/workload/cli/report/trace/system, as docs/DESIGN.md draws them);
- no ``obj._name`` read of another module's object and no ``from m import _name``:
  a module is the unit of privacy (its own classes may cooperate through private
  names; another module goes through public ones);
- no ``getattr(x, "name", default)`` and no ``setattr``/``delattr``/``hasattr`` of a
  named attribute on another object: state passes between layers as typed values,
  not as attributes probed or set on foreign objects.

Exceptions are listed below, each with the reason it is justified; an entry that no
longer matches anything fails too, so the lists cannot rot.  The checks read text
only (``ast``), so they are fast and need no wall clock.
"""

from __future__ import annotations

import ast
import functools
import inspect
import pydoc
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "vcmm"

MAX_MODULE_LINES = 700
MAX_FUNCTION_LINES = 80

#: Rank of each layer; a module may import its own rank or lower ones.  Top-level value
#: modules (sizes, ranges, attrs, errors, checks, undo, ...) are rank 1, the package
#: itself and ``__main__`` the top.
LAYER_RANK = {
    "hw": 2,
    "mm": 3,
    "core": 4,
    "dma": 5,
    "share": 5,
    "proc": 5,
    "platform": 6,
    "workload": 6,
    "cli": 6,
    "report": 6,
    "trace": 6,
    "system": 6,
    "__main__": 7,
}

#: ``obj._name`` reads of another module's object that are justified: (file, expression).
PRIVATE_READS_ALLOWED: dict[tuple[str, str], str] = {
    ("dma/callsite.py", "sys._getframe"): (
        "CPython's documented way to find the caller's frame (the call site a DMA-debug "
        "report names); inspect.stack() costs far more on every map"
    ),
}

#: ``getattr(x, "name", default)`` and friends that are justified: (file, expression).
ATTRIBUTE_PROBES_ALLOWED: dict[tuple[str, str], str] = {
    ("hw/memory.py", "getattr(mmap, 'MADV_HUGEPAGE', None)"): (
        "the constant exists only on some platforms; no state passes"
    ),
}


@dataclass(frozen=True)
class Module:
    """One source file: its path below ``src/vcmm``, dotted name, text and tree."""

    rel: str
    name: str
    text: str
    tree: ast.Module


def _module_name(path: Path) -> str:
    dotted = ".".join(path.relative_to(SRC).with_suffix("").parts)
    return dotted.removesuffix(".__init__")


@functools.cache
def modules() -> tuple[Module, ...]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(PACKAGE).as_posix()
        out.append(Module(rel, _module_name(path), text, ast.parse(text, filename=rel)))
    return tuple(out)


# -- the rules, as functions of source text (so the gate itself can be tested) -----------


def layer_of(module: str) -> int | None:
    """The rank of a ``vcmm`` module (None for modules outside the package)."""
    parts = module.split(".")
    if parts[0] != "vcmm":
        return None
    if len(parts) == 1:
        return max(LAYER_RANK.values())
    return LAYER_RANK.get(parts[1], 1)


def long_functions(tree: ast.AST) -> list[str]:
    """Functions (methods, nested functions) longer than the limit, decorators aside."""
    return [
        f"{node.name} ({node.lineno}): {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


def upward_imports(name: str, tree: ast.AST) -> list[str]:
    """Imports of a ``vcmm`` module of a higher layer than ``name``'s."""
    mine = layer_of(name)
    assert mine is not None
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "vcmm":  # ``from vcmm import sizes``: the submodule
                targets = [f"vcmm.{alias.name}" for alias in node.names]
            else:
                targets = [node.module]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        for target in targets:
            rank = layer_of(target)
            if rank is not None and rank > mine:
                found.append(f"{target} ({node.lineno})")
    return found


def _is_private(attr: str) -> bool:
    return attr.startswith("_") and not attr.startswith("__")


def _own_names(tree: ast.AST) -> set[str]:
    """Every name the module defines: functions, classes, assigned names and
    attributes, ``__slots__`` strings.  Private names among them are the module's own."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names |= {
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
    return names


def _is_own_object(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own attributes."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def foreign_private_reads(tree: ast.AST) -> list[str]:
    """``obj._name`` where obj is not self/cls/super() and the module does not define
    ``_name`` itself, and ``from m import _name``."""
    own = _own_names(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and _is_private(node.attr)
            and not _is_own_object(node.value)
            and node.attr not in own
        ):
            found.append(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom):
            found += [
                f"from {node.module} import {alias.name}"
                for alias in node.names
                if _is_private(alias.name)
            ]
    return found


def attribute_probes(tree: ast.AST) -> list[str]:
    """``getattr`` with a default, and ``setattr``/``delattr``/``hasattr`` of a named
    attribute on an object other than self."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        fn, args = node.func.id, node.args
        with_default = fn == "getattr" and len(args) == 3
        named_on_other = (
            fn in ("setattr", "delattr", "hasattr")
            and len(args) >= 2
            and isinstance(args[1], ast.Constant)
            and not _is_own_object(args[0])
        )
        if with_default or named_on_other:
            found.append(ast.unparse(node))
    return found


# -- the gate ------------------------------------------------------------------------------


def _report(offenders: list[str], rule: str) -> str:
    return f"{len(offenders)} offender(s) of: {rule}\n  " + "\n  ".join(offenders)


def test_the_gate_reads_the_whole_package() -> None:
    names = {m.name for m in modules()}
    assert {"vcmm", "vcmm.system", "vcmm.core.manager", "vcmm.dma.state"} <= names
    assert len(names) > 100


def test_no_module_over_700_lines() -> None:
    offenders = [
        f"{m.rel}: {n} lines"
        for m in modules()
        if (n := len(m.text.splitlines())) > MAX_MODULE_LINES
    ]
    assert not offenders, _report(offenders, f"modules of at most {MAX_MODULE_LINES} lines")


def test_no_function_over_80_lines() -> None:
    offenders = [f"{m.rel}: {f}" for m in modules() for f in long_functions(m.tree)]
    assert not offenders, _report(offenders, f"functions of at most {MAX_FUNCTION_LINES} lines")


def test_layers_import_only_downwards() -> None:
    offenders = [f"{m.rel} -> {i}" for m in modules() for i in upward_imports(m.name, m.tree)]
    assert not offenders, _report(offenders, "no import of a higher layer")


def _unjustified(
    found: dict[tuple[str, str], None], allowed: dict[tuple[str, str], str]
) -> list[str]:
    stale = [f"allow-list entry matches nothing: {k}" for k in allowed if k not in found]
    return [f"{rel}: {expr}" for rel, expr in found if (rel, expr) not in allowed] + stale


def test_no_private_reads_of_another_modules_objects() -> None:
    found = {(m.rel, e): None for m in modules() for e in foreign_private_reads(m.tree)}
    offenders = _unjustified(found, PRIVATE_READS_ALLOWED)
    assert not offenders, _report(offenders, "no obj._name of another module's object")


def test_no_attribute_probes_passing_state() -> None:
    found = {(m.rel, e): None for m in modules() for e in attribute_probes(m.tree)}
    offenders = _unjustified(found, ATTRIBUTE_PROBES_ALLOWED)
    assert not offenders, _report(offenders, "no getattr(x, name, default) / setattr(x, name)")


# -- the gate catches what it is meant to catch --------------------------------------------

BAD_SOURCE = """
from vcmm.dma.streaming import _check_sgl
from vcmm.dma import api

class Mine:
    __slots__ = ("_own",)

    def peek(self, other, tlb):
        self._own = other._own          # the module's own private name: fine
        return tlb._probe(1), super()._hook(), getattr(tlb, "ctx", None)

def poke(device):
    setattr(device, "bank", 3)
    return hasattr(device, "dma")
""" + "\n".join(["def long():"] + ["    x = 1"] * MAX_FUNCTION_LINES)


def test_the_rules_find_planted_offenders() -> None:
    tree = ast.parse(BAD_SOURCE)
    assert sorted(foreign_private_reads(tree)) == [
        "from vcmm.dma.streaming import _check_sgl",
        "tlb._probe",
    ]
    assert sorted(attribute_probes(tree)) == [
        "getattr(tlb, 'ctx', None)",
        "hasattr(device, 'dma')",
        "setattr(device, 'bank', 3)",
    ]
    assert [f.split(" ")[0] for f in long_functions(tree)] == ["long"]
    assert upward_imports("vcmm.core.fake", tree) == ["vcmm.dma.streaming (2)", "vcmm.dma (3)"]
    assert upward_imports("vcmm.cli.fake", tree) == []


# -- one table of seed calls ----------------------------------------------------------------

SEED_CALLS = ("vcm_create", "vcm_reserve", "vcm_back", "vcm_phys_alloc", "vcm_assoc")


@pytest.mark.parametrize("name", SEED_CALLS)
def test_vcmm_and_system_share_one_seed_call_table(name: str) -> None:
    from vcmm.core.manager import Vcmm
    from vcmm.core.seedcalls import SeedCalls
    from vcmm.system import System

    table = {k for k, v in vars(SeedCalls).items() if k.startswith("vcm_") and callable(v)}
    assert len(table) == 25  # the seed's 25 calls, listed once
    for owner in (Vcmm, System):
        assert not {k for k in vars(owner) if k.startswith("vcm_")}, owner  # none redefined
        assert inspect.getattr_static(owner, name) is vars(SeedCalls)[name]
    # the call keeps the part's signature and documentation (help() shows the seed doc)
    method = vars(SeedCalls)[name]
    first_line = (method.__doc__ or "").strip().splitlines()[0]
    assert first_line and first_line in pydoc.render_doc(getattr(System, name))
    assert "self" in inspect.signature(method).parameters
