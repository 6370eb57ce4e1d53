"""Reply: the one-shot answer of a call to a session actor."""

from __future__ import annotations

import functools
import threading

import pytest

from meerkat_runtime.actors._messages import Reply


def _record(into: list[object], reply: Reply) -> None:
    into.append(reply.result())


def _fail(reply: Reply) -> None:
    raise RuntimeError("callback bug")


def test_the_first_answer_wins_and_every_waiter_gets_it() -> None:
    reply = Reply()
    got: list[object] = []
    waiters = [threading.Thread(target=lambda: got.append(reply.result(10))) for _ in range(3)]
    for t in waiters:
        t.start()
    reply.set_result("first")
    reply.set_result("second")
    reply.set_exception(ValueError("late"))
    for t in waiters:
        t.join(10)
    assert got == ["first"] * 3
    assert reply.done() and reply.exception() is None and reply.result() == "first"


def test_an_exception_is_raised_to_the_waiter() -> None:
    reply = Reply()
    reply.set_exception(KeyError("boom"))
    with pytest.raises(KeyError, match="boom"):
        reply.result()
    assert isinstance(reply.exception(), KeyError)


def test_waiting_times_out_while_unset() -> None:
    reply = Reply()
    assert not reply.done()
    with pytest.raises(TimeoutError):
        reply.result(timeout=0.01)
    with pytest.raises(TimeoutError):
        reply.result(timeout=0)
    reply.set_result(1)
    assert reply.result(timeout=0) == 1


def test_callbacks_run_once_whether_added_before_or_after() -> None:
    reply = Reply()
    seen: list[str] = []
    reply.add_done_callback(lambda r: seen.append(f"before {r.result()}"))
    reply.add_done_callback(_fail)  # a failing callback is logged, not raised
    reply.set_result(7)
    reply.set_result(8)
    reply.add_done_callback(lambda r: seen.append(f"after {r.result()}"))
    assert seen == ["before 7", "after 7"]


def test_racing_setters_settle_it_exactly_once() -> None:
    for _ in range(200):
        reply = Reply()
        calls: list[object] = []
        reply.add_done_callback(functools.partial(_record, calls))
        barrier = threading.Barrier(4)

        def set_it(value: int, reply: Reply = reply, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            reply.set_result(value)

        setters = [threading.Thread(target=set_it, args=(n,)) for n in range(4)]
        for t in setters:
            t.start()
        for t in setters:
            t.join(10)
        assert len(calls) == 1 and reply.result() == calls[0]
