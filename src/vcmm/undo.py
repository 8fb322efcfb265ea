"""All or nothing: the one undo mechanism every layer records its steps in.

A compound call (back a reservation, map a scatterlist, allocate a coherent buffer,
build the DMA API) makes several changes, each of which can fail.  The project's rule
is that a failing call leaves every piece of state as it was, so each step that
succeeded records how to take itself back, and a failure takes the recorded steps
back newest first.  Writing that bookkeeping once keeps the order, the handling of a
failing undo and the nesting of calls inside calls the same everywhere.

A :class:`Transaction` is used as a context manager::

    with Transaction("alloc_coherent") as txn:
        physmem = system.vcm_phys_alloc(...)
        txn.on_undo(system.vcm_phys_free, physmem)
        res = system.vcm_reserve(...)
        txn.on_undo(system.vcm_unreserve, res)
        txn.on_commit(notify, res)   # only once everything succeeded

Leaving the block with an exception rolls back; leaving it normally commits.  A
transaction opened while another one is open on the same thread *joins* it: its undo
steps become the outer one's (so an inner call that succeeded is still taken back
when the outer call fails later), and its commit actions wait for the outer commit.
Layers with richer logs (the page-table writer's byte log, the core's table-step
log) record their own undo as steps of the innermost transaction.

A *boundary* (``Transaction(name, boundary=True)``) does not join: it is the public
call of a layer whose caller takes its result back with that layer's own inverse call
(an unmap for a map), so its internal steps end with it.  The core's ``vcm_back`` is one:
it logs each table write so that a failure half way is undone write by write, but once
it succeeded its caller's undo is ``vcm_unback``, and replaying the writes as well
would take them back twice.  While steps are being taken
back, :func:`rolling_back` is true on that thread: an inverse call made by an undo
step can then restore exactly what the forward call changed (the IOVA allocator takes
a range back instead of parking it in its range cache).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, ParamSpec

from vcmm.errors import InvalidArgumentError, StateError

P = ParamSpec("P")


class _ThreadState(threading.local):
    """Per thread: the open transactions (innermost last) and how many roll backs
    run.  Set up on a thread's first use, so reading them costs one attribute."""

    def __init__(self) -> None:
        self.stack: list[Transaction] = []
        self.rolling_back = 0


_local = _ThreadState()


def _stack() -> list[Transaction]:
    return _local.stack


def current() -> Transaction | None:
    """The innermost open transaction of this thread, if any."""
    stack = _stack()
    return stack[-1] if stack else None


def rolling_back() -> bool:
    """Whether this thread is taking recorded steps back right now."""
    return _local.rolling_back > 0


class Transaction:
    """The undo steps and commit actions of one compound call."""

    __slots__ = ("_commits", "_open", "_outer", "_undo", "boundary", "name")

    def __init__(self, name: str, *, boundary: bool = False) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError(f"Transaction name {name!r} must be a non-empty string")
        if not isinstance(boundary, bool):
            raise InvalidArgumentError(f"Transaction boundary={boundary!r} is not a bool")
        self.name = name
        #: Commit on success even inside another transaction (see the module docstring).
        self.boundary = boundary
        self._undo: list[Callable[[], object]] = []
        self._commits: list[Callable[[], object]] = []
        self._outer: Transaction | None = None
        self._open = False

    # -- recording -------------------------------------------------------------------------

    def on_undo(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Record how to take back the step that just succeeded."""
        if not self._open:
            self._check_open("on_undo")
        self._undo.append(_bind(fn, args, kwargs) if args or kwargs else _callable(fn))

    def on_commit(self, fn: Callable[P, object], *args: P.args, **kwargs: P.kwargs) -> None:
        """Run ``fn`` once the outermost transaction commits (never on roll back)."""
        if not self._open:
            self._check_open("on_commit")
        self._commits.append(_bind(fn, args, kwargs) if args or kwargs else _callable(fn))

    @property
    def steps(self) -> int:
        """How many undo steps are recorded (joined inner transactions included)."""
        return len(self._undo)

    # -- ending ----------------------------------------------------------------------------

    def roll_back(self) -> None:
        """Take back every recorded step, newest first.

        Every step is attempted even if one fails (a half-done undo leaks less than an
        abandoned one); the first failure is then raised with the others noted on it.
        """
        steps, self._undo, self._commits = self._undo, [], []
        errors: list[BaseException] = []
        _local.rolling_back += 1
        try:
            for step in reversed(steps):
                try:
                    step()
                except BaseException as exc:  # keep undoing; report below
                    errors.append(exc)
        finally:
            _local.rolling_back -= 1
        if errors:
            first = errors[0]
            for other in errors[1:]:
                first.add_note(f"{self.name}: undo also failed: {other!r}")
            raise first

    def commit(self) -> None:
        """Forget the undo steps and run the commit actions, in the order recorded."""
        actions, self._undo, self._commits = self._commits, [], []
        for action in actions:
            action()

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Transaction:
        if self._open:
            raise StateError(f"transaction {self.name!r} is already open")
        stack = _local.stack
        self._outer = stack[-1] if stack and not self.boundary else None
        stack.append(self)
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack = _local.stack
        assert stack and stack[-1] is self, "transactions must close innermost first"
        stack.pop()
        self._open = False
        outer, self._outer = self._outer, None
        if exc_type is not None:
            self.roll_back()  # a failing undo's error replaces the original, noted
            return
        if outer is not None:  # joined: the outer call decides
            outer._undo.extend(self._undo)
            outer._commits.extend(self._commits)
            self._undo, self._commits = [], []
            return
        self.commit()

    def _check_open(self, call: str) -> None:
        if not self._open:
            raise StateError(f"{call}: transaction {self.name!r} is not open")

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Transaction {self.name} {state}, {len(self._undo)} undo steps>"


@contextmanager
def atomic(name: str) -> Iterator[Transaction]:
    """``with atomic("call") as txn:``, the same as ``with Transaction("call")``."""
    with Transaction(name) as txn:
        yield txn


def _callable(fn: Callable[..., object]) -> Callable[[], object]:
    if not callable(fn):
        raise InvalidArgumentError(f"undo/commit action {fn!r} is not callable")
    return fn


def _bind(
    fn: Callable[..., object], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Callable[[], object]:
    _callable(fn)
    return lambda: fn(*args, **kwargs)
