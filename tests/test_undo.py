"""The one undo mechanism: order, nesting, commit actions and failing undos."""

from __future__ import annotations

import threading

import pytest

from vcmm.errors import InvalidArgumentError, StateError
from vcmm.undo import Transaction, atomic, current, rolling_back


class Boom(Exception):
    pass


def test_a_failure_takes_steps_back_newest_first() -> None:
    log: list[str] = []
    with pytest.raises(Boom), Transaction("op") as txn:
        log.append("a")
        txn.on_undo(log.append, "-a")
        log.append("b")
        txn.on_undo(log.append, "-b")
        raise Boom
    assert log == ["a", "b", "-b", "-a"]


def test_success_runs_commit_actions_and_no_undo() -> None:
    log: list[str] = []
    with Transaction("op") as txn:
        txn.on_undo(log.append, "undo")
        txn.on_commit(log.append, "commit 1")
        txn.on_commit(log.append, "commit 2")
    assert log == ["commit 1", "commit 2"]


def test_a_joined_inner_success_is_taken_back_when_the_outer_call_fails() -> None:
    log: list[str] = []
    with pytest.raises(Boom), Transaction("outer") as outer:
        outer.on_undo(log.append, "-outer")
        with Transaction("inner") as inner:
            inner.on_undo(log.append, "-inner")
            inner.on_commit(log.append, "inner commit")
        assert log == []  # the inner commit waits for the outer one
        assert outer.steps == 2
        raise Boom
    assert log == ["-inner", "-outer"]


def test_an_inner_failure_undoes_the_inner_steps_then_the_outer_ones() -> None:
    log: list[str] = []
    with pytest.raises(Boom), Transaction("outer") as outer:
        outer.on_undo(log.append, "-outer")
        with Transaction("inner") as inner:
            inner.on_undo(log.append, "-inner")
            raise Boom
    assert log == ["-inner", "-outer"]


def test_an_inner_failure_the_outer_call_absorbs_keeps_the_outer_steps() -> None:
    log: list[str] = []
    with Transaction("outer") as outer:
        outer.on_undo(log.append, "-outer")
        outer.on_commit(log.append, "outer commit")
        try:
            with Transaction("inner") as inner:
                inner.on_undo(log.append, "-inner")
                raise Boom
        except Boom:
            pass
    assert log == ["-inner", "outer commit"]


def test_every_undo_step_runs_even_when_one_fails_and_the_first_error_is_raised() -> None:
    log: list[str] = []

    def broken(tag: str) -> None:
        raise RuntimeError(tag)

    with pytest.raises(RuntimeError, match="second") as info, Transaction("op") as txn:
        txn.on_undo(log.append, "-a")
        txn.on_undo(broken, "first")
        txn.on_undo(broken, "second")
        raise Boom
    assert log == ["-a"]
    assert any("first" in note for note in info.value.__notes__)
    assert isinstance(info.value.__context__, Boom)


def test_current_is_the_innermost_open_transaction_of_this_thread() -> None:
    assert current() is None
    with atomic("outer") as outer:
        assert current() is outer
        with atomic("inner") as inner:
            assert current() is inner
        assert current() is outer
        seen: list[object] = []
        worker = threading.Thread(target=lambda: seen.append(current()))
        worker.start()
        worker.join()
        assert seen == [None]
    assert current() is None


def test_misuse_is_refused() -> None:
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        Transaction("")
    txn = Transaction("op")
    with pytest.raises(StateError, match="not open"):
        txn.on_undo(print)
    with txn, pytest.raises(StateError, match="already open"), txn:
        pass
    with pytest.raises(InvalidArgumentError, match="not callable"), Transaction("op") as t:
        t.on_undo(42)  # type: ignore[arg-type]


def test_a_boundary_transaction_forgets_its_steps_on_success() -> None:
    """``boundary=True``: the inner call's own steps are not the outer call's undo (the
    outer records its own way of taking the inner call back)."""
    log: list[str] = []
    with pytest.raises(Boom), Transaction("outer") as outer:
        with Transaction("inner", boundary=True) as inner:
            inner.on_undo(log.append, "-inner step")
            inner.on_commit(log.append, "inner commit")
        outer.on_undo(log.append, "-inner call")
        raise Boom
    assert log == ["inner commit", "-inner call"]


def test_a_boundary_transaction_still_rolls_back_itself() -> None:
    log: list[str] = []
    with Transaction("outer") as outer:
        outer.on_commit(log.append, "outer commit")
        with pytest.raises(Boom), Transaction("inner", boundary=True) as inner:
            inner.on_undo(log.append, "-inner step")
            raise Boom
    assert log == ["-inner step", "outer commit"]


def test_boundary_must_be_a_bool() -> None:
    with pytest.raises(InvalidArgumentError, match="boundary=1 is not a bool"):
        Transaction("op", boundary=1)  # type: ignore[arg-type]


def test_a_boundary_commits_by_itself_inside_another_transaction() -> None:
    log: list[str] = []
    with pytest.raises(Boom), Transaction("outer") as outer:
        with Transaction("api call", boundary=True) as call:
            call.on_undo(log.append, "-internal")
            call.on_commit(log.append, "call commit")
            with Transaction("helper") as helper:  # joins the boundary, not the outer
                helper.on_undo(log.append, "-helper")
        assert log == ["call commit"]
        assert outer.steps == 0
        outer.on_undo(log.append, "-outer")
        raise Boom
    assert log == ["call commit", "-outer"]


def test_rolling_back_is_true_only_while_undo_steps_run() -> None:
    seen: list[bool] = []
    assert not rolling_back()
    with pytest.raises(Boom), Transaction("op") as txn:
        txn.on_undo(lambda: seen.append(rolling_back()))
        seen.append(rolling_back())
        raise Boom
    assert seen == [False, True]
    assert not rolling_back()
    with pytest.raises(InvalidArgumentError):
        Transaction("op", boundary=1)  # type: ignore[arg-type]


def test_rolling_back_belongs_to_the_thread_that_undoes() -> None:
    """Another thread, even one started during a roll back, is not rolling back."""
    seen: list[tuple[str, bool]] = []

    def other() -> None:
        seen.append(("other", rolling_back()))

    def step() -> None:
        seen.append(("undoer", rolling_back()))
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()

    with pytest.raises(Boom), Transaction("op") as txn:
        txn.on_undo(step)
        raise Boom
    assert seen == [("undoer", True), ("other", False)]


def test_undo_actions_must_be_callable() -> None:
    with Transaction("op") as txn:
        with pytest.raises(InvalidArgumentError, match="not callable"):
            txn.on_undo(42)  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="not callable"):
            txn.on_commit("x", 1)  # type: ignore[arg-type]
        assert txn.steps == 0
